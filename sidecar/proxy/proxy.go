// Package proxy is consentry's HTTP front door: a Fiber (fasthttp) reverse proxy in front of
// the CRM. Every request goes through the shared pipeline (the same input document and policy
// as behind Envoy); an allowed request is forwarded to the CRM with its normalized path and
// consentry's headers; the CRM's response passes the shared response transformer (decrypt,
// mask, drop, per-record list filtering); and the decision log records what was enforced
// before the response leaves (no durable record, no response).
//
// Fiber reuses request and response memory once a handler returns: everything this package
// keeps (the pipeline request, the outcome, the decision log entry) is built from copies,
// never from fiber's zero-copy strings.
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/consentry/consentry/sidecar/identity"
	"github.com/consentry/consentry/sidecar/internal/inflight"
	"github.com/consentry/consentry/sidecar/tlsserver"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/consentry/consentry/sidecar/audit"
	"github.com/consentry/consentry/sidecar/input"
	"github.com/consentry/consentry/sidecar/pipeline"
	"github.com/consentry/consentry/sidecar/transform"
)

// FrontDoor is the pipeline's name for this door.
const FrontDoor = "proxy"

// Reason codes the proxy adds.
const (
	ReasonBodyTooLarge     = "request.body_too_large"
	ReasonUpstreamTimeout  = transform.ReasonUpstreamTimeout
	ReasonUpstreamDown     = transform.ReasonUpstreamDown
	ReasonUpstreamTooLarge = "upstream.response_too_large"
	ReasonRequestInvalid   = "request.invalid"
	ReasonInternal         = "proxy.internal"
)

// Deps are the proxy's collaborators. Pipeline and Transform are required.
type Deps struct {
	Pipeline   *pipeline.Pipeline
	Transform  *transform.Transformer
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// VaultTimeout is vault.timeout (0 without Vault): with upstream_timeout and the pipeline's
	// timeouts it bounds one request, so how long shutdown waits for in-flight ones (serve.go).
	VaultTimeout time.Duration
}

// Server is the reverse proxy.
type Server struct {
	cfg      Config
	deps     Deps
	log      *slog.Logger
	app      *fiber.App
	client   *fasthttp.HostClient
	upstream *url.URL
	trusted  []netip.Prefix
	metrics  *metrics
	tls      *tls.Config // nil: plaintext
	// unframed holds a copy of the headers of each request whose body has no declared length
	// (chunked), by the request's header: a body over the limit makes fasthttp reset the
	// request before errorHandler runs, which must still say who tried what.
	unframed sync.Map // *fasthttp.RequestHeader -> *fasthttp.RequestHeader
	// inflight counts running handlers: shutdown waits for them so their decisions are
	// recorded before the decision log closes (serve.go).
	inflight inflight.Counter
}

// The app runs the proxy as a component with a Close step.
var _ interface {
	Name() string
	Run(context.Context) error
	Close() error
} = (*Server)(nil)

