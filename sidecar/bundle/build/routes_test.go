package build_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/consentry/consentry/sidecar/bundle"
	"github.com/consentry/consentry/sidecar/bundle/build"
	"github.com/consentry/consentry/sidecar/bundle/bundletest"
	"github.com/consentry/consentry/sidecar/engine"
)

const bundledRoutes = `{"unlisted": %q, "routes": [{"method": "GET", "path": "/a/{customer_id}", "action": "read", "resource": "customer", "customer_param": "customer_id", "fields": ["name"]}]}`

// withRoutes copies the repository's policies with a route map at data.consentry.routes.
func withRoutes(t *testing.T, unlisted string) string {
	t.Helper()
	dir := t.TempDir()
	bundletest.CopyDir(t, bundletest.Policies(t), dir)
	rd := filepath.Join(dir, "data", "consentry", "routes")
	if err := os.MkdirAll(rd, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rd, "data.json"), []byte(strings.Replace(bundledRoutes, "%q", `"`+unlisted+`"`, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestBundledRouteMapIsChecked: a route map in data.consentry.routes that a routes.from_bundle
// sidecar refuses is refused by `bundle build` (compile) and `bundle verify` too, so the
// release gate never passes a bundle every such sidecar rejects.
func TestBundledRouteMapIsChecked(t *testing.T) {
	ctx := context.Background()
	if _, err := build.Build(ctx, withRoutes(t, "drop"), build.Options{Revision: "1", SkipTests: true}); err != nil {
		t.Fatalf("a valid route map: %v", err)
	}
	_, err := build.Build(ctx, withRoutes(t, "dorp"), build.Options{Revision: "1", SkipTests: true})
	var ce *engine.CompileError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "unlisted") {
		t.Fatalf("build of an invalid route map: %v, want a compile error naming unlisted", err)
	}
	// Verify: a good bundle whose route map is broken afterwards, then signed.
	good, err := build.Build(ctx, withRoutes(t, "drop"), build.Options{Revision: "2", SkipTests: true})
	if err != nil {
		t.Fatal(err)
	}
	changed := false
	broken := bundletest.Rewrite(t, good.Tarball, func(files map[string][]byte) {
		for name, body := range files {
			if strings.HasSuffix(name, "data.json") {
				b := bytes.Replace(body, []byte(`"unlisted":"drop"`), []byte(`"unlisted":"dorp"`), 1)
				changed, files[name] = changed || !bytes.Equal(b, body), b
			}
		}
	})
	if !changed {
		t.Fatal("the route map was not found in the tarball's data")
	}
	key := bundletest.DevES256(t)
	signed, err := build.Sign(broken, build.SignOptions{KeyFile: key.Private, Algorithm: key.Alg, KeyID: key.ID})
	if err != nil {
		t.Fatal(err)
	}
	vc := bundle.VerificationConfig{Keys: []bundle.KeyConfig{{ID: key.ID, Algorithm: key.Alg, KeyFile: key.Public}}}
	if _, err := build.Verify(ctx, signed, build.VerifyOptions{Verification: vc}); bundle.ReasonOf(err) != bundle.ReasonCompile {
		t.Fatalf("verify of a bundle with an invalid route map: %v, want %s", err, bundle.ReasonCompile)
	}
}

// TestInspectNamesNonCanonicalEntries: a signed bundle re-packed with "./" entry names (as
// `tar -C dir -czf b.tar.gz .` writes them) still shows its manifest and signature, and
// inspect says why the sidecar will refuse it.
func TestInspectNamesNonCanonicalEntries(t *testing.T) {
	ctx := context.Background()
	key := bundletest.DevES256(t)
	res, err := build.Build(ctx, bundletest.Policies(t), build.Options{Revision: "7", SkipTests: true,
		Sign: &build.SignOptions{KeyFile: key.Private, Algorithm: key.Alg, KeyID: key.ID}})
	if err != nil {
		t.Fatal(err)
	}
	files := bundletest.Files(t, res.Tarball)
	var entries []bundletest.Entry
	for name, body := range files {
		entries = append(entries, bundletest.Entry{Name: "./" + name, Body: body})
	}
	dotted := bundletest.TarEntries(t, gzip.DefaultCompression, entries)
	info, err := build.Inspect(dotted)
	if err != nil {
		t.Fatal(err)
	}
	if info.Revision != "7" || info.Signature == nil {
		t.Fatalf("inspect: revision %q, signature %v", info.Revision, info.Signature)
	}
	if len(info.Warnings) == 0 || !strings.Contains(info.Warnings[0], "extra_file") {
		t.Fatalf("no warning about the entry names: %v", info.Warnings)
	}
	if clean, err := build.Inspect(res.Tarball); err != nil || len(clean.Warnings) != 0 {
		t.Fatalf("a bundle build wrote: warnings %v (%v)", clean.Warnings, err)
	}
}
