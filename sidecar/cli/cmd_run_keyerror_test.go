package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRunCheckNamesTheLineOfAnInvalidSetting: a section's validation error points at the
// file's line of the setting, not only at the file.
func TestRunCheckNamesTheLineOfAnInvalidSetting(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c.yaml")
	body := "policy:\n  dir: ../../policies\n  require_signatures: false\n" +
		"decision_log:\n  dir: " + filepath.Join(dir, "log") + "\n  mode: 3\n"
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := run(t, "", "run", "--config", cfg, "--check")
	if code != ExitConfig || !strings.Contains(errOut, cfg+":6: decision_log.mode: must be strict or async") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
}

// TestRunStoppedDuringStartUpIsNotAConfigError: a signal while the sidecar starts is a
// graceful stop (exit 0), not exit 5 "invalid config" naming policy.dir.
func TestRunStoppedDuringStartUpIsNotAConfigError(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c.yaml")
	body := "policy:\n  dir: ../../policies\n  require_signatures: false\n" +
		"decision_log:\n  dir: " + filepath.Join(dir, "log") + "\n"
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the signal arrived before start-up finished
	var out, errb bytes.Buffer
	code := Run(ctx, []string{"run", "--config", cfg}, &Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb})
	if code != ExitOK || strings.Contains(errb.String(), "policy.dir") {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
}
