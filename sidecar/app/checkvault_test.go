package app

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/consentry/consentry/vaultkeys"
)

// TestCheckVaultCreatesNoLedger: `consentry run --check` verifies the shredded-keys ledger
// without creating it. It used to open the ledger as the sidecar does, creating the file (and
// its directories) when missing: run from another directory than the sidecar's, with the
// default relative vault.ledger_path, it left a ledger no sidecar reads. A missing ledger
// passes (a first start creates it) with a warning naming its absolute path; an existing one
// is verified, untouched; one the start could not create or read fails.
func TestCheckVaultCreatesNoLedger(t *testing.T) {
	cases := []struct {
		name string
		// setup lays out root and returns the configured ledger path ("" = the default).
		setup   func(t *testing.T, root string) string
		wantErr string   // "" = the check passes
		isErr   error    // wrapped by the error, when set
		wantLog []string // all in the warning; nil = no warning
	}{
		{"relative default, missing, from another directory", func(*testing.T, string) string { return "" }, "", nil,
			[]string{"no shredded-keys ledger yet", "first start", "relative", "working directory"}},
		{"absolute, missing with its directory", func(_ *testing.T, root string) string { return filepath.Join(root, "var", "ledger.jsonl") }, "", nil,
			[]string{"no shredded-keys ledger yet", "this is not its ledger"}},
		{"existing ledger", func(t *testing.T, root string) string {
			p := filepath.Join(root, "ledger.jsonl")
			l, err := vaultkeys.OpenLedger(p)
			if err != nil {
				t.Fatal(err)
			}
			rec := vaultkeys.DestructionRecord{Time: time.Now().UTC(), CustomerPseudonym: "cp_0123", Actor: "dpo", Reason: "DSR-1"}
			if err := l.Append(&rec); err != nil {
				t.Fatal(err)
			}
			return p
		}, "", nil, nil},
		{"corrupt ledger", func(t *testing.T, root string) string {
			p := filepath.Join(root, "ledger.jsonl")
			if err := os.WriteFile(p, []byte("{\"seq\": 7}\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			return p
		}, "vault.ledger_path", vaultkeys.ErrLedgerCorrupt, nil},
		{"a directory", func(t *testing.T, root string) string {
			p := filepath.Join(root, "ledger.jsonl")
			if err := os.Mkdir(p, 0o700); err != nil {
				t.Fatal(err)
			}
			return p
		}, "vault.ledger_path", nil, nil},
		{"under a regular file", func(t *testing.T, root string) string {
			if err := os.WriteFile(filepath.Join(root, "var"), nil, 0o600); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(root, "var", "vaultkeys", "ledger.jsonl")
		}, "not a directory", nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			t.Chdir(root)
			vc := vaultkeys.Config{Address: "https://vault.example:8200", Auth: vaultkeys.AuthConfig{Method: vaultkeys.AuthToken, Token: "t"},
				LedgerPath: tc.setup(t, root)}
			before := tree(t, root)
			var logs bytes.Buffer
			err := checkVault(vc, slog.New(slog.NewTextHandler(&logs, nil)))
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("check failed: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("check: %v, want an error naming %q", err, tc.wantErr)
			case tc.isErr != nil && !errors.Is(err, tc.isErr):
				t.Errorf("check: %v, want %v", err, tc.isErr)
			}
			if after := tree(t, root); after != before {
				t.Errorf("run --check changed the files:\nbefore %s\nafter  %s", before, after)
			}
			switch {
			case tc.wantLog == nil && logs.Len() > 0:
				t.Errorf("unexpected warning: %s", logs.String())
			case tc.wantLog != nil:
				want := vc.WithDefaults().LedgerPath
				if !filepath.IsAbs(want) {
					want = filepath.Join(root, want)
				}
				for _, w := range append(tc.wantLog, "level=WARN", want) {
					if !strings.Contains(logs.String(), w) {
						t.Errorf("warning %q does not say %q", logs.String(), w)
					}
				}
			}
		})
	}
}

// tree lists every file and directory under root with its size and modification time.
func tree(t *testing.T, root string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %s %s %d; ", p, info.Mode(), info.ModTime(), info.Size())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}
