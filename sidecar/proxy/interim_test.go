package proxy_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/pipeline"
	"github.com/consentry/consentry/sidecar/proxy"
	tt "github.com/consentry/consentry/sidecar/transform/transformtest"
)

// TestEarlyHintsNeverDesyncTheCRMConnection: a CRM that sends 103 Early Hints before a record
// (net/http, nginx and CDNs do) once made the proxy answer the 103 as final and put the
// connection back in its pool with the 200 still on it, so the next caller - another
// employee, decided on another customer - was served the first caller's record. The
// informational answer is skipped, each caller gets their own record, and the second one is
// logged with the customer it was served.
func TestEarlyHintsNeverDesyncTheCRMConnection(t *testing.T) {
	f := newFixture(t)
	crm := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := strings.TrimPrefix(r.URL.Path, "/api/customers/")
		if r.Header.Get("X-Hints") == "1" {
			w.Header().Set("Link", "</static/app.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			time.Sleep(50 * time.Millisecond)
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"id": id, "name": "name-of-" + id})
	}))
	t.Cleanup(crm.Close)
	url := startProxy(t, proxy.Config{Upstream: crm.URL}, f.fx.Pipeline, f.tr)
	c, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "GET /api/customers/c-1001 HTTP/1.1\r\nHost: crm\r\nAuthorization: Bearer %s\r\nX-Purpose: %s\r\nX-Case-Id: case-7\r\nX-Hints: 1\r\nConnection: close\r\n\r\n", f.fx.Agent(), tt.Support)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	first, _ := io.ReadAll(c)
	c.Close()
	if !strings.HasPrefix(string(first), "HTTP/1.1 200") || !strings.Contains(string(first), "c-1001") {
		t.Fatalf("caller 1 got %q, want its 200 with c-1001", first)
	}
	emp99 := f.fx.Token("emp-99", "employee", []string{"support_agent"}, nil)
	r := do(t, "GET", url+"/api/customers/c-3003", emp99, tt.Support, "case-9", "", nil)
	if r.status != 200 || strings.Contains(string(r.body), "c-1001") || !strings.Contains(string(r.body), "c-3003") {
		t.Fatalf("caller 2 (decided on c-3003) got %d %s", r.status, r.body)
	}
	if e := f.capture.Find(r.header.Get(pipeline.HeaderDecisionID)); e.Input.Resource.CustomerID != "c-3003" || e.Enforcement.Status != 200 {
		t.Fatalf("logged customer %s status %d", e.Input.Resource.CustomerID, e.Enforcement.Status)
	}
}

// rawExchange sends req on a new connection and returns all it reads until wait passes.
func rawExchange(t *testing.T, addr, req string, wait time.Duration) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	b, _ := io.ReadAll(c)
	return string(b)
}

// TestRefusedBodiesAreLoggedWithTheirRequest: a body over proxy.max_body_bytes is refused
// (413) and logged as the request it was - the caller, method and path - whether its length
// was declared or it came chunked (fasthttp resets a request whose chunked body overflows,
// and the log recorded an anonymous GET /).
func TestRefusedBodiesAreLoggedWithTheirRequest(t *testing.T) {
	big := `{"name":"` + strings.Repeat("x", 2048) + `"}`
	for _, framing := range []string{"chunked", "content-length"} {
		t.Run(framing, func(t *testing.T) {
			f := newFixture(t)
			url := startProxy(t, proxy.Config{Upstream: echo(t).URL, MaxBodyBytes: 1024}, f.fx.Pipeline, f.tr)
			head := fmt.Sprintf("PATCH /api/customers/c-1001 HTTP/1.1\r\nHost: crm\r\nAuthorization: Bearer %s\r\nX-Purpose: %s\r\nX-Case-Id: case-7\r\nContent-Type: application/json\r\nConnection: close\r\n", f.fx.Agent(), tt.Support)
			req := head + fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(big), big)
			if framing == "chunked" {
				req = head + fmt.Sprintf("Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(big), big)
			}
			if out := rawExchange(t, strings.TrimPrefix(url, "http://"), req, 2*time.Second); !strings.HasPrefix(out, "HTTP/1.1 413") {
				t.Fatalf("got %.80q, want 413", out)
			}
			entries := f.capture.Entries()
			if len(entries) != 1 {
				t.Fatalf("%d entries", len(entries))
			}
			if e := entries[0]; e.Input.Request.Method != "PATCH" || e.Input.Request.Path != "/api/customers/c-1001" || e.Input.Subject.ID != "emp-17" {
				t.Fatalf("logged as %s %s by %q (reasons %v)", e.Input.Request.Method, e.Input.Request.Path, e.Input.Subject.ID, e.Decision.Reasons)
			}
		})
	}
}

// TestLargeHeadersAreRead: a bearer token plus a session cookie of several KiB (fiber's
// default read buffer refused anything over 4 KiB with 431) is read up to
// proxy.max_header_bytes, and refused with 431 beyond it.
func TestLargeHeadersAreRead(t *testing.T) {
	f := newFixture(t)
	url := startProxy(t, proxy.Config{Upstream: echo(t).URL}, f.fx.Pipeline, f.tr)
	r := do(t, "GET", url+"/api/customers/c-1001", f.fx.Agent(), tt.Support, "case-7", "", map[string]string{"Cookie": "session=" + strings.Repeat("a", 20000)})
	if r.status != 200 {
		t.Fatalf("20 KB of headers: %d %s", r.status, r.body)
	}
	small := startProxy(t, proxy.Config{Upstream: echo(t).URL, MaxHeaderBytes: 8192}, f.fx.Pipeline, f.tr)
	if r := do(t, "GET", small+"/api/customers/c-1001", f.fx.Agent(), tt.Support, "case-7", "", map[string]string{"Cookie": "session=" + strings.Repeat("a", 9000)}); r.status != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("over max_header_bytes: %d %s", r.status, r.body)
	}
}
