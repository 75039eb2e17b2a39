package envoy_test

import (
	"context"
	"net"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/consentry/consentry/sidecar/audit"
	"github.com/consentry/consentry/sidecar/envoy"
	"github.com/consentry/consentry/sidecar/pipeline/pipelinetest"
	"github.com/consentry/consentry/sidecar/transform"
	tt "github.com/consentry/consentry/sidecar/transform/transformtest"
)

// slowSink is a decision log that takes a while to write (a slow disk, a checkpoint).
type slowSink struct {
	delay time.Duration
	c     tt.Capture
}

func (s *slowSink) Append(ctx context.Context, e *audit.Entry) error {
	time.Sleep(s.delay)
	return s.c.Append(ctx, e)
}

// An ext_proc stream still open when shutdown_grace passes is cancelled by grpc's Stop; its
// handler then records the decision. ServeListener must return only after that record, because
// the app closes the decision log right after (grpc's Stop does not wait for handlers).
func TestShutdownWaitsForExtProcRecord(t *testing.T) {
	sink := &slowSink{delay: 500 * time.Millisecond}
	fx, err := pipelinetest.New(t.TempDir(), pipelinetest.Options{Sink: sink})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fx.Close() })
	tr, err := transform.New(transform.Config{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := envoy.New(envoy.Config{ShutdownGrace: 100 * time.Millisecond}, fx.Pipeline, nil)
	if err != nil {
		t.Fatal(err)
	}
	envoy.NewExtProc(fx.Pipeline, tr, nil).Register(srv.GRPC())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.ServeListener(ctx, ln) }()

	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	st, err := extprocv3.NewExternalProcessorClient(conn).Process(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	h := map[string]string{":method": "GET", ":path": "/api/customers/c-1001", ":authority": "crm.test", ":scheme": "http",
		"authorization": "Bearer " + fx.Agent(), "x-purpose": tt.Support, "x-case-id": "case-7"}
	if err := st.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: hdrs(h, true)}}); err != nil {
		t.Fatal(err)
	}
	resp, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if ir := resp.GetImmediateResponse(); ir != nil {
		t.Fatalf("denied: %d %s", ir.GetStatus().GetCode(), ir.GetBody())
	}
	// Envoy now waits for the CRM: the stream stays open through the shutdown.
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ServeListener did not return")
	}
	if n := len(sink.c.Entries()); n != 1 {
		t.Fatalf("ServeListener returned with %d decision log entries, want the cancelled stream's decision recorded", n)
	}
}

// Drain turns the health service NOT_SERVING for good: a later SetServing(true) (the app's
// readiness follower) must not put a shutting-down replica back into rotation.
func TestDrainKeepsHealthNotServing(t *testing.T) {
	fx, err := pipelinetest.New(t.TempDir(), pipelinetest.Options{Sink: &tt.Capture{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fx.Close() })
	srv, err := envoy.New(envoy.Config{}, fx.Pipeline, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ServeListener(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	status := func() healthpb.HealthCheckResponse_ServingStatus {
		t.Helper()
		r, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetStatus()
	}
	if s := status(); s != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("before drain: %v", s)
	}
	srv.Drain()
	srv.SetServing(true)
	if s := status(); s != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("draining: %v, want NOT_SERVING while the listener still answers", s)
	}
}
