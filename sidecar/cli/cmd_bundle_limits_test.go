package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/consentry/consentry/sidecar/bundle"
	"github.com/consentry/consentry/sidecar/bundle/build"
	"github.com/consentry/consentry/sidecar/bundle/bundletest"
	"github.com/consentry/consentry/sidecar/engine"
)

// signedTarball packages dir as a bundle signed with key, compiling nothing (so a policy that
// never activates can still be offered to `bundle verify`).
func signedTarball(t *testing.T, dir string, key bundletest.Key) string {
	t.Helper()
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
	if raw, err = build.Sign(raw, build.SignOptions{KeyFile: key.Private, Algorithm: key.Alg, KeyID: key.ID}); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "b.tar.gz")
	if err := os.WriteFile(out, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

// The commands that read no configuration take the sidecar's limits as flags:
// --max-size-bytes (policy.max_size_bytes; build, sign, verify) and --activation-timeout
// (engine.activation_timeout; build, verify, test). Their errors name the flag.
func TestBundleCommandLimitFlags(t *testing.T) {
	const decision = "package consentry\n\ndecision := {\"allow\": false}\n"
	big := writeTree(t, map[string]string{
		"consentry/decision.rego":      decision,
		"data/consentry/big/data.json": `{"blob":"` + strings.Repeat("a", 4096) + `"}`,
	})
	slow := writeTree(t, map[string]string{
		"consentry/decision.rego": decision,
		"consentry/minimization.rego": "package consentry.minimization\n\n" +
			"tables := count([1 | some i in numbers.range(1, 100000); some j in numbers.range(1, 100000); i != j])\n",
	})
	key := bundletest.DevES256(t)
	bigTar, slowTar := signedTarball(t, big, key), signedTarball(t, slow, key)
	out := filepath.Join(t.TempDir(), "out.tar.gz")
	sign := []string{"--signing-key", key.Private, "--keyid", key.ID}
	verify := []string{"--verification-key", key.Public, "--keyid", key.ID}
	cat := func(a ...[]string) []string {
		var all []string
		for _, x := range a {
			all = append(all, x...)
		}
		return all
	}
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"build over --max-size-bytes", cat([]string{"bundle", "build", big, "-o", out, "--skip-tests", "--max-size-bytes", "2048"}, sign), ExitCompile, "too_large"},
		{"build under a raised --max-size-bytes", cat([]string{"bundle", "build", big, "-o", out, "--skip-tests", "--max-size-bytes", "8192"}, sign), ExitOK, "signed by"},
		{"sign over --max-size-bytes", cat([]string{"bundle", "sign", bigTar, "-o", out, "--max-size-bytes", "2048"}, sign), ExitFailure, "--max-size-bytes is 2048"},
		{"sign under a raised --max-size-bytes", cat([]string{"bundle", "sign", bigTar, "-o", out, "--max-size-bytes", "8192"}, sign), ExitOK, "signed"},
		{"verify over --max-size-bytes", cat([]string{"bundle", "verify", bigTar, "--max-size-bytes", "2048"}, verify), ExitVerifyFailed, "--max-size-bytes is 2048"},
		{"verify under a raised --max-size-bytes", cat([]string{"bundle", "verify", bigTar, "--max-size-bytes", "8192"}, verify), ExitOK, "OK"},
		{"--max-size-bytes 0", cat([]string{"bundle", "sign", bigTar, "--max-size-bytes", "0"}, sign), ExitUsage, "must be positive"},
		{"build past --activation-timeout", []string{"bundle", "build", slow, "-o", out, "--skip-tests", "--activation-timeout", "200ms"}, ExitCompile, "activation"},
		{"verify past --activation-timeout", cat([]string{"bundle", "verify", slowTar, "--activation-timeout", "200ms"}, verify), ExitVerifyFailed, "activation_timeout"},
		{"test past --activation-timeout", []string{"test", "--activation-timeout", "200ms", slow}, ExitCompile, "activation"},
		{"--activation-timeout 0", []string{"test", "--activation-timeout", "0s", slow}, ExitUsage, "must be positive"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, msg := runCLI(t, tc.args...)
			if code != tc.code || !strings.Contains(msg, tc.want) {
				t.Fatalf("exit %d, want %d with %q:\n%s", code, tc.code, tc.want, msg)
			}
			if tc.code != ExitOK && strings.Contains(msg, bundle.LimitSetting) {
				t.Fatalf("the error names %s, which this command does not read:\n%s", bundle.LimitSetting, msg)
			}
		})
	}
}
