package crm

import (
	"encoding/json"
	"testing"
)

// FuzzMergePatch checks that any JSON patch either fails cleanly or yields a customer with
// the same id, its timestamps and a name.
func FuzzMergePatch(f *testing.F) {
	for _, s := range []string{`{}`, `{"name":"x"}`, `{"contact":null}`, `{"contact":{"email":"e"}}`,
		`{"id":"c-2"}`, `{"payment":{"card_number":null}}`, `{"name":null}`, `{"health":"x"}`, `{"created_at":1}`} {
		f.Add(s)
	}
	base := Generate(1, 1).Customers[0]
	f.Fuzz(func(t *testing.T, s string) {
		var patch map[string]any
		if json.Unmarshal([]byte(s), &patch) != nil || patch == nil {
			return
		}
		got, err := applyMergePatch(base, patch)
		if err != nil {
			return
		}
		if got.ID != base.ID || got.CreatedAt != base.CreatedAt || got.UpdatedAt != base.UpdatedAt || got.Name == "" {
			t.Fatalf("patch %s gave %+v", s, got)
		}
	})
}
