package proxy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/consentry/consentry/sidecar/audit"
	"github.com/consentry/consentry/sidecar/pipeline"
	"github.com/consentry/consentry/sidecar/proxy"
	"github.com/consentry/consentry/sidecar/transform"
	tt "github.com/consentry/consentry/sidecar/transform/transformtest"
	"github.com/consentry/consentry/vaultkeys"
)

// startProxy serves a proxy for cfg on a free port until the test ends.
func startProxy(t testing.TB, cfg proxy.Config, p *pipeline.Pipeline, tr *transform.Transformer) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listen = ln.Addr().String()
	s, err := proxy.New(cfg, proxy.Deps{Pipeline: p, Transform: tr, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ServeListener(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("proxy: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("not JSON (%d): %s", r.status, r.body)
	}
	return m
}

func do(t testing.TB, method, url, token, purpose, caseID string, body string, hdr map[string]string) resp {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if purpose != "" {
		req.Header.Set("X-Purpose", purpose)
	}
	if caseID != "" {
		req.Header.Set("X-Case-Id", caseID)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return resp{res.StatusCode, res.Header, b}
}

func get(m map[string]any, path string) (any, bool) {
	var v any = m
	for _, seg := range strings.Split(path, ".") {
		o, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = o[seg]; !ok {
			return nil, false
		}
	}
	return v, true
}

func TestProxy(t *testing.T) {
	capture := &tt.Capture{}
	e := tt.Start(t, tt.Options{ListCustomers: 20, Sink: capture})
	url := startProxy(t, proxy.Config{Upstream: e.CRM}, e.Pipeline, e.Transformer)
	ada := e.Plain["c-1001"]

	// Field outcomes per purpose: value wanted ("" = removed, "<plain>" = the plaintext).
	reads := []struct {
		name, token, purpose, caseID, customer string
		status                                 int
		want                                   map[string]string
		scopes                                 []string
	}{
		{name: "support agent with case", token: e.Agent(), purpose: tt.Support, caseID: "case-7", customer: "c-1001", status: 200,
			want: map[string]string{"name": ada.Name, "contact.email": ada.Contact.Email, "contact.phone": ada.Contact.Phone, "address": ada.Address,
				"date_of_birth": "1815", "payment.card_number": "", "payment.card_expiry": "", "health.notes": ""},
			scopes: []string{"contact", "identity"}},
		{name: "marketing with consent", token: e.Marketer(), purpose: tt.Marketing, customer: "c-1001", status: 200,
			want:   map[string]string{"name": ada.Name, "contact.email": ada.Contact.Email, "contact.phone": "", "address": "", "date_of_birth": "", "payment.card_number": "", "health.notes": "", "marketing_segment": "gold"},
			scopes: []string{"contact"}},
		{name: "customer reads own record", token: e.Customer("c-1001"), purpose: tt.Self, customer: "c-1001", status: 200,
			want:   map[string]string{"contact.email": ada.Contact.Email, "payment.card_number": "****1111", "payment.card_expiry": "****", "health.notes": ada.Health.Notes, "date_of_birth": ada.DateOfBirth},
			scopes: []string{"contact", "financial", "health", "identity"}},
		{name: "dpo sees redacted contact", token: e.DPO(), purpose: tt.Legal, customer: "c-1001", status: 200,
			want: map[string]string{"name": ada.Name, "contact.email": transform.Redacted, "address": transform.Redacted, "date_of_birth": transform.Redacted,
				// Special categories need a role the DPO does not have: denied, not masked.
				"payment.card_number": "", "health.notes": ""}},
		{name: "marketing without consent", token: e.Marketer(), purpose: tt.Marketing, customer: "c-3003", status: 451},
		{name: "customer reads another", token: e.Customer("c-1001"), purpose: tt.Self, customer: "c-3003", status: 403},
	}
	for _, rt := range reads {
		t.Run("read/"+rt.name, func(t *testing.T) {
			r := do(t, "GET", url+"/api/customers/"+rt.customer, rt.token, rt.purpose, rt.caseID, "", nil)
			if r.status != rt.status {
				t.Fatalf("status %d, want %d: %s", r.status, rt.status, r.body)
			}
			id := r.header.Get(pipeline.HeaderDecisionID)
			entry := capture.Find(id)
			if entry == nil {
				t.Fatalf("decision %q not logged", id)
			}
			if entry.Enforcement.Status != rt.status {
				t.Errorf("logged status %d", entry.Enforcement.Status)
			}
			if rt.status != 200 {
				if bytes.Contains(r.body, []byte("vault:v")) || bytes.Contains(r.body, []byte("example.test")) {
					t.Fatalf("deny body leaks data: %s", r.body)
				}
				return
			}
			m := r.json(t)
			for path, want := range rt.want {
				v, ok := get(m, path)
				switch {
				case want == "" && ok:
					t.Errorf("%s: present (%v), want removed", path, v)
				case want != "" && v != want:
					t.Errorf("%s = %v, want %q", path, v, want)
				}
			}
			if bytes.Contains(r.body, []byte("vault:v")) {
				t.Errorf("ciphertext in response: %s", r.body)
			}
			if !slices.Equal(entry.Enforcement.KeyScopes, rt.scopes) {
				t.Errorf("logged key scopes %v, want %v", entry.Enforcement.KeyScopes, rt.scopes)
			}
			logged, _ := json.Marshal(entry.Enforcement)
			for _, v := range []string{ada.Contact.Email, ada.Health.Notes, ada.Address} {
				if bytes.Contains(logged, []byte(v)) {
					t.Errorf("enforcement record holds a value: %s", logged)
				}
			}
		})
	}

	t.Run("list filtered per record", func(t *testing.T) {
		r := do(t, "GET", url+"/api/customers?page_size=200", e.Marketer(), tt.Marketing, "", "", nil)
		if r.status != 200 {
			t.Fatalf("%d %s", r.status, r.body)
		}
		var page struct {
			Items []map[string]any `json:"items"`
		}
		if err := json.Unmarshal(r.body, &page); err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, it := range page.Items {
			ids = append(ids, it["id"].(string))
			if it["contact"].(map[string]any)["email"] != e.Plain[it["id"].(string)].Contact.Email {
				t.Errorf("%s: email not decrypted: %v", it["id"], it["contact"])
			}
			if _, ok := get(it, "payment.card_number"); ok {
				t.Errorf("%s: payment served to marketing", it["id"])
			}
		}
		want := []string{"c-1001"}
		for i := 0; i < 20; i += 2 {
			want = append(want, fmt.Sprintf("l-%03d", i))
		}
		slices.Sort(ids)
		if !slices.Equal(ids, want) {
			t.Fatalf("records %v, want only consenting customers %v", ids, want)
		}
		enf := capture.Find(r.header.Get(pipeline.HeaderDecisionID)).Enforcement
		if enf.RecordsReturned != 11 || enf.RecordsFiltered != 12 {
			t.Errorf("logged returned %d filtered %d, want 11 and 12", enf.RecordsReturned, enf.RecordsFiltered)
		}
	})

	t.Run("export as json lines and as a document", func(t *testing.T) {
		for _, accept := range []string{"", "application/json"} {
			r := do(t, "GET", url+"/api/export", e.Marketer(), tt.Marketing, "", "", map[string]string{"Accept": accept})
			if r.status != 200 {
				t.Fatalf("%q: %d %s", accept, r.status, r.body)
			}
			var n int
			if accept == "" {
				for _, line := range bytes.Split(bytes.TrimSpace(r.body), []byte("\n")) {
					var rec map[string]any
					if err := json.Unmarshal(line, &rec); err != nil {
						t.Fatalf("line %q: %v", line, err)
					}
					n++
				}
			} else {
				var doc struct{ Items []map[string]any }
				if err := json.Unmarshal(r.body, &doc); err != nil {
					t.Fatal(err)
				}
				n = len(doc.Items)
			}
			if n != 11 || bytes.Contains(r.body, []byte("vault:v")) || bytes.Contains(r.body, []byte("l-001")) {
				t.Errorf("%q: %d records (want 11): %s", accept, n, r.body)
			}
		}
	})

	t.Run("notes of a customer", func(t *testing.T) {
		r := do(t, "GET", url+"/api/customers/c-1001/notes", e.Agent(), tt.Support, "case-7", "", nil)
		if r.status != 200 || !bytes.Contains(r.body, []byte("called about the invoice")) {
			t.Fatalf("%d %s", r.status, r.body)
		}
	})

	t.Run("write encrypts before the CRM", func(t *testing.T) {
		r := do(t, "PATCH", url+"/api/customers/c-1001", e.Agent(), tt.Support, "case-7", `{"contact":{"email":"ada.new@example.test"}}`, nil)
		if r.status != 200 {
			t.Fatalf("%d %s", r.status, r.body)
		}
		stored := e.Stored(t, "c-1001")
		ct, _ := get(stored, "contact.email")
		if s, _ := ct.(string); !vaultkeys.IsCiphertext(s) {
			t.Fatalf("CRM stored %v, want ciphertext", ct)
		}
		r = do(t, "GET", url+"/api/customers/c-1001", e.Agent(), tt.Support, "case-7", "", nil)
		if v, _ := get(r.json(t), "contact.email"); v != "ada.new@example.test" {
			t.Fatalf("read back %v", v)
		}
		enf := capture.Find(r.header.Get(pipeline.HeaderDecisionID)).Enforcement
		if !slices.Contains(enf.FieldsReleased, "contact.email") {
			t.Errorf("released %v", enf.FieldsReleased)
		}
	})

	t.Run("customer corrects own record", func(t *testing.T) {
		r := do(t, "PATCH", url+"/api/customers/c-1001", e.Customer("c-1001"), tt.Self, "", `{"address":"10 Downing Street"}`, nil)
		if r.status != 200 {
			t.Fatalf("%d %s", r.status, r.body)
		}
		if a, _ := e.Stored(t, "c-1001")["address"].(string); !vaultkeys.IsCiphertext(a) {
			t.Fatalf("stored address %q", a)
		}
		r = do(t, "PATCH", url+"/api/customers/c-3003", e.Customer("c-1001"), tt.Self, "", `{"address":"elsewhere"}`, nil)
		if r.status != 403 {
			t.Fatalf("correcting another customer's record: %d %s", r.status, r.body)
		}
		if a, _ := e.Stored(t, "c-3003")["address"].(string); a == "elsewhere" {
			t.Fatal("another customer's record was changed")
		}
	})

	writes := []struct {
		name, body, code string
		status           int
	}{
		{"field the purpose may not write", `{"payment":{"card_number":"4000000000000002"}}`, "field.write_not_allowed", 422},
		{"unknown field", `{"ssn":"123"}`, "field.write_not_allowed", 422},
		{"ciphertext instead of a value", `{"contact":{"email":"vault:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}}`, "field.ciphertext_not_accepted", 422},
		{"not JSON", `{"contact":`, "request.body_invalid", 400},
	}
	for _, w := range writes {
		t.Run("write refused/"+w.name, func(t *testing.T) {
			before := e.Stored(t, "c-1001")
			r := do(t, "PATCH", url+"/api/customers/c-1001", e.Agent(), tt.Support, "case-7", w.body, nil)
			if r.status != w.status || !bytes.Contains(r.body, []byte(w.code)) {
				t.Fatalf("%d %s, want %d %s", r.status, r.body, w.status, w.code)
			}
			if after := e.Stored(t, "c-1001"); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Fatal("a refused write changed the record")
			}
		})
	}

	t.Run("create with encryption under the new customer's keys", func(t *testing.T) {
		r := do(t, "POST", url+"/api/customers", e.Agent(), tt.Support, "case-7", `{"id":"c-9001","name":"New","contact":{"email":"n@example.test"}}`, nil)
		if r.status != 201 {
			t.Fatalf("%d %s", r.status, r.body)
		}
		if s, _ := get(e.Stored(t, "c-9001"), "contact.email"); !vaultkeys.IsCiphertext(s.(string)) {
			t.Fatalf("stored %v", s)
		}
		// The create's decision was made without the new customer's state, so no key of that
		// customer is released for the response: the echoed field is withheld, not decrypted.
		if v, ok := get(r.json(t), "contact.email"); !ok || v != nil || bytes.Contains(r.body, []byte("vault:v")) {
			t.Fatalf("create response %s", r.body)
		}
		// A body with sensitive fields and no customer id cannot be encrypted: refused.
		r = do(t, "POST", url+"/api/customers", e.Agent(), tt.Support, "case-7", `{"name":"Anon","contact":{"email":"a@example.test"}}`, nil)
		if r.status != 422 || !bytes.Contains(r.body, []byte(transform.ReasonWriteCustomer)) {
			t.Fatalf("%d %s", r.status, r.body)
		}
	})

	t.Run("no keys: encrypted fields withheld, never ciphertext", func(t *testing.T) {
		nokeys, err := transform.New(transform.Config{}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		u2 := startProxy(t, proxy.Config{Upstream: e.CRM}, e.Pipeline, nokeys)
		r := do(t, "GET", u2+"/api/customers/c-1001", e.Agent(), tt.Support, "case-7", "", nil)
		m := r.json(t)
		if v, ok := get(m, "contact.email"); r.status != 200 || !ok || v != nil {
			t.Fatalf("%d email %v", r.status, v)
		}
		if v, _ := get(m, "name"); v != ada.Name {
			t.Errorf("plaintext field lost: %v", v)
		}
		if w := r.header.Get(transform.HeaderWithheld); !strings.Contains(w, "contact.email") || !strings.Contains(w, "date_of_birth") {
			t.Errorf("withheld header %q", w)
		}
		enf := capture.Find(r.header.Get(pipeline.HeaderDecisionID)).Enforcement
		if !slices.Contains(enf.Withheld, "contact.email") || len(enf.KeyScopes) != 0 {
			t.Errorf("logged %+v", enf)
		}
		if bytes.Contains(r.body, []byte("vault:v")) {
			t.Fatalf("ciphertext served: %s", r.body)
		}
	})

	t.Run("keys only for what the decision serves: zero Vault requests otherwise", func(t *testing.T) {
		mark := e.Vault.AuditMark(t)
		// Denied (no consent) and redact-only (the DPO) reads of customers whose keys are cold.
		if r := do(t, "GET", url+"/api/customers/c-3003", e.Marketer(), tt.Marketing, "", "", nil); r.status != 451 {
			t.Fatalf("%d %s", r.status, r.body)
		}
		if r := do(t, "GET", url+"/api/customers/c-4004", e.DPO(), tt.Legal, "", "", nil); r.status != 200 && r.status != 451 {
			t.Fatalf("%d %s", r.status, r.body)
		}
		time.Sleep(200 * time.Millisecond) // the audit device writes asynchronously to the file
		for _, req := range e.Vault.AuditRequests(t, mark) {
			if strings.HasPrefix(req.Path, "transit/") {
				t.Errorf("Vault request for a response that needs no key: %s %s", req.Operation, req.Path)
			}
		}
	})

	t.Run("vault stopped: cold keys withheld, writes refused, nothing leaks", func(t *testing.T) {
		e.Vault.Stop()
		self := e.Customer("c-3003") // c-3003's keys were never released: cold
		r := do(t, "GET", url+"/api/customers/c-3003", self, tt.Self, "", "", nil)
		if r.status != 200 {
			t.Fatalf("%d %s", r.status, r.body)
		}
		m := r.json(t)
		for _, f := range []string{"contact.email", "address", "payment.card_number", "health.notes"} {
			if v, ok := get(m, f); !ok || v != nil {
				t.Errorf("%s = %v, want withheld (null)", f, v)
			}
		}
		if v, _ := get(m, "name"); v != e.Plain["c-3003"].Name {
			t.Errorf("plaintext field lost: %v", v)
		}
		if bytes.Contains(r.body, []byte("vault:v")) || bytes.Contains(r.body, []byte("charles@")) {
			t.Fatalf("leak: %s", r.body)
		}
		if w := r.header.Get(transform.HeaderWithheld); !strings.Contains(w, "contact.email") {
			t.Errorf("withheld header %q", w)
		}
		before := e.Stored(t, "c-3003")
		r = do(t, "PATCH", url+"/api/customers/c-3003", self, tt.Self, "", `{"contact":{"email":"new@example.test"}}`, nil)
		if r.status != 503 || !bytes.Contains(r.body, []byte(transform.ReasonWriteKeys)) {
			t.Fatalf("write with Vault down: %d %s", r.status, r.body)
		}
		if fmt.Sprint(e.Stored(t, "c-3003")) != fmt.Sprint(before) {
			t.Fatal("the CRM got a write while its fields could not be encrypted")
		}
	})

	t.Run("denials are logged and not forwarded", func(t *testing.T) {
		r := do(t, "GET", url+"/api/customers/c-1001", "", tt.Support, "", "", nil)
		if r.status != 401 || capture.Find(r.header.Get(pipeline.HeaderDecisionID)) == nil {
			t.Fatalf("%d %s", r.status, r.body)
		}
		var _ audit.Enforcement
	})
}