// New validates cfg and builds the proxy (it does not listen yet).
func New(cfg Config, deps Deps) (*Server, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Pipeline == nil {
		return nil, errors.New("proxy: a pipeline is required")
	}
	if deps.Transform == nil {
		return nil, errors.New("proxy: a response transformer is required")
	}
	up, _ := cfg.upstream()
	trusted, _ := parseTrusted(cfg.TrustedProxies)
	s := &Server{cfg: cfg, deps: deps, log: deps.Logger, upstream: up, trusted: trusted}
	if s.log == nil {
		s.log = slog.Default()
	}
	m, err := newMetrics(deps.Registerer)
	if err != nil {
		return nil, fmt.Errorf("proxy metrics: %w", err)
	}
	s.metrics = m
	if cfg.TLS.Enabled() {
		if s.tls, err = tlsserver.New(cfg.TLS, "proxy.tls", "http/1.1"); err != nil {
			return nil, err
		}
	}
	addr := up.Host
	if up.Port() == "" {
		addr = net.JoinHostPort(up.Hostname(), map[string]string{"http": "80", "https": "443"}[up.Scheme])
	}
	s.client = &fasthttp.HostClient{
		Addr:                          addr,
		IsTLS:                         up.Scheme == "https",
		TLSConfig:                     &tls.Config{ServerName: up.Hostname(), MinVersion: tls.VersionTLS12},
		MaxConns:                      cfg.MaxUpstreamConns,
		ReadTimeout:                   cfg.UpstreamTimeout,
		WriteTimeout:                  cfg.UpstreamTimeout,
		MaxResponseBodySize:           cfg.MaxResponseBytes,
		DisablePathNormalizing:        true, // the path is already normalized by the pipeline
		NoDefaultUserAgentHeader:      true,
		DisableHeaderNamesNormalizing: false,
		MaxIdleConnDuration:           30 * time.Second,
		ReadBufferSize:                cfg.MaxHeaderBytes,
	}
	s.app = fiber.New(fiber.Config{
		BodyLimit:             cfg.MaxBodyBytes,
		ReadBufferSize:        cfg.MaxHeaderBytes,
		ReadTimeout:           cfg.ReadTimeout,
		WriteTimeout:          cfg.WriteTimeout,
		IdleTimeout:           cfg.IdleTimeout,
		DisableStartupMessage: true,
		// The Date header and keep-alive handling stay fasthttp's; the server name is not sent.
		ServerHeader:                 "",
		ErrorHandler:                 s.trackedError(s.errorHandler),
		DisablePreParseMultipartForm: true,
		// Our own strings are copies; this only protects against fiber internals we call.
		Immutable: false,
	})
	s.app.Server().HeaderReceived = s.headerReceived
	s.app.Use(s.tracked(s.handle))
	return s, nil
}

// headerReceived keeps a copy of a chunked request's headers until the request is handled
// (unframed): fasthttp checks a declared Content-Length against the limit before reading, but
// a chunked body only while reading it, and on failure resets the request.
func (s *Server) headerReceived(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
	if h.ContentLength() < 0 {
		cp := &fasthttp.RequestHeader{}
		h.CopyTo(cp)
		s.unframed.Store(h, cp)
	}
	return fasthttp.RequestConfig{}
}

// Name names the component for the app's lifecycle.
func (s *Server) Name() string { return "proxy" }

// errorHandler answers what fasthttp/fiber rejected before the handler ran (body over the
// limit, malformed request): with a coded JSON body, and recorded in the decision log.
func (s *Server) errorHandler(c *fiber.Ctx, err error) error {
	status, code := http.StatusBadRequest, ReasonRequestInvalid
	var fe *fiber.Error
	if errors.As(err, &fe) && fe.Code == http.StatusRequestEntityTooLarge || errors.Is(err, fasthttp.ErrBodyTooLarge) {
		status, code = http.StatusRequestEntityTooLarge, ReasonBodyTooLarge
	} else if errors.As(err, &fe) && fe.Code >= 400 {
		status = fe.Code
	}
	// Decide on what we have (no body) so the log says who tried what; then refuse anyway.
	if h, ok := s.unframed.LoadAndDelete(&c.Context().Request.Header); ok {
		h.(*fasthttp.RequestHeader).CopyTo(&c.Context().Request.Header) // fasthttp reset it
	}
	req := s.pipelineRequest(c.Context())
	req.Body, req.BodyComplete = nil, false
	out := s.deps.Pipeline.Check(c.UserContext(), req)
	_ = s.deps.Pipeline.Record(c.UserContext(), out, audit.Enforcement{Status: status})
	s.metrics.requests.WithLabelValues(code).Inc()
	return s.sendDeny(c, status, out.DecisionID, code, "the request was refused before it could be decided")
}

