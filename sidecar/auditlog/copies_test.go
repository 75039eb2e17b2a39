package auditlog

import (
	"context"
	"reflect"
	"strings"
	"testing"

	"github.com/consentry/consentry/sidecar/input"
)

// TestMaskRulesReachTopLevelCopies: the members that repeat input values at the top of a
// decision record (requested_by, trace_id, subject, purpose, case_id, action) follow the mask
// rules applied to their source in the input: removed with it, replaced with it. A value a
// rule hides appears nowhere in the record.
func TestMaskRulesReachTopLevelCopies(t *testing.T) {
	const (
		addr    = "203.0.113.77:41000"
		sub     = "jane.doe@corp.example"
		traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	)
	type want struct {
		requestedBy, traceID, purpose, caseID, action string
		subject                                       *Subject
	}
	// What the record holds with a rule that touches none of the sources.
	base := want{requestedBy: addr, traceID: traceID, purpose: "essential.service.operations.support", caseID: "case-7", action: "read",
		subject: &Subject{ID: sub, Type: "employee", Roles: []string{"support_agent"}}}
	with := func(f func(w *want)) want {
		w := base
		s := *base.subject
		w.subject = &s
		f(&w)
		return w
	}
	remove := func(p string) MaskRule { return MaskRule{Op: MaskOpRemove, Path: p} }
	upsert := func(p string, v any) MaskRule { return MaskRule{Op: MaskOpUpsert, Path: p, Value: v} }
	cases := []struct {
		name     string
		rule     MaskRule
		customer bool // the subject is a customer
		want     want
		hidden   []string // values that must not appear in the record
	}{
		{name: "unrelated rule", rule: remove("/input/request/path"), want: base},
		{name: "address replaced", rule: upsert("/input/request/source/address", "0.0.0.0"), hidden: []string{"203.0.113.77"},
			want: with(func(w *want) { w.requestedBy = "0.0.0.0" })},
		{name: "address replaced by a non-string", rule: upsert("/input/request/source/address", []any{"x"}), hidden: []string{"203.0.113.77"},
			want: with(func(w *want) { w.requestedBy = "" })},
		{name: "address removed", rule: remove("/input/request/source/address"), hidden: []string{"203.0.113.77"},
			want: with(func(w *want) { w.requestedBy = "" })},
		{name: "request removed", rule: remove("/input/request"), hidden: []string{"203.0.113.77", traceID},
			want: with(func(w *want) { w.requestedBy, w.traceID = "", "" })},
		{name: "traceparent removed", rule: remove("/input/request/headers/traceparent"), hidden: []string{traceID},
			want: with(func(w *want) { w.traceID = "" })},
		{name: "subject id removed", rule: remove("/input/subject/id"), hidden: []string{sub},
			want: with(func(w *want) { w.subject.ID = "" })},
		{name: "subject id replaced", rule: upsert("/input/subject/id", "redacted"), hidden: []string{sub},
			want: with(func(w *want) { w.subject.ID = "redacted" })},
		{name: "subject removed", rule: remove("/input/subject"), hidden: []string{sub, "support_agent"},
			want: with(func(w *want) { w.subject = nil })},
		{name: "role removed", rule: remove("/input/subject/roles/0"), hidden: []string{"support_agent"},
			want: with(func(w *want) { w.subject.Roles = nil })},
		{name: "purpose removed", rule: remove("/input/purpose"),
			want: with(func(w *want) { w.purpose = "" })},
		{name: "case replaced", rule: upsert("/input/case_id", "case-x"), want: with(func(w *want) { w.caseID = "case-x" })},
		{name: "action removed", rule: remove("/input/action"), hidden: []string{`"action":"read"`},
			want: with(func(w *want) { w.action = "" })},
		{name: "input removed", rule: remove("/input"), hidden: []string{sub, "203.0.113.77", traceID, "support_agent"},
			want: want{}},
		{name: "customer subject retyped", rule: upsert("/input/subject/type", "employee"), customer: true, hidden: []string{sub},
			want: with(func(w *want) { w.subject.ID, w.subject.Roles = "", nil })},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.cfg.Mask = []MaskRule{tc.rule}
			l := f.open(t)
			e := entry(t, 0)
			e.Input.Request.Source.Address = addr
			e.Input.Request.Headers["traceparent"] = []string{"00-" + traceID + "-00f067aa0ba902b7-01"}
			e.Input.Subject.ID = sub
			if tc.customer {
				e.Input.Subject = input.Subject{ID: sub, Type: input.SubjectCustomer, CustomerID: "c-1001"}
			}
			e.RequestedBy, e.TraceID = addr, traceID // as the pipeline sets them
			if err := l.Append(context.Background(), e); err != nil {
				t.Fatal(err)
			}
			l.Close()
			n := 0
			_ = ScanEvents(f.dir, func(ev *Event, line []byte) error {
				if ev.Type != TypeDecision {
					return nil
				}
				n++
				for _, h := range tc.hidden {
					if strings.Contains(string(line), h) {
						t.Errorf("%q still in the record: %s", h, line)
					}
				}
				w := tc.want
				if tc.customer {
					// The customer's login is replaced by the customer's pseudonym.
					w.subject = &Subject{ID: f.pseudonym(t, "c-1001"), Type: "employee"}
				}
				got := want{requestedBy: ev.RequestedBy, traceID: ev.TraceID, purpose: ev.Purpose, caseID: ev.CaseID, action: ev.Action, subject: ev.Subject}
				if !reflect.DeepEqual(got, w) {
					t.Errorf("copies:\n got %+v subject %+v\nwant %+v subject %+v", got, got.subject, w, w.subject)
				}
				return nil
			})
			if n != 1 {
				t.Fatalf("%d decisions logged", n)
			}
		})
	}
}

func (f *fixture) pseudonym(t *testing.T, id string) string {
	t.Helper()
	ps, err := NewPseudonymizer(testKey)
	if err != nil {
		t.Fatal(err)
	}
	return ps.Customer(id)
}
