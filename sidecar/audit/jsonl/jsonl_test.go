package jsonl

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/audit"
	"github.com/consentry/consentry/sidecar/decision"
)

func TestAppendConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decisions.jsonl")
	s, err := Open(path, true)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e := &audit.Entry{DecisionID: "d", Timestamp: time.Now(), Path: "consentry/decision",
				Decision: decision.Deny(403, "x", "y"), Bundles: map[string]string{"main": "r1"}}
			if err := s.Append(context.Background(), e); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(path)
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var ev map[string]any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("line %d: %v", n, err)
		}
		if ev["bundles"].(map[string]any)["main"].(map[string]any)["revision"] != "r1" || ev["result"].(map[string]any)["status"].(float64) != 403 {
			t.Fatalf("event %v", ev)
		}
		n++
	}
	if n != 50 {
		t.Fatalf("%d lines", n)
	}
	if err := s.Append(context.Background(), &audit.Entry{}); err != ErrClosed {
		t.Fatalf("append after close: %v", err)
	}
}

type failing struct{}

func (failing) Write([]byte) (int, error) { return 0, os.ErrClosed }

func TestWriteErrorSurfaces(t *testing.T) {
	if err := New(failing{}).Append(context.Background(), &audit.Entry{}); err == nil {
		t.Fatal("write error swallowed")
	}
}

// gatedWriter blocks its first Write until released and records every Write.
type gatedWriter struct {
	mu      sync.Mutex
	gate    chan struct{}
	started chan struct{}
	writes  [][]byte
	fail    bool
}

func (g *gatedWriter) Write(p []byte) (int, error) {
	g.mu.Lock()
	first := len(g.writes) == 0
	g.writes = append(g.writes, append([]byte(nil), p...))
	fail := g.fail && !first
	g.mu.Unlock()
	if first {
		close(g.started)
		<-g.gate
	}
	if fail {
		return 0, os.ErrClosed
	}
	return len(p), nil
}

// TestGroupCommit: lines arriving during a write go out together in the next write, whole,
// and each Append returns that write's outcome.
func TestGroupCommit(t *testing.T) {
	for _, fail := range []bool{false, true} {
		g := &gatedWriter{gate: make(chan struct{}), started: make(chan struct{}), fail: fail}
		s := New(g)
		entry := func(id string) *audit.Entry {
			return &audit.Entry{DecisionID: id, Timestamp: time.Now(), Path: "consentry/decision", Decision: decision.Deny(403, "x", "y")}
		}
		first := make(chan error, 1)
		go func() { first <- s.Append(context.Background(), entry("first")) }()
		<-g.started
		const n = 20
		errs := make(chan error, n)
		for i := 0; i < n; i++ {
			go func() { errs <- s.Append(context.Background(), entry("queued")) }()
		}
		// Wait until every line is queued behind the blocked write (20s: the 20 goroutines may
		// be slow to run on a busy machine).
		for deadline := time.Now().Add(20 * time.Second); ; {
			s.mu.Lock()
			queued := 0
			if s.pending != nil {
				queued = bytes.Count(*s.pending.buf, []byte("\n"))
			}
			s.mu.Unlock()
			if queued == n {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("only %d lines queued", queued)
			}
			time.Sleep(time.Millisecond)
		}
		close(g.gate)
		if err := <-first; err != nil {
			t.Fatal(err)
		}
		for i := 0; i < n; i++ {
			if err := <-errs; (err != nil) != fail {
				t.Fatalf("fail=%v: append error %v", fail, err)
			}
		}
		if len(g.writes) != 2 {
			t.Fatalf("%d writes, want 2 (one blocked, one batch)", len(g.writes))
		}
		lines := bytes.Split(bytes.TrimSuffix(g.writes[1], []byte("\n")), []byte("\n"))
		if len(lines) != n {
			t.Fatalf("batch of %d lines", len(lines))
		}
		for _, l := range lines {
			var ev map[string]any
			if err := json.Unmarshal(l, &ev); err != nil || ev["decision_id"] != "queued" {
				t.Fatalf("line %q: %v", l, err)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

type panicking struct{ n int }

func (p *panicking) Write(b []byte) (int, error) {
	p.n++
	if p.n == 1 {
		panic("disk on fire")
	}
	return len(b), nil
}

// TestWriterPanicIsAnError: a panicking writer fails that Append and leaves the sink usable.
func TestWriterPanicIsAnError(t *testing.T) {
	s := New(&panicking{})
	if err := s.Append(context.Background(), &audit.Entry{}); err == nil {
		t.Fatal("panic swallowed")
	}
	done := make(chan error, 1)
	go func() { done <- s.Append(context.Background(), &audit.Entry{}) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second): // a wedged sink never answers; generous for a busy machine
		t.Fatal("sink wedged after a panic")
	}
}
