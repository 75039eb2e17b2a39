package build_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/bundle"
	"github.com/consentry/consentry/sidecar/bundle/build"
	"github.com/consentry/consentry/sidecar/bundle/bundletest"
	"github.com/consentry/consentry/sidecar/engine"
)

// `bundle sign` reads a tarball under the sidecar's limits: a few hundred bytes of sparse
// entries, each declaring just under max_size_bytes, made OPA's reader allocate every
// entry's expanded size before anything was signed.
func TestSignRefusesSparseTarBomb(t *testing.T) {
	const files = 3 // 3 x 60 MiB declared
	key := bundletest.DevES256(t)
	opts := build.SignOptions{KeyFile: key.Private, Algorithm: key.Alg, KeyID: key.ID}
	for _, format := range []string{bundletest.SparsePAX10, bundletest.SparseOldGNU} {
		t.Run(format, func(t *testing.T) {
			raw := bundletest.SparseTar(t, format, files, 60<<20)
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := build.Sign(raw, opts)
			runtime.ReadMemStats(&after)
			alloc := after.TotalAlloc - before.TotalAlloc
			if bundle.ReasonOf(err) != bundle.ReasonMalformed || alloc > 4<<20 {
				t.Fatalf("signing a %d-byte sparse tarball: %v (reason %q) after allocating %d MiB; want malformed, under 4 MiB",
					len(raw), err, bundle.ReasonOf(err), alloc>>20)
			}
		})
	}
	if _, err := build.Sign(make([]byte, bundle.DefaultMaxSizeBytes+1), opts); bundle.ReasonOf(err) != bundle.ReasonTooLarge {
		t.Fatalf("a tarball over max_size_bytes: %v, want too_large", err)
	}
}

// `bundle build` and `bundle verify` compile under engine.activation_timeout, as the sidecar
// does: a policy whose tables take 10^10 steps is refused (activation_timeout) instead of
// holding the command for hours.
func TestBuildAndVerifyHaveTheActivationDeadline(t *testing.T) {
	dir := t.TempDir()
	for name, src := range map[string]string{
		"decision.rego":     "package consentry\n\ndecision := {\"allow\": false}\n",
		"minimization.rego": "package consentry.minimization\n\ntables := count([1 | some i in numbers.range(1, 100000); some j in numbers.range(1, 100000); i != j])\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	quick := engine.Config{ActivationTimeout: 200 * time.Millisecond}
	within(t, 15*time.Second, "bundle build", func() {
		if _, err := build.Build(context.Background(), dir, build.Options{SkipTests: true, Engine: quick}); !errors.Is(err, engine.ErrActivationTimeout) {
			t.Errorf("build: %v, want an activation timeout", err)
		}
	})
	// The same policy, packaged and signed without compiling it.
	ps, err := engine.LoadDir(dir, engine.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := bundle.FromPolicySet(dir, ps, "1")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := bundle.WriteTarball(b)
	if err != nil {
		t.Fatal(err)
	}
	key := bundletest.DevES256(t)
	if raw, err = build.Sign(raw, build.SignOptions{KeyFile: key.Private, Algorithm: key.Alg, KeyID: key.ID}); err != nil {
		t.Fatal(err)
	}
	vc := bundle.VerificationConfig{Keys: []bundle.KeyConfig{{ID: key.ID, Algorithm: key.Alg, KeyFile: key.Public}}}
	within(t, 15*time.Second, "bundle verify", func() {
		if _, err := build.Verify(context.Background(), raw, build.VerifyOptions{Verification: vc, Engine: quick}); bundle.ReasonOf(err) != bundle.ReasonActivationTimeout {
			t.Errorf("verify: %v, want activation_timeout", err)
		}
	})
}

// within runs f and fails the test if it has not returned after d (f keeps running).
func within(t *testing.T, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s still runs after %s", what, d)
	}
}
