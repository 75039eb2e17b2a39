package bundle_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/bundle"
	"github.com/consentry/consentry/sidecar/bundle/bundletest"
)

// bundleServer is a real HTTP bundle server speaking OPA's protocol: ETag/If-None-Match,
// and (when longPoll) holding requests that send "Prefer: ...wait=N" until a new bundle
// is published.
type bundleServer struct {
	mu       sync.Mutex
	raw      []byte
	etag     string
	changed  chan struct{}
	longPoll bool
	fail     int           // answer 500 to this many requests first
	hang     time.Duration // hold every request this long before answering
	prefers  []string
	status   map[int]int
}

func newBundleServer(raw []byte, longPoll bool) *bundleServer {
	s := &bundleServer{changed: make(chan struct{}), longPoll: longPoll, status: map[int]int{}}
	s.publish(raw)
	return s
}

func (s *bundleServer) publish(raw []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sum := sha256.Sum256(raw)
	s.raw, s.etag = raw, `"`+hex.EncodeToString(sum[:8])+`"`
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *bundleServer) count(code int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status[code]
}

func (s *bundleServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.prefers = append(s.prefers, r.Header.Get("Prefer"))
	if s.fail > 0 {
		s.fail--
		s.status[500]++
		s.mu.Unlock()
		http.Error(w, "down", http.StatusInternalServerError)
		return
	}
	hang := s.hang
	s.mu.Unlock()
	if hang > 0 {
		select {
		case <-time.After(hang):
		case <-r.Context().Done():
			return
		}
	}
	s.mu.Lock()
	raw, etag, changed := s.raw, s.etag, s.changed
	s.mu.Unlock()
	ct := "application/gzip"
	if s.longPoll {
		ct = "application/vnd.openpolicyagent.bundles"
	}
	w.Header().Set("Content-Type", ct)
	if r.Header.Get("If-None-Match") == etag {
		wait := 0
		if _, after, ok := strings.Cut(r.Header.Get("Prefer"), "wait="); ok && s.longPoll {
			wait, _ = strconv.Atoi(after)
		}
		select {
		case <-changed:
			s.mu.Lock()
			raw, etag = s.raw, s.etag
			s.mu.Unlock()
		case <-time.After(time.Duration(wait) * time.Second):
			s.note(304)
			w.WriteHeader(http.StatusNotModified)
			return
		case <-r.Context().Done():
			return
		}
	}
	s.note(200)
	w.Header().Set("ETag", etag)
	_, _ = w.Write(raw)
}

func (s *bundleServer) note(code int) {
	s.mu.Lock()
	s.status[code]++
	s.mu.Unlock()
}

func fastPolling() bundle.PollingConfig {
	return bundle.PollingConfig{MinDelay: 20 * time.Millisecond, MaxDelay: 40 * time.Millisecond, MinRetryDelay: 10 * time.Millisecond}
}

func TestHTTPSourceETagPersistenceAndStartWhenServerDown(t *testing.T) {
	es := bundletest.DevES256(t)
	srv := newBundleServer(signedBundle(t, "1", es, ""), false)
	ts := httptest.NewServer(srv)
	persist := t.TempDir()
	cfg := bundle.Config{URL: ts.URL + "/bundles/consentry.tar.gz", PersistDir: persist, Polling: fastPolling()}

	f := newFixture(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = f.mgr.Run(ctx) }()
	eventually(t, 30*time.Second, "revision 1", revisionIs(f.mgr, "1"))
	eventually(t, 20*time.Second, "conditional polls answered 304", func() bool { return srv.count(304) >= 3 })
	if srv.count(200) != 1 {
		t.Fatalf("bundle downloaded %d times; ETag polling should download it once", srv.count(200))
	}
	srv.publish(signedBundle(t, "2", es, ""))
	eventually(t, 20*time.Second, "revision 2", revisionIs(f.mgr, "2"))
	cancel()
	<-done

	meta, err := os.ReadFile(filepath.Join(persist, "consentry", "meta.json"))
	if err != nil || !strings.Contains(string(meta), `"revision": "2"`) {
		t.Fatalf("persisted metadata: %s %v", meta, err)
	}

	// Bundle server down: a new sidecar starts on the persisted bundle.
	ts.Close()
	g := newFixture(t, cfg)
	g.run(t)
	wctx, wcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer wcancel()
	if err := g.mgr.WaitActive(wctx); err != nil {
		t.Fatal("did not start on the persisted bundle: ", err)
	}
	if a := g.mgr.Active(); a.Revision != "2" || !strings.HasPrefix(a.Source, "persisted:") {
		t.Fatalf("active %+v", a)
	}
	eventually(t, 20*time.Second, "fetch errors counted", func() bool { return g.counter("consentry_bundle_fetch_errors_total") >= 1 })
	st := g.mgr.Status().(bundle.Status)
	if st.LastFetchError == "" || !st.Ready {
		t.Fatalf("status: %+v", st)
	}

	// A persisted bundle altered on disk is verified again and refused.
	bpath := filepath.Join(persist, "consentry", "bundle.tar.gz")
	raw, _ := os.ReadFile(bpath)
	tampered := bundletest.Rewrite(t, raw, func(files map[string][]byte) {
		files["data.json"] = []byte(`{"consentry":{"catalog":{"purposes":{}}}}`)
	})
	if err := os.WriteFile(bpath, tampered, 0o600); err != nil {
		t.Fatal(err)
	}
	h := newFixture(t, cfg)
	h.run(t)
	eventually(t, 20*time.Second, "hash_mismatch rejection of the persisted bundle", func() bool { return h.rejections(bundle.ReasonHashMismatch) == 1 })
	if h.mgr.Ready(context.Background()) == nil {
		t.Fatal("ready on a tampered persisted bundle")
	}
}

