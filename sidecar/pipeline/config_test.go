package pipeline

import "testing"

func TestReservedHeaderNames(t *testing.T) {
	h := HeaderConfig{ReservedPrefix: "x-consentry-"}
	for name, want := range map[string]bool{
		"x-consentry-fields": true,
		"X-Consentry-Fields": true,
		"x_consentry_fields": true,
		"X_CONSENTRY-fields": true,
		"x-consentry-":       true,
		"x-consentry":        false,
		"x-consentryfields":  false,
		"x-purpose":          false,
		"xx-consentry-a":     false,
		"":                   false,
	} {
		if got := h.Reserved(name); got != want {
			t.Errorf("Reserved(%q) = %v, want %v", name, got, want)
		}
	}
}
