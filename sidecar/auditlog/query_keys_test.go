package auditlog

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/input"
)

var keyB = bytes.Repeat([]byte{7}, 40)

// cutClose removes the close checkpoint of a stopped log (the last record, and its copy), as
// a crash before it would have left the log.
func cutClose(t *testing.T, dir string) {
	t.Helper()
	cutLastLine := func(path string) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(b[bytes.LastIndexByte(b[:len(b)-1], '\n')+1:], []byte(`"reason":"close"`)) {
			t.Fatalf("%s does not end with the close checkpoint", path)
		}
		if err := os.WriteFile(path, b[:bytes.LastIndexByte(b[:len(b)-1], '\n')+1], 0o600); err != nil {
			t.Fatal(err)
		}
	}
	segs, _ := listSegments(dir)
	cutLastLine(filepath.Join(dir, segs[len(segs)-1].name))
	cutLastLine(filepath.Join(dir, checkpointsFile))
}

// TestQueryKeyOfRecordsIsTheNextCheckpoints: a checkpoint names the key of the records since
// the one before it, so a record is credited to the checkpoint after it. When the pseudonym
// key changes and the new run's "open" checkpoint is left out (its signer, Vault transit, was
// down at start), the new run's records are the new key's, not the old one's: the right key
// found nothing (exit 9) and the wrong one was taken as the log's. Records a crash left before
// an "open" checkpoint stay the key of the run that wrote them.
func TestQueryKeyOfRecordsIsTheNextCheckpoints(t *testing.T) {
	dayA := time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC)
	dayB := time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)
	cases := []struct {
		name string
		// crash: run A stops without its close checkpoint; signerDown: run B's open
		// checkpoint cannot be signed.
		crash, signerDown bool
	}{
		{name: "signer down at the new key's start", signerDown: true},
		{name: "crash before the new key's start", crash: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.cfg.CheckpointEvery = 1000
			l := f.open(t) // key A (testKey)
			appendAt(t, l, 0, 4, dayA)
			l.Close()
			if tc.crash {
				cutClose(t, f.dir)
			}
			opts := Options{Signer: f.signer, PseudonymKey: keyB, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
			if tc.signerDown {
				opts.Signer = &flakySigner{Ed25519Signer: f.signer, fail: 1} // the open checkpoint's signing fails
			}
			l, err := Open(f.cfg, opts)
			if err != nil {
				t.Fatal(err)
			}
			appendAt(t, l, 50, 3, dayB)
			l.Close()
			psA, _ := NewPseudonymizer(testKey)
			psB, _ := NewPseudonymizer(keyB)
			query := func(ps *Pseudonymizer, since, until time.Time) (QueryStats, error) {
				return QueryLog(context.Background(), f.dir, Filter{Customer: ps.Customer("c-1001"), Since: since, Until: until, KeyFingerprint: ps.Fingerprint()},
					func(*Event, []byte) error { return nil }, nil)
			}
			if st, err := query(psB, dayB.Add(-time.Hour), time.Time{}); err != nil || st.Matched != 3 || st.KeyChecked != 3 {
				t.Errorf("key B over its records: %d matched, %d checked, %d other: %v", st.Matched, st.KeyChecked, st.KeyOther, err)
			}
			if st, err := query(psA, dayB.Add(-time.Hour), time.Time{}); !errors.Is(err, ErrPseudonymKeyMismatch) {
				t.Errorf("key A over key B's records: %d checked, %d other: %v, want ErrPseudonymKeyMismatch", st.KeyChecked, st.KeyOther, err)
			}
			if st, err := query(psA, time.Time{}, dayB.Add(-time.Hour)); err != nil || st.Matched != 4 || st.KeyChecked != 4 {
				t.Errorf("key A over its records: %d matched, %d checked, %d other: %v", st.Matched, st.KeyChecked, st.KeyOther, err)
			}
		})
	}
}

// TestQuerySubjectKeyMismatchOnlyWherePseudonymsMatter: --subject matches an employee by its
// id as logged, whatever the key; only records whose subject is a customer (logged by
// pseudonym) depend on it. A search for an employee across a pseudonym key change is not
// refused; one for a customer subject still is.
func TestQuerySubjectKeyMismatchOnlyWherePseudonymsMatter(t *testing.T) {
	f := newFixture(t)
	l := f.open(t)      // key A
	appendN(t, l, 0, 3) // emp-17
	self := entry(t, 3)
	self.Input.Subject = input.Subject{ID: "c-1001", Type: input.SubjectCustomer, CustomerID: "c-1001"}
	if err := l.Append(context.Background(), self); err != nil {
		t.Fatal(err)
	}
	l.Close()
	l, err := Open(f.cfg, Options{PseudonymKey: keyB, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, l, 10, 2) // emp-17, key B
	l.Close()
	psB, _ := NewPseudonymizer(keyB)
	beforeSelf := self.Timestamp // key A's employee records only
	cases := []struct {
		name     string
		subject  string
		until    time.Time
		matched  int
		mismatch bool
	}{
		{name: "employee", subject: "emp-17", matched: 5},
		{name: "customer subject", subject: "c-1001", mismatch: true},
		{name: "no match, employee records of the other key", subject: "emp-99", until: beforeSelf},
		// Nothing tells a customer from an employee that has no record: a record of a
		// customer subject written with the other key may have been theirs.
		{name: "no match, a customer subject's record of the other key", subject: "emp-99", mismatch: true},
	}
	for _, tc := range cases {
		n := 0
		_, err := QueryLog(context.Background(), f.dir, Filter{Subject: tc.subject, SubjectPseudonym: psB.Customer(tc.subject), Until: tc.until, KeyFingerprint: psB.Fingerprint()},
			func(*Event, []byte) error { n++; return nil }, nil)
		if errors.Is(err, ErrPseudonymKeyMismatch) != tc.mismatch || (!tc.mismatch && (err != nil || n != tc.matched)) {
			t.Errorf("%s: %d matched, %v; want %d matched, key mismatch %v", tc.name, n, err, tc.matched, tc.mismatch)
		}
	}
}
