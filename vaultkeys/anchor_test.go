package vaultkeys

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/auditlog"
)

// TestLedgerAnchoredInDecisionLog: the decision log's checkpoints record the key ledger's
// head, and a start whose ledger no longer holds it (cut back at a record boundary, or an
// older copy with other records, while consentry was stopped) is refused, every time, until
// the ledger is restored. The checkpoints stay verifiable with the head in their signature.
func TestLedgerAnchoredInDecisionLog(t *testing.T) {
	dir := t.TempDir()
	ledgerPath := filepath.Join(dir, "keys", "ledger.jsonl")
	keyDir := t.TempDir()
	signKey := filepath.Join(keyDir, "signing.pem")
	signer, err := auditlog.WriteKeyPair(signKey, filepath.Join(keyDir, "signing.pub"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := auditlog.Config{Dir: filepath.Join(dir, "decisions"), SigningKeyFile: signKey, PseudonymKeyFile: filepath.Join(keyDir, "pseudo.key")}
	if err := auditlog.WritePseudonymKey(cfg.PseudonymKeyFile); err != nil {
		t.Fatal(err)
	}
	open := func() (*auditlog.Log, error) {
		l, err := OpenLedger(ledgerPath)
		if err != nil {
			t.Fatal(err)
		}
		return auditlog.Open(cfg, auditlog.Options{KeyLedger: l})
	}
	erase := func(n int) {
		l, err := OpenLedger(ledgerPath)
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			rec := &DestructionRecord{Time: time.Unix(int64(i), 0).UTC(), CustomerPseudonym: fmt.Sprint("p", i), Actor: "a", Reason: "r"}
			if err := l.Append(rec); err != nil {
				t.Fatal(err)
			}
		}
	}
	// An empty ledger, then two erasures while the log is open: its close checkpoint
	// records head 2.
	lg, err := open()
	if err != nil {
		t.Fatal(err)
	}
	erase(2) // through another handle, as the CLI appends
	if err := lg.Close(); err != nil {
		t.Fatal(err)
	}
	if lg, err = open(); err != nil {
		t.Fatalf("reopen with the ledger intact: %v", err)
	}
	if an := lg.KeyLedgerAnchor(); an == nil || an.Seq != 2 {
		t.Fatalf("anchor %+v, want seq 2", an)
	}
	if err := lg.Close(); err != nil {
		t.Fatal(err)
	}
	full, _ := os.ReadFile(ledgerPath)
	lines := bytes.SplitAfter(full, []byte("\n"))

	for name, ledger := range map[string][]byte{
		"cut to one record": lines[0],
		"emptied":           {},
		"older copy": func() []byte {
			other := filepath.Join(t.TempDir(), "ledger.jsonl")
			l, _ := OpenLedger(other)
			for i := range 2 {
				_ = l.Append(&DestructionRecord{Time: time.Unix(int64(100+i), 0).UTC(), CustomerPseudonym: fmt.Sprint("q", i), Actor: "a", Reason: "r"})
			}
			b, _ := os.ReadFile(other)
			return b
		}(),
	} {
		t.Run(name, func(t *testing.T) {
			if err := os.WriteFile(ledgerPath, ledger, 0o600); err != nil {
				t.Fatal(err)
			}
			for attempt := range 2 { // the refused start must not re-anchor on the damaged ledger
				if _, err := open(); !errors.Is(err, ErrLedgerCorrupt) || !strings.Contains(err.Error(), "restore it from a backup") {
					t.Fatalf("attempt %d: open with a damaged ledger: %v", attempt, err)
				}
			}
			if err := os.WriteFile(ledgerPath, full, 0o600); err != nil {
				t.Fatal(err)
			}
			lg, err := open()
			if err != nil {
				t.Fatalf("open after the ledger was restored: %v", err)
			}
			if err := lg.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
	rep, err := auditlog.Verify(cfg.Dir, auditlog.VerifyOptions{PublicKeys: map[string]ed25519.PublicKey{signer.KeyID(): signer.Public()}})
	if err != nil || !rep.OK() || rep.Checkpoints < 6 {
		t.Fatalf("verify: %+v %v", rep, err)
	}
}
