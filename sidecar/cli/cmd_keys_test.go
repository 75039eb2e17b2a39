package cli

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/consentry/consentry/sidecar/admin"
	"github.com/consentry/consentry/vaultkeys"
	"github.com/consentry/consentry/vaultkeys/vaulttest"
)

// The key commands against a real Vault, with a token that has only deploy/vault/consentry.hcl.
func TestKeysCommands(t *testing.T) {
	srv := vaulttest.Start(t)
	hcl, err := os.ReadFile(filepath.Join("..", "..", "deploy", "vault", "consentry.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	srv.WritePolicy(t, "consentry", string(hcl))
	dir := t.TempDir()
	ledger := filepath.Join(dir, "ledger.jsonl")
	// The ledger a sidecar creates on its first start: the commands refuse to start one.
	if err := os.WriteFile(ledger, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "consentry.yaml")
	yml := "vault:\n  address: " + srv.Addr + "\n  auth:\n    method: token\n    token: " + srv.CreateToken(t, time.Hour, "consentry") +
		"\n  ledger_path: " + ledger + "\n  pseudonym_key: cli-test-pseudonym-key-0123\n"
	if err := os.WriteFile(cfgPath, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := Run(context.Background(), args, &Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb})
		return code, out.String(), errb.String()
	}

	// keys encrypt: a CRM export becomes ciphertext Vault itself decrypts.
	in := filepath.Join(dir, "export.jsonl")
	out := filepath.Join(dir, "encrypted.jsonl")
	if err := os.WriteFile(in, []byte(`{"id":"c1","contact":{"email":"ada@example.org"},"name":"Ada"}`+"\n"+`{"id":"c2","contact":{"email":"bob@example.org"}}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := run("keys", "encrypt", "--config", cfgPath, "--in", in, "--out", out, "--fields", "contact.email=contact", "--progress-every", "1")
	if code != ExitOK || !strings.Contains(stderr, "2 records, 2 fields encrypted") {
		t.Fatalf("keys encrypt: %d %s", code, stderr)
	}
	b, _ := os.ReadFile(out)
	if bytes.Contains(b, []byte("ada@example.org")) || !bytes.Contains(b, []byte(`"vault:v1:`)) {
		t.Fatalf("encrypted export: %s", b)
	}
	if _, err := os.Stat(out + ".partial"); !os.IsNotExist(err) {
		t.Fatal("partial file left behind")
	}
	var rec struct {
		Contact struct{ Email string } `json:"contact"`
	}
	_ = json.Unmarshal(bytes.SplitN(b, []byte("\n"), 2)[0], &rec)
	sec, err := srv.Client(t).Logical().Write("transit/decrypt/consentry-c1-contact", map[string]any{"ciphertext": rec.Contact.Email})
	if err != nil || sec.Data["plaintext"] != "YWRhQGV4YW1wbGUub3Jn" {
		t.Fatalf("transit decrypt of migrated value: %v %v", sec, err)
	}

	// The notes migration operations.md gives for an upgrade: an export of notes (customer id
	// in customer_id) gets its bodies encrypted under each customer's notes key.
	notesIn, notesOut := filepath.Join(dir, "notes.jsonl"), filepath.Join(dir, "notes-encrypted.jsonl")
	if err := os.WriteFile(notesIn, []byte(`{"id":"n-1","customer_id":"c1","body":"prefers calls after 5pm","author":"emp-17"}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := run("keys", "encrypt", "--config", cfgPath, "--in", notesIn, "--out", notesOut, "--fields", "body=notes", "--customer-field", "customer_id"); code != ExitOK || !strings.Contains(stderr, "1 records, 1 fields encrypted") {
		t.Fatalf("keys encrypt of notes: %d %s", code, stderr)
	}
	var note struct{ Body string }
	nb, _ := os.ReadFile(notesOut)
	if err := json.Unmarshal(nb, &note); err != nil || !strings.HasPrefix(note.Body, "vault:v1:") {
		t.Fatalf("encrypted notes export: %v %s", err, nb)
	}
	if sec, err := srv.Client(t).Logical().Write("transit/decrypt/consentry-c1-notes", map[string]any{"ciphertext": note.Body}); err != nil || sec.Data["plaintext"] != base64.StdEncoding.EncodeToString([]byte("prefers calls after 5pm")) {
		t.Fatalf("transit decrypt of a migrated note: %v %v", sec, err)
	}

	// A field map that matches nothing is an error, and writes no "encrypted" export.
	typo := filepath.Join(dir, "typo.jsonl")
	if code, _, stderr := run("keys", "encrypt", "--config", cfgPath, "--in", in, "--out", typo, "--fields", "contact.emial=contact"); code == ExitOK || !strings.Contains(stderr, "nothing was encrypted") {
		t.Fatalf("keys encrypt with a field map matching nothing: %d %s", code, stderr)
	}
	if _, err := os.Stat(typo); !os.IsNotExist(err) {
		t.Fatal("a plaintext export was written as the encrypted one")
	}
	// A sensitive value that cannot be encrypted as it is (an object) is never written in
	// plaintext: its record is named, the command fails, and --out is not written. A number
	// is encrypted as its JSON text.
	mixed := filepath.Join(dir, "mixed.jsonl")
	if err := os.WriteFile(mixed, []byte(`{"id":"c3","payment":{"card_number":4111111111111111}}`+"\n"+`{"id":"c4","address":{"street":"1 Main St"}}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mixedOut := filepath.Join(dir, "mixed-encrypted.jsonl")
	code, _, stderr = run("keys", "encrypt", "--config", cfgPath, "--in", mixed, "--out", mixedOut, "--fields", "payment.card_number=financial,address=contact")
	if code != ExitFailure || !strings.Contains(stderr, "refused line 2: field address: holds an object") || !strings.Contains(stderr, "1 of 2 records not written") {
		t.Fatalf("keys encrypt with an object in a sensitive field: %d %s", code, stderr)
	}
	if _, err := os.Stat(mixedOut); !os.IsNotExist(err) {
		t.Fatal("an export missing refused records was written as the encrypted one")
	}
	code, stdout, stderr := run("keys", "encrypt", "--config", cfgPath, "--in", mixed, "--fields", "payment.card_number=financial")
	if code != ExitOK || strings.Contains(stdout, "4111111111111111") {
		t.Fatalf("keys encrypt of a number: %d %s %s", code, stdout, stderr)
	}
	var num struct {
		Payment struct {
			CardNumber string `json:"card_number"`
		} `json:"payment"`
	}
	_ = json.Unmarshal([]byte(strings.SplitN(stdout, "\n", 2)[0]), &num)
	if sec, err := srv.Client(t).Logical().Write("transit/decrypt/consentry-c3-financial", map[string]any{"ciphertext": num.Payment.CardNumber}); err != nil || sec.Data["plaintext"] != "NDExMTExMTExMTExMTExMQ==" {
		t.Fatalf("transit decrypt of a migrated number: %v %v", sec, err)
	}
	// replay-erasures refuses a ledger that does not exist (instead of replaying nothing).
	if code, _, stderr := run("keys", "replay-erasures", "--config", cfgPath, "--ledger", filepath.Join(dir, "nowhere", "ledger.jsonl")); code != ExitConfig || !strings.Contains(stderr, "must exist") {
		t.Fatalf("replay-erasures with a missing ledger: %d %s", code, stderr)
	}

	// erase: usage errors, then a real erasure with its record on stdout.
	if code, _, _ := run("erase", "--config", cfgPath, "--customer", "c1"); code != ExitUsage {
		t.Fatalf("erase without reason: exit %d", code)
	}
	if code, _, _ := run("erase", "--config", cfgPath, "--customer", "../x", "--reason", "r"); code != ExitUsage {
		t.Fatalf("erase with a bad id: exit %d", code)
	}
	code, stdout, stderr = run("erase", "--config", cfgPath, "--customer", "c1", "--reason", "consent withdrawn", "--actor", "dpo")
	if code != ExitOK {
		t.Fatalf("erase: %d %s", code, stderr)
	}
	var dr vaultkeys.DestructionRecord
	if err := json.Unmarshal([]byte(stdout), &dr); err != nil || dr.Actor != "dpo" || len(dr.Keys) != len(vaultkeys.DefaultClasses) || strings.Contains(stdout, `"c1"`) {
		t.Fatalf("record: %v %s", err, stdout)
	}
	if _, err := srv.Client(t).Logical().Write("transit/decrypt/consentry-c1-contact", map[string]any{"ciphertext": rec.Contact.Email}); err == nil {
		t.Fatal("backup still decrypts after erase")
	}
	// Re-running the migration on the export must not recreate the erased customer's keys.
	code, _, stderr = run("keys", "encrypt", "--config", cfgPath, "--in", in, "--out", out, "--fields", "contact.email=contact")
	if code != ExitOK || !strings.Contains(stderr, "1 erased customers") {
		t.Fatalf("re-run after erase: %d %s", code, stderr)
	}

	// keys replay-erasures after a "restore" that brought the key back.
	if _, err := srv.Client(t).Logical().Write("transit/keys/consentry-c1-contact", map[string]any{"exportable": true}); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = run("keys", "replay-erasures", "--config", cfgPath)
	if code != ExitOK || !strings.Contains(stdout, `"consentry-c1-contact"`) {
		t.Fatalf("replay: %d %s %s", code, stdout, stderr)
	}

	// erase --admin: through a running sidecar's admin API.
	m, err := vaultkeys.New(context.Background(), vaultkeys.Config{Address: srv.Addr, LedgerPath: ledger,
		PseudonymKey: "cli-test-pseudonym-key-0123", Auth: vaultkeys.AuthConfig{Token: srv.Token}}, vaultkeys.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	a := admin.New(admin.Config{Token: "adm"}, prometheus.NewRegistry())
	vaultkeys.MountAdmin(a.API(), m)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = a.ServeListener(ctx, ln); close(done) }()
	defer func() { cancel(); <-done }()
	tokFile := filepath.Join(dir, "admin-token")
	_ = os.WriteFile(tokFile, []byte("adm\n"), 0o600)
	base := "http://" + ln.Addr().String()
	if code, _, _ := run("erase", "--admin", base, "--customer", "c2", "--reason", "x"); code != ExitFailure {
		t.Fatalf("erase --admin without token: exit %d", code)
	}
	code, stdout, stderr = run("erase", "--admin", base, "--token-file", tokFile, "--customer", "c2", "--reason", "retention expired")
	if code != ExitOK || !strings.Contains(stdout, `"actor":"admin-token"`) {
		t.Fatalf("erase --admin: %d %s %s", code, stdout, stderr)
	}
}
