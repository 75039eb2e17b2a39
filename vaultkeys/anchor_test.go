package vaultkeys

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
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

// TestLedgerAnchorSurvivesVaultlessStartsAndCutSegments: the anchor is the newest checkpoint
// that records a ledger head - in the segments or in checkpoints.jsonl - so neither a start
// without a vault section (whose checkpoints record none) nor a segment tail cut back past
// the last anchor (its copy survives) lets a truncated ledger through.
func TestLedgerAnchorSurvivesVaultlessStartsAndCutSegments(t *testing.T) {
	dir := t.TempDir()
	ledgerPath := filepath.Join(dir, "ledger.jsonl")
	keyDir := t.TempDir()
	cfg := auditlog.Config{Dir: filepath.Join(dir, "decisions"), UnsignedCheckpoints: true, PseudonymKeyFile: filepath.Join(keyDir, "pseudo.key")}
	if err := auditlog.WritePseudonymKey(cfg.PseudonymKeyFile); err != nil {
		t.Fatal(err)
	}
	ledger := func() *Ledger {
		l, err := OpenLedger(ledgerPath)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	erase := func(n int) {
		l := ledger()
		for i := range n {
			if err := l.Append(&DestructionRecord{Time: time.Unix(int64(i), 0).UTC(), CustomerPseudonym: fmt.Sprint("p", i), Actor: "a", Reason: "r"}); err != nil {
				t.Fatal(err)
			}
		}
	}
	openClose := func(kl auditlog.KeyLedger) error {
		opts := auditlog.Options{}
		if kl != nil {
			opts.KeyLedger = kl
		}
		lg, err := auditlog.Open(cfg, opts)
		if err != nil {
			return err
		}
		return lg.Close()
	}
	erase(3)
	if err := openClose(ledger()); err != nil { // anchors head 3
		t.Fatal(err)
	}
	if err := openClose(nil); err != nil { // a start without a vault section
		t.Fatal(err)
	}
	full, _ := os.ReadFile(ledgerPath)
	lines := bytes.SplitAfter(full, []byte("\n"))
	if err := os.WriteFile(ledgerPath, lines[0], 0o600); err != nil {
		t.Fatal(err)
	}
	if err := openClose(ledger()); !errors.Is(err, ErrLedgerCorrupt) {
		t.Fatalf("after a vaultless start, a ledger cut from 3 records to 1: %v", err)
	}
	if err := os.WriteFile(ledgerPath, full, 0o600); err != nil {
		t.Fatal(err)
	}

	// Two more erasures while the log is open: its close checkpoint anchors head 5. Cut that
	// checkpoint from the segment (as a crash before it would), and the ledger back to 3:
	// the open checkpoint still in the segment anchors 3, its copy in checkpoints.jsonl 5.
	lg, err := auditlog.Open(cfg, auditlog.Options{KeyLedger: ledger()})
	if err != nil {
		t.Fatal(err)
	}
	erase(2)
	if err := lg.Close(); err != nil {
		t.Fatal(err)
	}
	segs, _ := filepath.Glob(filepath.Join(cfg.Dir, "segment-*.jsonl"))
	last := segs[len(segs)-1]
	raw, _ := os.ReadFile(last)
	recs := bytes.SplitAfter(bytes.TrimSuffix(raw, []byte("\n")), []byte("\n"))
	if !bytes.Contains(recs[len(recs)-1], []byte(`"seq":5`)) && !bytes.Contains(recs[len(recs)-1], []byte(`"key_ledger"`)) {
		t.Fatalf("last record is not the close checkpoint: %s", recs[len(recs)-1])
	}
	if err := os.WriteFile(last, bytes.Join(recs[:len(recs)-1], nil), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ledgerPath, full, 0o600); err != nil { // 3 records
		t.Fatal(err)
	}
	if err := openClose(ledger()); !errors.Is(err, ErrLedgerCorrupt) {
		t.Fatalf("segment tail cut and ledger cut to the older anchor: %v", err)
	}
}

// TestLedgerHeadNeverWaits: while another process appends (it holds the file lock until its
// record is fsynced), Head returns the last head read at once instead of waiting or reading
// the record in flight; afterwards it reads it.
func TestLedgerHeadNeverWaits(t *testing.T) {
	p, l := ledgerWithOneRecord(t)
	other, err := OpenLedger(p)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	// The "other process" has written its record and not yet fsynced or unlocked.
	writeNextRecord(t, f, l)
	done := make(chan int64, 1)
	go func() { seq, _ := other.Head(); done <- seq }()
	select {
	case seq := <-done:
		if seq != 1 {
			t.Fatalf("Head read the record of an append in progress: seq %d", seq)
		}
	case <-time.After(10 * time.Second): // the lock is held until f.Close: a waiting Head never returns
		t.Fatal("Head waited for an append in progress")
	}
	f.Close() // fsync skipped: the test only needs the lock released
	if seq, _ := other.Head(); seq != 2 {
		t.Fatalf("after the append: seq %d", seq)
	}
}

// TestLedgerHeadAnchorsOnlyWhatIsOnDisk: a record another process wrote and never fsynced
// (its appender crashed in between) becomes the head only once Head has fsynced the ledger;
// while that flush fails, Head keeps giving the head before it, so a checkpoint never anchors
// a record a power loss could take back.
func TestLedgerHeadAnchorsOnlyWhatIsOnDisk(t *testing.T) {
	p, l := ledgerWithOneRecord(t)
	other, err := OpenLedger(p)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	rec := writeNextRecord(t, f, l)
	f.Close() // the "crashed appender": written, never fsynced

	syncs := 0
	syncLedger = func(*os.File) error { syncs++; return errors.New("injected: flush failed") }
	t.Cleanup(func() { syncLedger = (*os.File).Sync })
	for i := 0; i < 2; i++ {
		if seq, _ := other.Head(); seq != 1 {
			t.Fatalf("Head anchored a record it could not flush: seq %d", seq)
		}
	}
	if syncs != 2 {
		t.Fatalf("Head tried %d flushes, want one per call while behind", syncs)
	}
	syncLedger = func(f *os.File) error { syncs++; return f.Sync() }
	if seq, h := other.Head(); seq != 2 || h != rec.Hash {
		t.Fatalf("after a flush: seq %d hash %.8s", seq, h)
	}
	before := syncs
	if seq, _ := other.Head(); seq != 2 || syncs != before {
		t.Fatalf("Head flushed again with nothing new (seq %d, %d flushes)", seq, syncs-before)
	}
}

// writeNextRecord writes, through f and as another process's appender would, the record
// that chains after l's single record, without fsyncing it; it returns the record.
func writeNextRecord(t *testing.T, f *os.File, l *Ledger) DestructionRecord {
	t.Helper()
	rec := DestructionRecord{Seq: 2, CustomerPseudonym: "p2", Actor: "a", Reason: "r", Prev: l.Records()[0].Hash}
	rec.Hash = recordHash(rec)
	line, _ := json.Marshal(rec)
	if _, err := f.Write(append(line, '\n')); err != nil {
		t.Fatal(err)
	}
	return rec
}
