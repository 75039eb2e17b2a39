package bundle_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"runtime/debug"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/consentry/consentry/sidecar/bundle"
	"github.com/consentry/consentry/sidecar/engine"
)

// slowTablesBundle is an unsigned bundle whose data-only table (materialized at activation)
// takes 10^10 steps: it compiles, and would then hold the activating goroutine for hours.
func slowTablesBundle(t testing.TB, rev string) []byte {
	return tarGzFiles(t, [][2]string{
		{"/.manifest", `{"revision":"` + rev + `","roots":["consentry"]}`},
		{"/consentry/decision.rego", "package consentry\n\ndecision := {\"allow\": false}\n"},
		{"/consentry/minimization.rego", "package consentry.minimization\n\n" +
			"tables := count([1 | some i in numbers.range(1, 100000); some j in numbers.range(1, 100000); i != j])\n"},
	})
}

func goodBundle(t testing.TB, rev string) []byte {
	return tarGzFiles(t, [][2]string{
		{"/.manifest", `{"revision":"` + rev + `","roots":["consentry"]}`},
		{"/consentry/decision.rego", "package consentry\n\ndecision := {\"allow\": false}\n"},
		{"/consentry/minimization.rego", "package consentry.minimization\n\ntables := 1\n"},
	})
}

// A bundle whose activation does not finish within engine.activation_timeout is rejected
// (activation_timeout, on /status, remembered so the same bundle is not compiled again), the
// active bundle stays, the collector is back on, and the next good bundle activates.
func TestActivationTimeoutRejectsAndLaterBundlesActivate(t *testing.T) {
	const limit = 300 * time.Millisecond
	no := false
	eng := engine.New(engine.Config{Timeout: 5 * time.Second, ActivationTimeout: limit}, quiet)
	reg := prometheus.NewRegistry()
	mgr, err := bundle.NewManager(bundle.Config{File: "unused.tar.gz", RequireSignatures: &no}, eng, reg, quiet)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{eng: eng, mgr: mgr, reg: reg}
	ctx := context.Background()
	if err := mgr.ActivateTarball(ctx, goodBundle(t, "1"), "test"); err != nil {
		t.Fatal(err)
	}
	prevPercent := debug.SetGCPercent(137)
	t.Cleanup(func() { debug.SetGCPercent(prevPercent) })

	slow := slowTablesBundle(t, "2")
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- mgr.ActivateTarball(ctx, slow, "test") }()
	select {
	case err = <-done:
	case <-time.After(limit + 15*time.Second):
		t.Fatalf("the activation still runs after %s with engine.activation_timeout %s", time.Since(start), limit)
	}
	if bundle.ReasonOf(err) != bundle.ReasonActivationTimeout || !errors.Is(err, engine.ErrActivationTimeout) {
		t.Fatalf("got %v (reason %q) after %s, want activation_timeout", err, bundle.ReasonOf(err), time.Since(start))
	}
	if p := debug.SetGCPercent(137); p != 137 {
		t.Errorf("GC percent after the timed-out activation: %d, want 137", p)
	}
	if rev, _ := eng.Revision(); rev != "1" || mgr.Active().Revision != "1" {
		t.Fatalf("active revision %q / %q, want 1", rev, mgr.Active().Revision)
	}
	st := mgr.Status().(bundle.Status)
	if st.LastRejection == nil || st.LastRejection.Reason != bundle.ReasonActivationTimeout || st.LastRejection.Revision != "2" {
		t.Fatalf("/status last_rejection %+v", st.LastRejection)
	}
	// Offered again (a poll of an unchanged source), it is not compiled for another timeout.
	start = time.Now()
	if err := mgr.ActivateTarball(ctx, slow, "test"); bundle.ReasonOf(err) != bundle.ReasonActivationTimeout || time.Since(start) > limit {
		t.Fatalf("offered again: %v after %s", err, time.Since(start))
	}
	if n := f.rejections(bundle.ReasonActivationTimeout); n != 1 {
		t.Fatalf("%v activation_timeout rejections, want 1", n)
	}
	if err := mgr.ActivateTarball(ctx, goodBundle(t, "3"), "test"); err != nil {
		t.Fatalf("the next good bundle: %v", err)
	}
	if rev, _ := eng.Revision(); rev != "3" {
		t.Fatalf("active revision %q, want 3", rev)
	}
}

