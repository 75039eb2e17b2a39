package crm

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
)

const testN = 20

// newTestServer starts the API on a real loopback listener over a fresh SQLite file seeded
// in plaintext with Generate(testN, 42).
func newTestServer(t *testing.T) (*httptest.Server, *Store) {
	t.Helper()
	srv, store := newTestServerEmpty(t)
	if _, err := Seed(context.Background(), store, SeedOptions{N: testN, Seed: 42, Plaintext: true}); err != nil {
		t.Fatal(err)
	}
	return srv, store
}

// newTestServerEmpty starts the API over a fresh, empty SQLite file.
func newTestServerEmpty(t *testing.T) (*httptest.Server, *Store) {
	t.Helper()
	store, err := Open(filepath.Join(t.TempDir(), "crm.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	srv := httptest.NewServer(NewServer(store, nil))
	t.Cleanup(srv.Close)
	return srv, store
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func do(t *testing.T, srv *httptest.Server, method, path, body string, header map[string]string) response {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header, b}
}

func decode[T any](t *testing.T, b []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return v
}

func TestAPI(t *testing.T) {
	want := Generate(testN, 42)
	first := want.Customers[0]
	tests := []struct {
		name   string
		method string
		path   string
		body   string
		header map[string]string
		status int
		check  func(t *testing.T, srv *httptest.Server, r response)
	}{
		{name: "health", method: "GET", path: "/healthz", status: 200},
		{name: "list default page", method: "GET", path: "/api/customers", status: 200,
			check: func(t *testing.T, _ *httptest.Server, r response) {
				p := decode[Page[Customer]](t, r.body)
				if p.Page != 1 || p.PageSize != DefaultPageSize || p.Total != testN || len(p.Items) != testN {
					t.Fatalf("page %+v with %d items", p, len(p.Items))
				}
				if p.Items[0] != first {
					t.Fatalf("first item %+v, want %+v", p.Items[0], first)
				}
			}},
		{name: "list second page", method: "GET", path: "/api/customers?page=2&page_size=7", status: 200,
			check: func(t *testing.T, _ *httptest.Server, r response) {
				p := decode[Page[Customer]](t, r.body)
				if p.Page != 2 || p.PageSize != 7 || p.Total != testN || len(p.Items) != 7 || p.Items[0].ID != "c-000008" {
					t.Fatalf("page %+v, first %s", p, p.Items[0].ID)
				}
			}},
		{name: "list past the end", method: "GET", path: "/api/customers?page=9", status: 200,
			check: func(t *testing.T, _ *httptest.Server, r response) {
				if p := decode[Page[Customer]](t, r.body); p.Total != testN || p.Items == nil || len(p.Items) != 0 {
					t.Fatalf("page %+v", p)
				}
			}},
		{name: "page size clamped", method: "GET", path: "/api/customers?page_size=100000", status: 200,
			check: func(t *testing.T, _ *httptest.Server, r response) {
				if p := decode[Page[Customer]](t, r.body); p.PageSize != MaxPageSize {
					t.Fatalf("page_size %d", p.PageSize)
				}
			}},
		{name: "page zero", method: "GET", path: "/api/customers?page=0", status: 400},
		{name: "page size not a number", method: "GET", path: "/api/customers?page_size=ten", status: 400},
		{name: "search by name, case-insensitive", method: "GET",
			path: "/api/customers?q=" + strings.ToUpper(strings.Fields(first.Name)[1]), status: 200,
			check: func(t *testing.T, _ *httptest.Server, r response) {
				p := decode[Page[Customer]](t, r.body)
				wantN := 0
				for _, c := range want.Customers {
					if strings.Contains(strings.ToLower(c.Name), strings.ToLower(strings.Fields(first.Name)[1])) {
						wantN++
					}
				}
				if p.Total != wantN || len(p.Items) != wantN || p.Items[0].ID != first.ID {
					t.Fatalf("got %d (%d items), want %d", p.Total, len(p.Items), wantN)
				}
			}},
		{name: "search wildcard is literal", method: "GET", path: "/api/customers?q=%25", status: 200,
			check: func(t *testing.T, _ *httptest.Server, r response) {
				if p := decode[Page[Customer]](t, r.body); p.Total != 0 {
					t.Fatalf("%% matched %d customers", p.Total)
				}
			}},
		{name: "filter by segment", method: "GET", path: "/api/customers?segment=" + first.MarketingSegment, status: 200,
			check: func(t *testing.T, _ *httptest.Server, r response) {
				p := decode[Page[Customer]](t, r.body)
				wantN := 0
				for _, c := range want.Customers {
					if c.MarketingSegment == first.MarketingSegment {
						wantN++
					}
				}
				if p.Total != wantN {
					t.Fatalf("got %d, want %d", p.Total, wantN)
				}
				for _, c := range p.Items {
					if c.MarketingSegment != first.MarketingSegment {
						t.Fatalf("customer %s in segment %q", c.ID, c.MarketingSegment)
					}
				}
			}},
		{name: "get", method: "GET", path: "/api/customers/" + first.ID, status: 200,
			check: func(t *testing.T, _ *httptest.Server, r response) {
				if got := decode[Customer](t, r.body); got != first {
					t.Fatalf("got %+v, want %+v", got, first)
				}
			}},
		{name: "get missing", method: "GET", path: "/api/customers/c-999999", status: 404},
		{name: "create", method: "POST", path: "/api/customers",
			body: `{"name":"New Person","contact":{"email":"vault:v1:abc"},"marketing_segment":"retail"}`, status: 201,
			check: func(t *testing.T, srv *httptest.Server, r response) {
				c := decode[Customer](t, r.body)
				if c.ID != "c-000021" || c.Contact.Email != "vault:v1:abc" || c.CreatedAt.IsZero() {
					t.Fatalf("created %+v", c)
				}
				if loc := r.header.Get("Location"); loc != "/api/customers/c-000021" {
					t.Fatalf("location %q", loc)
				}
				if got := do(t, srv, "GET", "/api/customers/c-000021", "", nil); got.status != 200 {
					t.Fatalf("read back: %d", got.status)
				}
			}},
		{name: "create with chosen id", method: "POST", path: "/api/customers", body: `{"id":"c-123456","name":"X"}`, status: 201},
		{name: "create duplicate id", method: "POST", path: "/api/customers", body: `{"id":"c-000003","name":"X"}`, status: 409},
		{name: "create invalid id", method: "POST", path: "/api/customers", body: `{"id":"../x","name":"X"}`, status: 400},
		{name: "create without name", method: "POST", path: "/api/customers", body: `{"address":"x"}`, status: 400},
		{name: "create unknown field", method: "POST", path: "/api/customers", body: `{"name":"X","ssn":"1"}`, status: 400},
		{name: "create not JSON", method: "POST", path: "/api/customers", body: `name=X`, status: 400},
		{name: "create body too large", method: "POST", path: "/api/customers",
			body: `{"name":"` + strings.Repeat("x", MaxBodyBytes) + `"}`, status: 413},
		{name: "patch nested field", method: "PATCH", path: "/api/customers/" + first.ID,
			body: `{"contact":{"email":"vault:v1:new"},"health":null}`, status: 200,
			check: func(t *testing.T, srv *httptest.Server, r response) {
				got := decode[Customer](t, do(t, srv, "GET", "/api/customers/"+first.ID, "", nil).body)
				w := first
				w.Contact.Email, w.Health.Notes, w.UpdatedAt = "vault:v1:new", "", got.UpdatedAt
				if got != w {
					t.Fatalf("got %+v, want %+v", got, w)
				}
				if !got.UpdatedAt.After(first.UpdatedAt) {
					t.Fatalf("updated_at not advanced: %s", got.UpdatedAt)
				}
			}},
		{name: "patch same id is allowed", method: "PATCH", path: "/api/customers/" + first.ID, body: `{"id":"` + first.ID + `","name":"Renamed"}`, status: 200},
		{name: "patch id", method: "PATCH", path: "/api/customers/" + first.ID, body: `{"id":"c-000002"}`, status: 400},
		{name: "patch created_at", method: "PATCH", path: "/api/customers/" + first.ID, body: `{"created_at":"2020-01-01T00:00:00Z"}`, status: 400},
		{name: "patch unknown field", method: "PATCH", path: "/api/customers/" + first.ID, body: `{"contact":{"fax":"1"}}`, status: 400},
		{name: "patch wrong type", method: "PATCH", path: "/api/customers/" + first.ID, body: `{"address":7}`, status: 400},
		{name: "patch clears name", method: "PATCH", path: "/api/customers/" + first.ID, body: `{"name":null}`, status: 400},
		{name: "patch array", method: "PATCH", path: "/api/customers/" + first.ID, body: `[]`, status: 400},
		{name: "patch missing", method: "PATCH", path: "/api/customers/c-999999", body: `{"name":"x"}`, status: 404},
		{name: "delete", method: "DELETE", path: "/api/customers/" + first.ID, status: 204,
			check: func(t *testing.T, srv *httptest.Server, _ response) {
				for _, p := range []string{"/api/customers/" + first.ID, "/api/customers/" + first.ID + "/notes", "/api/cases/" + FixtureCase} {
					if got := do(t, srv, "GET", p, "", nil); got.status != 404 {
						t.Fatalf("GET %s after delete: %d", p, got.status)
					}
				}
				if got := do(t, srv, "DELETE", "/api/customers/"+first.ID, "", nil); got.status != 404 {
					t.Fatalf("second delete: %d", got.status)
				}
			}},
		{name: "deleted ids are not reused", method: "DELETE", path: "/api/customers/c-000020", status: 204,
			check: func(t *testing.T, srv *httptest.Server, _ response) {
				r := do(t, srv, "POST", "/api/customers", `{"name":"After"}`, nil)
				if c := decode[Customer](t, r.body); c.ID != "c-000021" {
					t.Fatalf("new customer got id %s", c.ID)
				}
			}},
		{name: "list notes", method: "GET", path: "/api/customers/" + first.ID + "/notes", status: 200,
			check: func(t *testing.T, _ *httptest.Server, r response) {
				l := decode[List[Note]](t, r.body)
				if l.Total == 0 || l.Total != len(l.Items) {
					t.Fatalf("notes %+v", l)
				}
				for _, n := range l.Items {
					if n.CustomerID != first.ID || n.Body == "" || n.Author == "" {
						t.Fatalf("note %+v", n)
					}
				}
			}},
		{name: "notes of missing customer", method: "GET", path: "/api/customers/c-999999/notes", status: 404},
		{name: "add note", method: "POST", path: "/api/customers/c-000005/notes", body: `{"body":"called back"}`,
			header: map[string]string{"X-Remote-User": "emp-17"}, status: 201,
			check: func(t *testing.T, srv *httptest.Server, r response) {
				n := decode[Note](t, r.body)
				if n.CustomerID != "c-000005" || n.Author != "emp-17" || n.Body != "called back" || !strings.HasPrefix(n.ID, "n-") {
					t.Fatalf("note %+v", n)
				}
				l := decode[List[Note]](t, do(t, srv, "GET", "/api/customers/c-000005/notes", "", nil).body)
				if l.Total == 0 || l.Items[l.Total-1] != n {
					t.Fatalf("notes %+v do not end with %+v", l, n)
				}
			}},
		{name: "add empty note", method: "POST", path: "/api/customers/c-000005/notes", body: `{"body":"  "}`, status: 400},
		{name: "add note to missing customer", method: "POST", path: "/api/customers/c-999999/notes", body: `{"body":"x"}`, status: 404},
		{name: "fixture case", method: "GET", path: "/api/cases/" + FixtureCase, status: 200,
			check: func(t *testing.T, _ *httptest.Server, r response) {
				c := decode[Case](t, r.body)
				if c.CustomerID != FixtureCustomer || c.Status != "open" || len(c.Assignees) != 1 || c.Assignees[0] != FixtureAgent {
					t.Fatalf("case %+v", c)
				}
			}},
		{name: "missing case", method: "GET", path: "/api/cases/case-99999", status: 404},
		{name: "cases of a customer", method: "GET", path: "/api/cases?customer_id=" + OtherCustomer, status: 200,
			check: func(t *testing.T, _ *httptest.Server, r response) {
				l := decode[List[Case]](t, r.body)
				if l.Total != 1 || l.Items[0].ID != OtherCase || l.Items[0].Assignees[0] != OtherAgent {
					t.Fatalf("cases %+v", l)
				}
			}},
		{name: "all cases", method: "GET", path: "/api/cases", status: 200,
			check: func(t *testing.T, _ *httptest.Server, r response) {
				if l := decode[List[Case]](t, r.body); l.Total != len(want.Cases) {
					t.Fatalf("%d cases, want %d", l.Total, len(want.Cases))
				}
			}},
		{name: "export", method: "GET", path: "/api/export", status: 200,
			check: func(t *testing.T, _ *httptest.Server, r response) {
				if ct := r.header.Get("Content-Type"); ct != "application/x-ndjson" {
					t.Fatalf("content type %q", ct)
				}
				sc := bufio.NewScanner(strings.NewReader(string(r.body)))
				i := 0
				for ; sc.Scan(); i++ {
					if c := decode[Customer](t, sc.Bytes()); c != want.Customers[i] {
						t.Fatalf("line %d: %+v", i, c)
					}
				}
				if i != testN {
					t.Fatalf("%d lines", i)
				}
			}},
		{name: "export as one document", method: "GET", path: "/api/export", header: map[string]string{"Accept": "application/json"}, status: 200,
			check: func(t *testing.T, _ *httptest.Server, r response) {
				if ct := r.header.Get("Content-Type"); ct != "application/json" {
					t.Fatalf("content type %q", ct)
				}
				l := decode[List[Customer]](t, r.body)
				if l.Total != testN || len(l.Items) != testN || l.Items[testN-1] != want.Customers[testN-1] {
					t.Fatalf("export document: total %d, %d items", l.Total, len(l.Items))
				}
			}},
		{name: "unknown route", method: "GET", path: "/api/unknown", status: 404},
		{name: "unsupported method", method: "PUT", path: "/api/customers/" + first.ID, body: `{}`, status: 404},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv, _ := newTestServer(t)
			r := do(t, srv, tc.method, tc.path, tc.body, tc.header)
			if r.status != tc.status {
				t.Fatalf("%s %s: status %d, want %d: %s", tc.method, tc.path, r.status, tc.status, r.body)
			}
			if r.status >= 400 {
				if e := decode[map[string]string](t, r.body); e["error"] == "" {
					t.Fatalf("error body without message: %s", r.body)
				}
			}
			if tc.check != nil {
				tc.check(t, srv, r)
			}
		})
	}
}

func TestSeedRefusesSeededDatabase(t *testing.T) {
	_, store := newTestServer(t)
	ctx := context.Background()
	if _, err := Seed(ctx, store, SeedOptions{N: 5, Seed: 1, Plaintext: true}); err == nil {
		t.Fatal("seeding a seeded database succeeded without Force")
	}
	if _, err := Seed(ctx, store, SeedOptions{N: 5, Seed: 1, Plaintext: true, Force: true}); err != nil {
		t.Fatal(err)
	}
	if n, _ := store.Count(ctx); n != 5 {
		t.Fatalf("%d customers after forced reseed", n)
	}
	if _, err := Seed(ctx, store, SeedOptions{N: 5, Force: true}); err == nil {
		t.Fatal("encrypted seeding without a Vault client succeeded")
	}
}
