package cli

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/consentry/consentry/sidecar/decision"
	"github.com/consentry/consentry/vaultkeys"
)

// TestKeysCommandsRequireTheSidecarsLedger: `keys encrypt` and `keys replay-erasures` work on
// the shredded-keys ledger the sidecar reads. With the default, relative vault.ledger_path,
// `keys encrypt` run from another directory than the sidecar's used to start a new, empty
// ledger there, find no erasure in it, create the transit key of a customer the sidecar had
// erased again and encrypt the customer's data under it (exit 0, "0 erased customers"). Both
// commands must refuse a ledger that does not exist, as erase does (naming the absolute path
// and the way out), create no file, and with the sidecar's ledger drop the erased customer.
func TestKeysCommandsRequireTheSidecarsLedger(t *testing.T) {
	srv, sidecarDir, opsDir, cfgPath, vc := sidecarAndOpsDirs(t)
	sidecarLedger := vc.LedgerPath
	km, err := vaultkeys.New(context.Background(), vc, vaultkeys.Options{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(km.Close)
	d := &decision.Decision{Allow: true, Fields: map[string]decision.Field{"e": {Outcome: decision.OutcomeAllow, KeyScope: "contact"}}, KeyScopes: []string{"contact"}}
	if _, err := km.ReleaseForWrite(context.Background(), "c-gone", d); err != nil {
		t.Fatal(err)
	}
	if _, err := km.Erase(context.Background(), "c-gone", "admin:dpo", "DSR-1"); err != nil {
		t.Fatal(err)
	}
	keyExists := func() bool {
		s, err := srv.Client(t).Logical().Read("transit/keys/consentry-c-gone-contact")
		if err != nil {
			t.Fatal(err)
		}
		return s != nil
	}
	if keyExists() {
		t.Fatal("erase left the key")
	}
	in := filepath.Join(opsDir, "export.jsonl")
	if err := os.WriteFile(in, []byte(`{"id":"c-gone","contact":{"email":"gone@example.org"}}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	opsDefault := filepath.Join(opsDir, "var", "vaultkeys", "shredded-keys.jsonl")
	refused := []string{"no shredded-keys ledger", "must exist", "--ledger"}
	cases := []struct {
		name, dir string
		args      []string // after --config
		wantCode  int
		// wantStderr must all appear.
		wantStderr []string
	}{
		{"encrypt: relative default ledger from another directory", opsDir, []string{"keys", "encrypt"}, ExitConfig,
			append([]string{opsDefault, "relative", "working directory"}, refused...)},
		{"encrypt: --ledger naming no file", opsDir, []string{"keys", "encrypt", "--ledger", "elsewhere.jsonl"}, ExitConfig,
			append([]string{filepath.Join(opsDir, "elsewhere.jsonl")}, refused...)},
		{"encrypt: --ledger naming the sidecar's ledger", opsDir, []string{"keys", "encrypt", "--ledger", sidecarLedger}, ExitOK,
			[]string{"1 erased customers"}},
		{"encrypt: from the sidecar's directory", sidecarDir, []string{"keys", "encrypt"}, ExitOK,
			[]string{"1 erased customers"}},
		{"replay-erasures: relative default ledger from another directory", opsDir, []string{"keys", "replay-erasures"}, ExitConfig,
			append([]string{opsDefault, "relative"}, refused...)},
		{"replay-erasures: from the sidecar's directory", sidecarDir, []string{"keys", "replay-erasures"}, ExitOK, nil},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Chdir(tc.dir)
			args := append([]string{tc.args[0], tc.args[1], "--config", cfgPath}, tc.args[2:]...)
			out := filepath.Join(opsDir, "enc-"+string(rune('a'+i))+".jsonl")
			if tc.args[1] == "encrypt" {
				args = append(args, "--in", in, "--out", out, "--fields", "contact.email=contact")
			}
			code, _, stderr := run(t, "", args...)
			checkLedgerRefusal(t, code, tc.wantCode, stderr, tc.wantStderr, opsDefault, filepath.Join(opsDir, "elsewhere.jsonl"))
			if keyExists() {
				t.Fatal("the erased customer's key was created again in Vault")
			}
			b, err := os.ReadFile(out)
			if tc.wantCode != ExitOK {
				if !errors.Is(err, os.ErrNotExist) {
					t.Errorf("a refused run wrote %s (%v)", out, err)
				}
				return
			}
			if tc.args[1] == "encrypt" && (strings.Contains(string(b), "vault:v") || strings.Contains(string(b), "gone@example.org")) {
				t.Errorf("the erased customer's field was kept or encrypted: %s", b)
			}
		})
	}
}
