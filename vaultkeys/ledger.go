package vaultkeys

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/consentry/consentry/sidecar/auditlog"
)

// DestructionRecord is the record of one crypto-shredding: which keys of which customer were
// destroyed, by whom, when and why. It names the customer only by pseudonym; it never holds key
// material. The same record goes to the decision log (DestructionSink) and the ledger.
type DestructionRecord struct {
	// Seq is the record's position in the ledger (1-based).
	Seq int64 `json:"seq"`
	// Time is when the erasure was decided (UTC).
	Time time.Time `json:"time"`
	// CustomerPseudonym is HMAC-SHA256(pseudonym key, customer id), hex, prefixed "hmac-sha256:".
	CustomerPseudonym string `json:"customer_pseudonym"`
	// Keys are the customer's transit keys of every configured class.
	Keys []DestroyedKey `json:"keys"`
	// Actor is who asked for the erasure (admin API actor or CLI --actor).
	Actor string `json:"actor"`
	// Reason is the stated reason (e.g. "consent withdrawn", ticket reference).
	Reason string `json:"reason"`
	// Prev is the hash of the previous ledger record ("" for the first); Hash is this record's
	// SHA-256 over its canonical JSON with Hash empty. Together they chain the ledger.
	Prev string `json:"prev"`
	Hash string `json:"hash"`
}

// DestroyedKey is one key named by an erasure.
type DestroyedKey struct {
	Name string `json:"name"`
	// Versions are the key versions that existed in Vault when the erasure ran (empty when the
	// key did not exist, or Vault could not be read; replay-erasures deletes it anyway).
	Versions []int `json:"versions,omitempty"`
	// Existed reports whether Vault had the key when the erasure ran.
	Existed bool `json:"existed"`
}

// ErrLedgerCorrupt is returned when the ledger's hash chain does not verify: consentry refuses
// to start rather than forget an erasure.
var ErrLedgerCorrupt = errors.New("shredded-keys ledger is corrupt")

// Ledger is the shredded-keys ledger: an append-only JSON-lines file, one DestructionRecord per
// line, hash-chained, fsynced before Erase returns, shared by processes on one host through an
// flock. It answers "was this customer erased?" (key creation is refused) and lists the keys
// that `consentry keys replay-erasures` destroys again after Vault is restored from a snapshot.
type Ledger struct {
	path string

	mu      sync.Mutex
	offset  int64 // bytes already read
	last    string
	seq     int64
	records []DestructionRecord
	// erased holds the pseudonyms of records read so far, under its own lock: every key
	// release asks Erased, and must not wait for an append holding mu through its file lock
	// and fsync.
	erasedMu sync.RWMutex
	erased   map[string]struct{}
	// onRecord sees every record this handle reads or appends, once, whichever method read
	// it (Refresh, Head, Append, RecordOf, CheckAnchor), under mu. The manager blocks the
	// record's key names with it: a record that only Refresh handed out would be missed
	// whenever another caller (the decision log's checkpoint calls Head) read it first.
	onRecord func(DestructionRecord)
	// head is the last record known to be on disk (appended and fsynced by this handle, or
	// read and fsynced by Head): the only head Head gives out as an anchor.
	head atomic.Pointer[ledgerHead]
}

type ledgerHead struct {
	seq  int64
	hash string
}

// OpenLedger opens (creating if needed) the ledger at path and verifies its chain.
func OpenLedger(path string) (*Ledger, error) { return openLedger(path, nil) }

// ReadLedger reads the ledger at path and verifies its chain without creating the file or its
// directory, for `consentry run --check`, which must write nothing. A missing ledger is an
// error wrapping fs.ErrNotExist.
func ReadLedger(path string) (*Ledger, error) {
	l := &Ledger{path: path, erased: map[string]struct{}{}}
	l.head.Store(&ledgerHead{})
	if _, err := l.Refresh(); err != nil {
		return nil, err
	}
	return l, nil
}

