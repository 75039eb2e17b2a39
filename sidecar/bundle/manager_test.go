package bundle_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/consentry/consentry/sidecar/bundle"
	"github.com/consentry/consentry/sidecar/bundle/build"
	"github.com/consentry/consentry/sidecar/bundle/bundletest"
	"github.com/consentry/consentry/sidecar/decision"
	"github.com/consentry/consentry/sidecar/engine"
	"github.com/consentry/consentry/sidecar/input"
)

var quiet = slog.New(slog.DiscardHandler)

func exampleInput(t testing.TB) *input.Input {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(bundletest.Policies(t), "examples", "support-read.json"))
	if err != nil {
		t.Fatal(err)
	}
	var in input.Input
	if err := json.Unmarshal(raw, &in); err != nil {
		t.Fatal(err)
	}
	return &in
}

type fixture struct {
	eng *engine.Engine
	mgr *bundle.Manager
	reg *prometheus.Registry
}

func newFixture(t testing.TB, cfg bundle.Config) *fixture {
	t.Helper()
	if len(cfg.Verification.Keys) == 0 && cfg.SignaturesRequired() {
		cfg.Verification.Keys = []bundle.KeyConfig{keyCfg(bundletest.DevES256(t)), keyCfg(bundletest.DevRS256(t))}
	}
	f := &fixture{eng: engine.New(engine.Config{Timeout: 5 * time.Second}, quiet), reg: prometheus.NewRegistry()}
	var err error
	if f.mgr, err = bundle.NewManager(cfg, f.eng, f.reg, quiet); err != nil {
		t.Fatal(err)
	}
	return f
}

// run starts the manager until the test ends.
func (f *fixture) run(t testing.TB) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = f.mgr.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

func (f *fixture) rejections(reason string) float64 {
	mfs, _ := f.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != "consentry_bundle_rejections_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func (f *fixture) counter(name string) float64 {
	mfs, _ := f.reg.Gather()
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				total += m.GetCounter().GetValue()
			}
		}
	}
	return total
}

// eventually polls cond for up to within. Callers give 20-30 s where the time is not what
// the test checks: activating a bundle compiles it, which under -race on a busy 2-core CI
// machine has taken more than the 5 s these waits used to allow.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func revisionIs(m *bundle.Manager, rev string) func() bool {
	return func() bool { a := m.Active(); return a != nil && a.Revision == rev }
}

func TestManagerActivationReadinessAndRollback(t *testing.T) {
	es := bundletest.DevES256(t)
	f := newFixture(t, bundle.Config{File: "unused.tar.gz"})
	ctx := context.Background()
	in := exampleInput(t)

	// Before any bundle: not ready, and decisions are 503 engine.not_ready denies.
	if f.mgr.Ready(ctx) == nil {
		t.Fatal("ready before any bundle")
	}
	res, err := f.eng.Decide(ctx, in)
	if err == nil || res.Decision.Allow || res.Decision.Status != http.StatusServiceUnavailable || res.Decision.ReasonCodes()[0] != decision.ReasonEngineNotReady {
		t.Fatalf("decision before activation: %+v, %v", res.Decision, err)
	}

	if err := f.mgr.ActivateTarball(ctx, signedBundle(t, "2", es, ""), "test"); err != nil {
		t.Fatal(err)
	}
	if err := f.mgr.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	res, err = f.eng.Decide(ctx, in)
	if err != nil || res.Revision != "2" || res.Bundles["consentry"] != "2" {
		t.Fatalf("decision does not record the bundle: rev %q bundles %v err %v", res.Revision, res.Bundles, err)
	}
	st := f.mgr.Status().(bundle.Status)
	if !st.Ready || st.Active.Revision != "2" || st.Active.Name != "consentry" || !st.Active.Signed || st.Active.KeyID != es.ID {
		t.Fatalf("status: %+v", st.Active)
	}

	var last []byte
	for _, tt := range []struct{ rev, reason string }{
		{"1", bundle.ReasonRollback},   // older
		{"abc", bundle.ReasonRollback}, // not comparable
	} {
		last = signedBundle(t, tt.rev, es, "")
		err := f.mgr.ActivateTarball(ctx, last, "test")
		if bundle.ReasonOf(err) != tt.reason {
			t.Fatalf("revision %s: %v, want %s", tt.rev, err, tt.reason)
		}
		if a := f.mgr.Active(); a.Revision != "2" {
			t.Fatalf("active changed to %s after a rejection", a.Revision)
		}
	}
	// The same rejected bytes offered again (a watched file polled again): still refused,
	// but logged and counted once.
	if err := f.mgr.ActivateTarball(ctx, last, "test"); bundle.ReasonOf(err) != bundle.ReasonRollback {
		t.Fatalf("re-offered rejected bundle: %v", err)
	}
	if got := f.rejections(bundle.ReasonRollback); got != 2 {
		t.Fatalf("rollback rejections metric = %v, want 2", got)
	}
	if st := f.mgr.Status().(bundle.Status); st.LastRejection == nil || st.LastRejection.Reason != bundle.ReasonRollback || st.LastRejection.Revision != "abc" {
		t.Fatalf("status last rejection: %+v", st.LastRejection)
	}
	// Same bytes again: no-op, no new activation.
	before := f.counter("consentry_bundle_activations_total")
	three := signedBundle(t, "3", es, "")
	for range 2 {
		if err := f.mgr.ActivateTarball(ctx, three, "test"); err != nil {
			t.Fatal(err)
		}
	}
	if got := f.counter("consentry_bundle_activations_total") - before; got != 1 {
		t.Fatalf("%v activations for one new bundle delivered twice", got)
	}

	// The override flag accepts an older bundle.
	g := newFixture(t, bundle.Config{File: "unused.tar.gz", AllowRollback: true})
	for _, rev := range []string{"5", "4", "zzz"} {
		if err := g.mgr.ActivateTarball(ctx, signedBundle(t, rev, es, ""), "test"); err != nil {
			t.Fatalf("allow_rollback, revision %s: %v", rev, err)
		}
	}
}

