package bundle_test

import (
	"compress/gzip"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	opabundle "github.com/open-policy-agent/opa/v1/bundle"

	"github.com/consentry/consentry/sidecar/bundle"
	"github.com/consentry/consentry/sidecar/bundle/build"
	"github.com/consentry/consentry/sidecar/bundle/bundletest"
	"github.com/consentry/consentry/sidecar/engine"
)

// policyDirWithCustomRules copies the library and adds two custom packages whose files share a
// base name (consentry/custom/{a,b}/rules.rego); a denies every request. It returns the real
// directory and a symlink to it (a release symlink, which engine.LoadDir explicitly supports).
func policyDirWithCustomRules(t *testing.T) (real, link string) {
	t.Helper()
	root := t.TempDir()
	real = filepath.Join(root, "releases", "42", "policies")
	bundletest.CopyDir(t, bundletest.Policies(t), real)
	for name, body := range map[string]string{
		"a": "package consentry.custom.a\n\ndeny if { true }\n",
		"b": "package consentry.custom.b\n\ndeny if { input.action == \"never-used\" }\n",
	} {
		d := filepath.Join(real, "consentry", "custom", name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "rules.rego"), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link = filepath.Join(root, "current")
	if err := os.Symlink(filepath.Join(root, "releases", "42", "policies"), link); err != nil {
		t.Fatal(err)
	}
	return real, link
}

// A policy.dir reached through a symlink: modules used to be named relative to the unresolved
// directory, fall back to their base name, and collide, so the deny-everything rule of
// consentry.custom.a was silently dropped and requests were allowed (fail open).
func TestSymlinkedPolicyDirKeepsSameNamedModules(t *testing.T) {
	real, link := policyDirWithCustomRules(t)
	no := false
	for _, dir := range []string{real, link} {
		f := newFixture(t, bundle.Config{Dir: dir, RequireSignatures: &no})
		if err := f.mgr.ActivatePolicyDir(context.Background()); err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
		res, _ := f.eng.Decide(context.Background(), exampleInput(t))
		if res.Decision.Allow {
			t.Errorf("policy.dir %s: the custom rule consentry.custom.a (deny if true) was not applied: decision %+v", dir, res.Decision)
		}
	}
}

// `bundle build` of a symlinked policy directory keeps the directory layout: the signed
// bundle used to carry two entries named /rules.rego and fail hash_mismatch on every sidecar.
func TestBuildFromSymlinkedDirKeepsLayout(t *testing.T) {
	_, link := policyDirWithCustomRules(t)
	es := bundletest.DevES256(t)
	res, err := build.Build(context.Background(), link, build.Options{Revision: "5", SkipTests: true,
		Sign: &build.SignOptions{KeyFile: es.Private, Algorithm: es.Alg, KeyID: es.ID}})
	if err != nil {
		t.Fatal(err)
	}
	files := bundletest.Files(t, res.Tarball)
	for _, want := range []string{"consentry/custom/a/rules.rego", "consentry/custom/b/rules.rego"} {
		found := false
		for n := range files {
			if filepath.ToSlash(filepath.Clean("/"+n)) == "/"+want {
				found = true
			}
		}
		if !found {
			t.Errorf("bundle has no %s", want)
		}
	}
	f := newFixture(t, bundle.Config{File: "unused.tar.gz"})
	if err := f.mgr.ActivateTarball(context.Background(), res.Tarball, "test"); err != nil {
		t.Fatalf("a bundle built by `bundle build` from a symlinked dir is refused: %v", err)
	}
	d, _ := f.eng.Decide(context.Background(), exampleInput(t))
	if d.Decision.Allow {
		t.Fatalf("custom rule consentry.custom.a lost in the bundle: %+v", d.Decision)
	}
}

// Two modules that map to one bundle path are refused, never collapsed into one.
func TestDuplicateModulePathsRefused(t *testing.T) {
	t.Run("FromPolicySet", func(t *testing.T) {
		ps := &engine.PolicySet{Modules: map[string]string{
			"/elsewhere/a/rules.rego": "package consentry.a\n\ndeny if { true }\n",
			"/elsewhere/b/rules.rego": "package consentry.b\n\ndeny if { false }\n",
		}}
		if _, err := bundle.FromPolicySet("/policies", ps, "1"); !errors.Is(err, bundle.ErrDuplicateModule) {
			t.Fatalf("got %v, want ErrDuplicateModule", err)
		}
	})
	t.Run("tarball", func(t *testing.T) {
		raw := tarGzFiles(t, [][2]string{
			{"/.manifest", `{"revision":"1","roots":["consentry"]}`},
			{"/consentry/rules.rego", "package consentry.a\n\ndeny if { true }\n"},
			{"/consentry/rules.rego", "package consentry.b\n\ndeny if { false }\n"},
		})
		v, err := bundle.NewVerifier(bundle.VerificationConfig{}, false, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.ReadTarball(raw); !errors.Is(err, bundle.ErrDuplicateModule) || bundle.ReasonOf(err) != bundle.ReasonMalformed {
			t.Fatalf("a tarball with two modules named /consentry/rules.rego: got %v, want malformed (duplicate module path)", err)
		}
	})
	t.Run("PolicySet keeps both", func(t *testing.T) {
		v := &bundle.Verified{Revision: "1"}
		v.Bundle.Modules = append(v.Bundle.Modules,
			opaModule("/consentry/rules.rego", "package consentry.a\n\ndeny if { true }\n"),
			opaModule("/consentry/rules.rego", "package consentry.b\n\ndeny if { false }\n"))
		if n := len(v.PolicySet("x").Modules); n != 2 {
			t.Fatalf("PolicySet has %d modules, want 2", n)
		}
	})
}

// tarGzFiles writes entries in the order given (bundletest.Tar takes a map, so it cannot hold
// two entries with one name).
func tarGzFiles(t testing.TB, entries [][2]string) []byte {
	t.Helper()
	es := make([]bundletest.Entry, len(entries))
	for i, e := range entries {
		es[i] = bundletest.Entry{Name: e[0], Body: []byte(e[1])}
	}
	return bundletest.TarEntries(t, gzip.DefaultCompression, es)
}

func opaModule(path, src string) opabundle.ModuleFile {
	return opabundle.ModuleFile{URL: path, Path: path, RelativePath: path, Raw: []byte(src)}
}
