package envoy

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"

	"github.com/consentry/consentry/sidecar/envoy/loadgen"
)

// startNoop serves the no-op Check server on a free port for the test's lifetime.
func startNoop(t *testing.T) string {
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
	t.Cleanup(gs.Stop)
	return ln.Addr().String()
}

func TestLoadgen(t *testing.T) {
	addr := startNoop(t)
	req := checkRequest("GET", "/", nil)
	// Open loop: 200 requests at 1,000/s take about 200ms.
	r, err := loadgen.Run(context.Background(), loadgen.Options{Target: addr, Count: 200, Rate: 1000, Requests: []*authv3.CheckRequest{req}})
	if err != nil {
		t.Fatal(err)
	}
	if r.Sent != 200 || r.Allowed != 200 || r.Errors != 0 || r.Elapsed < 190*time.Millisecond || r.P99 < r.P50 || r.Max < r.P99 {
		t.Fatalf("open loop: %s", r)
	}
	if _, err := loadgen.Run(context.Background(), loadgen.Options{Target: addr}); err == nil {
		t.Fatal("run without requests accepted")
	}
}

// The generator as its own process's entry point: requests round-trip through the file, the
// result comes back as JSON, and bad arguments or files are errors, not a run.
func TestLoadgenMain(t *testing.T) {
	addr := startNoop(t)
	dir := t.TempDir()
	reqs := benchMix()
	file := filepath.Join(dir, "reqs.bin")
	if err := loadgen.WriteRequests(file, reqs); err != nil {
		t.Fatal(err)
	}
	back, err := loadgen.ReadRequests(file)
	if err != nil || len(back) != len(reqs) {
		t.Fatalf("read back %d requests, %v", len(back), err)
	}
	for i := range reqs {
		if !proto.Equal(reqs[i], back[i]) {
			t.Fatalf("request %d changed in the file", i)
		}
	}
	var out bytes.Buffer
	if err := loadgen.Main([]string{"-target", addr, "-requests", file, "-count", "50", "-rate", "1000"}, &out); err != nil {
		t.Fatal(err)
	}
	var r loadgen.Result
	if err := json.Unmarshal(out.Bytes(), &r); err != nil || r.Sent != 50 || r.Allowed != 50 {
		t.Fatalf("result %q: %+v, %v", out.String(), r, err)
	}
	empty := filepath.Join(dir, "empty.bin")
	truncated := filepath.Join(dir, "truncated.bin")
	raw, _ := os.ReadFile(file)
	_ = os.WriteFile(empty, nil, 0o600)
	_ = os.WriteFile(truncated, raw[:len(raw)-3], 0o600)
	for _, args := range [][]string{
		{"-requests", file},
		{"-target", addr},
		{"-target", addr, "-requests", empty},
		{"-target", addr, "-requests", truncated},
		{"-target", addr, "-requests", filepath.Join(dir, "missing")},
	} {
		if err := loadgen.Main(args, io.Discard); err == nil {
			t.Errorf("%v: accepted", args)
		}
	}
}
