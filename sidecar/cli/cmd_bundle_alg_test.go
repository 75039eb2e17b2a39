package cli

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/consentry/consentry/sidecar/bundle/bundletest"
)

// TestBundleAlgorithmFollowsTheKey: `bundle keygen` makes ES256 keys by default while sign,
// build and verify defaulted to RS256, so keygen + build + verify with default flags failed.
// Without --signing-alg the algorithm now follows the key; an explicit one stays authoritative
// and one that does not fit the key is refused by name (exit 2).
func TestBundleAlgorithmFollowsTheKey(t *testing.T) {
	tmp := t.TempDir()
	policies := bundletest.Policies(t)
	rs := bundletest.DevRS256(t)
	es := filepath.Join(tmp, "release")
	if code, msg := runCLI(t, "bundle", "keygen", "-o", es); code != ExitOK {
		t.Fatalf("keygen: %d %s", code, msg)
	}
	out := filepath.Join(tmp, "b.tar.gz")
	steps := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"build with a keygen key, default flags", []string{"bundle", "build", policies, "-o", out, "--skip-tests", "--signing-key", es + ".key", "--keyid", "k1"}, ExitOK, "signed by k1"},
		{"verify, default flags", []string{"bundle", "verify", out, "--verification-key", es + ".pub", "--keyid", "k1"}, ExitOK, "OK"},
		{"verify, explicit ES256", []string{"bundle", "verify", out, "--verification-key", es + ".pub", "--keyid", "k1", "--signing-alg", "es256"}, ExitOK, "OK"},
		{"verify, explicit alg not fitting the key", []string{"bundle", "verify", out, "--verification-key", es + ".pub", "--keyid", "k1", "--signing-alg", "RS256"}, ExitUsage, "does not fit"},
		{"sign, explicit alg not fitting the key", []string{"bundle", "sign", out, "--signing-key", es + ".key", "--keyid", "k1", "--signing-alg", "RS256"}, ExitUsage, "use ES256"},
		{"build, explicit alg not fitting the key", []string{"bundle", "build", policies, "-o", out, "--skip-tests", "--signing-key", es + ".key", "--keyid", "k1", "--signing-alg", "ES384"}, ExitUsage, "does not fit"},
		{"sign with an RSA key, default flags", []string{"bundle", "sign", out, "--signing-key", rs.Private, "--keyid", rs.ID}, ExitOK, "(RS256)"},
		{"verify RSA, default flags", []string{"bundle", "verify", out, "--verification-key", rs.Public, "--keyid", rs.ID}, ExitOK, "OK"},
		{"sign with RSA, explicit PS256", []string{"bundle", "sign", out, "--signing-key", rs.Private, "--keyid", rs.ID, "--signing-alg", "PS256"}, ExitOK, "(PS256)"},
		{"verify PS256", []string{"bundle", "verify", out, "--verification-key", rs.Public, "--keyid", rs.ID, "--signing-alg", "PS256"}, ExitOK, "OK"},
		{"verify a PS256 signature as RS256", []string{"bundle", "verify", out, "--verification-key", rs.Public, "--keyid", rs.ID}, ExitVerifyFailed, ""},
		{"no key file to infer from", []string{"bundle", "verify", out, "--verification-key", filepath.Join(tmp, "missing.pub"), "--keyid", "k1"}, ExitUsage, "--signing-alg"},
	}
	for _, s := range steps {
		code, msg := runCLI(t, s.args...)
		if code != s.code || !strings.Contains(msg, s.want) {
			t.Fatalf("%s: exit %d, want %d with %q\n%s", s.name, code, s.code, s.want, msg)
		}
	}
}
