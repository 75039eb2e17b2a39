package audit

import (
	"slices"
	"testing"
)

func TestAddWrite(t *testing.T) {
	for _, c := range []struct {
		name                 string
		resp, write          Enforcement
		wantScopes, wantRels []string
	}{
		{"no write", Enforcement{KeyScopes: []string{"contact"}, FieldsReleased: []string{"name"}}, Enforcement{},
			[]string{"contact"}, []string{"name"}},
		{"204: the response released nothing", Enforcement{}, Enforcement{KeyScopes: []string{"contact"}, FieldsReleased: []string{"contact.email"}},
			[]string{"contact"}, []string{"contact.email"}},
		{"both, overlapping", Enforcement{KeyScopes: []string{"identity", "contact"}, FieldsReleased: []string{"name", "contact.email"}},
			Enforcement{KeyScopes: []string{"contact", "financial"}, FieldsReleased: []string{"contact.email", "payment.card_number"}},
			[]string{"contact", "financial", "identity"}, []string{"contact.email", "name", "payment.card_number"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := c.resp
			e.AddWrite(c.write)
			if !slices.Equal(e.KeyScopes, c.wantScopes) || !slices.Equal(e.FieldsReleased, c.wantRels) {
				t.Fatalf("got %v %v, want %v %v", e.KeyScopes, e.FieldsReleased, c.wantScopes, c.wantRels)
			}
		})
	}
}
