package auditlog

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/csv"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/input"
)

var otherKey = []byte("another-key-another-key-another-key-0123")

// TestQueryRefusesAnotherPseudonymKey: checkpoints name the pseudonym key by its fingerprint
// (never the key), so a query or report made with another key is refused instead of finding
// nothing and saying "no access was recorded". A log whose key changed is refused only for the
// time range the other key wrote.
func TestQueryRefusesAnotherPseudonymKey(t *testing.T) {
	f := newFixture(t)
	l := f.open(t)
	appendAt(t, l, 0, 4, time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC))
	l.Close()
	raw := readAll(t, f.dir)
	ps, _ := NewPseudonymizer(testKey)
	other, _ := NewPseudonymizer(otherKey)
	if !strings.Contains(raw, `"pseudonym_key":"`+ps.Fingerprint()+`"`) || strings.Contains(raw, string(testKey)) {
		t.Fatal("the checkpoints do not carry the key's fingerprint (or carry the key)")
	}
	query := func(p *Pseudonymizer, since time.Time) (QueryStats, error) {
		return QueryLog(context.Background(), f.dir, Filter{Customer: p.Customer("c-1001"), KeyFingerprint: p.Fingerprint(), Since: since},
			func(*Event, []byte) error { return nil }, nil)
	}
	st, err := query(ps, time.Time{})
	if err != nil || st.Matched != 4 || st.KeyChecked != 4 || st.KeyOther != 0 {
		t.Fatalf("the log's key: %+v %v", st, err)
	}
	st, err = query(other, time.Time{})
	if !errors.Is(err, ErrPseudonymKeyMismatch) || st.KeyOther != 4 || !strings.Contains(err.Error(), ps.Fingerprint()) {
		t.Fatalf("another key: %+v %v", st, err)
	}
	if _, err := BuildReport(context.Background(), f.dir, ReportOptions{CustomerID: "c-1001", Pseudonymizer: other}); !errors.Is(err, ErrPseudonymKeyMismatch) {
		t.Fatalf("report with another key: %v", err)
	}

	// The key changes: the records it wrote are searched with it, the older ones are not.
	f.cfg.PseudonymKeyFile = filepath.Join(t.TempDir(), "other.key")
	if err := os.WriteFile(f.cfg.PseudonymKeyFile, otherKey, 0o600); err != nil {
		t.Fatal(err)
	}
	l = f.open(t)
	appendAt(t, l, 4, 3, time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC))
	l.Close()
	if st, err := query(other, time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)); err != nil || st.Matched != 3 || st.KeyChecked != 3 {
		t.Fatalf("the new key over its own records: %+v %v", st, err)
	}
	if _, err := query(other, time.Time{}); !errors.Is(err, ErrPseudonymKeyMismatch) {
		t.Fatalf("the new key over the old records: %v", err)
	}
}

