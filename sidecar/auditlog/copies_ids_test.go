package auditlog

import (
	"slices"
	"testing"
)

// TestCopiesPseudonymize: the top-level copies take the replacement the input's strings take:
// a whole-word customer id becomes its pseudonym, a longer id that merely contains it does
// not, and a customer subject's id is left for the record's whole-id mapping.
func TestCopiesPseudonymize(t *testing.T) {
	ps, _ := NewPseudonymizer(testKey)
	p := ps.Customer("c-1001")
	ids := idSet{{"c-1001", p}}
	cases := []struct {
		name            string
		in, want        copies
		customerSubject bool
	}{
		{name: "case id is the customer id", in: copies{caseID: "c-1001"}, want: copies{caseID: p}},
		{name: "purpose names it", in: copies{purpose: "support for c-1001"}, want: copies{purpose: "support for " + p}},
		{name: "longer id untouched", in: copies{caseID: "c-10011", purpose: "xc-1001"}, want: copies{caseID: "c-10011", purpose: "xc-1001"}},
		{name: "every string copy", in: copies{requestedBy: "c-1001 proxy", traceID: "t c-1001", action: "c-1001", resourceType: "c-1001",
			subject: Subject{ID: "agent c-1001", Roles: []string{"owner:c-1001"}}},
			want: copies{requestedBy: p + " proxy", traceID: "t " + p, action: p, resourceType: p, subject: Subject{ID: "agent " + p, Roles: []string{"owner:" + p}}}},
		{name: "customer subject id left whole", customerSubject: true, in: copies{subject: Subject{ID: "c-1001", Type: "customer"}},
			want: copies{subject: Subject{ID: "c-1001", Type: "customer"}}},
		{name: "invalid utf-8 repaired first", in: copies{purpose: "c-1001 \xff"}, want: copies{purpose: p + " \ufffd"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.in
			c.subject.Roles = slices.Clone(tc.in.subject.Roles)
			c.pseudonymize(ids, tc.customerSubject)
			if c.purpose != tc.want.purpose || c.caseID != tc.want.caseID || c.requestedBy != tc.want.requestedBy || c.traceID != tc.want.traceID ||
				c.action != tc.want.action || c.resourceType != tc.want.resourceType || c.subject.ID != tc.want.subject.ID ||
				!slices.Equal(c.subject.Roles, tc.want.subject.Roles) {
				t.Errorf("got %+v, want %+v", c, tc.want)
			}
		})
	}
}
