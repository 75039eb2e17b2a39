package bundle_test

import (
	"context"
	"errors"
	"runtime/debug"
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