// handle is the whole request path. A panic anywhere becomes a 503 (fasthttp does not
// recover handler panics; one bad request must not take the door down), recorded.
func (s *Server) handle(c *fiber.Ctx) (err error) {
	ctx := c.UserContext()
	fctx := c.Context()
	s.unframed.Delete(&fctx.Request.Header) // read whole: the copy is not needed
	var out *pipeline.Outcome
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("proxy panic", "panic", r, "stack", string(debug.Stack()))
			id := ""
			if out != nil {
				id = out.DecisionID
				_ = s.deps.Pipeline.Record(context.WithoutCancel(ctx), out, audit.Enforcement{Status: http.StatusServiceUnavailable})
			}
			s.metrics.requests.WithLabelValues(ReasonInternal).Inc()
			err = s.sendDeny(c, http.StatusServiceUnavailable, id, ReasonInternal, "internal error; see the decision log")
		}
	}()
	preq := s.pipelineRequest(fctx)
	out = s.deps.Pipeline.Check(ctx, preq)
	refuseOtherSpelling(out, preq.Headers, s.deps.Pipeline.Config().Headers)
	if !out.Allowed() {
		return s.deny(c, out)
	}
	upBody := preq.Body
	var writeEnf audit.Enforcement
	if transform.IsWrite(out) {
		w := s.deps.Transform.Request(ctx, out, preq.Body)
		if w.Status != 0 {
			if err := s.deps.Pipeline.Record(ctx, out, w.Enforcement); err != nil {
				return s.deny(c, out)
			}
			s.metrics.requests.WithLabelValues(w.Codes[0]).Inc()
			return s.send(c, w.Status, out.ResponseHeaders, "application/json", w.DenyBody)
		}
		upBody, writeEnf = w.Body, w.Enforcement
	}
	// Write-ahead: a request that may change the CRM's state is in the log before the CRM
	// sees it, so a crash between the CRM's answer and the decision's entry leaves a trace.
	if err := s.deps.Pipeline.RecordIntent(ctx, out, writeEnf); err != nil {
		return s.deny(c, out)
	}

	ureq := fasthttp.AcquireRequest()
	uresp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(ureq)
	defer fasthttp.ReleaseResponse(uresp)
	s.upstreamRequest(fctx, out, preq, upBody, ureq)
	start := time.Now()
	uerr := s.client.DoTimeout(ureq, uresp, s.cfg.UpstreamTimeout)
	s.metrics.upstream.Observe(time.Since(start).Seconds())
	if uerr == nil && uresp.StatusCode() < 200 {
		// The client consumes informational answers (103 Early Hints) and reads the final one;
		// what is left is a 101 the proxy never asked for (it removes Upgrade). Its connection
		// now speaks another protocol: it is never reused, and the answer is no record.
		s.client.CloseIdleConnections()
		uerr = fmt.Errorf("%w: status %d", errUnexpectedInterim, uresp.StatusCode())
	}
	if uerr != nil {
		status, code, msg := upstreamError(uerr)
		s.log.Warn("upstream failed", "decision_id", out.DecisionID, "code", code, "error", uerr)
		if rerr := s.deps.Pipeline.Record(ctx, out, audit.Enforcement{Status: status}); rerr != nil {
			return s.deny(c, out)
		}
		s.metrics.requests.WithLabelValues(code).Inc()
		return s.sendDeny(c, status, out.DecisionID, code, msg)
	}

	var body []byte
	if !fctx.IsHead() {
		body = uresp.Body()
	}
	res := s.deps.Transform.Response(ctx, s.deps.Pipeline, out, transform.Response{
		Status:          uresp.StatusCode(),
		ContentType:     string(uresp.Header.ContentType()),
		ContentEncoding: string(uresp.Header.ContentEncoding()),
		ContentRange:    string(uresp.Header.Peek(fasthttp.HeaderContentRange)),
		Body:            body,
	})
	enf := res.Enforcement
	enf.Status = res.Status
	enf.AddWrite(writeEnf)
	// No durable record, no response: a log failure turns the answer into a 503 deny.
	if err := s.deps.Pipeline.Record(ctx, out, enf); err != nil {
		return s.deny(c, out)
	}
	s.metrics.requests.WithLabelValues("allowed").Inc()
	s.metrics.filtered.Add(float64(enf.RecordsFiltered))
	s.metrics.withheld.Add(float64(len(enf.Withheld)))

	resp := c.Response()
	resp.SetStatusCode(res.Status)
	mode := bodyPassed
	switch {
	case res.Replaced:
		mode = bodyReplaced
	case transform.NeedsBody(out):
		mode = bodyTransformed
	}
	copyResponseHeaders(&resp.Header, &uresp.Header, mode)
	if res.ContentType != "" {
		resp.Header.SetContentType(res.ContentType)
	}
	for k, v := range out.ResponseHeaders {
		resp.Header.Set(k, v)
	}
	for k, v := range res.Headers {
		resp.Header.Set(k, v)
	}
	if fctx.IsHead() {
		resp.SkipBody = true
		return nil
	}
	resp.SetBody(res.Body) // copies: uresp goes back to its pool
	return nil
}

