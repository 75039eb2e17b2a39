package input

import (
	"regexp"
	"strings"
	"testing"
)

// The state store's id rule, as it was written before ValidID replaced it.
var idRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}$`)

func TestValidID(t *testing.T) {
	for _, id := range []string{"c-1001", "C_1", "jane@example.com", "a", "0", "urn:crm:7", "a+b.c", strings.Repeat("x", 128),
		"", "_legacy", "-x", ".x", "a b", "a/b", "../x", "a\n", "ü", strings.Repeat("x", 129), "a\x00"} {
		if got, want := ValidID(id), idRe.MatchString(id); got != want {
			t.Errorf("ValidID(%q) = %v, want %v", id, got, want)
		}
	}
}

func FuzzValidID(f *testing.F) {
	f.Add("c-1001")
	f.Add("_x")
	f.Fuzz(func(t *testing.T, id string) {
		if got, want := ValidID(id), idRe.MatchString(id); got != want {
			t.Fatalf("ValidID(%q) = %v, regexp says %v", id, got, want)
		}
	})
}
