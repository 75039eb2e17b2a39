package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/consentry/consentry/sidecar/decision"
	"github.com/consentry/consentry/sidecar/input"
)

// customRules are a policy author's own package, as docs/policy-input.md shows it: a
// request-level deny and a record-level record_deny, loaded beside the library.
const customRules = `# METADATA
# title: House rules
# description: Rules of this deployment, beside the library.
package consentry.custom.house

import data.consentry.util

# METADATA
# title: Contractors never export
deny contains util.reason("house.contractor_export", 403, "contractors may not export customer data") if {
	input.action == "export"
	"contractor" in input.subject.roles
}

# METADATA
# title: Retention date required
record_deny[rec.customer_id] contains util.reason("house.retention_unset", 451, "the customer has no retention date") if {
	some rec in util.records
	not rec.enrichment.customer.retention_until
}
`

func loadWithCustom(t *testing.T) *Engine {
	t.Helper()
	ps, err := LoadDir(policyDir, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ps.Modules["custom/house.rego"] = customRules
	e := New(testConfig, quiet())
	if err := e.Load(context.Background(), ps); err != nil {
		t.Fatal(err)
	}
	return e
}

// TestCustomPackagesDeny: rules in a consentry.custom package deny beside the library's, on
// the fast path's requests too, record by record in a list's response phase, and change
// nothing when they do not match.
func TestCustomPackagesDeny(t *testing.T) {
	e := loadWithCustom(t)
	decide := func(in *input.Input) (bool, int, []string) {
		t.Helper()
		res, err := e.Decide(context.Background(), in)
		if err != nil {
			t.Fatal(err)
		}
		return res.Decision.Allow, res.Decision.Status, res.Decision.ReasonCodes()
	}

	if allow, _, codes := decide(exampleInput(t)); !allow {
		t.Fatalf("the example (a fast-path read) denied with no custom rule matching: %v", codes)
	}
	in := exampleInput(t)
	in.Enrichment.Customer.RetentionUntil = nil
	if allow, status, codes := decide(in); allow || status != 451 || !slices.Contains(codes, "house.retention_unset") {
		t.Fatalf("record-level custom rule on a single read: allow=%v %d %v", allow, status, codes)
	}

	in = exampleInput(t)
	in.Subject.Roles = []string{"support_agent", "contractor"}
	in.Action = input.ActionExport
	in.Resource.CustomerID = ""
	if allow, _, codes := decide(in); allow || !slices.Contains(codes, "house.contractor_export") {
		t.Fatalf("request-level custom rule: allow=%v %v", allow, codes)
	}

	// A list's response phase: the record without a retention date is denied, the other kept.
	list := exampleInput(t)
	list.Subject = input.Subject{ID: "emp-30", Type: "employee", Roles: []string{"marketing"}, AuthMethod: "jwt"}
	list.Purpose, list.CaseID, list.Action, list.Phase = "marketing.communications.email", "", input.ActionList, "response"
	list.Resource.CustomerID = ""
	kept := input.Record{CustomerID: "c-1001", Enrichment: exampleInput(t).Enrichment}
	unset := input.Record{CustomerID: "c-1002", Enrichment: exampleInput(t).Enrichment}
	unset.Enrichment.Customer = &input.CustomerState{ID: "c-1002"}
	list.Records = []input.Record{kept, unset}
	res, err := e.Decide(context.Background(), list)
	if err != nil {
		t.Fatal(err)
	}
	if r := res.Decision.Records["c-1001"]; !r.Allow {
		t.Errorf("c-1001 denied: %+v", r)
	}
	if r := res.Decision.Records["c-1002"]; r.Allow || !slices.ContainsFunc(r.Reasons, func(x decision.Reason) bool { return x.Code == "house.retention_unset" }) {
		t.Errorf("c-1002 served without a retention date: %+v", r)
	}
}

// TestCustomPackageShapes: a boolean deny is consulted; shapes the library cannot read, and
// deny rules in deeper packages, are refused at load instead of ignored; a value named deny
// inside a helper denies nothing; a large data document in a custom package costs nothing per
// decision (only the package's deny and record_deny are read: BenchmarkDecideCustomBlocklist).
func TestCustomPackageShapes(t *testing.T) {
	load := func(src string, data map[string]any) (*Engine, error) { return loadCustom(t, src, data) }
	decide := func(e *Engine) *decision.Decision {
		t.Helper()
		res, err := e.Decide(context.Background(), exampleInput(t))
		if err != nil {
			t.Fatal(err)
		}
		return res.Decision
	}
	e, err := load("package consentry.custom.strict\n\ndeny if input.purpose != \"\"\n", nil)
	if err != nil {
		t.Fatal(err)
	}
	if d := decide(e); d.Allow || !slices.Contains(d.ReasonCodes(), "custom.deny") {
		t.Fatalf("a boolean deny was not consulted: %+v", d)
	}
	for _, bad := range []string{
		"package consentry.custom.x\n\nrecord_deny(rec) := {\"no\"} if rec.customer_id != \"\"\n",
		"package consentry.custom.x\n\nrecord_deny contains \"no\" if input.purpose != \"\"\n",
		"package consentry.custom.x\n\ndeny(x) := true if x\n",
		"package consentry.custom.x\n\ndeny[input.purpose] contains \"no\" if input.purpose != \"\"\n",
		"package consentry.custom.x\n\nimport data.consentry.util\n\ndeny := util.reason(\"x\", 403, \"x\") if input.purpose != \"\"\n",
		"package consentry.custom.x\n\ndeny := [\"x\"] if input.purpose != \"\"\n",
		strings.Replace(customRules, "package consentry.custom.house", "package consentry.custom.acme.house", 1),
	} {
		_, err := load(bad, nil)
		var ce *CompileError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), "never consults it") {
			t.Errorf("%q: %v, want a compile error", bad, err)
		}
	}
	// Helpers (functions, nested rules, deeper packages without deny) are the author's business,
	// and a value named deny inside them is not a rule.
	e, err = load("package consentry.custom.x\n\nhelper(x) := x\n\nrules := {\"p\": {\"deny\": true}}\n\ndeny contains 1 if rules[input.purpose].deny\n", nil)
	if err != nil {
		t.Fatal(err)
	}
	if d := decide(e); !d.Allow {
		t.Fatalf("a helper value named deny denied: %+v", d)
	}
	// A data document under the package: looked up by the rule, never walked (a "deny" member
	// deep inside it is data, not a rule). BenchmarkDecideCustomBlocklist measures its cost.
	e, err = load(blocklistRule, map[string]any{"house": map[string]any{"blocked": blocklist(1000), "meta": map[string]any{"deny": true}}})
	if err != nil {
		t.Fatal(err)
	}
	if d := decide(e); !d.Allow {
		t.Fatalf("denied: %+v", d)
	}
}

