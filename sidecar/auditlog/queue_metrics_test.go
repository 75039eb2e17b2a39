package auditlog

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// metricFamily gathers one metric from reg (nil when it is not registered).
func metricFamily(t *testing.T, reg *prometheus.Registry, name string) *dto.Metric {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0]
		}
	}
	return nil
}

// consentry_decision_log_queue_events shows the events waiting while the writer is held up
// (a slow disk), in both modes, and falls back to 0 once it catches up;
// consentry_decision_log_commit_seconds counts the group commits and their write (+fsync)
// time, without the wait in the queue.
func TestQueueAndCommitMetrics(t *testing.T) {
	const waiting = 5
	for _, mode := range []string{ModeStrict, ModeAsync} {
		t.Run(mode, func(t *testing.T) {
			f := newFixture(t)
			f.cfg.Mode = mode
			f.cfg.PreallocateBytes = -1
			f.cfg.SegmentMaxAge, f.cfg.RetainSegments = time.Hour, 1
			var clock atomic.Int64
			clock.Store(time.Now().UnixNano())
			reg := prometheus.NewRegistry()
			l, err := Open(f.cfg, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registerer: reg,
				Now: func() time.Time { return time.Unix(0, clock.Load()) }})
			if err != nil {
				t.Fatal(err)
			}
			closed := false
			defer func() {
				if !closed {
					l.Close()
				}
			}()
			queued := func() float64 {
				m := metricFamily(t, reg, "consentry_decision_log_queue_events")
				if m == nil {
					t.Fatal("consentry_decision_log_queue_events not registered")
				}
				return m.GetGauge().GetValue()
			}
			var wg sync.WaitGroup
			add := func(i int) {
				if mode == ModeAsync {
					if err := l.Append(context.Background(), entry(t, i)); err != nil {
						t.Error(err)
					}
					return
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := l.Append(context.Background(), entry(t, i)); err != nil {
						t.Error(err)
					}
				}()
			}
			committedAfter := func(i int) {
				before := l.Committed()
				add(i)
				waitCommitted(t, l, before+1)
			}
			committedAfter(0)
			clock.Add(int64(2 * time.Hour))
			committedAfter(1) // rotates: one closed segment, within retain_segments
			// The next rotation removes the oldest segment: its retention record's write is
			// held (a disk that stalls), and the writer with it.
			entered, release := make(chan struct{}), make(chan struct{})
			var releaseOnce sync.Once
			unstall := func() { releaseOnce.Do(func() { close(release) }) }
			defer unstall() // a failing test must not leave Close waiting on the writer
			l.retentionFault = func() error {
				close(entered)
				<-release
				return l.writeSeg(l.buf)
			}
			clock.Add(int64(2 * time.Hour))
			add(2)
			select {
			case <-entered:
			case <-time.After(10 * time.Second):
				t.Fatal("the writer did not rotate")
			}
			if v := queued(); v != 0 {
				t.Fatalf("queue_events = %v with nothing waiting", v)
			}
			for i := 3; i < 3+waiting; i++ {
				add(i)
			}
			deadline := time.Now().Add(10 * time.Second)
			for queued() != waiting {
				if time.Now().After(deadline) {
					t.Fatalf("queue_events = %v with %d events waiting for a stalled writer", queued(), waiting)
				}
				time.Sleep(5 * time.Millisecond)
			}
			unstall()
			for deadline := time.Now().Add(10 * time.Second); queued() != 0; time.Sleep(5 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("queue_events = %v after the writer caught up", queued())
				}
			}
			wg.Wait()
			l.Close() // every commit observed
			closed = true
			m := metricFamily(t, reg, "consentry_decision_log_commit_seconds")
			if m == nil {
				t.Fatal("consentry_decision_log_commit_seconds not registered")
			}
			// At least the commits of events 0, 1 and 2 (each alone in its batch) and of
			// those that waited.
			if h := m.GetHistogram(); h.GetSampleCount() < 4 || h.GetSampleSum() <= 0 {
				t.Fatalf("commit_seconds count %d sum %v", h.GetSampleCount(), h.GetSampleSum())
			}
		})
	}
}
