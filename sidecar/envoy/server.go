// Package envoy is consentry's Envoy front door: an envoy.service.auth.v3.Authorization (ext_authz)
// gRPC server built on go-control-plane types, answering every Check with a decision from the
// shared request pipeline. Deny answers carry the decision's HTTP status and a JSON body; allow
// answers carry the decision id, allowed fields and purpose to the CRM. Every failure is a
// deny (503 at worst), never a gRPC error, so Envoy's failure_mode_allow never matters.
//
// The gRPC server (plaintext, TLS or mTLS, health service, optional reflection) is shared with
// the ext_proc server, which registers on GRPC().
package envoy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/consentry/consentry/sidecar/tlsserver"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
)

// Server is the gRPC server Envoy calls.
type Server struct {
	cfg    Config
	grpc   *grpc.Server
	health *health.Server
	log    *slog.Logger
}

// NewGRPCServer builds the gRPC stack every consentry Envoy service runs on (and the no-op
// server the benchmark compares against): TLS/mTLS from cfg, message limits, keepalive policy
// for Envoy's long-lived connections, and the health service.
func NewGRPCServer(cfg Config) (*grpc.Server, *health.Server, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, nil, err
	}
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(cfg.MaxRecvMsgBytes),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	}
	if cfg.MaxConcurrentStreams > 0 {
		opts = append(opts, grpc.MaxConcurrentStreams(cfg.MaxConcurrentStreams))
	}
	if cfg.TLS.Enabled() {
		tc, err := ServerTLS(cfg.TLS)
		if err != nil {
			return nil, nil, err
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(tc)))
	}
	gs := grpc.NewServer(opts...)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	if cfg.Reflection {
		reflection.Register(gs)
	}
	return gs, hs, nil
}

// ServerTLS builds the gRPC listener's tls.Config (ALPN h2): see tlsserver.New.
func ServerTLS(c TLSConfig) (*tls.Config, error) { return tlsserver.New(c, "envoy.tls", "h2") }

// New builds the ext_authz server around a pipeline.
func New(cfg Config, checker Checker, log *slog.Logger) (*Server, error) {
	if checker == nil {
		return nil, errors.New("envoy: a pipeline is required")
	}
	if log == nil {
		log = slog.Default()
	}
	cfg = cfg.WithDefaults()
	gs, hs, err := NewGRPCServer(cfg)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, grpc: gs, health: hs, log: log}
	authv3.RegisterAuthorizationServer(gs, NewAuthz(cfg, checker, log))
	s.SetServing(true)
	return s, nil
}

// Name identifies the component in logs and readiness output (app.Component).
func (s *Server) Name() string { return "envoy" }

// Run serves on cfg.Listen until ctx ends (app.Component).
func (s *Server) Run(ctx context.Context) error { return s.Serve(ctx) }

// GRPC returns the gRPC server, for other Envoy services (ext_proc) to register on.
func (s *Server) GRPC() *grpc.Server { return s.grpc }

// SetServing flips the health status (overall and of the Authorization service), e.g. to
// NOT_SERVING while no policy is active.
func (s *Server) SetServing(ok bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if ok {
		st = healthpb.HealthCheckResponse_SERVING
	}
	s.health.SetServingStatus("", st)
	s.health.SetServingStatus(authv3.Authorization_ServiceDesc.ServiceName, st)
}

// Serve listens on cfg.Listen until ctx ends.
func (s *Server) Serve(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("envoy.listen: %w", err)
	}
	return s.ServeListener(ctx, ln)
}

// ServeListener serves on ln until ctx ends, then stops gracefully within ShutdownGrace.
func (s *Server) ServeListener(ctx context.Context, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- s.grpc.Serve(ln) }()
	s.log.Info("envoy ext_authz listening", "addr", ln.Addr().String(), "tls", s.cfg.TLS.Enabled(), "mtls", s.cfg.TLS.ClientCAFile != "")
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	s.SetServing(false)
	done := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(s.cfg.ShutdownGrace):
		s.grpc.Stop()
	}
	<-errc
	return nil
}
