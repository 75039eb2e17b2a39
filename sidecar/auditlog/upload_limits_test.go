package auditlog

import (
	"bytes"
	"compress/gzip"
	"context"
	crand "crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/internal/syncbuf"
)

// testCollector is a real HTTP decision-log service whose answers a test chooses: it records,
// per decision id, how often an accepted (2xx) batch carried it, and every answer it gave.
type testCollector struct {
	t  *testing.T
	mu sync.Mutex
	// answer picks the status (and headers, body) for the req-th POST (from 0) of a body of
	// size bytes (as sent, compressed) with events events; nil accepts everything.
	answer   func(req, size, events int) (int, http.Header, string)
	got      map[string]int
	accepted []sentBatch
	answers  []sentBatch
}

type sentBatch struct {
	status, size, events int
	ids                  []string
	at                   time.Time
}

func newTestCollector(t *testing.T) (*testCollector, *httptest.Server) {
	c := &testCollector{t: t, got: map[string]int{}}
	srv := httptest.NewServer(c)
	t.Cleanup(srv.Close)
	return c, srv
}

func (c *testCollector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		c.t.Errorf("body is not gzip: %v", err)
		http.Error(w, "not gzip", http.StatusUnsupportedMediaType)
		return
	}
	var evs []struct {
		ID string `json:"decision_id"`
	}
	if err := json.NewDecoder(zr).Decode(&evs); err != nil {
		c.t.Errorf("body is not a JSON array: %v", err)
		http.Error(w, "bad body", http.StatusUnsupportedMediaType)
		return
	}
	ids := make([]string, len(evs))
	for i, ev := range evs {
		ids[i] = ev.ID
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	status, hdr, msg := http.StatusNoContent, http.Header(nil), ""
	if c.answer != nil {
		status, hdr, msg = c.answer(len(c.answers), len(body), len(evs))
	}
	b := sentBatch{status: status, size: len(body), events: len(evs), ids: ids, at: time.Now()}
	c.answers = append(c.answers, b)
	if status >= 200 && status <= 299 {
		c.accepted = append(c.accepted, b)
		for _, id := range ids {
			c.got[id]++
		}
	}
	for k, v := range hdr {
		w.Header()[k] = v
	}
	w.WriteHeader(status)
	_, _ = io.WriteString(w, msg)
}

func (c *testCollector) setAnswer(fn func(req, size, events int) (int, http.Header, string)) {
	c.mu.Lock()
	c.answer = fn
	c.mu.Unlock()
}

func (c *testCollector) snapshot() (got map[string]int, accepted, answers []sentBatch) {
	c.mu.Lock()
	defer c.mu.Unlock()
	got = make(map[string]int, len(c.got))
	for k, v := range c.got {
		got[k] = v
	}
	return got, append([]sentBatch(nil), c.accepted...), append([]sentBatch(nil), c.answers...)
}

