package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
)

// drainMargin is added to the sum of a request's own timeouts when shutdown waits for
// in-flight handlers: the time between those steps (policy evaluation, copying) is not bounded
// by any of them.
const drainMargin = time.Second

// Run listens on cfg.Listen and serves until ctx ends, then drains gracefully.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("proxy.listen %s: %w", s.cfg.Listen, err)
	}
	return s.ServeListener(ctx, ln)
}

// Close stops serving immediately and closes idle upstream connections.
func (s *Server) Close() error {
	s.client.CloseIdleConnections()
	return s.app.Shutdown()
}

// ServeListener serves on ln until ctx ends (tests, socket activation). On shutdown, the
// listener closes at once; in-flight requests get shutdown_timeout to finish; connections still
// open after that (including accepted ones that never sent a request, which fasthttp does not
// count as idle) are closed. It returns only once the handlers that were still running have
// finished too (bounded by handlerBound), so every request that reached the CRM has its
// decision recorded before the app closes the decision log.
func (s *Server) ServeListener(ctx context.Context, ln net.Listener) error {
	tl := &trackingListener{Listener: ln, conns: map[net.Conn]struct{}{}}
	var serve net.Listener = tl
	if s.tls != nil {
		// TLS outside the tracking: fasthttp must see *tls.Conn to expose the peer certificate,
		// and shutdown closes the raw connections underneath.
		serve = tls.NewListener(tl, s.tls)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.app.Listener(serve) }()
	select {
	case err := <-errc:
		if err != nil {
			return fmt.Errorf("proxy: serve: %w", err)
		}
		return nil
	case <-ctx.Done():
	}
	s.drain(tl, errc)
	return nil
}

// drain stops serving: no new connections, shutdown_timeout for in-flight requests, then the
// remaining connections are closed and the handlers still running are waited for.
func (s *Server) drain(tl *trackingListener, errc <-chan error) {
	start := time.Now()
	s.log.Info("proxy: draining", "in_flight", s.inflight.Load(), "shutdown_timeout", s.cfg.ShutdownTimeout)
	// Close the listener ourselves, not only through fasthttp: its Shutdown does nothing when
	// Serve has not registered the listener yet (a stop right at start), and Serve would then
	// accept forever. A closed listener ends Serve whenever it starts.
	_ = tl.Close()
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	if err := s.app.ShutdownWithContext(sctx); err != nil {
		s.log.Warn("proxy: graceful shutdown incomplete; closing remaining connections", "error", err, "in_flight", s.inflight.Load())
		tl.closeAll()
	}
	<-errc
	// Closing a connection does not stop its handler: it still waits for the CRM, and a
	// request the CRM may have carried out must be recorded. Wait for those handlers (each is
	// bounded by its own timeouts) before the app closes the decision log.
	waited := s.inflight.Load()
	if waited == 0 {
		s.log.Info("proxy: stopped", "took", time.Since(start).Round(time.Millisecond))
		return
	}
	bound := s.handlerBound()
	s.log.Info("proxy: waiting for in-flight requests to finish and be recorded", "in_flight", waited, "max_wait", bound)
	left := s.inflight.Wait(bound)
	if left > 0 {
		s.log.Error("proxy: requests still running after the wait; their decisions may be missing from the decision log",
			"still_running", left, "waited", bound, "alarm", "shutdown_unrecorded")
	}
	s.log.Info("proxy: stopped", "waited_for", waited, "still_running", left, "took", time.Since(start).Round(time.Millisecond))
}

// handlerBound is the longest one request's handler can run: the policy check, the Vault
// calls of the request and response transforms, the exchange with the CRM, a list's response
// phase (up to two more evaluations, each bounded like the check) and the decision log write,
// plus drainMargin.
func (s *Server) handlerBound() time.Duration {
	pc := s.deps.Pipeline.Config().WithDefaults()
	return 3*pc.Timeout + 2*s.deps.VaultTimeout + s.cfg.UpstreamTimeout + pc.AuditTimeout + drainMargin
}

// tracked counts a handler as in flight while it runs (shutdown waits for it).
func (s *Server) tracked(h fiber.Handler) fiber.Handler {
	return func(c *fiber.Ctx) error {
		s.inflight.Add(1)
		defer s.inflight.Add(-1)
		return h(c)
	}
}

// trackedError is tracked for the error handler, which records a decision too.
func (s *Server) trackedError(h fiber.ErrorHandler) fiber.ErrorHandler {
	return func(c *fiber.Ctx, err error) error {
		s.inflight.Add(1)
		defer s.inflight.Add(-1)
		return h(c, err)
	}
}

// trackingListener remembers open connections so shutdown can close stragglers. Close is
// idempotent: drain closes it before fasthttp's Shutdown closes it again.
type trackingListener struct {
	net.Listener
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	once     sync.Once
	closeErr error
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, l: l}
	l.mu.Lock()
	l.conns[tc] = struct{}{}
	l.mu.Unlock()
	return tc, nil
}

func (l *trackingListener) Close() error {
	l.once.Do(func() { l.closeErr = l.Listener.Close() })
	return l.closeErr
}

func (l *trackingListener) closeAll() {
	l.mu.Lock()
	conns := make([]net.Conn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

type trackedConn struct {
	net.Conn
	l    *trackingListener
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}
