// Package admin is the admin listener: /health (liveness), /ready (a policy is active and
// every registered readiness check passes), /metrics (Prometheus text format), /status
// (active policy revision and bundles, component states), and the authenticated admin API
// under /v1 that capabilities (consent store, erasure, ...) mount their handlers on.
package admin

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"mime"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/adaptor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ReadinessCheck returns nil when its component is ready.
type ReadinessCheck func(ctx context.Context) error

// StatusFunc contributes a section to /status.
type StatusFunc func() any

// Authenticator decides whether an admin API request is allowed and names the actor.
// The token check is built in; identity (JWT with an admin role) plugs in another.
type Authenticator func(c *fiber.Ctx) (actor string, ok bool)

// MaxBodyBytes bounds an admin API request body (set explicitly, not left to Fiber's
// default). CSV imports are the large ones: the CLI sends them in 1 MiB parts; a direct
// caller's larger body is refused with 413 import.too_large (docs/admin-api.md).
const MaxBodyBytes = 4 << 20

// importPath is the one endpoint whose oversized body has its own documented code.
const importPath = "/v1/consents/import"

// Server is the admin HTTP server.
type Server struct {
	cfg      Config
	app      *fiber.App
	api      fiber.Router
	registry *prometheus.Registry

	// draining: shutdown has begun (SetDraining); /ready answers 503 while the listeners
	// still serve.
	draining atomic.Bool

	mu     sync.Mutex
	checks map[string]ReadinessCheck
	status map[string]StatusFunc
	authn  []Authenticator
}

// New builds the server. registry is the Prometheus registry every component registers on.
func New(cfg Config, registry *prometheus.Registry) *Server {
	s := &Server{
		cfg:      cfg.WithDefaults(),
		registry: registry,
		checks:   map[string]ReadinessCheck{},
		status:   map[string]StatusFunc{},
	}
	// Immutable: handlers keep request values (route params become map keys in the consent
	// view, ids go into the ledger). Fiber otherwise hands out strings backed by the reused
	// request buffer, which a later request silently overwrites. The admin API is low-volume,
	// so the copies cost nothing that matters.
	s.app = fiber.New(fiber.Config{DisableStartupMessage: true, ErrorHandler: errorHandler, Immutable: true, BodyLimit: MaxBodyBytes})
	s.app.Get("/health", func(c *fiber.Ctx) error { return c.JSON(fiber.Map{"status": "ok"}) })
	s.app.Get("/ready", s.ready)
	s.app.Get("/status", s.statusHandler)
	s.app.Get("/metrics", adaptor.HTTPHandler(promhttp.HandlerFor(registry, promhttp.HandlerOpts{})))
	if tok := strings.TrimSpace(s.cfg.Token); tok != "" {
		s.authn = append(s.authn, tokenAuth(tok))
	}
	s.api = s.app.Group("/v1", s.authenticate)
	return s
}

// App exposes the Fiber app (tests use App().Test).
func (s *Server) App() *fiber.App { return s.app }

// API is the authenticated router under /v1 where capabilities mount their handlers.
// Handlers read the authenticated actor with Actor(c).
func (s *Server) API() fiber.Router { return s.api }

// AddAuthenticator adds a way to authenticate admin API calls (e.g. JWT with an admin role).
func (s *Server) AddAuthenticator(a Authenticator) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.authn = append(s.authn, a)
}

// AddReadiness registers a readiness check under name.
func (s *Server) AddReadiness(name string, check ReadinessCheck) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks[name] = check
}

// AddStatus registers a /status section.
func (s *Server) AddStatus(name string, f StatusFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status[name] = f
}

// Serve listens on cfg.Listen until ctx is done.
func (s *Server) Serve(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return err
	}
	return s.ServeListener(ctx, ln)
}

// shutdownTimeout bounds the admin listener's own drain (probes and scrapes are short).
const shutdownTimeout = 5 * time.Second

// ServeListener serves on ln until ctx is done, then drains for at most shutdownTimeout.
func (s *Server) ServeListener(ctx context.Context, ln net.Listener) error {
	cl := &closeOnce{Listener: ln}
	errc := make(chan error, 1)
	go func() { errc <- s.app.Listener(cl) }()
	select {
	case <-ctx.Done():
	case err := <-errc:
		return err
	}
	// Close the listener ourselves too: fasthttp's Shutdown does nothing before Serve has
	// registered it (a stop right at start), and Serve would then accept forever.
	_ = cl.Close()
	err := s.app.ShutdownWithTimeout(shutdownTimeout)
	<-errc
	return err
}

// closeOnce is a listener whose Close can be called twice (ServeListener, then fasthttp).
type closeOnce struct {
	net.Listener
	once sync.Once
	err  error
}

func (l *closeOnce) Close() error {
	l.once.Do(func() { l.err = l.Listener.Close() })
	return l.err
}

