package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/consentry/consentry/sidecar/auditlog"
)

func TestAuditDiskTest(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(t.TempDir(), "consentry.yaml")
	if err := os.WriteFile(cfg, []byte("decision_log:\n  dir: "+dir+"\n  preallocate_bytes: 65536\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	short := []string{"--rate", "1000", "--duration", "100ms"}

	t.Run("table", func(t *testing.T) {
		code, out, errOut := run(t, "", append([]string{"audit", "disk-test", dir}, short...)...)
		if code != ExitOK {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		for _, want := range []string{"preallocated", "append", "p99", "events/commit", "operations.md"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
	})
	t.Run("json from the config's directory", func(t *testing.T) {
		code, out, errOut := run(t, "", append([]string{"audit", "disk-test", "--config", cfg, "--json"}, short...)...)
		if code != ExitOK {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		var res []auditlog.DiskTestResult
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		if len(res) != 2 || res[0].Events != 100 || res[0].P99 <= 0 {
			t.Fatalf("results: %+v", res)
		}
		// 100 records of 1,500 bytes in the config's 64 KiB steps, not the default 1 MiB.
		if res[0].Extensions < 3 {
			t.Errorf("%d extensions: preallocate_bytes from the config not used", res[0].Extensions)
		}
	})
	t.Run("over budget", func(t *testing.T) {
		code, _, errOut := run(t, "", append([]string{"audit", "disk-test", dir, "--max-p99", "1ns"}, short...)...)
		if code != ExitFailure || !strings.Contains(errOut, "over the budget") {
			t.Fatalf("exit %d, want %d: %s", code, ExitFailure, errOut)
		}
	})
	for _, c := range []struct {
		name string
		args []string
	}{
		{"no directory", nil},
		{"two directories", []string{dir, dir}},
		{"bad rate", []string{dir, "--rate", "0"}},
		{"missing directory", []string{filepath.Join(dir, "nope")}},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, _, errOut := run(t, "", append([]string{"audit", "disk-test"}, c.args...)...)
			if code != ExitUsage {
				t.Fatalf("exit %d, want %d: %s", code, ExitUsage, errOut)
			}
		})
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("scratch files left behind: %v", left)
	}
}
