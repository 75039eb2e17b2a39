package admin

import (
	"context"
	"io"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Once shutdown begins, /ready answers 503 "shutting down" (load balancers stop sending new
// connections) while the listener, /health included, keeps answering.
func TestReadyAnswers503WhileDraining(t *testing.T) {
	s := New(Config{}, prometheus.NewRegistry())
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := s.App().Test(httptest.NewRequest("GET", path, nil))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/ready"); code != 200 {
		t.Fatalf("before: /ready %d %s", code, body)
	}
	s.SetDraining()
	if code, body := get("/ready"); code != 503 || !strings.Contains(body, `"status":"shutting down"`) {
		t.Fatalf("draining: /ready %d %s, want 503 shutting down", code, body)
	}
	if failed := s.Unready(context.Background()); failed["shutdown"] == "" {
		t.Fatalf("Unready (which the gRPC health service follows) = %v, want shutdown", failed)
	}
	if code, body := get("/health"); code != 200 {
		t.Fatalf("draining: /health %d %s, want 200 (alive)", code, body)
	}
}

// A stop that arrives as the admin listener starts must still close it and end ServeListener
// (fasthttp's Shutdown is a no-op before Serve has registered the listener).
func TestServeListenerStopsWhenCancelledAtStart(t *testing.T) {
	for i := 0; i < 20; i++ {
		s := New(Config{}, prometheus.NewRegistry())
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		done := make(chan error, 1)
		go func() { done <- s.ServeListener(ctx, ln) }()
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			t.Fatalf("attempt %d: ServeListener did not return after its context was cancelled", i)
		}
		if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
			c.Close()
			t.Fatalf("attempt %d: the admin listener still accepts after ServeListener returned", i)
		}
	}
}

func TestShutdownDelayValidated(t *testing.T) {
	err := Config{ShutdownDelay: -time.Second}.WithDefaults().Validate()
	if err == nil || !strings.HasPrefix(err.Error(), "admin.shutdown_delay:") {
		t.Fatalf("negative shutdown_delay: %v", err)
	}
	if err := (Config{ShutdownDelay: 5 * time.Second}).WithDefaults().Validate(); err != nil {
		t.Fatal(err)
	}
}