// deny records (if not yet) and answers with the outcome's deny.
func (s *Server) deny(c *fiber.Ctx, out *pipeline.Outcome) error {
	_ = s.deps.Pipeline.Record(c.UserContext(), out, audit.Enforcement{Status: out.Status})
	s.metrics.requests.WithLabelValues("denied").Inc()
	return s.send(c, out.Status, out.ResponseHeaders, "application/json", out.Body)
}

func (s *Server) sendDeny(c *fiber.Ctx, status int, decisionID, code, msg string) error {
	return s.send(c, status, map[string]string{pipeline.HeaderDecisionID: decisionID}, "application/json",
		transform.DenyBody(decisionID, code, msg))
}

func (s *Server) send(c *fiber.Ctx, status int, headers map[string]string, ct string, body []byte) error {
	resp := c.Response()
	resp.Reset()
	resp.SetStatusCode(status)
	for k, v := range headers {
		resp.Header.Set(k, v)
	}
	resp.Header.SetContentType(ct)
	resp.SetBody(body)
	return nil
}

// pipelineRequest converts the fasthttp request into the pipeline's request. Every string
// and byte slice is a copy: fasthttp reuses its buffers after the handler returns, and the
// outcome (with its input) lives on in the decision log.
func (s *Server) pipelineRequest(fctx *fasthttp.RequestCtx) *pipeline.Request {
	r := &fctx.Request
	h := make(map[string][]string, r.Header.Len())
	for k, v := range r.Header.All() {
		name := strings.ToLower(string(k))
		h[name] = append(h[name], string(v))
	}
	peer := peerAddr(fctx)
	client, chain := s.forwardedFor(peer, h["x-forwarded-for"])
	delete(h, "x-forwarded-for")
	if len(chain) > 0 {
		// The policy sees only the entries consentry vouches for.
		h["x-forwarded-for"] = []string{strings.Join(chain, ", ")}
	}
	src := input.Source{Address: fctx.RemoteAddr().String()}
	if st := fctx.TLSConnectionState(); st != nil && len(st.VerifiedChains) > 0 && len(st.PeerCertificates) > 0 {
		// Only a chain the handshake verified against proxy.tls.client_ca_file names the caller.
		src.Principal = identity.SPIFFEFromCert(st.PeerCertificates[0])
	}
	if client != peer {
		src.Address = client.String()
	}
	var id string
	switch v := h["x-request-id"]; len(v) {
	case 0:
		// The proxy is the edge: it names the request so the CRM's logs and the decision
		// log can be joined (forwarded as x-request-id).
		id = pipeline.NewID(time.Now())
		h["x-request-id"] = []string{id}
	case 1:
		id = v[0]
	}
	body := append([]byte(nil), r.Body()...)
	return &pipeline.Request{
		FrontDoor:    FrontDoor,
		ID:           id,
		Method:       string(r.Header.Method()),
		Target:       string(r.Header.RequestURI()), // as sent: r.RequestURI() is fasthttp's normalized rebuild
		Host:         string(r.Host()),
		Headers:      h,
		Body:         body,
		BodyComplete: true, // fasthttp read the whole body (bounded by max_body_bytes)
		Source:       src,
		CanFulfil:    []string{pipeline.ObligationFilterRecords, pipeline.ObligationMinimizeFields},
	}
}

func peerAddr(fctx *fasthttp.RequestCtx) netip.Addr {
	if ta, ok := fctx.RemoteAddr().(*net.TCPAddr); ok {
		if a, ok := netip.AddrFromSlice(ta.IP); ok {
			return a.Unmap()
		}
	}
	return netip.Addr{}
}

