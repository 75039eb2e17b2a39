package consent

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
)

// Group commit. A durable commit costs a disk flush (~0.5-2 ms on ordinary disks), which
// would cap one-event-per-transaction writes at a few hundred per second. Concurrent
// single-event appends are therefore queued and written together, one transaction (one
// flush) per batch; each caller still returns only after its own event is durable. An
// idle store pays nothing: a lone write goes out at once as a batch of one.

const maxGroup = 256

type appendReq struct {
	ev   Event
	done chan appendResp
}

type appendResp struct {
	res AppendResult
	err error
}

type groupCommitter struct {
	reqs     chan *appendReq
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
	commit   func(ctx context.Context, evs []Event) ([]AppendResult, error)
	// batches and events count commits and the events in them (events/batches is the
	// grouping factor, shown in /status).
	batches, events atomic.Int64
}

var errClosed = errors.New("state store closed")

// newGroupCommitter starts workers; several let one batch fill while others commit.
func newGroupCommitter(workers int, commit func(ctx context.Context, evs []Event) ([]AppendResult, error)) *groupCommitter {
	g := &groupCommitter{reqs: make(chan *appendReq, maxGroup*workers), stop: make(chan struct{}), commit: commit}
	for i := 0; i < workers; i++ {
		g.wg.Add(1)
		go g.work()
	}
	return g
}

func (g *groupCommitter) append(ctx context.Context, ev Event) (AppendResult, error) {
	r := &appendReq{ev: ev, done: make(chan appendResp, 1)}
	select {
	case g.reqs <- r:
	case <-g.stop:
		return AppendResult{}, errClosed
	case <-ctx.Done():
		return AppendResult{}, ctx.Err()
	}
	// Once queued the event may be committed; wait for the outcome even if ctx ends, so
	// the caller never reports a failure for an event that was recorded.
	resp := <-r.done
	return resp.res, resp.err
}

func (g *groupCommitter) work() {
	defer g.wg.Done()
	batch := make([]*appendReq, 0, maxGroup)
	for {
		batch = batch[:0]
		select {
		case r := <-g.reqs:
			batch = append(batch, r)
		case <-g.stop:
			g.drain()
			return
		}
	fill:
		for len(batch) < maxGroup {
			select {
			case r := <-g.reqs:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		g.run(batch)
	}
}

// run commits a batch; should the batch fail as a whole (a database error), each event
// is retried alone so that one bad event cannot fail its neighbours.
func (g *groupCommitter) run(batch []*appendReq) {
	evs := make([]Event, len(batch))
	for i, r := range batch {
		evs[i] = r.ev
	}
	// Not the callers' contexts: a batch serves several callers, one leaving must not
	// abort the others' writes.
	res, err := g.commit(context.Background(), evs)
	g.batches.Add(1)
	g.events.Add(int64(len(evs)))
	if err == nil {
		for i, r := range batch {
			r.done <- appendResp{res: res[i]}
		}
		return
	}
	if len(batch) == 1 {
		batch[0].done <- appendResp{err: err}
		return
	}
	for _, r := range batch {
		res, err := g.commit(context.Background(), []Event{r.ev})
		if err != nil {
			r.done <- appendResp{err: err}
			continue
		}
		r.done <- appendResp{res: res[0]}
	}
}

func (g *groupCommitter) drain() {
	for {
		select {
		case r := <-g.reqs:
			g.run([]*appendReq{r})
		default:
			return
		}
	}
}

// close stops the workers once; a second Close of the store must not panic.
func (g *groupCommitter) close() {
	g.stopOnce.Do(func() { close(g.stop) })
	g.wg.Wait()
}
