package vaultkeys

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Migrating a CRM export: sensitive fields become transit ciphertext of the customer's key of
// the field's class; re-running skips what is already encrypted; erased customers lose the
// fields; Vault's transit/decrypt reads the result.
func TestEncryptJSONLines(t *testing.T) {
	srv := startVault(t)
	m := newManager(t, testConfig(t, srv), Options{})
	ctx := context.Background()
	f, err := os.Open(filepath.Join("..", "policies", "data", "consentry", "catalog", "data.json"))
	if err != nil {
		t.Fatal(err)
	}
	fields, err := FieldMapFromCatalog(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if fields["contact.email"] != "contact" || fields["health.notes"] != "health" {
		t.Fatalf("catalog field map %v", fields)
	}
	if _, err := m.KeysForMigration(ctx, "gone", []string{"contact"}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Erase(ctx, "gone", "cli:test", "erased earlier"); err != nil {
		t.Fatal(err)
	}
	in := strings.Join([]string{
		`{"id":"m1","name":"Ada","contact":{"email":"ada@example.org","phone":"+33 1"},"health.notes":"asthma"}`,
		``,
		`{"id":2,"name":"Bob","payment":{"card_number":"4111111111111111"}}`,
		`{"id":"gone","name":"Eve","contact":{"email":"eve@example.org"}}`,
	}, "\n")
	var out bytes.Buffer
	var progress []MigrateStats
	st, err := m.EncryptJSONLines(ctx, strings.NewReader(in), &out, MigrateOptions{Fields: fields, ProgressEvery: 1,
		Progress: func(s MigrateStats) { progress = append(progress, s) }})
	if err != nil {
		t.Fatal(err)
	}
	if st.Records != 3 || st.Encrypted != 4 || st.Erased != 1 || len(progress) != 4 {
		t.Fatalf("stats %+v, %d progress calls", st, len(progress))
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var r1, r2, r3 map[string]any
	_ = json.Unmarshal([]byte(lines[0]), &r1)
	_ = json.Unmarshal([]byte(lines[1]), &r2)
	_ = json.Unmarshal([]byte(lines[2]), &r3)
	email := r1["contact"].(map[string]any)["email"].(string)
	if !IsCiphertext(email) || r1["name"] != "Ada" || !IsCiphertext(r1["health.notes"].(string)) {
		t.Fatalf("record 1: %v", r1)
	}
	if pt, err := transitDecrypt(t, srv, "consentry-m1-contact", email); err != nil || pt != "ada@example.org" {
		t.Fatalf("transit decrypt of migrated value: %q %v", pt, err)
	}
	card := r2["payment"].(map[string]any)["card_number"].(string)
	if pt, err := transitDecrypt(t, srv, "consentry-2-financial", card); err != nil || pt != "4111111111111111" {
		t.Fatalf("numeric id record: %q %v", pt, err)
	}
	if _, ok := r3["contact"].(map[string]any)["email"]; ok || strings.Contains(lines[2], "eve@") {
		t.Fatalf("erased customer's field kept: %s", lines[2])
	}

	// Re-run on the output: nothing to encrypt, and identical ciphertext.
	var again bytes.Buffer
	st, err = m.EncryptJSONLines(ctx, strings.NewReader(out.String()), &again, MigrateOptions{Fields: fields})
	if err != nil || st.Encrypted != 0 || st.Skipped != 4 {
		t.Fatalf("re-run: %+v %v", st, err)
	}
	if _, err := m.EncryptJSONLines(ctx, strings.NewReader(`{"name":"no id"}`), &again, MigrateOptions{Fields: fields}); err == nil {
		t.Fatal("record without id accepted")
	}
}

func TestParseFieldMap(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
		ok   bool
	}{
		{"contact.email=contact,payment.card_number=financial", 2, true},
		{" a=contact , ", 1, true},
		{"", 0, false},
		{"a", 0, false},
		{"a=", 0, false},
	} {
		got, err := ParseFieldMap(tc.in)
		if (err == nil) != tc.ok || len(got) != tc.want {
			t.Errorf("ParseFieldMap(%q) = %v, %v", tc.in, got, err)
		}
	}
}