// openLedger is OpenLedger with onRecord (nil: none) called for every record read or
// appended, starting with those read here.
func openLedger(path string, onRecord func(DestructionRecord)) (*Ledger, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	f.Close()
	l := &Ledger{path: path, erased: map[string]struct{}{}, onRecord: onRecord}
	l.head.Store(&ledgerHead{})
	if _, err := l.Refresh(); err != nil {
		return nil, err
	}
	// What is read at open is the head from the start, once flushed (see Head).
	if err := syncPath(path); err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	l.head.Store(&ledgerHead{l.seq, l.last})
	return l, nil
}

// Path is the ledger file.
func (l *Ledger) Path() string { return l.path }

// Refresh reads records appended since the last read (by this or another process) and returns
// them. Records another method (Head, Append, RecordOf) read first are not returned again: a
// consumer that must see every record uses the hook of openLedger.
func (l *Ledger) Refresh() ([]DestructionRecord, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.refreshLocked()
}

func (l *Ledger) refreshLocked() ([]DestructionRecord, error) {
	f, err := os.Open(l.path)
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	if st.Size() == l.offset {
		return nil, nil
	}
	if st.Size() < l.offset {
		return nil, fmt.Errorf("%w: %s shrank from %d to %d bytes", ErrLedgerCorrupt, l.path, l.offset, st.Size())
	}
	if _, err := f.Seek(l.offset, io.SeekStart); err != nil {
		return nil, err
	}
	r := bufio.NewReader(f)
	var added []DestructionRecord
	for {
		line, err := r.ReadBytes('\n')
		if errors.Is(err, io.EOF) {
			// A partial last line is an append in progress (or a torn write): read it next time.
			break
		}
		if err != nil {
			return nil, fmt.Errorf("ledger: %w", err)
		}
		var rec DestructionRecord
		if err := json.Unmarshal(line, &rec); err != nil {
			return nil, fmt.Errorf("%w: record %d: %v", ErrLedgerCorrupt, l.seq+1, err)
		}
		if rec.Seq != l.seq+1 || rec.Prev != l.last || rec.Hash != recordHash(rec) {
			return nil, fmt.Errorf("%w: record %d does not chain (seq %d)", ErrLedgerCorrupt, l.seq+1, rec.Seq)
		}
		l.addLocked(rec, int64(len(line)))
		added = append(added, rec)
	}
	return added, nil
}

// addLocked takes in a record that chains after the last one and is n bytes on disk.
func (l *Ledger) addLocked(rec DestructionRecord, n int64) {
	l.offset += n
	l.seq, l.last = rec.Seq, rec.Hash
	l.erasedMu.Lock()
	l.erased[rec.CustomerPseudonym] = struct{}{}
	l.erasedMu.Unlock()
	l.records = append(l.records, rec)
	if l.onRecord != nil {
		l.onRecord(rec)
	}
}

// Append chains rec after the last record, writes it and fsyncs before returning.
func (l *Ledger) Append(rec *DestructionRecord) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	defer f.Close()
	// The flock serializes appends of several processes (sidecar and CLI) on one host.
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("ledger lock: %w", err)
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN) //nolint:errcheck
	if _, err := l.refreshLocked(); err != nil {
		return err
	}
	// Bytes after the last complete record are a torn write (a crash, a full disk): with the
	// lock held no append is in progress. Cut them, or this record would share their line.
	if st, err := f.Stat(); err != nil {
		return fmt.Errorf("ledger: %w", err)
	} else if st.Size() > l.offset {
		if err := f.Truncate(l.offset); err != nil {
			return fmt.Errorf("ledger: cutting a torn record: %w", err)
		}
	}
	rec.Seq, rec.Prev, rec.Hash = l.seq+1, l.last, ""
	rec.Hash = recordHash(*rec)
	line, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	line = append(line, '\n')
	if _, err := f.Write(line); err != nil {
		_ = f.Truncate(l.offset) // best effort; the next Append cuts what is left
		return fmt.Errorf("ledger write: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("ledger sync: %w", err)
	}
	l.head.Store(&ledgerHead{rec.Seq, rec.Hash})
	l.addLocked(*rec, int64(len(line)))
	return nil
}

