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
	"sync"
	"time"

	"github.com/consentry/consentry/sidecar/internal/inflight"
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

	// inflight counts running RPC handlers: grpc's Stop cancels them but does not wait, and an
	// ext_proc stream records its decision as its handler ends, so shutdown waits for them
	// before the app closes the decision log.
	inflight inflight.Counter
	// handlerBound is how long a handler can still run once cancelled (SetHandlerBound).
	handlerBound time.Duration
	// mu guards draining: once draining, health stays NOT_SERVING whatever SetServing is told.
	mu       sync.Mutex
	draining bool
}

// defaultHandlerBound is how long shutdown waits for cancelled handlers when the app did not
// say (SetHandlerBound): the default pipeline.audit_timeout (2s) and vault.timeout (1s), plus
// a second's margin.
const defaultHandlerBound = 4 * time.Second

// NewGRPCServer builds the gRPC stack every consentry Envoy service runs on (and the no-op
// server the benchmark compares against): TLS/mTLS from cfg, message limits, keepalive policy
// for Envoy's long-lived connections, and the health service.
func NewGRPCServer(cfg Config, extra ...grpc.ServerOption) (*grpc.Server, *health.Server, error) {
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
	gs := grpc.NewServer(append(opts, extra...)...)
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
	s := &Server{cfg: cfg, log: log, handlerBound: defaultHandlerBound}
	gs, hs, err := NewGRPCServer(cfg, grpc.ChainUnaryInterceptor(s.trackUnary), grpc.ChainStreamInterceptor(s.trackStream))
	if err != nil {
		return nil, err
	}
	s.grpc, s.health = gs, hs
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
// NOT_SERVING while no policy is active. After Drain it stays NOT_SERVING.
func (s *Server) SetServing(ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setServingLocked(ok && !s.draining)
}

func (s *Server) setServingLocked(ok bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if ok {
		st = healthpb.HealthCheckResponse_SERVING
	}
	s.health.SetServingStatus("", st)
	s.health.SetServingStatus(authv3.Authorization_ServiceDesc.ServiceName, st)
}

// Drain turns the health service NOT_SERVING for good while the server keeps answering: the
// first step of a shutdown (admin.shutdown_delay), so Envoy's health checks move traffic away
// before the listener closes.
func (s *Server) Drain() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.draining = true
	s.setServingLocked(false)
}

// SetHandlerBound sets how long shutdown waits for handlers still running after grpc's Stop
// cancelled them: the longest a cancelled handler can take (its decision log write and Vault
// calls are not cancelled with the stream).
func (s *Server) SetHandlerBound(d time.Duration) {
	if d > 0 {
		s.handlerBound = d
	}
}

func (s *Server) trackUnary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	s.inflight.Add(1)
	defer s.inflight.Add(-1)
	return h(ctx, req)
}

func (s *Server) trackStream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	s.inflight.Add(1)
	defer s.inflight.Add(-1)
	return h(srv, ss)
}

// Serve listens on cfg.Listen until ctx ends.
func (s *Server) Serve(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("envoy.listen: %w", err)
	}
	return s.ServeListener(ctx, ln)
}

// ServeListener serves on ln until ctx ends, then stops gracefully within ShutdownGrace. RPCs
// still running then are cancelled, and waited for (at most the handler bound) so that what
// they record reaches the decision log before the app closes it.
func (s *Server) ServeListener(ctx context.Context, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- s.grpc.Serve(ln) }()
	s.log.Info("envoy ext_authz listening", "addr", ln.Addr().String(), "tls", s.cfg.TLS.Enabled(), "mtls", s.cfg.TLS.ClientCAFile != "")
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	start := time.Now()
	s.Drain()
	s.log.Info("envoy: draining", "in_flight", s.inflight.Load(), "shutdown_grace", s.cfg.ShutdownGrace)
	done := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(s.cfg.ShutdownGrace):
		s.log.Warn("envoy: graceful stop incomplete; cancelling the remaining calls", "in_flight", s.inflight.Load())
		s.grpc.Stop()
	}
	<-errc
	waited := s.inflight.Load()
	if waited > 0 {
		s.log.Info("envoy: waiting for cancelled calls to finish and be recorded", "in_flight", waited, "max_wait", s.handlerBound)
		if left := s.inflight.Wait(s.handlerBound); left > 0 {
			s.log.Error("envoy: calls still running after the wait; their decisions may be missing from the decision log",
				"still_running", left, "waited", s.handlerBound, "alarm", "shutdown_unrecorded")
		}
	}
	s.log.Info("envoy: stopped", "waited_for", waited, "took", time.Since(start).Round(time.Millisecond))
	return nil
}
