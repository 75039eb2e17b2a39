package auditlog

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/consentry/consentry/sidecar/input"
)

func TestStrictAppendFailsWhenWriteFails(t *testing.T) {
	f := newFixture(t)
	l := f.open(t)
	appendN(t, l, 0, 3)
	// Pull the file out from under the writer: the next group commit cannot be written.
	l.seg.Close()
	err := l.Append(context.Background(), entry(t, 3))
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("append after write failure: %v", err)
	}
	if err := l.Append(context.Background(), entry(t, 4)); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("broken log accepted an append: %v", err)
	}
	if err := l.Healthy(); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("broken log reports healthy: %v", err)
	}
	l.Close()
	// What was acknowledged is intact; the log reopens and continues.
	l = f.open(t)
	appendN(t, l, 5, 2)
	l.Close()
	rep := f.verify(t)
	if !rep.OK() || rep.Decisions != 5 {
		t.Fatalf("after failure: %+v", rep)
	}
}

func TestStrictAppendHonoursContext(t *testing.T) {
	f := newFixture(t)
	l := f.open(t)
	defer l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.Append(ctx, entry(t, 0)); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("cancelled append: %v", err)
	}
}

// blockingWriter stalls the writer goroutine (through the stdout sink) until released, so the
// async buffer fills deterministically.
type blockingWriter struct {
	release chan struct{}
	writes  atomic.Int32
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	if w.writes.Add(1) > 1 { // the open checkpoint passes, the first batch blocks
		<-w.release
	}
	return len(p), nil
}

func TestAsyncDropsAreCounted(t *testing.T) {
	f := newFixture(t)
	f.cfg.Mode = ModeAsync
	f.cfg.QueueSize = 4
	f.cfg.Stdout = true
	f.cfg.AsyncFsyncInterval = 10 * time.Millisecond
	w := &blockingWriter{release: make(chan struct{})}
	l, err := Open(f.cfg, Options{Stdout: w})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		if err := l.Append(context.Background(), entry(t, i)); err != nil {
			t.Fatal(err)
		}
	}
	close(w.release)
	l.Close()
	dropped := counterValue(l.m.dropped)
	written := counterValue(l.m.events)
	if dropped == 0 || dropped+written != 50 {
		t.Fatalf("dropped %v written %v, want a positive drop count summing to 50", dropped, written)
	}
	rep := f.verify(t)
	if !rep.OK() || rep.Decisions != int(written) {
		t.Fatalf("async log: %+v", rep)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{Dir: "x", UnsignedCheckpoints: true}.WithDefaults()
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	cases := map[string]func(c *Config){
		"decision_log.mode":              func(c *Config) { c.Mode = "best-effort" },
		"decision_log.dir":               func(c *Config) { c.Dir = "" },
		"decision_log.signing_key_file":  func(c *Config) { c.UnsignedCheckpoints = false },
		"decision_log.mask[0]":           func(c *Config) { c.Mask = []MaskRule{{Op: "remove", Path: "/result/allow"}} },
		"decision_log.upload.url":        func(c *Config) { c.Upload = &UploadConfig{URL: "ftp://x"} },
		"decision_log.checkpoint_every":  func(c *Config) { c.CheckpointEvery = -1 },
		"decision_log.preallocate_bytes": func(c *Config) { c.PreallocateBytes = 100 },
	}
	for key, mut := range cases {
		c := ok
		mut(&c)
		c = c.WithDefaults()
		if err := c.Validate(); err == nil || !startsWith(err.Error(), key) {
			t.Errorf("%s: got %v", key, err)
		}
	}
}

func startsWith(s, p string) bool { return len(s) >= len(p) && s[:len(p)] == p }

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	_ = c.Write(&m)
	return m.GetCounter().GetValue()
}

type failingSource struct{}

func (failingSource) MaskRules(context.Context, *input.Input) ([]MaskRule, error) {
	return nil, errors.New("policy unavailable")
}

func TestFailingMaskSourceErasesInputButLogs(t *testing.T) {
	f := newFixture(t)
	l, err := Open(f.cfg, Options{MaskSource: failingSource{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Append(context.Background(), entry(t, 0)); err != nil {
		t.Fatal(err)
	}
	l.Close()
	n := 0
	_ = ScanEvents(f.dir, func(ev *Event, _ []byte) error {
		if ev.Type == TypeDecision {
			n++
			if string(ev.Input) != "null" || !slices.Contains(ev.Erased, "/input") {
				t.Errorf("input not erased: %s %v", ev.Input, ev.Erased)
			}
			// The rules that failed might have hidden any input value: its top-level copies
			// go with it; the decision itself is still logged.
			if ev.Purpose != "" || ev.Subject != nil || ev.CaseID != "" || ev.Action != "" {
				t.Errorf("copies of the erased input kept: purpose %q subject %+v case %q action %q", ev.Purpose, ev.Subject, ev.CaseID, ev.Action)
			}
			if ev.Outcome == "" || ev.DecisionID == "" || ev.Customer == "" {
				t.Errorf("decision not logged: %+v", ev)
			}
		}
		return nil
	})
	if n != 1 {
		t.Fatalf("%d decisions logged", n)
	}
}

type flakySigner struct {
	*Ed25519Signer
	calls, fail int
}

func (s *flakySigner) Sign(ctx context.Context, msg []byte) ([]byte, error) {
	s.calls++
	if s.calls <= s.fail {
		return nil, errors.New("signer unreachable")
	}
	return s.Ed25519Signer.Sign(ctx, msg)
}

// TestSignerOutageDoesNotStallAppends: appends keep succeeding while the signer fails, signing
// is retried once per interval (not per batch), and the verifier reports the gap honestly.
func TestSignerOutageDoesNotStallAppends(t *testing.T) {
	f := newFixture(t)
	fs := &flakySigner{Ed25519Signer: f.signer, fail: 1 << 30}
	f.cfg.CheckpointEvery = 2
	l, err := Open(f.cfg, Options{Signer: fs})
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, l, 0, 20)
	if fs.calls > 2 {
		t.Fatalf("signer called %d times during the outage", fs.calls)
	}
	fs.fail = 0
	l.Close() // the close checkpoint is attempted regardless of the hold, and succeeds
	if fs.calls != 2 {
		t.Fatalf("signer called %d times, want open + close", fs.calls)
	}
	rep := f.verify(t)
	if rep.OK() || !strings.Contains(kindsOf(rep), ProblemCheckpointMiss) || rep.Decisions != 20 {
		t.Fatalf("outage not reported or decisions lost: %+v", rep)
	}
}