// TestQueryNoLog: a directory without segments (empty, a typo, the keys directory) is an
// error, not a log in which nothing was recorded.
func TestQueryNoLog(t *testing.T) {
	empty := t.TempDir()
	other := t.TempDir()
	if err := os.WriteFile(filepath.Join(other, "notes.txt"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	ps, _ := NewPseudonymizer(testKey)
	for _, dir := range []string{empty, other, filepath.Join(empty, "missing")} {
		_, err := QueryLog(context.Background(), dir, Filter{}, func(*Event, []byte) error { return nil }, nil)
		if !errors.Is(err, ErrNoLog) {
			t.Errorf("%s: %v, want ErrNoLog", dir, err)
		}
		if _, err := BuildReport(context.Background(), dir, ReportOptions{CustomerID: "c-1", Pseudonymizer: ps}); !errors.Is(err, ErrNoLog) {
			t.Errorf("report of %s: %v, want ErrNoLog", dir, err)
		}
	}
}

// TestQueryReadsGzipSegments: segments an operator compressed (gzip segment-*.jsonl) are read,
// not skipped; a segment present in both forms (gzip -k, or gzip still running) counts once;
// a truncated one is an error naming it.
func TestQueryReadsGzipSegments(t *testing.T) {
	f := newFixture(t)
	f.cfg.SegmentMaxBytes = 4096
	l := f.open(t)
	appendN(t, l, 0, 10)
	l.Close()
	ps, _ := NewPseudonymizer(testKey)
	count := func() (int, error) {
		n := 0
		err := Query(context.Background(), f.dir, Filter{Customer: ps.Customer("c-1001"), KeyFingerprint: ps.Fingerprint()},
			func(*Event, []byte) error { n++; return nil }, nil)
		return n, err
	}
	segs, _ := listSegments(f.dir)
	if len(segs) < 3 {
		t.Fatalf("want several segments, got %d", len(segs))
	}
	gz := func(name string, keep bool, cut int) string {
		t.Helper()
		path := filepath.Join(f.dir, name)
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		_, _ = zw.Write(raw)
		_ = zw.Close()
		if err := os.WriteFile(path+".gz", b.Bytes()[:b.Len()-cut], 0o600); err != nil {
			t.Fatal(err)
		}
		if !keep {
			_ = os.Remove(path)
		}
		return path + ".gz"
	}
	gz(segs[0].name, false, 0)
	gz(segs[1].name, true, 0)
	if n, err := count(); err != nil || n != 10 {
		t.Fatalf("with gzip segments: %d of 10 decisions, %v", n, err)
	}
	bad := gz(segs[2].name, false, 20)
	if _, err := count(); err == nil || !strings.Contains(err.Error(), filepath.Base(bad)) {
		t.Fatalf("a truncated gzip segment: %v", err)
	}
}

// TestReportSaysRetentionDeleted: once retention deleted the oldest segments, every format of
// the report says records before the oldest kept one were deleted, so "no access" is never
// read as "no access ever".
func TestReportSaysRetentionDeleted(t *testing.T) {
	f := newFixture(t)
	f.cfg.SegmentMaxBytes = 4096
	f.cfg.RetainSegments = 2
	l := f.open(t)
	for i := range 12 {
		appendAt(t, l, i, 1, time.Date(2026, 11, 1+i, 9, 0, 0, 0, time.UTC))
	}
	l.Close()
	// The oldest decision kept: the report's cut, in the decisions' time (the checkpoint
	// that may start a segment carries the writer's clock).
	var firstSeq uint64
	var kept *Event
	_ = ScanEvents(f.dir, func(ev *Event, _ []byte) error {
		if firstSeq == 0 {
			firstSeq = ev.Seq
		}
		if kept == nil && ev.Type == TypeDecision {
			kept = ev
		}
		return nil
	})
	if firstSeq == 0 || kept == nil || kept.DecisionID == "dec-000000" {
		t.Fatalf("retention removed nothing (first seq %d)", firstSeq)
	}
	ps, _ := NewPseudonymizer(testKey)
	rep, err := BuildReport(context.Background(), f.dir, ReportOptions{CustomerID: "c-1001", Pseudonymizer: ps})
	if err != nil {
		t.Fatal(err)
	}
	if rep.DeletedBefore == nil || !rep.DeletedByRetention || !rep.DeletedBefore.Equal(kept.Timestamp) || rep.RecordsSearched != len(rep.Accesses) {
		t.Fatalf("report: deleted before %v by retention %v (oldest kept %s at %v), %d searched, %d accesses",
			rep.DeletedBefore, rep.DeletedByRetention, kept.DecisionID, kept.Timestamp, rep.RecordsSearched, len(rep.Accesses))
	}
	var h, j, c bytes.Buffer
	if err := rep.WriteHTML(&h); err != nil || !strings.Contains(h.String(), "were deleted by retention") {
		t.Errorf("html does not say records were deleted: %v", err)
	}
	if err := rep.WriteJSON(&j); err != nil || !strings.Contains(j.String(), `"deleted_before"`) || !strings.Contains(j.String(), `"deleted_by_retention": true`) {
		t.Errorf("json does not say records were deleted: %v\n%s", err, j.String())
	}
	if err := rep.WriteCSV(&c); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&c).ReadAll()
	if err != nil || len(rows) < 2 || rows[1][14] != "retention" || !strings.Contains(rows[1][15], "were deleted by retention") {
		t.Errorf("csv does not say records were deleted: %v %q", err, rows)
	}
}

// TestReportCSVHasErasures: the CSV report carries the erasure of the customer's data that
// the HTML and JSON reports carry, in its place among the accesses.
func TestReportCSVHasErasures(t *testing.T) {
	f := newFixture(t)
	l := f.open(t)
	ctx := context.Background()
	appendAt(t, l, 0, 2, time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC))
	ps, _ := NewPseudonymizer(testKey)
	at := time.Date(2026, 11, 2, 12, 0, 0, 0, time.UTC)
	if err := l.AppendErasure(ctx, at, Erasure{Customer: ps.Customer("c-1001"), Classes: []string{"contact", "financial"}, Actor: "dpo",
		Reason: "consent withdrawn", LedgerSeq: 1, LedgerHash: strings.Repeat("0", 64), Complete: true}); err != nil {
		t.Fatal(err)
	}
	appendAt(t, l, 2, 1, time.Date(2026, 11, 3, 9, 0, 0, 0, time.UTC))
	l.Close()
	rep, err := BuildReport(ctx, f.dir, ReportOptions{CustomerID: "c-1001", Pseudonymizer: ps})
	if err != nil {
		t.Fatal(err)
	}
	var c bytes.Buffer
	if err := rep.WriteCSV(&c); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&c).ReadAll()
	if err != nil || len(rows) != 5 {
		t.Fatalf("csv rows: %v %q", err, rows)
	}
	events := []string{rows[1][14], rows[2][14], rows[3][14], rows[4][14]}
	if strings.Join(events, ",") != "access,access,erasure,access" {
		t.Fatalf("csv events %v", events)
	}
	e := rows[3]
	if e[0] != at.Format(time.RFC3339) || e[8] != "consent withdrawn" || !strings.Contains(e[15], "erased") || !strings.Contains(e[15], "contact; financial") {
		t.Fatalf("erasure row %q", e)
	}
}

