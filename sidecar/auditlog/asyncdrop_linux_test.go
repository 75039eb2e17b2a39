package auditlog

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/internal/syncbuf"
)

// TestAsyncWriteFailureCountsDrops: in async mode Append returns nil before the event is
// written, so an event whose write fails (rolled back) or that reaches a log broken meanwhile
// is lost. Every such event is counted in dropped_total and alarmed with
// alarm=decision_log_drop, and the write error itself is logged: events accepted = events in
// the log + dropped_total.
func TestAsyncWriteFailureCountsDrops(t *testing.T) {
	cases := []struct {
		name string
		cfg  func(c *Config)
		// fault makes the writes after it fail; it returns what undoes it once the log is
		// closed. add appends async entries from id from, advance moves the writer's clock.
		fault   func(t *testing.T, f *fixture, l *Log, add func(from, n int), advance func(time.Duration)) (undo func())
		wantLog string
	}{
		{
			// The reviewer's reproduction: EFBIG, as a full disk (ENOSPC) or EIO would fail.
			name: "write fails and is rolled back", cfg: func(*Config) {}, wantLog: "file too large",
			fault: func(t *testing.T, f *fixture, l *Log, _ func(int, int), _ func(time.Duration)) func() {
				segs, err := listSegments(f.dir)
				if err != nil {
					t.Fatal(err)
				}
				st, err := os.Stat(filepath.Join(f.dir, segs[len(segs)-1].name))
				if err != nil {
					t.Fatal(err)
				}
				var old syscall.Rlimit
				if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
					t.Fatal(err)
				}
				lim := old
				lim.Cur = uint64(st.Size()) // not one more byte fits in the active segment
				if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
					t.Fatal(err)
				}
				return func() {
					if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
						t.Fatal(err)
					}
				}
			},
		},
		{
			// The batch that triggers the rotation is refused once the retention record failed,
			// and so is every batch queued after it.
			name: "log broken by a failed retention record", wantLog: "injected",
			cfg: func(c *Config) { c.SegmentMaxAge, c.RetainSegments = time.Hour, 1 },
			fault: func(t *testing.T, f *fixture, l *Log, add func(int, int), advance func(time.Duration)) func() {
				advance(2 * time.Hour)
				add(50, 1) // rotates: one closed segment, within retain_segments
				// Wait for that rotation itself, not for seq 3: the jump in time can make the
				// writer log an interval checkpoint first, and a rotation after the next jump
				// would start the segment at the later time and remove nothing.
				for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
					if segs, err := listSegments(f.dir); err == nil && len(segs) == 2 {
						break
					}
					if time.Now().After(deadline) {
						t.Fatal("the writer did not rotate")
					}
				}
				waitCommitted(t, l, 3)
				l.retentionFault = func() error { return errors.New("injected: no space left on device") }
				advance(2 * time.Hour) // the next batch rotates and removes the oldest segment
				return func() {}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.cfg.Mode = ModeAsync
			f.cfg.PreallocateBytes = -1
			f.cfg.AsyncFsyncInterval = 10 * time.Millisecond
			tc.cfg(&f.cfg)
			var clock atomic.Int64
			clock.Store(time.Now().UnixNano())
			var logs syncbuf.Buffer
			l := f.openLogging(t, &logs, func() time.Time { return time.Unix(0, clock.Load()) })
			accepted := 0
			add := func(from, n int) {
				for i := from; i < from+n; i++ {
					if l.Append(context.Background(), entry(t, i)) == nil {
						accepted++
					}
				}
			}
			add(0, 2)
			waitCommitted(t, l, 2) // the open checkpoint and both decisions
			undo := tc.fault(t, f, l, add, func(d time.Duration) { clock.Add(int64(d)) })
			add(2, 10)
			l.Close()
			undo()
			logged := len(loggedDecisions(t, f.dir))
			dropped := int(counterValue(l.m.dropped))
			t.Logf("accepted %d, logged %d, dropped_total %d", accepted, logged, dropped)
			if logged == accepted {
				t.Fatal("every accepted event was logged: the fault did not hit")
			}
			if logged+dropped != accepted {
				t.Errorf("accepted %d events, %d in the log, dropped_total %d: %d lost uncounted", accepted, logged, dropped, accepted-logged-dropped)
			}
			out := logs.String()
			if !strings.Contains(out, "alarm=decision_log_drop") {
				t.Errorf("no alarm=decision_log_drop logged:\n%s", out)
			}
			if !strings.Contains(out, tc.wantLog) {
				t.Errorf("the write error (%q) is not logged:\n%s", tc.wantLog, out)
			}
		})
	}
}

// waitCommitted waits until the log has made seq durable (async mode: written).
func waitCommitted(t *testing.T, l *Log, seq int64) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); l.Committed() < seq; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("seq %d not committed (at %d)", seq, l.Committed())
		}
	}
}