// A timeout may be the machine's, not the bundle's: a bundle rejected for activation_timeout
// is compiled once more when offered ActivationRetryDelay later (a second timeout is final),
// from a file source or from a bundle server whose If-None-Match would never offer it again.
func TestActivationTimeoutRetriedOnceAfterDelay(t *testing.T) {
	const limit = 200 * time.Millisecond
	var clock atomic.Int64
	clock.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	advance := func(d time.Duration) { clock.Add(int64(d)) }
	no := false
	slow := slowTablesBundle(t, "2")

	t.Run("offered again", func(t *testing.T) {
		eng := engine.New(engine.Config{Timeout: 5 * time.Second, ActivationTimeout: limit}, quiet)
		reg := prometheus.NewRegistry()
		mgr, err := bundle.NewManager(bundle.Config{File: "unused.tar.gz", RequireSignatures: &no}, eng, reg, quiet)
		if err != nil {
			t.Fatal(err)
		}
		bundle.SetClock(mgr, now)
		f := &fixture{eng: eng, mgr: mgr, reg: reg}
		ctx := context.Background()
		offer := func() (time.Duration, error) {
			start := time.Now()
			err := mgr.ActivateTarball(ctx, slow, "test")
			return time.Since(start), err
		}
		if _, err := offer(); bundle.ReasonOf(err) != bundle.ReasonActivationTimeout {
			t.Fatalf("first offer: %v", err)
		}
		st := mgr.Status().(bundle.Status)
		if want := now().Add(bundle.ActivationRetryDelay); st.LastRejection == nil || !st.LastRejection.RetryAt.Equal(want) {
			t.Fatalf("/status last_rejection %+v, want retry_at %s", st.LastRejection, want)
		}
		advance(bundle.ActivationRetryDelay - time.Second)
		if took, err := offer(); bundle.ReasonOf(err) != bundle.ReasonActivationTimeout || took >= limit {
			t.Fatalf("before the retry delay: %v after %s (compiled again?)", err, took)
		}
		advance(time.Second)
		if took, err := offer(); bundle.ReasonOf(err) != bundle.ReasonActivationTimeout || took < limit {
			t.Fatalf("after the retry delay: %v after %s, want a second compile that times out", err, took)
		}
		if n := f.rejections(bundle.ReasonActivationTimeout); n != 2 {
			t.Fatalf("%v activation_timeout rejections, want 2 (the retry counts)", n)
		}
		if st := mgr.Status().(bundle.Status); !st.LastRejection.RetryAt.IsZero() {
			t.Fatalf("a second timeout schedules another retry: %+v", st.LastRejection)
		}
		advance(time.Hour)
		if took, err := offer(); bundle.ReasonOf(err) != bundle.ReasonActivationTimeout || took >= limit {
			t.Fatalf("after the one retry: %v after %s (compiled a third time?)", err, took)
		}
		if n := f.rejections(bundle.ReasonActivationTimeout); n != 2 {
			t.Fatalf("%v activation_timeout rejections, want 2", n)
		}
	})

	t.Run("bundle server", func(t *testing.T) {
		srv := newBundleServer(slow, false)
		ts := httptest.NewServer(srv)
		t.Cleanup(ts.Close)
		eng := engine.New(engine.Config{Timeout: 5 * time.Second, ActivationTimeout: limit}, quiet)
		reg := prometheus.NewRegistry()
		mgr, err := bundle.NewManager(bundle.Config{URL: ts.URL, NoPersist: true, RequireSignatures: &no, Polling: fastPolling()}, eng, reg, quiet)
		if err != nil {
			t.Fatal(err)
		}
		bundle.SetClock(mgr, now)
		f := &fixture{eng: eng, mgr: mgr, reg: reg}
		f.run(t)
		eventually(t, 30*time.Second, "the first timeout", func() bool { return f.rejections(bundle.ReasonActivationTimeout) == 1 })
		eventually(t, 20*time.Second, "conditional polls answered 304", func() bool { return srv.count(304) >= 3 })
		if n := srv.count(200); n != 1 {
			t.Fatalf("downloaded %d times before the retry delay, want 1", n)
		}
		advance(bundle.ActivationRetryDelay)
		eventually(t, 30*time.Second, "the retry", func() bool { return f.rejections(bundle.ReasonActivationTimeout) == 2 })
		polled := srv.count(304)
		eventually(t, 20*time.Second, "polls after the retry", func() bool { return srv.count(304) >= polled+3 })
		advance(time.Hour)
		polled = srv.count(304)
		eventually(t, 20*time.Second, "polls an hour later", func() bool { return srv.count(304) >= polled+3 })
		if n, got := f.rejections(bundle.ReasonActivationTimeout), srv.count(200); n != 2 || got != 2 {
			t.Fatalf("%v timeouts, %d downloads: want one retry (2, 2)", n, got)
		}
	})
}
