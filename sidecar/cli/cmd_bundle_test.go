package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/consentry/consentry/sidecar/bundle/bundletest"
)

func runCLI(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var out bytes.Buffer
	code := Run(context.Background(), args, &Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &out})
	return code, out.String()
}

func TestBundleCommands(t *testing.T) {
	tmp := t.TempDir()
	policies := bundletest.Policies(t)
	es, rs := bundletest.DevES256(t), bundletest.DevRS256(t)
	out := filepath.Join(tmp, "b.tar.gz")

	code, msg := runCLI(t, "bundle", "build", policies, "-o", out, "--revision", "5")
	if code != ExitOK || !strings.Contains(msg, "revision 5") || !strings.Contains(msg, "passed") {
		t.Fatalf("build: %d %s", code, msg)
	}
	code, msg = runCLI(t, "bundle", "verify", out, "--verification-key", es.Public, "--signing-alg", "ES256", "--keyid", es.ID)
	if code != ExitVerifyFailed || !strings.Contains(msg, "signature_missing") {
		t.Fatalf("verify unsigned: %d %s", code, msg)
	}
	code, msg = runCLI(t, "bundle", "sign", out, "--signing-key", es.Private, "--signing-alg", "ES256", "--keyid", es.ID)
	if code != ExitOK {
		t.Fatalf("sign: %d %s", code, msg)
	}
	code, msg = runCLI(t, "bundle", "verify", out, "--verification-key", es.Public, "--signing-alg", "ES256", "--keyid", es.ID)
	if code != ExitOK || !strings.Contains(msg, "revision 5") {
		t.Fatalf("verify: %d %s", code, msg)
	}
	code, msg = runCLI(t, "bundle", "verify", out, "--verification-key", rs.Public, "--signing-alg", "RS256", "--keyid", es.ID)
	if code != ExitVerifyFailed {
		t.Fatalf("verify with the wrong key: %d %s", code, msg)
	}
	code, msg = runCLI(t, "bundle", "inspect", out)
	if code != ExitOK || !strings.Contains(msg, "kid \""+es.ID+"\"") || !strings.Contains(msg, "consentry/decision.rego") {
		t.Fatalf("inspect: %d %s", code, msg)
	}

	// Build + sign in one step, RS256 with a scope.
	code, msg = runCLI(t, "bundle", "build", policies, "-o", out, "--skip-tests", "--signing-key", rs.Private, "--keyid", rs.ID, "--scope", "prod")
	if code != ExitOK || !strings.Contains(msg, "tests skipped") {
		t.Fatalf("build --sign: %d %s", code, msg)
	}
	code, msg = runCLI(t, "bundle", "verify", out, "--verification-key", rs.Public, "--keyid", rs.ID, "--scope", "prod")
	if code != ExitOK {
		t.Fatalf("verify scoped: %d %s", code, msg)
	}

	broken := filepath.Join(tmp, "broken")
	bundletest.CopyDir(t, policies, broken)
	if err := os.WriteFile(filepath.Join(broken, "consentry", "broken.rego"), []byte("package consentry.broken\n\nx := nope(1)\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, msg = runCLI(t, "bundle", "build", broken, "-o", filepath.Join(tmp, "x.tar.gz")); code != ExitCompile || !strings.Contains(msg, "broken.rego:3") {
		t.Fatalf("build broken: %d %s", code, msg)
	}
	failing := filepath.Join(tmp, "failing")
	bundletest.CopyDir(t, policies, failing)
	if err := os.WriteFile(filepath.Join(failing, "consentry", "x_test.rego"), []byte("package consentry.x_test\n\ntest_x if { 1 == 2 }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, msg = runCLI(t, "bundle", "build", failing, "-o", filepath.Join(tmp, "x.tar.gz")); code != ExitTestsFailed || !strings.Contains(msg, "FAIL consentry.x_test.test_x") {
		t.Fatalf("build failing tests: %d %s", code, msg)
	}
	if code, _ = runCLI(t, "bundle", "build", failing, "-o", filepath.Join(tmp, "x.tar.gz"), "--skip-tests"); code != ExitOK {
		t.Fatalf("build --skip-tests: %d", code)
	}
	if code, _ = runCLI(t, "bundle", "build"); code != ExitUsage {
		t.Fatalf("build without a directory: %d", code)
	}
	if code, _ = runCLI(t, "bundle", "sign", out, "--signing-key", rs.Private); code != ExitUsage {
		t.Fatalf("sign without --keyid: %d", code)
	}
	if code, msg = runCLI(t, "bundle", "keygen", "-o", filepath.Join(tmp, "new"), "--alg", "ES256"); code != ExitOK {
		t.Fatalf("keygen: %d %s", code, msg)
	}
}