var _ auditlog.KeyLedger = (*Ledger)(nil)

// Head returns the seq (0: empty) and hash of the last record, reading records other
// processes appended first. The decision log records it in every checkpoint (an anchor
// outside the file, for CheckAnchor), on its writer goroutine, so Head never waits: while
// this handle or another process is appending (an append holds the file lock until its
// record is fsynced) it returns the last head it gave. A lower head is a weaker anchor, never a
// false alarm; anchoring a record not yet on disk could be one after a power loss, so records
// read here (another process's appender may have crashed between its write and its fsync) are
// fsynced before they become the head.
func (l *Ledger) Head() (int64, string) {
	if !l.mu.TryLock() {
		h := l.head.Load()
		return h.seq, h.hash
	}
	defer l.mu.Unlock()
	if f, err := os.Open(l.path); err == nil {
		if syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB) == nil {
			_, _ = l.refreshLocked()
			if h := l.head.Load(); h.seq < l.seq && syncLedger(f) == nil {
				l.head.Store(&ledgerHead{l.seq, l.last})
			}
		}
		f.Close() // releases the lock
	}
	h := l.head.Load()
	return h.seq, h.hash
}

// syncLedger flushes the ledger before Head anchors records it read; a variable so that a
// test can make it fail.
var syncLedger = (*os.File).Sync

func syncPath(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return syncLedger(f)
}

// CheckAnchor checks that the ledger holds record seq with this hash: the head a decision
// log checkpoint recorded earlier. A ledger cut back at a record boundary, or replaced by an
// older copy, while consentry was stopped reads as a valid shorter ledger; only an anchor
// kept elsewhere shows that erasures were forgotten (and keys could be created again for an
// erased customer). seq 0 (an empty ledger then) always passes.
func (l *Ledger) CheckAnchor(seq int64, hash string) error {
	if seq <= 0 {
		return nil
	}
	if _, err := l.Refresh(); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if seq > l.seq {
		return fmt.Errorf("%w: %s holds %d records, but the decision log recorded record %d (hash %.16s...) at its last checkpoint: "+
			"the ledger was truncated or replaced by an older copy; restore it from a backup that holds that record",
			ErrLedgerCorrupt, l.path, l.seq, seq, hash)
	}
	if got := l.records[seq-1].Hash; got != hash {
		return fmt.Errorf("%w: record %d of %s has hash %.16s..., but the decision log recorded %.16s... at its last checkpoint: "+
			"the ledger was replaced; restore it from a backup that holds that record", ErrLedgerCorrupt, seq, l.path, got, hash)
	}
	return nil
}

// RecordOf returns a copy of the last destruction record of the customer with this
// pseudonym made by actor for reason (the same erasure), reading records other processes
// appended first; ok is false when there is none.
func (l *Ledger) RecordOf(pseudonym, actor, reason string) (rec *DestructionRecord, ok bool, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := l.refreshLocked(); err != nil {
		return nil, false, err
	}
	for i := len(l.records) - 1; i >= 0; i-- {
		if r := &l.records[i]; r.CustomerPseudonym == pseudonym && r.Actor == actor && r.Reason == reason {
			r := l.records[i]
			r.Keys = append([]DestroyedKey(nil), r.Keys...)
			return &r, true, nil
		}
	}
	return nil, false, nil
}

// Erased reports whether the customer with this pseudonym was erased.
func (l *Ledger) Erased(pseudonym string) bool {
	l.erasedMu.RLock()
	defer l.erasedMu.RUnlock()
	_, ok := l.erased[pseudonym]
	return ok
}

// Records returns a copy of every record read so far.
func (l *Ledger) Records() []DestructionRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]DestructionRecord(nil), l.records...)
}

// recordHash is SHA-256 over the record's JSON with Hash empty (Go's encoding of a struct is
// deterministic: field order is declaration order).
func recordHash(rec DestructionRecord) string {
	rec.Hash = ""
	b, _ := json.Marshal(rec)
	sum := sha256.Sum256(bytes.TrimSpace(b))
	return hex.EncodeToString(sum[:])
}
