package vaultkeys

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
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

// TestEncryptJSONLinesLeavesNoPlaintext: no sensitive value leaves the migration in
// plaintext. Numbers and booleans are encrypted as their JSON text (as the write path does, so
// reads serve them the same way); an object or array in a sensitive field, a field both
// literal and nested, a field inside an array and a record without a customer id are refused:
// not written, each named, counted, and the call fails; an erased customer's record loses
// every sensitive field whatever it holds. A refused record gets no key.
func TestEncryptJSONLinesLeavesNoPlaintext(t *testing.T) {
	srv := startVault(t)
	m := newManager(t, testConfig(t, srv), Options{})
	ctx := context.Background()
	if _, err := m.KeysForMigration(ctx, "gone", []string{"contact"}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Erase(ctx, "gone", "cli:test", "erased earlier"); err != nil {
		t.Fatal(err)
	}
	fields := map[string]string{"contact.email": "contact", "address": "contact",
		"payment.card_number": "financial", "health.smoker": "health"}
	lines := []string{
		`{"id":"n1","payment":{"card_number":4111111111111111},"health":{"smoker":true}}`,
		`{"id":"o1","address":{"street":"1 Main St"}}`,
		`{"id":"a1","contact":{"email":["a@x.test"]}}`,
		`{"id":"amb","contact.email":"lit@x.test","contact":{"email":"nested@x.test"}}`,
		`{"id":"arr","contact":[{"email":"arr@x.test"}]}`,
		`{"id":"gone","payment":{"card_number":4111},"address":{"street":"2 Side St"},"contact.email":"lit@gone.test","contact":{"email":"nested@gone.test"},"health":{"smoker":false}}`,
		`{"id":"ok","contact":{"email":"ok@x.test","phone":null},"address":""}`,
		`{"name":"no id","contact":{"email":"noid@x.test"}}`,
	}
	var out bytes.Buffer
	var refused []Refusal
	st, err := m.EncryptJSONLines(ctx, strings.NewReader(strings.Join(lines, "\n")), &out, MigrateOptions{Fields: fields,
		Refused: func(r Refusal) { refused = append(refused, r) }})
	if !errors.Is(err, ErrRecordsRefused) {
		t.Fatalf("refusals not reported as an error: %v", err)
	}
	want := []Refusal{
		{Line: 2, Field: "address"},
		{Line: 3, Field: "contact.email"},
		{Line: 4, Field: "contact.email"},
		{Line: 5, Field: "contact.email"},
		{Line: 8},
	}
	if len(refused) != len(want) {
		t.Fatalf("refusals %v, want %v", refused, want)
	}
	for i, w := range want {
		if refused[i].Line != w.Line || refused[i].Field != w.Field || refused[i].Reason == "" {
			t.Errorf("refusal %d: %v, want line %d field %q", i, refused[i], w.Line, w.Field)
		}
	}
	if st.Records != 8 || st.Refused != 5 || st.Erased != 1 || st.Encrypted != 3 {
		t.Fatalf("stats %+v", st)
	}
	for _, plain := range []string{`"card_number":4111`, "Main St", "Side St", "@x.test", "@gone.test", `"smoker":true`, `"smoker":false`} {
		if strings.Contains(out.String(), plain) {
			t.Errorf("plaintext %q in the output:\n%s", plain, out.String())
		}
	}
	recs := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(recs) != 3 {
		t.Fatalf("written records:\n%s", out.String())
	}
	var n1, gone, ok map[string]any
	_ = json.Unmarshal([]byte(recs[0]), &n1)
	_ = json.Unmarshal([]byte(recs[1]), &gone)
	_ = json.Unmarshal([]byte(recs[2]), &ok)
	card, _ := n1["payment"].(map[string]any)["card_number"].(string)
	if pt, err := transitDecrypt(t, srv, "consentry-n1-financial", card); err != nil || pt != "4111111111111111" {
		t.Fatalf("number: %q %v", pt, err)
	}
	smoker, _ := n1["health"].(map[string]any)["smoker"].(string)
	if pt, err := transitDecrypt(t, srv, "consentry-n1-health", smoker); err != nil || pt != "true" {
		t.Fatalf("boolean: %q %v", pt, err)
	}
	if gone["id"] != "gone" || len(gone["payment"].(map[string]any)) != 0 || gone["address"] != nil || gone["contact.email"] != nil ||
		len(gone["contact"].(map[string]any)) != 0 || len(gone["health"].(map[string]any)) != 0 {
		t.Fatalf("erased customer's record: %s", recs[1])
	}
	if c := ok["contact"].(map[string]any); !IsCiphertext(c["email"].(string)) || c["phone"] != nil || ok["address"] != "" {
		t.Fatalf("record ok: %s", recs[2])
	}
	for _, id := range []string{"o1", "a1", "amb", "arr"} {
		if s, _ := srv.Client(t).Logical().Read("transit/keys/consentry-" + id + "-contact"); s != nil {
			t.Errorf("a key was created for refused record %s", id)
		}
	}
}
