package auditlog

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// limitFileSize makes the files this process writes unable to grow past size bytes (EFBIG, as
// a full disk fails with ENOSPC); it returns what lifts the limit.
func limitFileSize(t *testing.T, size int64) (undo func()) {
	t.Helper()
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	lim := old
	lim.Cur = uint64(size)
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		t.Fatal(err)
	}
	undone := false
	undo = func() {
		if !undone {
			undone = true
			if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Cleanup(undo)
	return undo
}

func activeSegmentSize(t *testing.T, dir string) int64 {
	t.Helper()
	segs, err := listSegments(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, segs[len(segs)-1].name))
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// TestDeferredSignatureSurvivesRollback: a commit whose write fails is rolled back and its
// seqs are reused. The deferred checkpoint in it must not be signed (the signature would name
// a seq that now holds another record), and the signatures it carried must go into the next
// checkpoint instead of being lost.
func TestDeferredSignatureSurvivesRollback(t *testing.T) {
	f := newFixture(t)
	f.cfg.CheckpointEvery, f.cfg.PreallocateBytes = 1, -1
	s := &remoteSigner{key: f.signer}
	l := f.openSigned(t, s)
	appendN(t, l, 0, 1) // a decision and a deferred checkpoint
	// 20s: generous for a busy machine; the signer answers at once.
	for deadline := time.Now().Add(20 * time.Second); len(l.async.results) == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the deferred checkpoint was not signed")
		}
	}
	undo := limitFileSize(t, activeSegmentSize(t, f.dir))
	// A decision and a checkpoint carrying the signature: not written, rolled back.
	if err := l.Append(context.Background(), entry(t, 1)); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("append into a full file: %v", err)
	}
	undo()
	appendN(t, l, 2, 2)
	l.Close()
	rep, err := Verify(f.dir, VerifyOptions{PublicKeys: f.pub, RequireSealed: true})
	if err != nil || !rep.OK() || rep.Decisions != 3 {
		t.Fatalf("after a rolled-back checkpoint: %v %+v", err, rep)
	}
}

// TestReadinessRecoversWhenIdleAfterDiskFull: a full disk makes preallocation fail, which
// Healthy (readiness "decision_log") reports. Once space is freed an idle replica must become
// ready again - it is idle because it is unready - so the time checkpoints retry the
// preallocation, not only commits that carry events.
func TestReadinessRecoversWhenIdleAfterDiskFull(t *testing.T) {
	f := newFixture(t)
	f.cfg.PreallocateBytes, f.cfg.CheckpointInterval = 64<<10, 50*time.Millisecond
	l := f.open(t)
	defer l.Close()
	appendN(t, l, 0, 1) // preallocates, after acknowledging
	time.Sleep(100 * time.Millisecond)
	undo := limitFileSize(t, activeSegmentSize(t, f.dir)) // the file cannot grow past its preallocation
	for i := 1; l.Healthy() == nil && i < 500; i++ {
		appendN(t, l, i, 1)
	}
	if l.Healthy() == nil {
		t.Fatal("preallocation did not fail")
	}
	undo() // space freed
	c0 := l.Committed()
	// The retry is at most once a second; 15s leaves a stalled machine room while still
	// telling "recovers when idle" from "never recovers".
	deadline := time.Now().Add(15 * time.Second)
	for l.Healthy() != nil && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if err := l.Healthy(); err != nil {
		t.Fatalf("idle for 15s after space was freed (%d time checkpoints committed), still unhealthy: %v", l.Committed()-c0, err)
	}
}