func openLogged(t *testing.T, f *fixture) (*Log, *syncbuf.Buffer) {
	t.Helper()
	out := &syncbuf.Buffer{}
	l, err := Open(f.cfg, Options{Logger: slog.New(slog.NewTextHandler(out, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, out
}

func uploadCfg(url string) *UploadConfig {
	return &UploadConfig{URL: url, Interval: 20 * time.Millisecond, MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}
}

// waitDelivered waits until the collector has every id of dec-000000..n-1 and the cursor has
// reached the end of the log, then checks each id was delivered exactly once.
func waitDelivered(t *testing.T, c *testCollector, l *Log, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, _, _ := c.snapshot()
		if len(got) >= n && l.uploader.Cursor() == l.Committed() {
			break
		}
		if time.Now().After(deadline) {
			st, _ := l.UploadStatus()
			t.Fatalf("collector has %d of %d ids, cursor %d of %d; upload status %+v", len(got), n, l.uploader.Cursor(), l.Committed(), st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	got, _, _ := c.snapshot()
	if len(got) != n {
		t.Fatalf("collector has %d ids, want %d", len(got), n)
	}
	for i := range n {
		if id := fmt.Sprintf("dec-%06d", i); got[id] != 1 {
			t.Fatalf("%s delivered %d times, want once", id, got[id])
		}
	}
}

// The collector is down while 120 events spool, then answers 413 to bodies larger than it
// takes: the uploader halves the batch until it passes and delivers everything once (before,
// it sent the same batch forever and the spool never drained).
func TestUpload413HalvesBatch(t *testing.T) {
	cases := []struct {
		name      string
		maxEvents int
		sizeLimit int64
		takes     int // largest body (compressed bytes) the collector accepts
	}{
		{"default limits, collector takes 8 KiB", 0, 0, 8 << 10},
		{"max_events 50, collector takes 3 KiB", 50, 0, 3 << 10},
		{"size limit 1 MiB, collector takes 4 KiB", 0, 1 << 20, 4 << 10},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, srv := newTestCollector(t)
			down := func(int, int, int) (int, http.Header, string) { return http.StatusServiceUnavailable, nil, "down" }
			c.setAnswer(down)
			f := newFixture(t)
			f.cfg.Upload = uploadCfg(srv.URL)
			f.cfg.Upload.MaxEvents, f.cfg.Upload.UploadSizeLimitBytes = tc.maxEvents, tc.sizeLimit
			l, _ := openLogged(t, f)
			appendN(t, l, 0, 120)
			// Down until it has refused an attempt made with all 120 events spooled.
			_, _, a := c.snapshot()
			for n := len(a); len(a) <= n; _, _, a = c.snapshot() {
				time.Sleep(5 * time.Millisecond)
			}
			c.setAnswer(func(_, size, _ int) (int, http.Header, string) {
				if size > tc.takes {
					return http.StatusRequestEntityTooLarge, nil, "payload too large"
				}
				return http.StatusNoContent, nil, ""
			})
			waitDelivered(t, c, l, 120)
			_, accepted, answers := c.snapshot()
			n413 := 0
			for _, a := range answers {
				if a.status == http.StatusRequestEntityTooLarge {
					n413++
				}
			}
			if n413 == 0 {
				t.Fatalf("the collector never answered 413 (answers %+v): the test proves nothing", answers)
			}
			st, ok := l.UploadStatus()
			if !ok || st.Failures != 0 || st.LastStatus != http.StatusRequestEntityTooLarge || st.BatchEvents >= l.cfg.Upload.MaxEvents {
				t.Fatalf("upload status %+v: want no failure streak, last status 413, a reduced batch", st)
			}
			sizes := []int{}
			for _, a := range accepted {
				sizes = append(sizes, a.size, a.events)
			}
			t.Logf("accepted (bytes, events) %v, %d answers 413, batch now %d events", sizes, n413, st.BatchEvents)
		})
	}
}

// A collector that answers an error for a while loses nothing: every event arrives once it
// recovers. Errors the service will give again (4xx but 408 and 429, and 413 to one event) are
// logged with alarm=true, the status and the answer's body; all show in UploadStatus.
func TestUploadFailingAnswersKeepEvents(t *testing.T) {
	cases := []struct {
		name      string
		status    int
		maxEvents int
		alarm     bool
	}{
		{"400", http.StatusBadRequest, 0, true},
		{"401", http.StatusUnauthorized, 0, true},
		{"403", http.StatusForbidden, 0, true},
		{"404", http.StatusNotFound, 0, true},
		{"422", http.StatusUnprocessableEntity, 0, true},
		{"413 to a single event", http.StatusRequestEntityTooLarge, 1, true},
		{"408", http.StatusRequestTimeout, 0, false},
		{"429", http.StatusTooManyRequests, 0, false},
		{"500", http.StatusInternalServerError, 0, false},
		{"503", http.StatusServiceUnavailable, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, srv := newTestCollector(t)
			msg := fmt.Sprintf("collector says no (%d): schema mismatch", tc.status)
			c.setAnswer(func(req, _, _ int) (int, http.Header, string) {
				if req < 4 {
					return tc.status, nil, msg
				}
				return http.StatusOK, nil, "ok"
			})
			f := newFixture(t)
			f.cfg.Upload = uploadCfg(srv.URL)
			f.cfg.Upload.MaxEvents = tc.maxEvents
			l, logs := openLogged(t, f)
			appendN(t, l, 0, 30)
			waitDelivered(t, c, l, 30)
			st, _ := l.UploadStatus()
			if st.Failures != 0 || st.LastStatus != tc.status || !strings.Contains(st.LastError, msg) || st.LastErrorAt.IsZero() {
				t.Fatalf("upload status %+v: want last status %d with the body", st, tc.status)
			}
			out := logs.String()
			alarmed := strings.Contains(out, "alarm=true")
			if alarmed != tc.alarm {
				t.Fatalf("alarm logged: %v, want %v:\n%s", alarmed, tc.alarm, out)
			}
			if tc.alarm && (!strings.Contains(out, fmt.Sprintf("status=%d", tc.status)) || !strings.Contains(out, "schema mismatch")) {
				t.Fatalf("the alarm does not name the status and body:\n%s", out)
			}
		})
	}
}

// Retry-After is honoured, up to max_backoff.
func TestUploadRetryAfter(t *testing.T) {
	cases := []struct {
		name       string
		status     int
		retryAfter func() string
		maxBackoff time.Duration
		minGap     time.Duration
		maxGap     time.Duration
	}{
		{"429 seconds", http.StatusTooManyRequests, func() string { return "1" }, 5 * time.Second, 900 * time.Millisecond, 4 * time.Second},
		{"503 http date", http.StatusServiceUnavailable, func() string { return time.Now().Add(2 * time.Second).UTC().Format(http.TimeFormat) }, 5 * time.Second, 900 * time.Millisecond, 4 * time.Second},
		{"capped at max_backoff", http.StatusTooManyRequests, func() string { return "3600" }, 200 * time.Millisecond, 0, 2 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, srv := newTestCollector(t)
			c.setAnswer(func(req, _, _ int) (int, http.Header, string) {
				if req == 0 {
					return tc.status, http.Header{"Retry-After": {tc.retryAfter()}}, "later"
				}
				return http.StatusNoContent, nil, ""
			})
			f := newFixture(t)
			f.cfg.Upload = uploadCfg(srv.URL)
			f.cfg.Upload.MaxBackoff = tc.maxBackoff
			l, _ := openLogged(t, f)
			appendN(t, l, 0, 5)
			waitDelivered(t, c, l, 5)
			_, _, answers := c.snapshot()
			if gap := answers[1].at.Sub(answers[0].at); gap < tc.minGap || gap > tc.maxGap {
				t.Fatalf("retried after %s, want %s..%s", gap, tc.minGap, tc.maxGap)
			}
		})
	}
}

// bigEntry is entry(i) with an incompressible header of n characters.
func appendBig(t *testing.T, l *Log, i, n int) {
	t.Helper()
	e := entry(t, i)
	raw := make([]byte, n*3/4)
	_, _ = crand.Read(raw)
	e.Input.Request.Headers["x-big"] = []string{base64.StdEncoding.EncodeToString(raw)}
	if err := l.Append(context.Background(), e); err != nil {
		t.Fatal(err)
	}
}

// Batches are cut by compressed size as well as by count: no body exceeds
// upload_size_limit_bytes except one carrying a single event that alone does.
func TestUploadBatchesWithinSizeLimit(t *testing.T) {
	cases := []struct {
		name      string
		limit     int64
		bigEvery  int // every bigEvery-th event is oversized (0: none)
		bigChars  int
		wantMulti bool // some batch carries several events
	}{
		{"8 KiB", 8 << 10, 0, 0, true},
		{"12 KiB, oversized events", 12 << 10, 7, 40000, true},
		{"default 32 KiB, oversized events", 0, 5, 60000, true},
		{"below one event: one event per POST", 1, 0, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, srv := newTestCollector(t)
			f := newFixture(t)
			f.cfg.Upload = uploadCfg(srv.URL)
			f.cfg.Upload.UploadSizeLimitBytes = tc.limit
			l, _ := openLogged(t, f)
			limit := l.cfg.Upload.UploadSizeLimitBytes
			big := map[string]bool{}
			for i := range 150 {
				if tc.bigEvery > 0 && i%tc.bigEvery == 3 {
					appendBig(t, l, i, tc.bigChars)
					big[fmt.Sprintf("dec-%06d", i)] = true
				} else {
					appendN(t, l, i, 1)
				}
			}
			waitDelivered(t, c, l, 150)
			_, accepted, _ := c.snapshot()
			multi, over := false, 0
			for _, b := range accepted {
				multi = multi || b.events > 1
				if int64(b.size) > limit {
					if b.events != 1 || !big[b.ids[0]] && tc.limit > 1 {
						t.Fatalf("a body of %d bytes (limit %d) carries %d events %v", b.size, limit, b.events, b.ids)
					}
					over++
				}
			}
			if multi != tc.wantMulti {
				t.Fatalf("batches with several events: %v, want %v", multi, tc.wantMulti)
			}
			if len(big) > 0 && over != len(big) {
				t.Fatalf("%d bodies over the limit, want one per oversized event (%d)", over, len(big))
			}
			sizes := []int{}
			for _, a := range accepted {
				sizes = append(sizes, a.size, a.events)
			}
			t.Logf("accepted (bytes, events) %v", sizes)
		})
	}
}

// batch keeps the compressed body within the limit for any data, compressible or not.
func TestUploadBatchBound(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	gens := map[string]func(n int) []byte{
		"random bytes": func(n int) []byte {
			b := make([]byte, n)
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
			return b
		},
		"json": func(n int) []byte {
			words := []string{"allow", "deny", "mask", "contact.email", "user.financial", "\"trace\"", "42", "consentry/decision"}
			var b strings.Builder
			fmt.Fprintf(&b, `{"decision_id":"dec-%d","pad":"`, rng.Int())
			for b.Len() < n {
				b.WriteString(words[rng.IntN(len(words))])
			}
			b.WriteString(`"}`)
			return []byte(b.String())
		},
	}
	for _, limit := range []int64{64, 256, 1024, 4096, 32 << 10, 128 << 10} {
		for name, gen := range gens {
			t.Run(fmt.Sprintf("%s/%d", name, limit), func(t *testing.T) {
				for range 8 {
					b := newBatch(limit)
					var want [][]byte
					for {
						ev := gen(1 + rng.IntN(int(min(limit, 8000))))
						if !b.add(ev) {
							break
						}
						want = append(want, ev)
						if len(want) > 100000 {
							t.Fatal("batch never full")
						}
					}
					body, err := b.close()
					if err != nil {
						t.Fatal(err)
					}
					if int64(len(body)) > limit && len(want) > 1 {
						t.Fatalf("%d events in %d bytes, limit %d", len(want), len(body), limit)
					}
					zr, err := gzip.NewReader(bytes.NewReader(body))
					if err != nil {
						t.Fatal(err)
					}
					got, err := io.ReadAll(zr)
					if err != nil {
						t.Fatal(err)
					}
					if exp := append(append([]byte{'['}, bytes.Join(want, []byte{','})...), ']'); !bytes.Equal(got, exp) {
						t.Fatal("body does not decompress to the events")
					}
				}
			})
		}
	}
}
