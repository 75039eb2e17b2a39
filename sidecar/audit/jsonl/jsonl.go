// Package jsonl is a minimal audit.Sink that writes one JSON object per decision to a file or
// any writer, in the field names of OPA's decision log (decision_id, path, input, result,
// bundles, timestamp, labels, metrics) plus consentry's enforcement record. It is the decision
// log for tests, benchmarks and single-node trials; the hash-chained log (sidecar/auditlog) is
// the production sink.
//
// Append returns only after the line was written to the file descriptor (with Sync, after
// fsync), so a nil error means the record survives a process crash (or, with Sync, a power
// loss). Any write error is returned: the pipeline then denies with audit.unavailable.
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
}

var _ audit.Sink = (*Sink)(nil)

// Open appends to the file at path (created 0600). With syncEach, every Append fsyncs.
func Open(path string, syncEach bool) (*Sink, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("decision log: %w", err)
	}
	return &Sink{w: f, f: f, sync: syncEach}, nil
}

// New writes to w (e.g. os.Stdout). The caller owns w.
func New(w io.Writer) *Sink { return &Sink{w: w} }

// Event is one line.
type Event struct {
	DecisionID  string             `json:"decision_id"`
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
		DecisionID: e.DecisionID, Timestamp: e.Timestamp.UTC(), Path: e.Path, Input: e.Input, Result: e.Decision,
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
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if _, err := s.w.Write(line); err != nil {
		return fmt.Errorf("decision log: write: %w", err)
	}
	if s.sync && s.f != nil {
		if err := s.f.Sync(); err != nil {
			return fmt.Errorf("decision log: sync: %w", err)
		}
	}
	return nil
}

// Close closes the file (when opened with Open).
func (s *Sink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.f != nil {
		return s.f.Close()
	}
	return nil
}
