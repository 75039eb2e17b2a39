package proxy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/normalize"
	"github.com/consentry/consentry/sidecar/pipeline"
	"github.com/consentry/consentry/sidecar/pipeline/pipelinetest"
	"github.com/consentry/consentry/sidecar/proxy"
	"github.com/consentry/consentry/sidecar/transform"
	tt "github.com/consentry/consentry/sidecar/transform/transformtest"
)

// echo is an upstream that answers every request with what it received, as a customer-shaped
// JSON record ({"id", "name": <x-marker>, "seen": {...}}), optionally after a delay.
func echo(t testing.TB) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d, err := time.ParseDuration(r.Header.Get("X-Delay")); err == nil {
			time.Sleep(d)
		}
		if r.URL.Path == "/api/export" {
			w.Header().Set("Content-Type", "text/csv")
			fmt.Fprintln(w, "id,name")
			return
		}
		h := map[string]string{}
		for k, v := range r.Header {
			h[strings.ToLower(k)] = strings.Join(v, "|")
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Consentry-Fields", "forged-by-upstream")
		w.Header().Set("Connection", "X-Hop")
		w.Header().Set("X-Hop", "1")
		_ = json.NewEncoder(w).Encode(map[string]any{"id": "c-1001", "name": r.Header.Get("X-Marker"), "path": r.URL.RequestURI(), "seen": h})
	}))
	t.Cleanup(srv.Close)
	return srv
}

