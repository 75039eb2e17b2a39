package proxy_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/consentry/consentry/sidecar/proxy"
	tt "github.com/consentry/consentry/sidecar/transform/transformtest"
)

// A stop that arrives as the proxy starts (another component failed at start, or SIGTERM right
// after start) must still end ServeListener: fasthttp's Shutdown is a no-op before Serve has
// registered the listener, which left the process ignoring SIGTERM.
func TestServeListenerStopsWhenCancelledAtStart(t *testing.T) {
	f := newFixture(t)
	up := echo(t)
	for i := 0; i < 20; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s, err := proxy.New(proxy.Config{Listen: ln.Addr().String(), Upstream: up.URL, ShutdownTimeout: 200 * time.Millisecond},
			proxy.Deps{Pipeline: f.fx.Pipeline, Transform: f.tr, Registerer: prometheus.NewRegistry()})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // already stopped when the door starts
		done := make(chan error, 1)
		go func() { done <- s.ServeListener(ctx, ln) }()
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			c, derr := net.Dial("tcp", ln.Addr().String())
			if derr == nil {
				c.Close()
			}
			t.Fatalf("attempt %d: ServeListener did not return 3s after its context was cancelled (listener still accepting: %v)", i, derr == nil)
		}
	}
}

// An allowed request that reached the CRM is recorded even when shutdown_timeout passes
// while the CRM is still answering: ServeListener returns only after the handler recorded it,
// because the app closes the decision log right after.
func TestShutdownWaitsForInFlightRecord(t *testing.T) {
	f := newFixture(t)
	arrived := make(chan struct{}, 1)
	const crmDelay = 1500 * time.Millisecond
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		time.Sleep(crmDelay)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"id":"c-1001","name":"Ada"}`))
	}))
	t.Cleanup(up.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := proxy.New(proxy.Config{Listen: ln.Addr().String(), Upstream: up.URL, ShutdownTimeout: 100 * time.Millisecond, UpstreamTimeout: 5 * time.Second},
		proxy.Deps{Pipeline: f.fx.Pipeline, Transform: f.tr, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.ServeListener(ctx, ln) }()

	go func() {
		req, _ := http.NewRequest("GET", "http://"+ln.Addr().String()+"/api/customers/c-1001", nil)
		req.Header.Set("Authorization", "Bearer "+f.fx.Agent())
		req.Header.Set("X-Purpose", tt.Support)
		req.Header.Set("X-Case-Id", "case-7")
		if res, err := http.DefaultClient.Do(req); err == nil { // the connection is closed by the drain
			res.Body.Close()
		}
	}()
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the request never reached the CRM")
	}
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("ServeListener did not return")
	}
	took := time.Since(start)
	entries := f.capture.Entries()
	if len(entries) != 1 {
		t.Fatalf("ServeListener returned after %v with %d decision log entries, want the request the CRM answered recorded", took, len(entries))
	}
	if e := entries[0]; !e.Decision.Allow || e.Enforcement.Status != http.StatusOK {
		t.Fatalf("recorded %+v / %+v, want the allowed request's 200", e.Decision, e.Enforcement)
	}
}
