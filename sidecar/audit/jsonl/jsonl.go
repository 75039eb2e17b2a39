// Package jsonl is a minimal audit.Sink that writes one JSON object per decision to a file or
// any writer, in the field names of OPA's decision log (decision_id, path, input, result,
// bundles, timestamp, labels, metrics) plus consentry's enforcement record. It is the decision
// log for tests, benchmarks and single-node trials; the hash-chained log (sidecar/auditlog) is
// the production sink.
//
// Append returns only after the line was written to the file descriptor (with Sync, after
// fsync), so a nil error means the record survives a process crash (or, with Sync, a power
// loss). Any write error is returned: the pipeline then denies with audit.unavailable.
//
// Lines from concurrent Appends are group-committed: while one write (and fsync) is in
// progress, the lines that arrive queue up and go out together in the next write, in arrival
// order, and each of their Appends returns once that write (and fsync) completes, with its
// error. A line is never split across writes, and one writer runs at a time.
package jsonl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/consentry/consentry/sidecar/audit"
	"github.com/consentry/consentry/sidecar/decision"
	"github.com/consentry/consentry/sidecar/input"
)

// Sink writes JSON lines.
type Sink struct {
	mu     sync.Mutex
	w      io.Writer
	f      *os.File
	sync   bool
	closed bool
	// writing is true while a goroutine owns the writer; pending collects the lines that
	// arrive meanwhile (nil when none). idle is signalled when writing turns false.
	writing bool
	pending *batch
	idle    *sync.Cond
}

// batch is a group of lines written together.
type batch struct {
	buf  *[]byte
	turn chan struct{} // one waiter receives it and writes the batch
	done chan struct{} // closed once written; err is then set
	err  error
}

var _ audit.Sink = (*Sink)(nil)

// Open appends to the file at path (created 0600). With syncEach, every Append fsyncs.
func Open(path string, syncEach bool) (*Sink, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("decision log: %w", err)
	}
	return newSink(f, f, syncEach), nil
}

// New writes to w (e.g. os.Stdout). The caller owns w.
func New(w io.Writer) *Sink { return newSink(w, nil, false) }

func newSink(w io.Writer, f *os.File, syncEach bool) *Sink {
	s := &Sink{w: w, f: f, sync: syncEach}
	s.idle = sync.NewCond(&s.mu)
	return s
}

// Event is one line.
type Event struct {
	DecisionID string `json:"decision_id"`
	// Intent marks a write-ahead line (audit.Entry.Intent): the decision's own line follows.
	Intent      bool               `json:"intent,omitempty"`
	Timestamp   time.Time          `json:"timestamp"`
	Path        string             `json:"path"`
	Input       *input.Input       `json:"input,omitempty"`
	Result      *decision.Decision `json:"result,omitempty"`
	Revision    string             `json:"revision,omitempty"`
	Bundles     map[string]bundle  `json:"bundles,omitempty"`
	Error       string             `json:"error,omitempty"`
	Enforcement audit.Enforcement  `json:"enforcement"`
	Labels      map[string]string  `json:"labels,omitempty"`
	TraceID     string             `json:"trace_id,omitempty"`
	RequestedBy string             `json:"requested_by,omitempty"`
	Metrics     map[string]int64   `json:"metrics,omitempty"`
}

type bundle struct {
	Revision string `json:"revision"`
}

// EventOf is the line Append writes for e, as a value (for readers and tests; Append encodes
// the same document without building it).
func EventOf(e *audit.Entry) Event {
	ev := Event{
		DecisionID: e.DecisionID, Intent: e.Intent, Timestamp: e.Timestamp.UTC(), Path: e.Path, Input: e.Input, Result: e.Decision,
		Revision: e.Revision, Error: e.Error, Enforcement: e.Enforcement, Labels: e.Labels,
		TraceID: e.TraceID, RequestedBy: e.RequestedBy, Metrics: e.Metrics,
	}
	if len(e.Bundles) > 0 {
		ev.Bundles = make(map[string]bundle, len(e.Bundles))
		for name, rev := range e.Bundles {
			ev.Bundles[name] = bundle{Revision: rev}
		}
	}
	return ev
}

// bufPool recycles encoding buffers: one decision is a few KB of JSON, written per request.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

const maxPooledBuffer = 64 << 10

// ErrClosed is returned by Append after Close.
var ErrClosed = errors.New("decision log closed")

// Append writes e as one line.
func (s *Sink) Append(ctx context.Context, e *audit.Entry) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("decision log: %w", err)
	}
	buf := bufPool.Get().(*[]byte)
	defer func() {
		if cap(*buf) <= maxPooledBuffer {
			bufPool.Put(buf)
		}
	}()
	line, err := appendEntry((*buf)[:0], e)
	*buf = line
	if err != nil {
		return fmt.Errorf("decision log: encode: %w", err)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	if !s.writing {
		// Nobody is writing: write this line now.
		s.writing = true
		s.mu.Unlock()
		err := s.write(line)
		s.handoff()
		return err
	}
	// A write is in progress: queue behind it and wait for the batch to be written.
	b := s.pending
	if b == nil {
		b = &batch{buf: bufPool.Get().(*[]byte), turn: make(chan struct{}, 1), done: make(chan struct{})}
		*b.buf = (*b.buf)[:0]
		s.pending = b
	}
	*b.buf = append(*b.buf, line...)
	s.mu.Unlock()
	select {
	case <-b.done:
		return b.err
	case <-b.turn:
		// This goroutine writes the batch for everyone in it.
		b.err = s.write(*b.buf)
		if cap(*b.buf) <= maxPooledBuffer {
			bufPool.Put(b.buf)
		}
		b.buf = nil
		close(b.done)
		s.handoff()
		return b.err
	}
}

// write writes p (whole lines) and fsyncs when configured. Only the goroutine that owns the
// writer calls it. A panicking writer is an error, so the writer is always handed on.
func (s *Sink) write(p []byte) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("decision log: write: panic: %v", r)
		}
	}()
	if _, err := s.w.Write(p); err != nil {
		return fmt.Errorf("decision log: write: %w", err)
	}
	if s.sync && s.f != nil {
		if err := s.f.Sync(); err != nil {
			return fmt.Errorf("decision log: sync: %w", err)
		}
	}
	return nil
}

// handoff passes the writer to one waiter of the pending batch, or releases it.
func (s *Sink) handoff() {
	s.mu.Lock()
	next := s.pending
	s.pending = nil
	if next == nil {
		s.writing = false
		s.idle.Broadcast()
	}
	s.mu.Unlock()
	if next != nil {
		next.turn <- struct{}{}
	}
}

// Close closes the file (when opened with Open).
func (s *Sink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	// Lines already accepted are written before the file closes.
	for s.writing {
		s.idle.Wait()
	}
	if s.f != nil {
		return s.f.Close()
	}
	return nil
}