// signRaw signs hand-made bundle files (for bundles `bundle build` would refuse to make).
func signRaw(t testing.TB, files map[string][]byte) []byte {
	t.Helper()
	es := bundletest.DevES256(t)
	raw, err := build.Sign(bundletest.Tar(t, files), build.SignOptions{KeyFile: es.Private, Algorithm: es.Alg, KeyID: es.ID})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestManagerRejectsBadPolicies(t *testing.T) {
	ctx := context.Background()
	manifest := []byte(`{"revision":"9","roots":["consentry"]}`)
	tests := []struct {
		name   string
		files  map[string][]byte
		reason string
	}{
		{"does not compile", map[string][]byte{".manifest": manifest, "data.json": []byte("{}"),
			"consentry/decision.rego": []byte("package consentry\n\ndecision := x if { y := 1 }\n")}, bundle.ReasonCompile},
		{"no decision rule", map[string][]byte{".manifest": manifest, "data.json": []byte("{}"),
			"consentry/other.rego": []byte("package consentry.other\n\nallow := true\n")}, bundle.ReasonNoDecision},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, bundle.Config{File: "unused.tar.gz"})
			err := f.mgr.ActivateTarball(ctx, signRaw(t, tt.files), "test")
			if bundle.ReasonOf(err) != tt.reason {
				t.Fatalf("got %v, want %s", err, tt.reason)
			}
			if f.mgr.Ready(ctx) == nil || f.eng.Ready() {
				t.Fatal("a rejected bundle made the sidecar ready")
			}
			if f.rejections(tt.reason) != 1 {
				t.Fatalf("rejection not counted under %s", tt.reason)
			}
		})
	}
}

func TestActivationIsAtomicUnderLoad(t *testing.T) {
	es := bundletest.DevES256(t)
	f := newFixture(t, bundle.Config{File: "unused.tar.gz"})
	ctx := context.Background()
	revs := []string{"1", "2", "3", "4"}
	raws := make([][]byte, len(revs))
	for i, r := range revs {
		raws[i] = signedBundle(t, r, es, "")
	}
	if err := f.mgr.ActivateTarball(ctx, raws[0], "test"); err != nil {
		t.Fatal(err)
	}
	in := exampleInput(t)
	var stop atomic.Bool
	var wg sync.WaitGroup
	var decided, failed atomic.Int64
	errs := make(chan error, 4)
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				res, err := f.eng.Decide(ctx, in)
				decided.Add(1)
				if err != nil {
					failed.Add(1)
					select {
					case errs <- err:
					default:
					}
					continue
				}
				if res.Bundles["consentry"] != res.Revision {
					select {
					case errs <- errors.New("decision mixes revisions: " + res.Revision):
					default:
					}
				}
			}
		}()
	}
	for _, raw := range raws[1:] {
		if err := f.mgr.ActivateTarball(ctx, raw, "test"); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(50 * time.Millisecond)
	// On a stalled machine the deciders may not have run yet: wait for some decisions rather
	// than failing on "0 decisions" below.
	eventually(t, 20*time.Second, "decisions during the activations", func() bool { return decided.Load() > 0 })
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if failed.Load() != 0 || decided.Load() == 0 {
		t.Fatalf("%d of %d decisions failed during activations", failed.Load(), decided.Load())
	}
	if a := f.mgr.Active(); a.Revision != "4" {
		t.Fatalf("active %s", a.Revision)
	}
}

