package bundle_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/bundle"
	"github.com/consentry/consentry/sidecar/bundle/bundletest"
	"github.com/consentry/consentry/sidecar/engine"
)

// opaBundleDir lays the policy library out as an OPA bundle directory, the way a policy
// author using only the opa CLI would: consentry/*.rego, consentry/catalog/data.json, .manifest.
func opaBundleDir(t *testing.T, rev string) string {
	t.Helper()
	src := bundletest.Policies(t)
	dir := filepath.Join(t.TempDir(), "bundle")
	if err := os.MkdirAll(filepath.Join(dir, "consentry", "catalog"), 0o755); err != nil {
		t.Fatal(err)
	}
	regos, _ := filepath.Glob(filepath.Join(src, "consentry", "*.rego"))
	for _, p := range regos {
		if strings.HasSuffix(p, "_test.rego") {
			continue
		}
		copyFile(t, p, filepath.Join(dir, "consentry", filepath.Base(p)))
	}
	copyFile(t, filepath.Join(src, "data", "consentry", "catalog", "data.json"), filepath.Join(dir, "consentry", "catalog", "data.json"))
	if err := os.WriteFile(filepath.Join(dir, ".manifest"), []byte(`{"revision":"`+rev+`","roots":["consentry"]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func runOPA(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	opa := bundletest.OPA(t) // may build opa first: not counted against the timeout below
	// Only a guard against a hung opa: generous, since a busy CI machine under -race has been
	// seen to take more than a minute.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, opa, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func claimsFile(t *testing.T, keyid string) string {
	p := filepath.Join(t.TempDir(), "claims.json")
	if err := os.WriteFile(p, []byte(`{"keyid":"`+keyid+`"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// referenceStatus is the decision status the repository's policies give the example input.
func referenceStatus(t *testing.T) int {
	t.Helper()
	ps, err := engine.LoadDir(bundletest.Policies(t), engine.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e := engine.New(engine.Config{Timeout: 5 * time.Second}, quiet)
	if err := e.Load(context.Background(), ps); err != nil {
		t.Fatal(err)
	}
	res, err := e.Decide(context.Background(), exampleInput(t))
	if err != nil {
		t.Fatal(err)
	}
	return res.Decision.Status
}

func TestBundleFromOPABuildActivates(t *testing.T) {
	rs := bundletest.DevRS256(t)
	dir := opaBundleDir(t, "42")
	out := filepath.Join(t.TempDir(), "opa.tar.gz")
	if msg, err := runOPA(t, "", "build", "-b", dir, "-o", out, "--signing-key", rs.Private, "--signing-alg", "RS256", "--claims-file", claimsFile(t, rs.ID)); err != nil {
		t.Fatalf("opa build: %v\n%s", err, msg)
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, bundle.Config{File: "unused", Verification: bundle.VerificationConfig{Keys: []bundle.KeyConfig{keyCfg(rs)}}})
	if err := f.mgr.ActivateTarball(context.Background(), raw, "opa-build"); err != nil {
		t.Fatal(err)
	}
	a := f.mgr.Active()
	if a.Revision != "42" || !a.Signed || a.KeyID != rs.ID {
		t.Fatalf("active %+v", a)
	}
	res, err := f.eng.Decide(context.Background(), exampleInput(t))
	if err != nil || res.Decision.Status != referenceStatus(t) || res.Bundles["consentry"] != "42" {
		t.Fatalf("decision from the opa-built bundle: %+v %v", res, err)
	}
	// opa build's default key id ("default") with the verifier pinned to our key id works too.
	out2 := filepath.Join(t.TempDir(), "opa2.tar.gz")
	if msg, err := runOPA(t, "", "build", "-b", dir, "-o", out2, "--signing-key", rs.Private, "--signing-alg", "RS256", "--revision", "43"); err != nil {
		t.Fatalf("opa build: %v\n%s", err, msg)
	}
	raw2, _ := os.ReadFile(out2)
	g := newFixture(t, bundle.Config{File: "unused", Verification: bundle.VerificationConfig{KeyID: rs.ID, Keys: []bundle.KeyConfig{keyCfg(rs)}}})
	if err := g.mgr.ActivateTarball(context.Background(), raw2, "opa-build"); err != nil {
		t.Fatal(err)
	}
}

func TestBundleDirSignedByOPASignActivates(t *testing.T) {
	es := bundletest.DevES256(t)
	dir := opaBundleDir(t, "7")
	if msg, err := runOPA(t, "", "sign", dir, "--bundle", "--signing-key", es.Private, "--signing-alg", "ES256", "--claims-file", claimsFile(t, es.ID), "-o", dir); err != nil {
		t.Fatalf("opa sign: %v\n%s", err, msg)
	}
	f := newFixture(t, bundle.Config{Dir: dir, Polling: bundle.PollingConfig{MinDelay: time.Hour, MaxDelay: time.Hour}})
	f.run(t)
	eventually(t, 30*time.Second, "the opa-signed bundle directory", func() bool {
		if st := f.mgr.Status().(bundle.Status); st.LastRejection != nil {
			t.Fatalf("rejected: %+v", st.LastRejection)
		}
		return revisionIs(f.mgr, "7")()
	})
	if a := f.mgr.Active(); !a.Signed || a.KeyID != es.ID {
		t.Fatalf("active %+v", a)
	}
	// Editing a signed bundle directory breaks its signature: rejected, revision 7 stays.
	p := filepath.Join(dir, "consentry", "util.rego")
	b, _ := os.ReadFile(p)
	if err := os.WriteFile(p, append(b, "\n# edited\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "hash_mismatch rejection", func() bool { return f.rejections(bundle.ReasonHashMismatch) >= 1 })
	if f.mgr.Active().Revision != "7" {
		t.Fatal("active bundle changed")
	}
}

func TestOurBundleLoadsInOPA(t *testing.T) {
	es := bundletest.DevES256(t)
	path := filepath.Join(t.TempDir(), "consentry.tar.gz")
	raw := signedBundle(t, "2026-11-22T07:00:00Z-interop", es, "")
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	in, _ := json.Marshal(exampleInput(t))
	query := "data.consentry.decision.status with input as " + string(in) + "\n"
	args := []string{"run", "-b", path, "--verification-key", es.Public, "--signing-alg", "ES256", "--verification-key-id", es.ID}
	out, err := runOPA(t, query, args...)
	if err != nil {
		t.Fatalf("opa run: %v\n%s", err, out)
	}
	want := strconv.Itoa(referenceStatus(t))
	if !strings.Contains(out, "\n"+want+"\n") {
		t.Fatalf("opa evaluated our bundle to %q, want status %s", out, want)
	}
	// OPA also refuses it under the wrong key, and when tampered.
	rs := bundletest.DevRS256(t)
	if out, err := runOPA(t, "", "run", "-b", path, "--verification-key", rs.Public, "--signing-alg", "RS256", "--verification-key-id", es.ID); err == nil || !strings.Contains(out, "verif") {
		t.Fatalf("opa accepted our bundle under the wrong key: %v %s", err, out)
	}
	tampered := filepath.Join(t.TempDir(), "tampered.tar.gz")
	_ = os.WriteFile(tampered, bundletest.Rewrite(t, raw, func(f map[string][]byte) { f["data.json"] = []byte(`{}`) }), 0o644)
	if out, err := runOPA(t, "", append([]string{"run", "-b", tampered}, args[3:]...)...); err == nil || !strings.Contains(out, "digest mismatch") {
		t.Fatalf("opa accepted a tampered bundle: %v %s", err, out)
	}
}