// blocklistRule is a house rule that looks the customer up in a data document of its package.
const blocklistRule = "package consentry.custom.house\n\nimport data.consentry.util\n\n" +
	"deny contains util.reason(\"house.blocked\", 403, \"blocked\") if data.consentry.custom.house.blocked[input.resource.customer_id]\n"

// blocklist is n blocked customer ids, as an object for a constant-time lookup.
func blocklist(n int) map[string]any {
	out := make(map[string]any, n)
	for i := range n {
		out[fmt.Sprintf("c-%07d", i)] = true
	}
	return out
}

// BenchmarkDecideCustomBlocklist: a custom package with a 50,000-id data document beside the
// library. Only the package's deny is evaluated per decision (a lookup), never its data: the
// figure stays near BenchmarkDecide's (a walk over the data took ~250 ms per decision).
func BenchmarkDecideCustomBlocklist(b *testing.B) {
	ps, err := LoadDir(policyDir, LoadOptions{})
	if err != nil {
		b.Fatal(err)
	}
	ps.Modules["custom/house.rego"] = blocklistRule
	ps.Data["consentry"].(map[string]any)["custom"] = map[string]any{"house": map[string]any{"blocked": blocklist(50000)}}
	e := New(testConfig, quiet())
	if err := e.Load(context.Background(), ps); err != nil {
		b.Fatal(err)
	}
	in := exampleInput(b)
	b.ResetTimer()
	for b.Loop() {
		if res, err := e.Decide(context.Background(), in); err != nil || !res.Decision.Allow {
			b.Fatalf("%v %+v", err, res)
		}
	}
}

