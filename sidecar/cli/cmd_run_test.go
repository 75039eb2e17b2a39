package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/consentry/consentry/sidecar/auditlog"
	"github.com/consentry/consentry/sidecar/bundle/bundletest"
)

// TestRunCheckLocalBundle: `run --check` verifies and compiles a local bundle (policy.file)
// as the running sidecar would, and maps each refusal to its exit code.
func TestRunCheckLocalBundle(t *testing.T) {
	tmp := t.TempDir()
	root := bundletest.RepoRoot(t)
	es, rs := bundletest.DevES256(t), bundletest.DevRS256(t)
	signed := filepath.Join(tmp, "signed.tar.gz")
	if code, msg := runCLI(t, "bundle", "build", bundletest.Policies(t), "-o", signed, "--revision", "42", "--skip-tests",
		"--signing-key", es.Private, "--signing-alg", "ES256", "--keyid", es.ID); code != ExitOK {
		t.Fatalf("build: %d %s", code, msg)
	}
	raw, err := os.ReadFile(signed)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(tmp, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tampered := write("tampered.tar.gz", bundletest.Rewrite(t, raw, func(files map[string][]byte) {
		files["consentry/decision.rego"] = append(files["consentry/decision.rego"], "\n# changed\n"...)
	}))
	broken := write("broken.tar.gz", bundletest.Rewrite(t, raw, func(files map[string][]byte) {
		delete(files, ".signatures.json")
		files["consentry/broken.rego"] = []byte("package consentry.broken\n\nx := nope(1)\n")
	}))
	trust := func(k bundletest.Key) string {
		return fmt.Sprintf("  verification:\n    keys:\n      - id: %s\n        algorithm: %s\n        key_file: %s\n", k.ID, k.Alg, k.Public)
	}
	cases := []struct {
		name   string
		policy string
		code   int
		want   string
	}{
		{"signed bundle", "  file: " + signed + "\n" + trust(es), ExitOK, `revision "42" (signed, key "` + es.ID + `")`},
		{"signed by an untrusted key", "  file: " + signed + "\n" + trust(rs), ExitVerifyFailed, "signature_invalid"},
		{"a file changed after signing", "  file: " + tampered + "\n" + trust(es), ExitVerifyFailed, "hash_mismatch"},
		{"unsigned where signatures are required", "  file: " + broken + "\n" + trust(es), ExitVerifyFailed, "signature_missing"},
		{"does not compile", "  file: " + broken + "\n  require_signatures: false\n", ExitCompile, "broken.rego"},
		{"missing file", "  file: " + filepath.Join(tmp, "nope.tar.gz") + "\n  require_signatures: false\n", ExitConfig, "policy.file: open"},
		{"url: not fetched", "  url: http://127.0.0.1:1/bundle.tar.gz\n  no_persist: true\n" + trust(es), ExitOK, "not fetched by --check"},
		{"url without persist_dir", "  url: http://127.0.0.1:1/bundle.tar.gz\n" + trust(es), ExitConfig, "policy.persist_dir: required"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			t.Chdir(dir) // the decision log and state default to ./var
			cfg := write(strings.ReplaceAll(c.name, " ", "-")+".yaml", []byte("policy:\n"+c.policy+
				"routes:\n  file: "+filepath.Join(root, "deploy", "routes", "democrm.yaml")+"\n"+
				"state:\n  purposes_file: "+filepath.Join(root, "policies", "data", "consentry", "catalog", "data.json")+"\n"+
				"proxy:\n  listen: 127.0.0.1:0\n  upstream: http://127.0.0.1:1\n"))
			code, out := runCLI(t, "run", "--config", cfg, "--check", "--log-level", "error")
			if code != c.code || !strings.Contains(out, c.want) {
				t.Fatalf("exit %d, want %d with %q:\n%s", code, c.code, c.want, out)
			}
		})
	}
}

// TestRunCheckNextToARunningSidecar: run --check validates the decision log and the state
// configuration without opening them: it passes while another process holds the log's
// lock, and writes nothing (no checkpoint, no generated key, no state database). A bad
// setting in either is still refused.
func TestRunCheckNextToARunningSidecar(t *testing.T) {
	root := bundletest.RepoRoot(t)
	dir := t.TempDir()
	t.Chdir(dir)
	logDir := filepath.Join(dir, "decisions")
	lg, err := auditlog.Open(auditlog.Config{Dir: logDir, UnsignedCheckpoints: true, PseudonymKeyFile: writeKey(t, dir)}, auditlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer lg.Close()
	before := dirListing(t, dir)
	cfgText := func(extra string) string {
		return "policy:\n  dir: " + filepath.Join(root, "policies") + "\n  require_signatures: false\n" +
			"routes:\n  file: " + filepath.Join(root, "deploy", "routes", "democrm.yaml") + "\n" +
			"decision_log:\n  dir: " + logDir + "\n  unsigned_checkpoints: true\n" + extra +
			"state:\n  data_dir: " + filepath.Join(dir, "state") + "\n  purposes_file: " + filepath.Join(root, "policies", "data", "consentry", "catalog", "data.json") + "\n" +
			"proxy:\n  listen: 127.0.0.1:0\n  upstream: http://127.0.0.1:1\n"
	}
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(cfg, []byte(cfgText("")), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out := runCLI(t, "run", "--config", cfg, "--check", "--log-level", "error"); code != ExitOK {
		t.Fatalf("check next to a running log: %d %s", code, out)
	}
	if after := dirListing(t, dir); after != before {
		t.Fatalf("run --check wrote files:\nbefore %s\nafter  %s", before, after)
	}
	// What run refuses, check refuses too, without opening anything.
	for extra, want := range map[string]string{
		"  mode: sometimes\n":                 "decision_log.mode",
		"  signing_vault_key: decision-log\n": "signing_vault_key",
		"  upload:\n    url: http://127.0.0.1:1\n    bearer_token_file: /nonexistent/token\n": "bearer_token_file",
	} {
		if err := os.WriteFile(cfg, []byte(cfgText(extra)), 0o600); err != nil {
			t.Fatal(err)
		}
		if code, out := runCLI(t, "run", "--config", cfg, "--check", "--log-level", "error"); code != ExitConfig || !strings.Contains(out, want) {
			t.Fatalf("%q: %d %s", extra, code, out)
		}
	}
}

func writeKey(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "pseudonym.key")
	if err := auditlog.WritePseudonymKey(p); err != nil {
		t.Fatal(err)
	}
	return p
}

// dirListing names every file under dir with its size.
func dirListing(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if st, err := d.Info(); err == nil {
				fmt.Fprintf(&b, "%s:%d ", strings.TrimPrefix(p, dir), st.Size())
			}
		}
		return nil
	})
	return b.String()
}
