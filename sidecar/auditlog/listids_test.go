package auditlog

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/consentry/consentry/sidecar/audit"
	"github.com/consentry/consentry/sidecar/decision"
	"github.com/consentry/consentry/sidecar/input"
)

// listEntry returns the record of a list response naming the customers ids, the odd ones
// filtered out.
func listEntry(t testing.TB, ids ...string) *audit.Entry {
	e := entry(t, 7)
	e.Input.Resource.CustomerID = ""
	e.Input.Enrichment.Customer = nil
	e.Input.Enrichment.Case = nil
	e.Input.Request.Path = "/api/customers"
	e.Input.Request.Params = nil
	lr := &audit.ListRecords{Decisions: map[string]decision.Record{}}
	for i, id := range ids {
		lr.Input = append(lr.Input, input.Record{CustomerID: id, Enrichment: input.Enrichment{Customer: &input.CustomerState{ID: id}}})
		lr.Decisions[id] = decision.Record{Allow: i%2 == 0}
		if i%2 == 0 {
			lr.Served = append(lr.Served, id)
		} else {
			lr.Filtered = append(lr.Filtered, id)
		}
	}
	e.Enforcement.Records = lr
	e.Enforcement.RecordsReturned, e.Enforcement.RecordsFiltered = len(lr.Served), len(lr.Filtered)
	return e
}

// TestListRequestStringsPseudonymized: a list searched or exported by customer id names its
// customers in the request's own strings (query, path, params, headers, purpose, case id,
// justification), which the log must not keep raw beside the pseudonyms that customers and
// customers_filtered name them by. The fast and the reference encoder agree.
func TestListRequestStringsPseudonymized(t *testing.T) {
	ps, _ := NewPseudonymizer(testKey)
	fast := builder{masker: newMasker(Config{}), pseudo: ps}
	ref := builder{masker: newMasker(Config{}), pseudo: ps, source: noRules{}, forceGeneric: true}
	raw := []string{"c-3003", "c-1001", "ada@example.com", "bad\xffid"}
	e := listEntry(t, raw...)
	rq := &e.Input.Request
	rq.Query = map[string][]string{"q": {"c-3003 c-1001"}, "c-1001": {"1"}, "email": {"ada@example.com."}}
	rq.Path = "/api/customers/c-3003/export"
	rq.Params = map[string]string{"ids": "c-1001,c-3003"}
	rq.Headers["x-note"] = []string{"about bad\xffid"}
	e.Input.Purpose = "c-1001"
	e.Input.CaseID = "ticket c-3003"
	e.Input.BreakGlass = &input.BreakGlass{Justification: "c-1001 on the phone"}
	e.Decision.Reasons = []decision.Reason{{Code: "x", Message: "search for c-3003"}}
	for _, b := range []builder{fast, ref} {
		r, err := b.build(context.Background(), e)
		if err != nil {
			t.Fatal(err)
		}
		var all []byte
		for _, m := range r.kvs {
			all = append(append(all, m.key...), m.val...)
		}
		for _, id := range []string{"c-3003", "c-1001", "ada@example", "bad"} {
			if bytes.Contains(all, []byte(id)) {
				i := bytes.Index(all, []byte(id))
				t.Errorf("generic=%v: raw id %s in the record: ...%s...", b.forceGeneric, id, all[max(0, i-80):min(len(all), i+40)])
			}
		}
		for _, want := range []string{`"q":["` + ps.Customer("c-3003") + " " + ps.Customer("c-1001") + `"]`,
			`"email":["` + ps.Customer("ada@example.com") + `."]`, `"purpose":"` + ps.Customer("c-1001") + `"`} {
			if !bytes.Contains(all, []byte(want)) {
				t.Errorf("generic=%v: no %s in the record", b.forceGeneric, want)
			}
		}
	}
	a, _ := fast.build(context.Background(), e)
	b, _ := ref.build(context.Background(), e)
	if len(a.kvs) != len(b.kvs) {
		t.Fatalf("%d vs %d members", len(a.kvs), len(b.kvs))
	}
	for j := range a.kvs {
		if a.kvs[j].key != b.kvs[j].key || !bytes.Equal(a.kvs[j].val, b.kvs[j].val) {
			t.Errorf("member %s differs:\nfast %s\nref  %s", a.kvs[j].key, a.kvs[j].val, b.kvs[j].val)
		}
	}
}

// TestListIDsReplace holds the list's one-pass replacement to replaceInText's whole-word rule.
func TestListIDsReplace(t *testing.T) {
	l := &listIDs{}
	for _, id := range []string{"c-1", "c-10", "ada", "ada@example.com", "@odd", "bad\xffid"} {
		l.add(id, "P("+id+")")
	}
	cases := []struct{ in, want string }{
		{"c-1", "P(c-1)"},
		{"c-10 c-1 c-100 xc-1 c-1x c-1.", "P(c-10) P(c-1) c-100 xc-1 c-1x P(c-1)."},
		{"c-1_2 c-1/2", "c-1_2 P(c-1)/2"},
		{"mail ada@example.com, ada, adam@example.com", "mail P(ada@example.com), P(ada), adam@example.com"},
		{"ada@example.community", "P(ada)@example.community"},
		{"x @odd y@odd", "x P(@odd) y@odd"},
		{"see bad\ufffdid", "see P(bad\xffid)"},
		{"", ""},
		{"nothing here", "nothing here"},
	}
	for _, tc := range cases {
		if got := l.replace(tc.in); got != tc.want {
			t.Errorf("replace(%q) = %q, want %q", tc.in, got, tc.want)
		}
		// Where ids do not overlap, the same as the event's id set.
		if !strings.Contains(tc.in, "ada") && !strings.Contains(tc.in, "odd") {
			ids := idSet{{"c-10", "P(c-10)"}, {"c-1", "P(c-1)"}, {"bad\ufffdid", "P(bad\xffid)"}}
			if got := replaceInText(tc.in, ids); got != tc.want {
				t.Errorf("replaceInText(%q) = %q, the list's %q", tc.in, got, tc.want)
			}
		}
	}
}

// TestListIDsMany: a query naming 2,000 of a list's 50,000 customers has each of them
// replaced (a map lookup per word: one pass over the string, not one per customer).
func TestListIDsMany(t *testing.T) {
	l := &listIDs{}
	var q []string
	for i := range 50000 {
		id := fmt.Sprintf("cust-%06d", i)
		l.add(id, "cp_"+id)
		if i%25 == 0 {
			q = append(q, id)
		}
	}
	got := l.replace(strings.Join(q, " "))
	if strings.Contains(strings.ReplaceAll(got, "cp_cust-", ""), "cust-") || strings.Count(got, "cp_") != len(q) {
		t.Fatalf("not every id replaced: %.200s", got)
	}
}
