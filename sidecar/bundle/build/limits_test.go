package build_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
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

// `bundle build`, `bundle sign` and `bundle verify` take the sidecar's policy.max_size_bytes as
// MaxSizeBytes (--max-size-bytes): a bundle that fits a raised limit is signed and verified, one
// that does not is refused (too_large) by all three, build included, with an error naming the
// flag (the setting these commands never read would send the operator to the wrong place).
func TestSizeLimitIsTheCommandsOwn(t *testing.T) {
	const small, raised = 2048, 8192
	blob := strings.Repeat("a", 4096) // one 4 KiB+ data file: over small, under raised
	dir := t.TempDir()
	for name, src := range map[string]string{
		"consentry/decision.rego":      "package consentry\n\ndecision := {\"allow\": false}\n",
		"data/consentry/big/data.json": `{"blob":"` + blob + `"}`,
	} {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	key := bundletest.DevES256(t)
	sign := &build.SignOptions{KeyFile: key.Private, Algorithm: key.Alg, KeyID: key.ID}
	vc := bundle.VerificationConfig{Keys: []bundle.KeyConfig{{ID: key.ID, Algorithm: key.Alg, KeyFile: key.Public}}}
	ctx := context.Background()
	tooLarge := func(what string, err error) {
		t.Helper()
		if bundle.ReasonOf(err) != bundle.ReasonTooLarge || !strings.Contains(err.Error(), build.MaxSizeFlag) || strings.Contains(err.Error(), bundle.LimitSetting) {
			t.Errorf("%s under %d bytes: %v, want too_large naming %s", what, small, err, build.MaxSizeFlag)
		}
	}

	_, err := build.Build(ctx, dir, build.Options{SkipTests: true, Sign: sign, MaxSizeBytes: small})
	tooLarge("build --signing-key", err)
	res, err := build.Build(ctx, dir, build.Options{SkipTests: true, Sign: sign, MaxSizeBytes: raised})
	if err != nil {
		t.Fatalf("build under %d bytes: %v", raised, err)
	}
	signed := res.Tarball

	_, err = build.Sign(signed, build.SignOptions{KeyFile: key.Private, Algorithm: key.Alg, KeyID: key.ID, MaxSizeBytes: small})
	tooLarge("sign", err)
	if _, err := build.Sign(signed, build.SignOptions{KeyFile: key.Private, Algorithm: key.Alg, KeyID: key.ID, MaxSizeBytes: raised}); err != nil {
		t.Errorf("sign under %d bytes: %v", raised, err)
	}

	_, err = build.Verify(ctx, signed, build.VerifyOptions{Verification: vc, MaxSizeBytes: small})
	tooLarge("verify", err)
	if _, err := build.Verify(ctx, signed, build.VerifyOptions{Verification: vc, MaxSizeBytes: raised}); err != nil {
		t.Errorf("verify under %d bytes: %v", raised, err)
	}
	// And the sidecar under the same limits agrees.
	for limit, ok := range map[int64]bool{small: false, raised: true} {
		v, err := bundle.NewVerifier(vc, true, limit)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.ReadTarball(signed); (err == nil) != ok {
			t.Errorf("sidecar with policy.max_size_bytes %d: %v", limit, err)
		}
	}
}
