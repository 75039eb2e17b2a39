package engine

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
)

// evaluators runs evaluations on a bounded set of long-lived goroutines.
//
// Why: OPA's evaluator recurses deeply (continuation-passing unification), so one decision of
// the default library uses a stack of a few hundred KiB. A goroutine starts with a few KiB
// and grows its stack by doubling and copying it, so a decision evaluated on a fresh goroutine
// - gRPC starts one per stream, the pipeline one per list-page slice - paid for five or six
// stack copies: measured side by side, 240 µs per decision instead of 100 µs, and 34% of the
// ext_authz server's CPU was runtime.copystack (BENCHMARKS.md, round 5). A worker keeps the
// stack it grew, so only its first decisions pay (and the few after a collection shrank an
// idle worker's stack).
//
// The bound also admits work: evaluation is CPU-bound, so more concurrent evaluations than a
// small multiple of the cores only adds context switches; callers beyond it wait in FIFO
// order, and a caller whose deadline passes while it waits is denied (engine.timeout) instead
// of queueing without end.
type evaluators struct {
	jobs    chan *evalJob
	max     int32
	started atomic.Int32
	// busy counts jobs being evaluated, waiting the callers waiting for a free worker (the
	// sidecar exports both as gauges: a pool that is always busy with callers waiting is an
	// overloaded sidecar, before timeouts show it).
	busy, waiting atomic.Int64
}

// evalJob is one evaluation handed to a worker; done is reused through jobPool.
type evalJob struct {
	f        func()
	panicked any
	done     chan struct{}
}

var jobPool = sync.Pool{New: func() any { return &evalJob{done: make(chan struct{}, 1)} }}

// newEvaluators returns a pool of n workers (Config.evaluators), or nil for n <= 0: evaluate
// on the caller's goroutine.
func newEvaluators(n int) *evaluators {
	if n <= 0 {
		return nil
	}
	return &evaluators{jobs: make(chan *evalJob), max: int32(n)}
}

// run calls f on a worker and returns when it has returned. Workers start on demand, up to the
// bound; beyond it run waits for a free worker until ctx is done, and then returns ctx's error
// without calling f. A panic in f is returned as an error and the worker lives on.
func (p *evaluators) run(ctx context.Context, f func()) error {
	if p == nil {
		if pv := callRecovering(f); pv != nil {
			return fmt.Errorf("evaluation panicked: %v", pv)
		}
		return nil
	}
	j := jobPool.Get().(*evalJob)
	j.f, j.panicked = f, nil
	defer func() { j.f, j.panicked = nil, nil; jobPool.Put(j) }()
	select {
	case p.jobs <- j: // an idle worker took it
	default:
		if p.started.Add(1) <= p.max {
			go p.work(j)
		} else {
			p.started.Add(-1)
			p.waiting.Add(1)
			select {
			case p.jobs <- j:
				p.waiting.Add(-1)
			case <-ctx.Done():
				p.waiting.Add(-1)
				return fmt.Errorf("no evaluator became free in time: %w", ctx.Err())
			}
		}
	}
	<-j.done
	if j.panicked != nil {
		return fmt.Errorf("evaluation panicked: %v", j.panicked)
	}
	return nil
}

// work runs jobs for the life of the process. Workers do not exit when idle: an idle worker
// holds only the stack a collection has shrunk, and exiting would bring back the cost the
// pool exists to avoid.
func (p *evaluators) work(j *evalJob) {
	for {
		p.busy.Add(1)
		j.call()
		p.busy.Add(-1)
		j.done <- struct{}{}
		j = <-p.jobs
	}
}

func (j *evalJob) call() { j.panicked = callRecovering(j.f) }

// callRecovering calls f and returns what it panicked with, or nil.
func callRecovering(f func()) (panicked any) {
	defer func() { panicked = recover() }()
	f()
	return nil
}