// ReasonShuttingDown is the readiness failure of a sidecar that is shutting down.
const ReasonShuttingDown = "shutting down"

// SetDraining marks the sidecar as shutting down: /ready answers 503 "shutting down" (and the
// gRPC health service, which follows Unready, NOT_SERVING) while every listener keeps serving,
// so load balancers stop sending new connections before the listeners close.
func (s *Server) SetDraining() { s.draining.Store(true) }

// Draining reports whether SetDraining was called.
func (s *Server) Draining() bool { return s.draining.Load() }

func (s *Server) ready(c *fiber.Ctx) error {
	if failed := s.Unready(c.UserContext()); len(failed) > 0 {
		status := "not ready"
		if s.Draining() {
			status = ReasonShuttingDown
		}
		return c.Status(fiber.StatusServiceUnavailable).JSON(fiber.Map{"status": status, "failed": failed})
	}
	return c.JSON(fiber.Map{"status": "ready"})
}

// Unready runs every readiness check and returns the failing ones by name (empty: ready), as
// /ready reports them. Other health signals (the gRPC health service) follow it.
func (s *Server) Unready(ctx context.Context) map[string]string {
	s.mu.Lock()
	checks := make(map[string]ReadinessCheck, len(s.checks))
	for k, v := range s.checks {
		checks[k] = v
	}
	s.mu.Unlock()
	failed := map[string]string{}
	if s.Draining() {
		failed["shutdown"] = ReasonShuttingDown
	}
	for name, check := range checks {
		if err := check(ctx); err != nil {
			failed[name] = err.Error()
		}
	}
	return failed
}

func (s *Server) statusHandler(c *fiber.Ctx) error {
	s.mu.Lock()
	out := make(fiber.Map, len(s.status))
	for name, f := range s.status {
		out[name] = f()
	}
	s.mu.Unlock()
	return c.JSON(out)
}

const actorKey = "consentry.admin.actor"

// Actor returns the authenticated admin actor of a /v1 request.
func Actor(c *fiber.Ctx) string {
	if a, ok := c.Locals(actorKey).(string); ok {
		return a
	}
	return ""
}

func (s *Server) authenticate(c *fiber.Ctx) error {
	// One credential per request. Each authenticator (and fiber's c.Get) reads the first
	// Authorization header; a proxy in front of the admin listener may read the last. With
	// two, who acted would depend on who reads: refuse instead of picking one.
	if n := len(c.Request().Header.PeekAll(fiber.HeaderAuthorization)); n > 1 {
		return c.Status(fiber.StatusUnauthorized).JSON(ErrorBody("admin.unauthenticated", fmt.Sprintf("%d Authorization headers: send exactly one credential", n)))
	}
	s.mu.Lock()
	authn := append([]Authenticator(nil), s.authn...)
	s.mu.Unlock()
	for _, a := range authn {
		if actor, ok := a(c); ok {
			c.Locals(actorKey, actor)
			return c.Next()
		}
	}
	return c.Status(fiber.StatusUnauthorized).JSON(ErrorBody("admin.unauthenticated", "admin API needs the admin token or a JWT with an admin role"))
}

func tokenAuth(token string) Authenticator {
	return func(c *fiber.Ctx) (string, bool) {
		h := c.Get(fiber.HeaderAuthorization)
		got, ok := strings.CutPrefix(h, "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
			return "", false
		}
		return "admin-token", true
	}
}

// IsJSON reports whether the request's Content-Type is application/json (any case, with or
// without parameters such as charset). The media type is parsed, not prefix-matched:
// application/jsonx or application/json-patch+json are other formats.
func IsJSON(c *fiber.Ctx) bool {
	mt, _, err := mime.ParseMediaType(c.Get(fiber.HeaderContentType))
	return err == nil && mt == fiber.MIMEApplicationJSON
}

// ErrorBody is the JSON error shape of every admin API error: {"error": {"code", "message"}}.
func ErrorBody(code, message string) fiber.Map {
	return fiber.Map{"error": fiber.Map{"code": code, "message": message}}
}

func errorHandler(c *fiber.Ctx, err error) error {
	code := fiber.StatusInternalServerError
	var fe *fiber.Error
	if errors.As(err, &fe) {
		code = fe.Code
	}
	if code == fiber.StatusRequestEntityTooLarge {
		// Refused by the server before any handler ran; give it a stable code.
		errCode := "request.too_large"
		if strings.EqualFold(strings.TrimRight(c.Path(), "/"), importPath) {
			errCode = "import.too_large"
		}
		return c.Status(code).JSON(ErrorBody(errCode, fmt.Sprintf("request body over %d bytes: send a large import in parts (consentry consent import sends 1 MiB parts)", MaxBodyBytes)))
	}
	return c.Status(code).JSON(ErrorBody("admin.error", err.Error()))
}
