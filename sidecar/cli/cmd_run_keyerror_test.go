package cli

import (
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
