package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/consentry/consentry/sidecar/bundle/bundletest"
)

// writeTree writes files (slash path -> content) under a new temporary directory.
func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// What `bundle build`, `bundle sign` and `consentry test` refuse, and with which exit code:
// each is a policy or bundle a sidecar would refuse.
func TestBundleAndTestRefusals(t *testing.T) {
	const decision = "package consentry\n\ndecision := {\"allow\": false}\n"
	noDecision := writeTree(t, map[string]string{"consentry/other.rego": "package consentry.other\n\nx := 1\n"})
	badScenario := writeTree(t, map[string]string{
		"consentry/decision.rego": decision,
		"scenarios/s.yaml":        "scenarios:\n  - name: typo\n    base: support\n    expect: {allwo: true}\n",
	})
	engineRefuses := writeTree(t, map[string]string{
		"consentry/decision.rego": decision,
		"consentry/custom/x.rego": "package consentry.custom.x\n\ndeny := \"not a set\"\n",
	})
	sparse := filepath.Join(t.TempDir(), "sparse.tar.gz")
	if err := os.WriteFile(sparse, bundletest.SparseTar(t, bundletest.SparsePAX10, 3, 60<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	key := bundletest.DevES256(t)
	out := filepath.Join(t.TempDir(), "b.tar.gz")
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"build --skip-tests without data.consentry.decision", []string{"bundle", "build", noDecision, "-o", out, "--skip-tests"}, ExitCompile, "no_decision"},
		{"build without data.consentry.decision", []string{"bundle", "build", noDecision, "-o", out}, ExitCompile, "no_decision"},
		{"build with an invalid scenario file", []string{"bundle", "build", badScenario, "-o", out}, ExitTestsFailed, "allwo"},
		{"test with an invalid scenario file", []string{"test", badScenario}, ExitTestsFailed, "allwo"},
		{"test of a policy the engine refuses, without scenarios", []string{"test", engineRefuses}, ExitCompile, "deny must be a set"},
		{"build of a policy the engine refuses", []string{"bundle", "build", engineRefuses, "-o", out, "--skip-tests"}, ExitCompile, "deny must be a set"},
		{"sign a sparse tar bomb", []string{"bundle", "sign", sparse, "--signing-key", key.Private, "--keyid", key.ID}, ExitFailure, "sparse"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, msg := runCLI(t, tc.args...)
			if code != tc.code || !strings.Contains(msg, tc.want) {
				t.Fatalf("exit %d, want %d with %q:\n%s", code, tc.code, tc.want, msg)
			}
		})
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatalf("a refused build wrote %s", out)
	}
}
