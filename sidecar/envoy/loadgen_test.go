package envoy

import (
	"context"
	"net"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/consentry/consentry/sidecar/envoy/loadgen"
)

func TestLoadgen(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs, _, err := NewGRPCServer(Config{})
	if err != nil {
		t.Fatal(err)
	}
	authv3.RegisterAuthorizationServer(gs, noopAuthz{})
	go func() { _ = gs.Serve(ln) }()
	defer gs.Stop()
	req := checkRequest("GET", "/", nil)
	// Open loop: 200 requests at 1,000/s take about 200ms.
	r, err := loadgen.Run(context.Background(), loadgen.Options{Target: ln.Addr().String(), Count: 200, Rate: 1000, Requests: []*authv3.CheckRequest{req}})
	if err != nil {
		t.Fatal(err)
	}
	if r.Sent != 200 || r.Allowed != 200 || r.Errors != 0 || r.Elapsed < 190*time.Millisecond || r.P99 < r.P50 || r.Max < r.P99 {
		t.Fatalf("open loop: %s", r)
	}
	if _, err := loadgen.Run(context.Background(), loadgen.Options{Target: ln.Addr().String()}); err == nil {
		t.Fatal("run without requests accepted")
	}
}
