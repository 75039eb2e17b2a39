package vaultkeys

import (
	"strings"
	"testing"
)

// TestKeyNamesOfDifferentCustomersNeverCollide: vault.classes and vault.key_name are refused
// when two customers' keys of two classes could have the same transit key name (one
// customer's release would export the other's key, and erasing one would destroy the other's
// data): with the default template, customer "x"'s mental-health key and customer
// "x-mental"'s health key would both be consentry-x-mental-health. Customer ids may contain
// '-', '.' and '_'. Each verdict is checked against a brute-force search for a collision.
func TestKeyNamesOfDifferentCustomersNeverCollide(t *testing.T) {
	for _, tc := range []struct {
		name     string
		template string
		classes  []string
		refused  string // "" = valid, else the error's key
	}{
		{"defaults", "", nil, ""},
		{"class ending in -other class", "", []string{"contact", "health", "mental-health"}, "vault.classes"},
		{"same with pseudonyms", "consentry-{pseudonym}-{class}", []string{"health", "mental-health"}, "vault.classes"},
		{"other joiner in the class", "", []string{"health", "mental_health", "health-x", "x.health"}, ""},
		{"the id cannot end in '-'", "", []string{"b", "a--b"}, ""},
		{"class first", "consentry-{class}-{customer}", []string{"health", "mental-health"}, ""},
		{"class first, class starting with other class-", "consentry-{class}-{customer}", []string{"health", "health-records"}, "vault.classes"},
		{"underscore joiner", "consentry-{customer}_{class}", []string{"health", "mental_health"}, "vault.classes"},
		{"underscore joiner, hyphenated class", "consentry-{customer}_{class}", []string{"health", "mental-health"}, ""},
		{"dot joiner", "consentry-{customer}.{class}", []string{"b", "a.b"}, "vault.classes"},
		{"no joiner", "consentry-{customer}{class}", []string{"health", "xhealth"}, "vault.classes"},
		{"no joiner, no suffix", "consentry-{customer}{class}", []string{"contact", "health"}, ""},
		{"class twice", "consentry-{customer}-{class}-{class}", nil, "vault.key_name"},
		{"customer twice", "consentry-{customer}-{customer}-{class}", nil, "vault.key_name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{Address: "http://127.0.0.1:8200", PseudonymKey: testPseudonymKey,
				KeyName: tc.template, Classes: tc.classes}.WithDefaults()
			err := cfg.Validate()
			if tc.refused == "" && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if tc.refused != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.refused)) {
				t.Fatalf("error %v, want one naming %s", err, tc.refused)
			}
			if tc.refused != "vault.classes" && err != nil {
				return
			}
			// Any name-safe pseudonym, as Validate assumes for an integrator's pseudonymizer.
			m := &Manager{cfg: cfg, pseudo: func(id string) string { return id }}
			found := findKeyNameCollision(t, m)
			if tc.refused == "" && found != "" {
				t.Fatalf("accepted, but %s", found)
			}
			if tc.refused != "" {
				if found == "" {
					t.Fatal("refused, but no collision found")
				}
				if !strings.Contains(err.Error(), "same transit key") {
					t.Fatalf("error %v does not say why", err)
				}
			}
		})
	}

	// The reviewer's case, named in the error.
	cfg := Config{Address: "http://127.0.0.1:8200", PseudonymKey: testPseudonymKey,
		Classes: []string{"contact", "health", "mental-health"}}.WithDefaults()
	err := cfg.Validate()
	want := `vault.classes: "health" and "mental-health" give two customers the same transit key`
	if err == nil || !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), `"consentry-x-mental-health"`) {
		t.Fatalf("error %v, want %s ... consentry-x-mental-health", err, want)
	}
}

// findKeyNameCollision searches for two different (customer, class) pairs with one key name:
// for candidate ids x (short ids around the template's literals and the class names) and all
// classes a != b, it reads name(x, a) as a name of class b (the id is what lies between the
// template's literals around it) and checks that id's name of class b.
func findKeyNameCollision(t *testing.T, m *Manager) string {
	t.Helper()
	ids := map[string]bool{"x": true}
	for _, c := range m.cfg.Classes {
		s := keyNameOf(m.cfg.KeyName, "", c)
		for i := range len(s) {
			for j := i + 1; j <= len(s); j++ {
				for _, id := range []string{"x" + s[i:j], s[i:j] + "x"} {
					if validName(id) {
						ids[id] = true
					}
				}
			}
		}
	}
	for x := range ids {
		for _, a := range m.cfg.Classes {
			name, err := m.KeyName(x, a)
			if err != nil {
				t.Fatal(err)
			}
			for _, b := range m.cfg.Classes {
				// The template with class b and a marker id: the literals before and after the id.
				before, after, _ := strings.Cut(keyNameOf(m.cfg.KeyName, "\x00", b), "\x00")
				if b == a || len(name) <= len(before)+len(after) || !strings.HasPrefix(name, before) || !strings.HasSuffix(name, after) {
					continue
				}
				y := name[len(before) : len(name)-len(after)]
				if other, err := m.KeyName(y, b); err == nil && other == name {
					return "customer " + x + "'s " + a + " key and customer " + y + "'s " + b + " key are both " + name
				}
			}
		}
	}
	return ""
}
