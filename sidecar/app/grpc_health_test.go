package app_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/consentry/consentry/sidecar/app"
	"github.com/consentry/consentry/sidecar/config"
	"github.com/consentry/consentry/sidecar/pipeline/pipelinetest"
)

// waitHealth polls the gRPC health of the Authorization service on addr until it is want.
func waitHealth(t *testing.T, addr string, want healthpb.HealthCheckResponse_ServingStatus) {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	var last string
	// 20s: generous for a busy machine (activating the policy compiles it under -race).
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		hr, err := healthpb.NewHealthClient(cc).Check(context.Background(), &healthpb.HealthCheckRequest{Service: "envoy.service.auth.v3.Authorization"})
		if err == nil && hr.GetStatus() == want {
			return
		}
		last = fmt.Sprint(hr.GetStatus(), err)
	}
	t.Fatalf("gRPC health of the Authorization service: %s, want %v", last, want)
}

// TestGRPCHealthFollowsReadiness: Envoy's and Kubernetes' gRPC health checks see what /ready
// says: NOT_SERVING while no policy is active (the sidecar would deny every check 503),
// SERVING once everything is ready.
func TestGRPCHealthFollowsReadiness(t *testing.T) {
	t.Run("ready", func(t *testing.T) {
		s := start(t, "")
		waitHealth(t, s.grpc, healthpb.HealthCheckResponse_SERVING)
	})
	t.Run("no policy active", func(t *testing.T) {
		root := pipelinetest.RepoRoot()
		dir := t.TempDir()
		adminAddr, grpcAddr, dead := freeAddr(t), freeAddr(t), freeAddr(t)
		cfg, err := config.Parse("test.yaml", []byte(fmt.Sprintf(`
policy:
  url: http://%[4]s/bundle.tar.gz
  no_persist: true
  require_signatures: false
admin:
  listen: %[2]s
routes:
  file: %[1]s/deploy/routes/democrm.yaml
state:
  data_dir: %[5]s/state
  purposes_file: %[1]s/policies/data/consentry/catalog/data.json
decision_log:
  dir: %[5]s/decisions
envoy:
  listen: %[3]s
  response_phase: true
`, root, adminAddr, grpcAddr, dead, dir)))
		if err != nil {
			t.Fatal(err)
		}
		a, err := app.New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx) }()
		defer func() { cancel(); <-done }()
		if failed := a.Admin.Unready(context.Background()); failed["policy"] == "" {
			t.Fatalf("readiness does not name the policy: %v", failed)
		}
		waitHealth(t, grpcAddr, healthpb.HealthCheckResponse_NOT_SERVING)
		time.Sleep(1500 * time.Millisecond) // a poll later: still not serving
		waitHealth(t, grpcAddr, healthpb.HealthCheckResponse_NOT_SERVING)
	})
}
