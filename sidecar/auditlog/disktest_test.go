package auditlog

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDiskTest(t *testing.T) {
	dir := t.TempDir()
	o := DiskTestOptions{Dir: dir, Rate: 2000, Duration: 300 * time.Millisecond, PreallocateBytes: 64 << 10}
	res, err := DiskTest(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 || res[0].Mode != "preallocated" || res[1].Mode != "append" {
		t.Fatalf("modes: %+v", res)
	}
	for _, r := range res {
		if r.Events != 600 {
			t.Errorf("%s: %d events, want 600 (2000/s for 300ms)", r.Mode, r.Events)
		}
		if r.Commits < 1 || r.Commits > r.Events {
			t.Errorf("%s: %d commits for %d events", r.Mode, r.Commits, r.Events)
		}
		if !(0 < r.P50 && r.P50 <= r.P90 && r.P90 <= r.P99 && r.P99 <= r.P999 && r.P999 <= r.Max) {
			t.Errorf("%s: percentiles out of order: %+v", r.Mode, r)
		}
		if !(0 < r.FlushP50 && r.FlushP50 <= r.FlushP99) {
			t.Errorf("%s: flush percentiles: %+v", r.Mode, r)
		}
	}
	// 600 records of 1500 bytes with 64 KiB steps, extended when less than half is left: 14
	// extensions when every commit is small. The rule is checked once per commit, so when the
	// machine stalls and one commit carries many records (a CI machine under load: 10 seen),
	// there are fewer, never more, and never more than one per commit.
	if e := res[0].Extensions; e < 1 || e > 15 || e > res[0].Commits {
		t.Errorf("preallocated: %d extensions for %d commits, want 1-15 and at most one per commit (900,000 bytes in 64 KiB steps)", e, res[0].Commits)
	}
	if res[1].Extensions != 0 {
		t.Errorf("append: %d extensions", res[1].Extensions)
	}
	left, _ := os.ReadDir(dir)
	if len(left) != 0 {
		t.Errorf("scratch files left behind: %v", left)
	}
}

func TestDiskTestRejects(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		o    DiskTestOptions
		want string
	}{
		{"no dir", DiskTestOptions{}, "directory is required"},
		{"missing dir", DiskTestOptions{Dir: filepath.Join(dir, "nope")}, "no such file"},
		{"not a dir", DiskTestOptions{Dir: file}, "not a directory"},
		{"rate", DiskTestOptions{Dir: dir, Rate: -1}, "rate must be"},
		{"duration", DiskTestOptions{Dir: dir, Duration: time.Microsecond}, "duration must be"},
		{"record", DiskTestOptions{Dir: dir, RecordBytes: 10}, "record size must be"},
		{"preallocation", DiskTestOptions{Dir: dir, PreallocateBytes: 100}, "preallocation must be"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := DiskTest(context.Background(), c.o)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want %q", err, c.want)
			}
		})
	}
}

func TestDiskTestCancelled(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	res, err := DiskTest(ctx, DiskTestOptions{Dir: dir, Rate: 1000, Duration: time.Minute})
	if err == nil || ctx.Err() == nil {
		t.Fatalf("err = %v after %d results, want the context's error", err, len(res))
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("scratch files left behind: %v", left)
	}
}
