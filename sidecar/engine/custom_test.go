package engine

import (
	"context"
	"errors"
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

// TestCustomPackagesAtAnyDepthAndShapes: a custom package nested deeper, and a boolean deny,
// are consulted; shapes the library cannot read are refused at load instead of ignored.
func TestCustomPackagesAtAnyDepthAndShapes(t *testing.T) {
	load := func(src string) (*Engine, error) {
		ps, err := LoadDir(policyDir, LoadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ps.Modules["custom/x.rego"] = src
		e := New(testConfig, quiet())
		return e, e.Load(context.Background(), ps)
	}
	nested := strings.Replace(customRules, "package consentry.custom.house", "package consentry.custom.acme.house", 1)
	e, err := load(nested)
	if err != nil {
		t.Fatal(err)
	}
	in := exampleInput(t)
	in.Enrichment.Customer.RetentionUntil = nil
	if res, err := e.Decide(context.Background(), in); err != nil || res.Decision.Allow {
		t.Fatalf("a nested custom package was not consulted: %v %+v", err, res.Decision)
	}
	e, err = load("package consentry.custom.strict\n\ndeny if input.purpose != \"\"\n")
	if err != nil {
		t.Fatal(err)
	}
	if res, err := e.Decide(context.Background(), exampleInput(t)); err != nil || res.Decision.Allow || !slices.Contains(res.Decision.ReasonCodes(), "custom.deny") {
		t.Fatalf("a boolean deny was not consulted: %v %+v", err, res.Decision)
	}
	for _, bad := range []string{
		"package consentry.custom.x\n\nrecord_deny(rec) := {\"no\"} if rec.customer_id != \"\"\n",
		"package consentry.custom.x\n\nrecord_deny contains \"no\" if input.purpose != \"\"\n",
		"package consentry.custom.x\n\ndeny(x) := true if x\n",
		"package consentry.custom.x\n\ndeny[input.purpose] contains \"no\" if input.purpose != \"\"\n",
	} {
		_, err := load(bad)
		var ce *CompileError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), "never consults it") {
			t.Errorf("%q: %v, want a compile error", bad, err)
		}
	}
	// Other rules, and deny/record_deny outside consentry.custom, are the author's business.
	if _, err := load("package consentry.custom.x\n\nhelper(x) := x\n\nmine.deny contains 1 if false\n"); err != nil {
		t.Errorf("a helper function refused: %v", err)
	}
}
