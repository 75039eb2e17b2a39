package build_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/bundle"
	"github.com/consentry/consentry/sidecar/bundle/build"
	"github.com/consentry/consentry/sidecar/bundle/bundletest"
	"github.com/consentry/consentry/sidecar/engine"
)

func TestBuildRepositoryPolicies(t *testing.T) {
	now := time.Date(2026, 11, 22, 7, 0, 0, 0, time.UTC)
	res, err := build.Build(context.Background(), bundletest.Policies(t), build.Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	if res.Tests == nil || res.Tests.Passed == 0 || res.Tests.Failed != 0 {
		t.Fatalf("tests: %+v", res.Tests)
	}
	if !strings.HasPrefix(res.Revision, "2026-11-22T07:00:00.000000000Z-") {
		t.Fatalf("default revision %q", res.Revision)
	}
	files := bundletest.Files(t, res.Tarball)
	for name := range files {
		if strings.HasSuffix(name, "_test.rego") {
			t.Errorf("test file %s shipped in the bundle", name)
		}
	}
	if _, ok := files["consentry/decision.rego"]; !ok {
		t.Fatalf("files %v", keys(files))
	}
	var manifest struct {
		Revision    string   `json:"revision"`
		Roots       []string `json:"roots"`
		RegoVersion int      `json:"rego_version"`
		Metadata    struct {
			Consentry struct {
				Schemas map[string]any `json:"schemas"`
			} `json:"consentry"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(files[".manifest"], &manifest); err != nil {
		t.Fatal(err)
	}
	if manifest.Revision != res.Revision || len(manifest.Roots) != 1 || manifest.Roots[0] != "consentry" || manifest.RegoVersion != 1 || manifest.Metadata.Consentry.Schemas["input"] == nil {
		t.Fatalf("manifest %+v", manifest)
	}
	var data map[string]map[string]any
	if err := json.Unmarshal(files["data.json"], &data); err != nil || data["consentry"]["catalog"] == nil {
		t.Fatalf("data.json does not hold data.consentry.catalog: %v", err)
	}
}

func withFile(t *testing.T, name, src string) string {
	t.Helper()
	dir := t.TempDir()
	bundletest.CopyDir(t, bundletest.Policies(t), dir)
	if err := os.WriteFile(filepath.Join(dir, "consentry", name), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestBuildRefuses(t *testing.T) {
	tests := []struct {
		name, file, src string
		skipTests       bool
		wantCompile     bool
		wantTests       bool
	}{
		{"compile error", "broken.rego", "package consentry.broken\n\nx := nope(1)\n", false, true, false},
		{"schema type error", "typo.rego", "package consentry.typo\n\nbad if input.request.methd == \"GET\"\n", false, true, false},
		{"unsafe variable", "unsafe.rego", "package consentry.unsafe\n\nx := y if { z := 1 }\n", true, true, false},
		{"failing test", "fail_test.rego", "package consentry.fail_test\n\ntest_fails if { 1 == 2 }\n", false, false, true},
		{"failing test skipped", "fail_test.rego", "package consentry.fail_test\n\ntest_fails if { 1 == 2 }\n", true, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := withFile(t, tt.file, tt.src)
			res, err := build.Build(context.Background(), dir, build.Options{SkipTests: tt.skipTests, Revision: "1"})
			var ce *engine.CompileError
			switch {
			case tt.wantCompile:
				if !errors.As(err, &ce) {
					t.Fatalf("want a compile error, got %v", err)
				}
			case tt.wantTests:
				if !errors.Is(err, build.ErrTestsFailed) || res == nil || len(res.Tests.Failures) != 1 || !strings.Contains(res.Tests.Failures[0], "test_fails") {
					t.Fatalf("want failing tests, got %v %+v", err, res)
				}
			default:
				if err != nil || len(res.Tarball) == 0 {
					t.Fatalf("build: %v", err)
				}
			}
		})
	}
}

func TestSignVerifyInspect(t *testing.T) {
	ctx := context.Background()
	unsigned, err := build.Build(ctx, bundletest.Policies(t), build.Options{Revision: "3", SkipTests: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []bundletest.Key{bundletest.DevES256(t), bundletest.DevRS256(t)} {
		t.Run(key.Alg, func(t *testing.T) {
			signed, err := build.Sign(unsigned.Tarball, build.SignOptions{KeyFile: key.Private, Algorithm: key.Alg, KeyID: key.ID, Scope: "prod"})
			if err != nil {
				t.Fatal(err)
			}
			vc := bundle.VerificationConfig{Scope: "prod", Keys: []bundle.KeyConfig{{ID: key.ID, Algorithm: key.Alg, KeyFile: key.Public}}}
			v, err := build.Verify(ctx, signed, build.VerifyOptions{Verification: vc})
			if err != nil {
				t.Fatal(err)
			}
			if v.KeyID != key.ID || v.Scope != "prod" || v.Revision != "3" {
				t.Fatalf("verified %+v", v)
			}
			info, err := build.Inspect(signed)
			if err != nil {
				t.Fatal(err)
			}
			if info.Signature == nil || info.Signature.Algorithm != key.Alg || info.Signature.KeyID != key.ID || info.Signature.Scope != "prod" ||
				info.Revision != "3" || len(info.Schemas) == 0 || len(info.Signature.Files) != len(info.Files)-1 {
				t.Fatalf("inspect %+v %+v", info, info.Signature)
			}
			vc.Scope = "staging"
			if _, err := build.Verify(ctx, signed, build.VerifyOptions{Verification: vc}); bundle.ReasonOf(err) != bundle.ReasonScopeMismatch {
				t.Fatalf("wrong scope: %v", err)
			}
		})
	}
	if _, err := build.Verify(ctx, unsigned.Tarball, build.VerifyOptions{Verification: bundle.VerificationConfig{
		Keys: []bundle.KeyConfig{{ID: "k", Algorithm: "ES256", KeyFile: bundletest.DevES256(t).Public}}}}); bundle.ReasonOf(err) != bundle.ReasonSignatureMissing {
		t.Fatalf("unsigned bundle verified: %v", err)
	}
	if _, err := build.Sign(unsigned.Tarball, build.SignOptions{KeyFile: bundletest.DevES256(t).Private, Algorithm: "ES256"}); err == nil {
		t.Fatal("signed without a key id")
	}
	if _, err := build.Sign(unsigned.Tarball, build.SignOptions{KeyFile: bundletest.DevES256(t).Private, Algorithm: "HS256", KeyID: "k"}); err == nil {
		t.Fatal("signed with HMAC")
	}
}

func TestKeygen(t *testing.T) {
	for _, alg := range []string{"ES256", "RS256"} {
		base := filepath.Join(t.TempDir(), "k")
		if err := build.Keygen(alg, base); err != nil {
			t.Fatal(err)
		}
		unsigned, err := build.Build(context.Background(), bundletest.Policies(t), build.Options{Revision: "1", SkipTests: true,
			Sign: &build.SignOptions{KeyFile: base + ".key", Algorithm: alg, KeyID: "fresh"}})
		if err != nil {
			t.Fatal(err)
		}
		vc := bundle.VerificationConfig{Keys: []bundle.KeyConfig{{ID: "fresh", Algorithm: alg, KeyFile: base + ".pub"}}}
		if _, err := build.Verify(context.Background(), unsigned.Tarball, build.VerifyOptions{Verification: vc}); err != nil {
			t.Fatalf("%s: %v", alg, err)
		}
	}
}

func keys(m map[string][]byte) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