func (s *Server) isTrusted(a netip.Addr) bool {
	for _, p := range s.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// forwardedFor returns the client address and the X-Forwarded-For chain to pass on. Only a
// trusted peer's X-Forwarded-For is read, right to left, through trusted entries; the first
// untrusted entry is the client and everything left of it is dropped (a client can put any
// value first: the Fiber balancer CVE-2026-45045 class). A malformed entry stops the walk.
func (s *Server) forwardedFor(peer netip.Addr, values []string) (netip.Addr, []string) {
	client := peer
	var kept []string
	if peer.IsValid() && s.isTrusted(peer) {
		var parts []string
		for _, v := range values {
			parts = append(parts, strings.Split(v, ",")...)
		}
		for i := len(parts) - 1; i >= 0; i-- {
			a, err := netip.ParseAddr(strings.TrimSpace(parts[i]))
			if err != nil {
				break
			}
			a = a.Unmap()
			client = a
			kept = append([]string{a.String()}, kept...)
			if !s.isTrusted(a) {
				break
			}
		}
	}
	if peer.IsValid() {
		kept = append(kept, peer.String())
	}
	return client, kept
}

// upstreamRequest builds the request to the CRM: the normalized path (so the CRM serves what
// was decided, not its own reading of a raw path), the raw query, the caller's headers minus
// hop-by-hop and reserved ones, consentry's headers, and an identity encoding (the transformer
// needs the plain body). When the response will be transformed, the headers that ask for less
// than the whole representation (Range, conditionals) are removed: stripUnenforceable.
func (s *Server) upstreamRequest(fctx *fasthttp.RequestCtx, out *pipeline.Outcome, preq *pipeline.Request, body []byte, u *fasthttp.Request) {
	in := &fctx.Request
	in.Header.CopyTo(&u.Header)
	for _, name := range connectionTokens(&in.Header) {
		u.Header.Del(name)
	}
	for _, name := range hopByHop {
		u.Header.Del(name)
	}
	var reserved []string
	hc := s.deps.Pipeline.Config().Headers
	for k := range u.Header.All() {
		if hc.Reserved(string(k)) {
			reserved = append(reserved, string(k))
		}
	}
	for _, k := range reserved {
		u.Header.Del(k)
	}
	for k, v := range out.UpstreamHeaders {
		u.Header.Set(k, v)
	}
	stripCallerForwarding(&u.Header)
	if xff := preq.Headers["x-forwarded-for"]; len(xff) == 1 {
		u.Header.Set("X-Forwarded-For", xff[0])
	}
	u.Header.Set("X-Forwarded-Proto", map[bool]string{true: "https", false: "http"}[fctx.IsTLS()])
	u.Header.Set("X-Forwarded-Host", preq.Host)
	u.Header.Set("Accept-Encoding", "identity")
	if transform.NeedsBody(out) {
		stripUnenforceable(&u.Header, fctx.IsGet() || fctx.IsHead())
	}
	if preq.ID != "" {
		u.Header.Set("X-Request-Id", preq.ID)
	}
	target := (&url.URL{Path: out.Input.Request.Path}).EscapedPath()
	if q := fctx.URI().QueryString(); len(q) > 0 {
		target += "?" + string(q)
	}
	u.SetRequestURI(target)
	u.URI().SetScheme(s.upstream.Scheme)
	u.URI().SetHost(s.upstream.Host)
	if s.cfg.PreserveHost {
		u.Header.SetHost(preq.Host)
	} else {
		u.Header.SetHost(s.upstream.Host)
	}
	u.SetBody(body)
}

// upstreamError maps a client error to a status and reason code.
// errUnexpectedInterim is a 1xx answer left after the client read the CRM's response.
var errUnexpectedInterim = errors.New("interim response where a final one was expected")

func upstreamError(err error) (int, string, string) {
	var ne net.Error
	switch {
	case errors.Is(err, fasthttp.ErrTimeout) || errors.Is(err, fasthttp.ErrDialTimeout) || (errors.As(err, &ne) && ne.Timeout()):
		return http.StatusGatewayTimeout, ReasonUpstreamTimeout, "the CRM did not answer in time"
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		return http.StatusBadGateway, ReasonUpstreamTooLarge, "the CRM's response is too large to enforce"
	default:
		return http.StatusBadGateway, ReasonUpstreamDown, "the CRM could not be reached"
	}
}
