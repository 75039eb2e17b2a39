package engine

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/decision"
)

func TestEvaluatorsRunAndSurvivePanics(t *testing.T) {
	for _, tc := range []struct {
		name string
		pool *evaluators
	}{
		{"pool", newEvaluators(2)},
		{"caller's goroutine", newEvaluators(-1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ran := false
			if err := tc.pool.run(context.Background(), func() { ran = true }); err != nil || !ran {
				t.Fatalf("run: err %v, ran %v", err, ran)
			}
			err := tc.pool.run(context.Background(), func() { panic("boom") })
			if err == nil || err.Error() != "evaluation panicked: boom" {
				t.Fatalf("a panic must come back as an error, got %v", err)
			}
			// The worker that recovered the panic serves the next job.
			for i := 0; i < 5; i++ {
				ran = false
				if err := tc.pool.run(context.Background(), func() { ran = true }); err != nil || !ran {
					t.Fatalf("run after a panic: err %v, ran %v", err, ran)
				}
			}
		})
	}
}

func TestEvaluatorsDefaultSize(t *testing.T) {
	if n := New(Config{}, nil).EvaluatorStats().Bound; n != 4*runtime.GOMAXPROCS(0) {
		t.Fatalf("default pool: %d evaluators, want four per core", n)
	}
	if newEvaluators(-1) != nil {
		t.Fatal("-1 must evaluate on the caller's goroutine")
	}
	if n := New(Config{Evaluators: 5}, nil).EvaluatorStats().Bound; n != 5 {
		t.Fatalf("EvaluatorStats().Bound = %d, want 5", n)
	}
	if n := New(Config{Evaluators: -1}, nil).EvaluatorStats().Bound; n != 0 {
		t.Fatalf("inline: EvaluatorStats().Bound = %d, want 0", n)
	}
	// Policies that may wait on the network get a larger default bound; a configured one stays.
	procs := runtime.GOMAXPROCS(0)
	for _, tc := range []struct {
		cfg  Config
		want int
	}{
		{Config{}, 4 * procs},
		{Config{AllowHTTPSend: true}, 64 * procs},
		{Config{AllowNet: true}, 64 * procs},
		{Config{AllowHTTPSend: true, Evaluators: 3}, 3},
		{Config{AllowNet: true, Evaluators: -1}, -1},
	} {
		if got := tc.cfg.evaluators(); got != tc.want {
			t.Errorf("%+v: %d evaluators, want %d", tc.cfg, got, tc.want)
		}
	}
}

// The pool never runs more than its bound at once, every job runs exactly once, and callers
// beyond the bound wait rather than fail.
func TestEvaluatorsBound(t *testing.T) {
	const bound, callers = 3, 40
	p := newEvaluators(bound)
	var running, peak, done atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < callers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := p.run(context.Background(), func() {
				n := running.Add(1)
				for {
					m := peak.Load()
					if n <= m || peak.CompareAndSwap(m, n) {
						break
					}
				}
				time.Sleep(2 * time.Millisecond)
				running.Add(-1)
				done.Add(1)
			})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if done.Load() != callers {
		t.Fatalf("%d of %d jobs ran", done.Load(), callers)
	}
	if peak.Load() > bound {
		t.Fatalf("%d ran at once, bound %d", peak.Load(), bound)
	}
	if b, w := p.busy.Load(), p.waiting.Load(); b != 0 || w != 0 {
		t.Fatalf("after the run: %d busy, %d waiting", b, w)
	}
	if p.started.Load() > bound {
		t.Fatalf("%d workers started, bound %d", p.started.Load(), bound)
	}
}

// A caller whose deadline passes while every worker is busy gets the context's error and its
// job never runs.
func TestEvaluatorsDeadlineWhileWaiting(t *testing.T) {
	p := newEvaluators(1)
	release := make(chan struct{})
	busy := make(chan struct{})
	go func() { _ = p.run(context.Background(), func() { close(busy); <-release }) }()
	<-busy
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	ran := false
	sawWaiting := make(chan int64, 1)
	go func() {
		// While the caller below waits: the blocked job busy, the caller waiting.
		for p.waiting.Load() == 0 && ctx.Err() == nil {
			time.Sleep(100 * time.Microsecond)
		}
		sawWaiting <- p.busy.Load()
	}()
	err := p.run(ctx, func() { ran = true })
	if b := <-sawWaiting; b != 1 {
		t.Errorf("%d busy while one job blocked the only worker", b)
	}
	if w := p.waiting.Load(); w != 0 {
		t.Errorf("%d still waiting after the deadline", w)
	}
	close(release)
	if !errors.Is(err, context.DeadlineExceeded) || ran {
		t.Fatalf("err %v, ran %v: want the deadline's error and no run", err, ran)
	}
}

// Through the engine: a decision that cannot get an evaluator before its deadline is a deny
// with engine.timeout (fail closed), and the same engine decides normally afterwards.
func TestDecideDeniesWhenNoEvaluatorIsFree(t *testing.T) {
	e := loadLibrary(t)
	e.pool = newEvaluators(1)
	release := make(chan struct{})
	busy := make(chan struct{})
	go func() { _ = e.pool.run(context.Background(), func() { close(busy); <-release }) }()
	<-busy
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	res, err := e.Decide(ctx, exampleInput(t))
	close(release)
	var ce *Error
	if !errors.As(err, &ce) || ce.Code != decision.ReasonEngineTimeout || res.Decision.Allow || res.Decision.Status != http.StatusServiceUnavailable {
		t.Fatalf("got %+v, %v: want a 503 deny with %s", res.Decision, err, decision.ReasonEngineTimeout)
	}
	res, err = e.Decide(context.Background(), exampleInput(t))
	if err != nil || !res.Decision.Allow {
		t.Fatalf("after the pool freed up: %+v, %v", res.Decision, err)
	}
}

// The pool and the caller's goroutine give the same decisions.
func TestDecideOnCallersGoroutine(t *testing.T) {
	pooled := loadLibrary(t)
	inline := loadLibrary(t)
	inline.pool = newEvaluators(-1)
	in := exampleInput(t)
	a, errA := pooled.Decide(context.Background(), in)
	b, errB := inline.Decide(context.Background(), in)
	if errA != nil || errB != nil {
		t.Fatal(errA, errB)
	}
	if !a.Decision.Allow || !reflect.DeepEqual(a.Decision, b.Decision) {
		t.Fatalf("pooled %+v, inline %+v", a.Decision, b.Decision)
	}
}
