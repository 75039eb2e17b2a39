package auditlog

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/internal/syncbuf"
)

func (f *fixture) openLogging(t testing.TB, logs *syncbuf.Buffer, now func() time.Time) *Log {
	t.Helper()
	l, err := Open(f.cfg, Options{Logger: slog.New(slog.NewTextHandler(logs, nil)), Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// appendAt appends n entries from id from, stamped at.
func appendAt(t testing.TB, l *Log, from, n int, at time.Time) {
	t.Helper()
	for i := from; i < from+n; i++ {
		e := entry(t, i)
		e.Timestamp = at
		if err := l.Append(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRetentionDoesNotCoverMissingRecords: retention records the seq and hash of each removed
// segment's own last record, and stops at a segment whose records do not continue into the
// next segment's, or whose first record continues nothing the log accounts for. Records an
// attacker deleted stay reported by verify instead of being covered by a valid retention
// record at the next rotation, and the gap is alarmed.
func TestRetentionDoesNotCoverMissingRecords(t *testing.T) {
	cases := []struct {
		name string
		// tamper alters the closed log (segs: its segments) and returns the name of the first
		// segment retention must keep, "" when nothing was altered.
		tamper   func(t *testing.T, dir string, segs []segInfo) string
		wantKind string
	}{
		{name: "untouched log", tamper: func(*testing.T, string, []segInfo) string { return "" }},
		{name: "middle segment deleted", wantKind: ProblemDeleted, tamper: func(t *testing.T, dir string, segs []segInfo) string {
			mustRemove(t, filepath.Join(dir, segs[1].name))
			return segs[0].name
		}},
		{name: "oldest segment deleted", wantKind: ProblemHeadDeleted, tamper: func(t *testing.T, dir string, segs []segInfo) string {
			mustRemove(t, filepath.Join(dir, segs[0].name))
			return segs[1].name
		}},
		{name: "last records of a segment cut", wantKind: ProblemDeleted, tamper: func(t *testing.T, dir string, segs []segInfo) string {
			path := filepath.Join(dir, segs[1].name)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			cut := bytes.LastIndexByte(b[:len(b)-1], '\n') + 1
			if err := os.WriteFile(path, b[:cut], 0o600); err != nil {
				t.Fatal(err)
			}
			return segs[1].name
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.cfg.SegmentMaxBytes = 4096
			f.cfg.PreallocateBytes = -1
			f.cfg.RetainSegments = 3
			l := f.open(t)
			appendN(t, l, 0, 20)
			l.Close()
			segs, _ := listSegments(f.dir)
			if len(segs) < 4 {
				t.Fatalf("want >= 4 segments, got %v", segs)
			}
			keep := tc.tamper(t, f.dir, segs)
			if rep := f.verify(t); rep.OK() != (keep == "") {
				t.Fatalf("precondition: verify before retention: %s", kindsOf(rep))
			}
			var logs syncbuf.Buffer
			l = f.openLogging(t, &logs, nil)
			appendN(t, l, 100, 20) // rotations, each with retention
			l.Close()
			rep := f.verify(t)
			after, _ := listSegments(f.dir)
			gapAlarm := strings.Contains(logs.String(), "alarm=decision_log_gap")
			if keep == "" {
				if !rep.OK() || after[0].first == 0 || gapAlarm {
					t.Fatalf("retention of an intact log: verify %s, segments %v, gap alarm %v", kindsOf(rep), after, gapAlarm)
				}
				checkRetentionRecords(t, f.dir)
				return
			}
			if rep.OK() || !strings.Contains(kindsOf(rep), tc.wantKind) {
				t.Errorf("after retention, verify reports %q, want %s: the missing records were covered", kindsOf(rep), tc.wantKind)
			}
			if after[0].name > keep {
				t.Errorf("retention removed %s, at or past the gap (log now starts with %s)", keep, after[0].name)
			}
			if !gapAlarm {
				t.Errorf("no alarm=decision_log_gap logged:\n%s", logs.String())
			}
		})
	}
}

// checkRetentionRecords holds every retention record's entries to the removed segments' last
// records, which the records after them link to: last_seq, last_hash and last_timestamp.
func checkRetentionRecords(t *testing.T, dir string) {
	t.Helper()
	n := 0
	_ = ScanEvents(dir, func(ev *Event, _ []byte) error {
		for _, r := range ev.Removed {
			n++
			if r.LastTimestamp.IsZero() || r.LastSeq < r.FirstSeq || len(r.LastHash) != 64 {
				t.Errorf("retention entry %+v", r)
			}
		}
		return nil
	})
	if n == 0 {
		t.Fatal("no retention record written")
	}
}

func mustRemove(t *testing.T, path string) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
}

// TestRetainAgeJudgesByLastRecord: retain_age compares the timestamp of a segment's last
// record (hash-chained) with the clock, never the file's mtime, which anyone who can write the
// directory can set: backdated files with recent records are kept, and files touched recently
// holding old records are removed.
func TestRetainAgeJudgesByLastRecord(t *testing.T) {
	year := 365 * 24 * time.Hour
	cases := []struct {
		name        string
		recordsAge  time.Duration // how old the first run's records are
		mtimeAge    time.Duration // how far the files are backdated afterwards
		wantRemoved bool
	}{
		{name: "backdated files with recent records", recordsAge: 0, mtimeAge: year},
		{name: "fresh files with old records", recordsAge: year, mtimeAge: 0, wantRemoved: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.cfg.SegmentMaxBytes = 4096
			f.cfg.PreallocateBytes = -1
			f.cfg.RetainAge = 90 * 24 * time.Hour
			then := time.Now().Add(-tc.recordsAge)
			var logs syncbuf.Buffer
			l := f.openLogging(t, &logs, func() time.Time { return then })
			appendAt(t, l, 0, 20, then)
			l.Close()
			before, _ := listSegments(f.dir)
			if tc.mtimeAge > 0 {
				old := time.Now().Add(-tc.mtimeAge)
				for _, s := range before {
					if err := os.Chtimes(filepath.Join(f.dir, s.name), old, old); err != nil {
						t.Fatal(err)
					}
				}
			}
			l = f.openLogging(t, &logs, nil)
			appendAt(t, l, 100, 20, time.Now())
			l.Close()
			after, _ := listSegments(f.dir)
			if removed := after[0].first != 0; removed != tc.wantRemoved {
				t.Errorf("segments removed: %v, want %v (log starts at seq %d)", removed, tc.wantRemoved, after[0].first)
			}
			if rep := f.verify(t); !rep.OK() {
				t.Errorf("verify: %s %+v", kindsOf(rep), rep.Problems)
			}
			if tc.wantRemoved {
				checkRetentionRecords(t, f.dir)
			}
		})
	}
}