// TestCustomRulesByFullPath: a v1 rule head may run over several keys, so the whole path
// counts, whatever the package: a deny that lands anywhere the library does not read, or with
// a shape it cannot read, is refused at load; data documents cannot stand in for the rules.
func TestCustomRulesByFullPath(t *testing.T) {
	load := func(src string, data map[string]any) error {
		_, err := loadCustom(t, src, data)
		return err
	}
	refused := func(err error) bool {
		var ce *CompileError
		return errors.As(err, &ce) && (strings.Contains(err.Error(), "never consults it") || strings.Contains(err.Error(), "may not stand where"))
	}
	for _, src := range []string{
		"package consentry.custom.x\n\ny.deny if input.purpose != \"\"\n",
		"package consentry.custom\n\nx.deny := \"no\" if input.purpose != \"\"\n",
		"package consentry\n\ncustom.x.y.deny if input.purpose != \"\"\n",
		"package consentry.custom\n\nx.record_deny[id] := false if { id := input.resource.customer_id; id != \"\" }\n",
		"package consentry.custom\n\ndeny contains \"no\" if input.purpose != \"\"\n",
		"package consentry.custom.x\n\ndeny := true if input.purpose == \"a\"\n\nelse := \"no\"\n",
	} {
		if err := load(src, nil); !refused(err) {
			t.Errorf("%q: %v, want refused at load", src, err)
		}
	}
	for _, data := range []map[string]any{
		{"x": map[string]any{"deny": []any{"a"}}},
		{"x": map[string]any{"record_deny": map[string]any{"c-1001": true}}},
	} {
		if err := load("package consentry.custom.y\n\nhelper := 1\n", data); !refused(err) {
			t.Errorf("data %v: %v, want refused at load", data, err)
		}
	}
	// What the library reads, written from package consentry.custom with a ref head, is fine.
	if err := load("package consentry.custom\n\nx.deny if input.purpose == \"nothing\"\n", nil); err != nil {
		t.Errorf("a boolean deny of package x written from consentry.custom: %v", err)
	}
}

// TestCustomStringReasons: the common `deny contains msg` with a string denies with the
// message (custom.deny, 403) instead of failing the decision, and a string record reason
// filters that record out of a list instead of failing the whole list.
func TestCustomStringReasons(t *testing.T) {
	ps, err := LoadDir(policyDir, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ps.Modules["custom/x.rego"] = "package consentry.custom.x\n\nimport data.consentry.util\n\n" +
		"deny contains msg if { input.action == \"export\"; msg := \"no exports today\" }\n\n" +
		"record_deny[rec.customer_id] contains \"not this one\" if { some rec in util.records; rec.customer_id == \"c-1002\" }\n"
	e := New(testConfig, quiet())
	if err := e.Load(context.Background(), ps); err != nil {
		t.Fatal(err)
	}
	in := exampleInput(t)
	in.Action, in.Resource.CustomerID = input.ActionExport, ""
	res, err := e.Decide(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	if d := res.Decision; d.Allow || d.Status != 403 || len(d.Reasons) == 0 || !slices.ContainsFunc(d.Reasons, func(r decision.Reason) bool { return r.Code == "custom.deny" && r.Message == "no exports today" }) {
		t.Fatalf("string deny: %+v", d)
	}
	list := exampleInput(t)
	list.Subject = input.Subject{ID: "emp-30", Type: "employee", Roles: []string{"marketing"}, AuthMethod: "jwt"}
	list.Purpose, list.CaseID, list.Action, list.Phase = "marketing.communications.email", "", input.ActionList, "response"
	list.Resource.CustomerID = ""
	kept := input.Record{CustomerID: "c-1001", Enrichment: exampleInput(t).Enrichment}
	other := input.Record{CustomerID: "c-1002", Enrichment: exampleInput(t).Enrichment}
	other.Enrichment.Customer = &input.CustomerState{ID: "c-1002", RetentionUntil: kept.Enrichment.Customer.RetentionUntil}
	list.Records = []input.Record{kept, other}
	res, err = e.Decide(context.Background(), list)
	if err != nil {
		t.Fatalf("the whole list failed: %v", err)
	}
	if !res.Decision.Records["c-1001"].Allow || res.Decision.Records["c-1002"].Allow {
		t.Fatalf("records %+v", res.Decision.Records)
	}
}

// loadCustom loads the library with one custom module (custom/x.rego) and, when data is not
// nil, data.consentry.custom.
func loadCustom(t *testing.T, src string, data map[string]any) (*Engine, error) {
	t.Helper()
	ps, err := LoadDir(policyDir, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ps.Modules["custom/x.rego"] = src
	if data != nil {
		ps.Data["consentry"].(map[string]any)["custom"] = data
	}
	e := New(testConfig, quiet())
	return e, e.Load(context.Background(), ps)
}