func TestFileSourceHotReload(t *testing.T) {
	es := bundletest.DevES256(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "bundle.tar.gz")
	replace := func(raw []byte) {
		tmp := filepath.Join(dir, ".next")
		if err := os.WriteFile(tmp, raw, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	replace(signedBundle(t, "1", es, ""))
	// Polling an hour apart: only the file watch can pick changes up in time.
	f := newFixture(t, bundle.Config{File: path, Polling: bundle.PollingConfig{MinDelay: time.Hour, MaxDelay: time.Hour}})
	f.run(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.mgr.WaitActive(ctx); err != nil {
		t.Fatal(err)
	}
	replace(signedBundle(t, "2", es, ""))
	eventually(t, 20*time.Second, "revision 2 from the replaced file", revisionIs(f.mgr, "2"))
	replace(signedBundle(t, "0", es, ""))
	eventually(t, 20*time.Second, "rollback rejection", func() bool { return f.rejections(bundle.ReasonRollback) == 1 })
	if a := f.mgr.Active(); a.Revision != "2" || !strings.HasPrefix(a.Source, "file:") {
		t.Fatalf("active %+v", a)
	}
}

func TestDirSourceHotReload(t *testing.T) {
	dir := t.TempDir()
	bundletest.CopyDir(t, bundletest.Policies(t), dir)
	off := false
	f := newFixture(t, bundle.Config{Dir: dir, RequireSignatures: &off, Polling: bundle.PollingConfig{MinDelay: time.Hour, MaxDelay: time.Hour}})
	f.run(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.mgr.WaitActive(ctx); err != nil {
		t.Fatal(err)
	}
	first := f.mgr.Active()
	if first.Signed {
		t.Fatal("a policy directory cannot be signed")
	}
	util := filepath.Join(dir, "consentry", "util.rego")
	src, err := os.ReadFile(util)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(util, append(src, "\n# touched by the hot reload test\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "a hot reload", func() bool { return f.mgr.Active().Revision != first.Revision })
	second := f.mgr.Active()
	if c, err := bundle.CompareRevisions(second.Revision, first.Revision); err != nil || c != 1 {
		t.Fatalf("reload revision %s does not order after %s: %d %v", second.Revision, first.Revision, c, err)
	}
	// A broken edit is rejected; the last good policy stays active.
	if err := os.WriteFile(util, append(src, "\nbroken :=\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "a compile rejection", func() bool { return f.rejections(bundle.ReasonCompile) >= 1 })
	if f.mgr.Active().Revision != second.Revision || !f.eng.Ready() {
		t.Fatal("a broken edit replaced the active policy")
	}
}

func TestDirSourceNeedsSignatures(t *testing.T) {
	f := newFixture(t, bundle.Config{Dir: bundletest.Policies(t), Polling: bundle.PollingConfig{MinDelay: time.Hour, MaxDelay: time.Hour}})
	f.run(t)
	eventually(t, 20*time.Second, "signature_missing rejection", func() bool { return f.rejections(bundle.ReasonSignatureMissing) == 1 })
	if f.mgr.Ready(context.Background()) == nil {
		t.Fatal("unsigned policy directory activated while signatures are required")
	}
}

// TestActivationRestoresGCSettings: the collector is held back only while a bundle is prepared;
// the operator's GC percent and memory limit are back afterwards, also after a rejection.
func TestActivationRestoresGCSettings(t *testing.T) {
	f := newFixture(t, bundle.Config{Dir: t.TempDir(), RequireSignatures: new(bool)})
	prevPercent := debug.SetGCPercent(137)
	prevLimit := debug.SetMemoryLimit(3 << 30)
	t.Cleanup(func() { debug.SetGCPercent(prevPercent); debug.SetMemoryLimit(prevLimit) })
	_ = f.mgr.ActivateTarball(context.Background(), []byte("not a bundle"), "test")
	if p := debug.SetGCPercent(137); p != 137 {
		t.Errorf("GC percent after activation: %d, want 137", p)
	}
	if l := debug.SetMemoryLimit(3 << 30); l != 3<<30 {
		t.Errorf("memory limit after activation: %d, want %d", l, 3<<30)
	}
}

// A watched directory that still holds the same rejected bundle is rejected (logged and
// counted) once, not on every poll - also when it fails before a digest of the verified
// bundle exists: an unsigned OPA bundle directory, a policy directory that does not compile.
func TestRejectedDirNotReRejectedEveryPoll(t *testing.T) {
	brokenPolicyDir := func(t *testing.T) string {
		dir := t.TempDir()
		bundletest.CopyDir(t, bundletest.Policies(t), dir)
		if err := os.WriteFile(filepath.Join(dir, "consentry", "broken.rego"), []byte("package consentry.broken\n\nx := \n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	no := false
	tests := []struct {
		name     string
		dir      func(t *testing.T) string
		required *bool
		reason   string
	}{
		{"unsigned OPA bundle dir", func(t *testing.T) string { return opaBundleDir(t, "3") }, nil, bundle.ReasonSignatureMissing},
		{"policy dir that does not compile", brokenPolicyDir, &no, bundle.ReasonCompile},
		{"policy dir while signatures are required", func(*testing.T) string { return bundletest.Policies(t) }, nil, bundle.ReasonSignatureMissing},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, bundle.Config{Dir: tc.dir(t), RequireSignatures: tc.required,
				Polling: bundle.PollingConfig{MinDelay: 20 * time.Millisecond, MaxDelay: 20 * time.Millisecond}})
			f.run(t)
			eventually(t, 20*time.Second, "the first rejection", func() bool { return f.rejections(tc.reason) >= 1 })
			time.Sleep(500 * time.Millisecond)
			if n := f.rejections(tc.reason); n != 1 {
				t.Fatalf("the same unchanged directory was rejected %v times in 0.5 s", n)
			}
		})
	}
}