type fixture struct {
	fx      *pipelinetest.Fixture
	capture *tt.Capture
	tr      *transform.Transformer
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	dir, err := os.MkdirTemp("", "proxy-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	c := &tt.Capture{}
	fx, err := pipelinetest.New(dir, pipelinetest.Options{Sink: c})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := transform.New(transform.Config{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{fx: fx, capture: c, tr: tr}
}

func TestHygiene(t *testing.T) {
	f := newFixture(t)
	up := echo(t)
	agent := f.fx.Agent()
	direct := startProxy(t, proxy.Config{Upstream: up.URL, MaxBodyBytes: 1024, UpstreamTimeout: 300 * time.Millisecond}, f.fx.Pipeline, f.tr)
	// A proxy that trusts loopback as its load balancer.
	behindLB := startProxy(t, proxy.Config{Upstream: up.URL, TrustedProxies: []string{"127.0.0.0/8"}}, f.fx.Pipeline, f.tr)

	seen := func(t *testing.T, r resp) map[string]any {
		t.Helper()
		if r.status != 200 {
			t.Fatalf("%d %s", r.status, r.body)
		}
		return r.json(t)["seen"].(map[string]any)
	}
	base := map[string]string{"X-Marker": "m"}
	with := func(kv ...string) map[string]string {
		h := map[string]string{}
		for k, v := range base {
			h[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			h[kv[i]] = kv[i+1]
		}
		return h
	}

	t.Run("the request line is normalized as sent, not as the HTTP server read it", func(t *testing.T) {
		addr := strings.TrimPrefix(direct, "http://")
		for target, code := range map[string]string{
			"/api/customers/c-1001%2F..%2Fexport": normalize.ReasonEncodedSeparator,
			"/api/customers/c%2fnotes":            normalize.ReasonEncodedSeparator,
			"/../api/customers/c-1001":            normalize.ReasonPathNonCanonical,
		} {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: crm.test\r\nAuthorization: Bearer %s\r\nX-Purpose: %s\r\nX-Case-Id: case-7\r\nConnection: close\r\n\r\n", target, agent, tt.Support)
			raw, _ := io.ReadAll(conn)
			conn.Close()
			if !bytes.HasPrefix(raw, []byte("HTTP/1.1 400")) || !bytes.Contains(raw, []byte(code)) {
				t.Errorf("%s: want 400 %s, got %.200s", target, code, raw)
			}
		}
	})

	t.Run("reserved and hop-by-hop headers stripped", func(t *testing.T) {
		r := do(t, "GET", direct+"/api/customers/c-1001", agent, tt.Support, "case-7", "", with("X-Consentry-Fields", "payment.card_number", "X-Consentry-Evil", "1", "X_Consentry_Purpose", "spoofed", "Connection", "X-Secret-Hop", "X-Secret-Hop", "s", "Te", "trailers"))
		s := seen(t, r)
		if s["x-consentry-evil"] != nil || s["x-secret-hop"] != nil || s["te"] != nil || s["x_consentry_purpose"] != nil {
			t.Errorf("forwarded: %v", s)
		}
		if s["x-consentry-fields"] == "payment.card_number" || s["x-consentry-decision-id"] != r.header.Get(pipeline.HeaderDecisionID) {
			t.Errorf("consentry headers: %v", s)
		}
		if s["x-request-id"] == nil || s["x-request-id"] != f.capture.Find(r.header.Get(pipeline.HeaderDecisionID)).Input.Request.ID {
			t.Errorf("request id not generated and forwarded: %v", s["x-request-id"])
		}
		if s["accept-encoding"] != "identity" {
			t.Errorf("accept-encoding %v", s["accept-encoding"])
		}
		if r.header.Get("X-Consentry-Fields") == "forged-by-upstream" || r.header.Get("X-Hop") != "" {
			t.Errorf("response headers passed: %v", r.header)
		}
	})

	t.Run("normalized path forwarded", func(t *testing.T) {
		r := do(t, "GET", direct+"//api//customers/./c-1001?x=1", agent, tt.Support, "case-7", "", base)
		if p := r.json(t)["path"]; p != "/api/customers/c-1001?x=1" {
			t.Errorf("upstream saw %v", p)
		}
	})

	t.Run("x-forwarded-for from an untrusted peer is replaced", func(t *testing.T) {
		r := do(t, "GET", direct+"/api/customers/c-1001", agent, tt.Support, "case-7", "", with("X-Forwarded-For", "6.6.6.6"))
		if xff := seen(t, r)["x-forwarded-for"]; xff != "127.0.0.1" {
			t.Errorf("xff %v", xff)
		}
		if a := f.capture.Find(r.header.Get(pipeline.HeaderDecisionID)).Input.Request.Source.Address; strings.HasPrefix(a, "6.6.6.6") {
			t.Errorf("source %q", a)
		}
	})

	t.Run("caller-supplied client address headers never reach the CRM", func(t *testing.T) {
		r := do(t, "GET", direct+"/api/customers/c-1001", agent, tt.Support, "case-7", "", with(
			"X-Real-IP", "6.6.6.6", "Forwarded", "for=6.6.6.6", "X_Forwarded_For", "6.6.6.6", "True-Client-IP", "6.6.6.6",
			"X-Forwarded-Port", "1", "X-Forwarded-Host", "evil.example"))
		s := seen(t, r)
		for k, v := range s {
			if strings.Contains(fmt.Sprint(v), "6.6.6.6") || strings.Contains(fmt.Sprint(v), "evil.example") || k == "x-forwarded-port" {
				t.Errorf("the CRM saw %s: %v", k, v)
			}
		}
		if s["x-forwarded-for"] != "127.0.0.1" || s["x-marker"] != "m" {
			t.Errorf("seen %v", s)
		}
	})

	t.Run("x-forwarded-for behind a trusted proxy drops spoofed first values", func(t *testing.T) {
		// The client wrote "6.6.6.6, 10.0.0.1"; the trusted balancer appended the real client 203.0.113.9.
		r := do(t, "GET", behindLB+"/api/customers/c-1001", agent, tt.Support, "case-7", "", with("X-Forwarded-For", "6.6.6.6, 10.0.0.1, 203.0.113.9"))
		if xff := seen(t, r)["x-forwarded-for"]; xff != "203.0.113.9, 127.0.0.1" {
			t.Errorf("xff %v", xff)
		}
		if a := f.capture.Find(r.header.Get(pipeline.HeaderDecisionID)).Input.Request.Source.Address; a != "203.0.113.9" {
			t.Errorf("source %q", a)
		}
	})

	t.Run("body over the limit", func(t *testing.T) {
		r := do(t, "PATCH", direct+"/api/customers/c-1001", agent, tt.Support, "case-7", `{"name":"`+strings.Repeat("x", 4096)+`"}`, nil)
		if r.status != 413 || !strings.Contains(string(r.body), proxy.ReasonBodyTooLarge) {
			t.Fatalf("%d %s", r.status, r.body)
		}
		if f.capture.Find(r.header.Get(pipeline.HeaderDecisionID)) == nil {
			t.Error("refused request not logged")
		}
	})

	t.Run("upstream timeout is 504", func(t *testing.T) {
		r := do(t, "GET", direct+"/api/customers/c-1001", agent, tt.Support, "case-7", "", with("X-Delay", "1s"))
		if r.status != 504 || !strings.Contains(string(r.body), proxy.ReasonUpstreamTimeout) {
			t.Fatalf("%d %s", r.status, r.body)
		}
		if e := f.capture.Find(r.header.Get(pipeline.HeaderDecisionID)); e == nil || e.Enforcement.Status != 504 {
			t.Errorf("logged %+v", e)
		}
	})

	t.Run("upstream down is 502", func(t *testing.T) {
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		addr := ln.Addr().String()
		ln.Close()
		down := startProxy(t, proxy.Config{Upstream: "http://" + addr}, f.fx.Pipeline, f.tr)
		r := do(t, "GET", down+"/api/customers/c-1001", agent, tt.Support, "case-7", "", nil)
		if r.status != 502 || !strings.Contains(string(r.body), proxy.ReasonUpstreamDown) {
			t.Fatalf("%d %s", r.status, r.body)
		}
	})

	t.Run("non-JSON response on a JSON route is not passed", func(t *testing.T) {
		mkt := f.fx.Token("emp-30", "employee", []string{"marketing"}, nil)
		r := do(t, "GET", direct+"/api/export", mkt, tt.Marketing, "", "", nil)
		if r.status != 502 || !strings.Contains(string(r.body), transform.ReasonNotJSON) || strings.Contains(string(r.body), "id,name") {
			t.Fatalf("%d %s", r.status, r.body)
		}
	})
}

func TestConfigValidate(t *testing.T) {
	good := proxy.Config{Listen: ":8080", Upstream: "http://crm:8081"}
	bad := map[string]proxy.Config{
		"proxy.listen":          {Upstream: "http://crm"},
		"proxy.upstream":        {Listen: ":1", Upstream: "ftp://crm"},
		"proxy.trusted_proxies": {Listen: ":1", Upstream: "http://crm", TrustedProxies: []string{"lb.example"}},
		"proxy.max_body_bytes":  {Listen: ":1", Upstream: "http://crm", MaxBodyBytes: -1},
	}
	if err := good.WithDefaults().Validate(); err != nil {
		t.Fatal(err)
	}
	for prefix, c := range bad {
		err := c.WithDefaults().Validate()
		if err == nil || !strings.HasPrefix(err.Error(), prefix) {
			t.Errorf("%s: %v", prefix, err)
		}
	}
	if (proxy.Config{Listen: ":1", Upstream: "http://crm/api"}).Validate() == nil {
		t.Error("upstream with a path accepted")
	}
}

// TestNoCrossRequestLeakage drives concurrent requests with distinct markers through the proxy
// under -race, holds every decision log entry (built from fiber's per-request memory) across
// goroutines, and checks afterwards that every response and every held entry still carries its
// own request's values: fiber reuses buffers, so an uncopied string would have changed.
func TestNoCrossRequestLeakage(t *testing.T) {
	f := newFixture(t)
	up := echo(t)
	url := startProxy(t, proxy.Config{Upstream: up.URL}, f.fx.Pipeline, f.tr)
	agent := f.fx.Agent()
	const workers, per = 8, 40
	type sent struct{ id, marker string }
	var mu sync.Mutex
	held := map[string]sent{} // decision id -> what was sent
	var wg sync.WaitGroup
	errs := make(chan error, workers*per)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				s := sent{id: fmt.Sprintf("req-%d-%d", w, i), marker: fmt.Sprintf("marker-%d-%d-%s", w, i, strings.Repeat("z", (w*per+i)%97))}
				req, _ := http.NewRequest("GET", url+"/api/customers/c-1001", nil)
				req.Header.Set("Authorization", "Bearer "+agent)
				req.Header.Set("X-Purpose", tt.Support)
				req.Header.Set("X-Case-Id", "case-7")
				req.Header.Set("X-Request-Id", s.id)
				req.Header.Set("X-Marker", s.marker)
				res, err := client.Do(req)
				if err != nil {
					errs <- err
					continue
				}
				var body map[string]any
				_ = json.NewDecoder(res.Body).Decode(&body)
				res.Body.Close()
				if body["name"] != s.marker {
					errs <- fmt.Errorf("%s got another request's response: %v", s.id, body["name"])
				}
				mu.Lock()
				held[res.Header.Get(pipeline.HeaderDecisionID)] = s
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Check the held entries only now, long after their handlers returned.
	n := 0
	for _, e := range f.capture.Entries() {
		s, ok := held[e.DecisionID]
		if !ok {
			continue
		}
		n++
		if e.Input.Request.ID != s.id || e.Input.Request.Path != "/api/customers/c-1001" ||
			len(e.Input.Request.Headers["x-marker"]) != 1 || e.Input.Request.Headers["x-marker"][0] != s.marker {
			t.Errorf("entry %s changed after its request: id %q marker %v", e.DecisionID, e.Input.Request.ID, e.Input.Request.Headers["x-marker"])
		}
	}
	if n != workers*per {
		t.Errorf("%d entries checked, want %d", n, workers*per)
	}
}

// TestShutdownClosesStragglers: a connection that never sends a request must not hold the
// shutdown beyond shutdown_timeout.
func TestShutdownClosesStragglers(t *testing.T) {
	f := newFixture(t)
	up := echo(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := proxy.New(proxy.Config{Listen: ln.Addr().String(), Upstream: up.URL, ShutdownTimeout: 200 * time.Millisecond}, proxy.Deps{Pipeline: f.fx.Pipeline, Transform: f.tr})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ServeListener(ctx, ln) }()
	idle, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("shutdown hangs on a connection that never sent a request")
	}
}