// TestReportCSVFormulaGuardPerElement: a spreadsheet that splits on ';' starts a cell after
// each ';', so no ';'-separated part of any cell (a joined list, a purpose header
// "x;=HYPERLINK(...)") may start a formula.
func TestReportCSVFormulaGuardPerElement(t *testing.T) {
	f := newFixture(t)
	l := f.open(t)
	e := entry(t, 0)
	e.Input.Purpose = `x;=HYPERLINK("https://evil.example/";"click")`
	e.Input.CaseID = "ok;+1+1"
	e.Input.Subject.Roles = []string{"agent", "=cmd|' /C calc'!A0", "@SUM(1)"}
	if err := l.Append(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	l.Close()
	ps, _ := NewPseudonymizer(testKey)
	rep, err := BuildReport(context.Background(), f.dir, ReportOptions{CustomerID: "c-1001", Pseudonymizer: ps, NameEmployees: true})
	if err != nil {
		t.Fatal(err)
	}
	var c bytes.Buffer
	if err := rep.WriteCSV(&c); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&c).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	for _, row := range rows[1:] {
		for i, cell := range row {
			for _, part := range strings.Split(cell, ";") {
				if part != "" && strings.ContainsRune("=+-@\t\r", rune(part[0])) {
					t.Errorf("csv cell %d has a part starting a formula: %q in %q", i, part, cell)
				}
			}
		}
	}
	if got := rows[1][4]; got != `x;'=HYPERLINK("https://evil.example/";"click")` {
		t.Errorf("purpose cell %q", got)
	}
}

// TestQuerySubjectPseudonym: a customer subject is logged by its customer's pseudonym, so a
// filter on the raw id matches only with the pseudonym (what --subject adds with the key);
// employees still match by their id.
func TestQuerySubjectPseudonym(t *testing.T) {
	f := newFixture(t)
	l := f.open(t)
	e := entry(t, 0)
	e.Input.Subject = input.Subject{ID: "alice@example.com", Type: input.SubjectCustomer, CustomerID: "c-1001"}
	if err := l.Append(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	appendN(t, l, 1, 2) // emp-17
	l.Close()
	ps, _ := NewPseudonymizer(testKey)
	count := func(fl Filter) int {
		t.Helper()
		n := 0
		if err := Query(context.Background(), f.dir, fl, func(*Event, []byte) error { n++; return nil }, nil); err != nil {
			t.Fatal(err)
		}
		return n
	}
	cases := []struct {
		name string
		f    Filter
		want int
	}{
		{"raw customer id never matches", Filter{Subject: "c-1001"}, 0},
		{"customer id with its pseudonym", Filter{Subject: "c-1001", SubjectPseudonym: ps.Customer("c-1001")}, 1},
		{"employee with a pseudonym too", Filter{Subject: "emp-17", SubjectPseudonym: ps.Customer("emp-17")}, 2},
		{"pseudonym and purpose", Filter{Subject: "c-1001", SubjectPseudonym: ps.Customer("c-1001"), Purpose: "nope"}, 0},
	}
	for _, tc := range cases {
		if got := count(tc.f); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
}