func TestHTTPSourceLongPolling(t *testing.T) {
	es := bundletest.DevES256(t)
	srv := newBundleServer(signedBundle(t, "1", es, ""), true)
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	// Polling an hour apart: only a held (long-poll) request can see revision 2 in time.
	f := newFixture(t, bundle.Config{URL: ts.URL, NoPersist: true, Polling: bundle.PollingConfig{
		MinDelay: time.Hour, MaxDelay: time.Hour, LongPollTimeout: 20 * time.Second}})
	f.run(t)
	eventually(t, 30*time.Second, "revision 1", revisionIs(f.mgr, "1"))
	time.Sleep(200 * time.Millisecond) // the next request is now held by the server
	start := time.Now()
	srv.publish(signedBundle(t, "2", es, ""))
	// 15 s: room for a slow activation on a busy machine, yet below the 20 s long-poll
	// timeout and far below the hour between plain polls.
	eventually(t, 15*time.Second, "revision 2 via long poll", revisionIs(f.mgr, "2"))
	t.Logf("new bundle active %s after publish", time.Since(start))
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if len(srv.prefers) < 2 || srv.prefers[1] != "modes=snapshot;wait=20" {
		t.Fatalf("Prefer headers %q", srv.prefers)
	}
}

func TestHTTPSourceBackoffAndRejectedBundle(t *testing.T) {
	es := bundletest.DevES256(t)
	srv := newBundleServer(signedBundle(t, "1", es, ""), false)
	srv.fail = 3
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	f := newFixture(t, bundle.Config{URL: ts.URL, NoPersist: true, Polling: fastPolling()})
	f.run(t)
	eventually(t, 30*time.Second, "revision 1 after the server recovered", revisionIs(f.mgr, "1"))
	if got := f.counter("consentry_bundle_fetch_errors_total"); got != 3 {
		t.Fatalf("fetch errors %v, want 3", got)
	}
	// The server now offers a tampered bundle: rejected once (its ETag is remembered, so
	// it is not downloaded and rejected again on every poll), revision 1 stays active.
	good2 := signedBundle(t, "2", es, "")
	srv.publish(bundletest.Rewrite(t, good2, func(files map[string][]byte) {
		files["consentry/backdoor.rego"] = []byte("package consentry.backdoor\n\nallow := true\n")
	}))
	eventually(t, 20*time.Second, "extra_file rejection", func() bool { return f.rejections(bundle.ReasonExtraFile) == 1 })
	polls := srv.count(304)
	eventually(t, 20*time.Second, "more polls", func() bool { return srv.count(304) > polls+3 })
	if got := f.rejections(bundle.ReasonExtraFile); got != 1 {
		t.Fatalf("the same rejected bundle was rejected %v times", got)
	}
	if a := f.mgr.Active(); a.Revision != "1" {
		t.Fatalf("active %s", a.Revision)
	}
	srv.publish(good2)
	eventually(t, 20*time.Second, "revision 2", revisionIs(f.mgr, "2"))
}

func TestHTTPSourceTimeout(t *testing.T) {
	es := bundletest.DevES256(t)
	srv := newBundleServer(signedBundle(t, "1", es, ""), false)
	srv.hang = time.Hour
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	f := newFixture(t, bundle.Config{URL: ts.URL, NoPersist: true, Timeout: 100 * time.Millisecond, Polling: fastPolling()})
	f.run(t)
	eventually(t, 20*time.Second, "timed-out fetches", func() bool { return f.counter("consentry_bundle_fetch_errors_total") >= 2 })
	st := f.mgr.Status().(bundle.Status)
	if st.Ready || !strings.Contains(st.LastFetchError, "deadline") {
		t.Fatalf("status %+v", st)
	}
	ts.CloseClientConnections()
}

// A server that claims long polling but ignores ETags (always 200, no ETag) must not be
// hammered in a tight loop.
func TestHTTPSourceNoTightLoop(t *testing.T) {
	raw := signedBundle(t, "1", bundletest.DevES256(t), "")
	var mu sync.Mutex
	requests := 0
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		requests++
		mu.Unlock()
		w.Header().Set("Content-Type", "application/vnd.openpolicyagent.bundles")
		_, _ = w.Write(raw)
	}))
	t.Cleanup(ts.Close)
	f := newFixture(t, bundle.Config{URL: ts.URL, NoPersist: true, Polling: bundle.PollingConfig{
		MinDelay: 200 * time.Millisecond, MaxDelay: 300 * time.Millisecond, LongPollTimeout: 10 * time.Second}})
	f.run(t)
	eventually(t, 30*time.Second, "revision 1", revisionIs(f.mgr, "1"))
	mu.Lock()
	start := requests
	mu.Unlock()
	time.Sleep(1200 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if n := requests - start; n > 8 {
		t.Fatalf("%d requests in 1.2s against a server that cannot long-poll", n)
	}
}
