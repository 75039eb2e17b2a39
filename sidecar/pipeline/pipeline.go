// Package pipeline is the one request pipeline every front door shares (Envoy ext_authz and
// ext_proc, the HTTP reverse proxy): normalize -> authenticate -> map route -> enrich ->
// evaluate -> respond -> log. A front door converts its own request type into a Request, calls
// Check, answers with the Outcome, and calls Record once it knows what it enforced. A policy
// therefore behaves the same behind either door.
//
// Fail closed, everywhere: every failure (a malformed path, a bad token, an unknown route, an
// enrichment outage, an engine error, a panic, an obligation the door cannot fulfil, a decision
// log that cannot write) becomes a deny with a reason code and a status; Check never returns
// an error and never allows by accident. No durable record, no allow: when Record cannot
// write the decision log entry the outcome turns into a 503 deny (audit.unavailable).
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/consentry/consentry/sidecar/audit"
	"github.com/consentry/consentry/sidecar/decision"
	"github.com/consentry/consentry/sidecar/engine"
	"github.com/consentry/consentry/sidecar/enrich"
	"github.com/consentry/consentry/sidecar/identity"
	"github.com/consentry/consentry/sidecar/input"
	"github.com/consentry/consentry/sidecar/normalize"
	"github.com/consentry/consentry/sidecar/routes"
)

// Engine evaluates the decision (sidecar/engine.Engine).
type Engine interface {
	Decide(ctx context.Context, in *input.Input) (*engine.Result, error)
}

// Authenticator verifies credentials (sidecar/identity.Authenticator).
type Authenticator interface {
	Authenticate(ctx context.Context, creds identity.Credentials) (input.Subject, error)
}

// Routes matches a normalized request to a route (*routes.Map, or routes.Holder when the map
// comes with the bundle). With routes.from_bundle the active policy carries its route map
// (engine.Prepared.Routes), which the pipeline routes with instead (see policySource).
type Routes interface {
	Match(method, path string) (*routes.Match, bool)
	// Redact hides the segments of a path that no route has as a literal (the log keeps
	// paths that bind no customer only in this form).
	Redact(path string) string
}

var (
	_ Engine        = (*engine.Engine)(nil)
	_ Authenticator = (*identity.Authenticator)(nil)
	_ Routes        = (*routes.Map)(nil)
	_ Routes        = (*routes.Holder)(nil)
)

// Deps are the pipeline's collaborators. All but Logger and Metrics are required.
type Deps struct {
	Engine   Engine
	Routes   Routes
	Identity Authenticator
	Enrich   enrich.Provider
	// Log receives every decision. It must be durable before Append returns (audit.Sink).
	Log    audit.Sink
	Logger *slog.Logger
	// Metrics registers the pipeline's Prometheus metrics (nil: not registered).
	Metrics prometheus.Registerer
	// Now replaces time.Now (tests).
	Now func() time.Time
}

// Pipeline is safe for concurrent use.
type Pipeline struct {
	cfg     Config
	deps    Deps
	norm    *normalize.Normalizer
	log     *slog.Logger
	now     func() time.Time
	metrics *metrics
	cache   *decisionCache
	// policies is deps.Engine when it is a policySource (nil otherwise: each evaluation takes
	// the engine's active policy).
	policies policySource
	// labelsByDoor holds each front door's log labels (front door -> map[string]string).
	labelsByDoor sync.Map
}

// revisioner is implemented by engines that can name their active policy revision; the
// decision cache keys on it.
type revisioner interface {
	Revision() (string, map[string]string)
}

// New validates cfg and deps.
func New(cfg Config, deps Deps) (*Pipeline, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	switch {
	case deps.Engine == nil:
		return nil, errors.New("pipeline: an engine is required")
	case deps.Routes == nil:
		return nil, errors.New("pipeline: a route map is required")
	case deps.Identity == nil:
		return nil, errors.New("pipeline: an authenticator is required")
	case deps.Enrich == nil:
		return nil, errors.New("pipeline: an enrichment provider is required")
	case deps.Log == nil:
		return nil, errors.New("pipeline: a decision log is required (no durable record, no allow)")
	}
	p := &Pipeline{cfg: cfg, deps: deps, norm: normalize.New(cfg.Normalize), log: deps.Logger, now: deps.Now}
	if p.log == nil {
		p.log = slog.Default()
	}
	if p.now == nil {
		p.now = time.Now
	}
	m, err := newMetrics(deps.Metrics)
	if err != nil {
		return nil, err
	}
	p.metrics = m
	if _, ok := deps.Engine.(revisioner); ok {
		p.cache = newDecisionCache(cfg.DecisionCache)
	}
	p.policies, _ = deps.Engine.(policySource)
	return p, nil
}

// Config returns the effective configuration.
func (p *Pipeline) Config() Config { return p.cfg }

// Request is a front-door-neutral view of one HTTP request.
type Request struct {
	// FrontDoor names the door: ext_authz, ext_proc, proxy.
	FrontDoor string
	// ID is the request id (x-request-id); the pipeline does not invent one.
	ID string
	// Method and Target (path with optional query) as received, before normalization.
	Method string
	Target string
	Host   string
	// Headers as received; names in any case; every value of a repeated header.
	Headers map[string][]string
	// Body is the request body, when the door has it.
	Body []byte
	// BodyComplete says Body is the whole body (possibly empty). When false, write routes are
	// checked against every field the route accepts instead of the fields the body carries.
	BodyComplete bool
	// Source is the network peer; Principal only when a TLS layer verified it.
	Source input.Source
	// CanFulfil lists obligation types the door enforces itself (filter_records,
	// minimize_fields) beyond those the pipeline fulfils (record_justification).
	CanFulfil []string
}

// Outcome is the answer to one Request.
type Outcome struct {
	DecisionID string
	// Decision is never nil after Check.
	Decision *decision.Decision
	// Input is the policy input that was (or would have been) evaluated. Never nil after Check;
	// for requests rejected before routing it holds what was known.
	Input *input.Input
	// Match is the matched route (nil when none matched).
	Match *routes.Match
	// Status is the HTTP status to answer with on deny (the decision's); 200 on allow.
	Status int
	// Body is the JSON deny body {decision_id, reasons:[{code,message}]} (nil on allow).
	Body []byte
	// ResponseHeaders go to the caller (deny responses, and allowed responses where the door can).
	ResponseHeaders map[string]string
	// UpstreamHeaders are set (overwriting) on the request to the CRM on allow.
	UpstreamHeaders map[string]string
	// RemoveHeaders are caller-supplied reserved headers to strip before the CRM sees them.
	RemoveHeaders []string
	// Revision and Bundles identify the policy that decided ("" when none evaluated).
	Revision string
	Bundles  map[string]string
	// policy is the policy taken for the request (see policySource): DecidePage decides the
	// response phase with it too. Nil when the engine is no policySource or none was active.
	policy *engine.Prepared
	// Err is the failure behind a fail-closed deny, for the log (never sent to the caller).
	Err error
	// Metrics are timings in nanoseconds.
	Metrics map[string]int64

	frontDoor string
	start     time.Time
	recorded  bool
	// intended: the write-ahead entry is in the log (RecordIntent).
	intended bool
}

// Intended reports whether the request's write-ahead entry is in the decision log
// (Pipeline.RecordIntent): it may have reached the CRM.
func (o *Outcome) Intended() bool { return o.intended }

// Allowed reports whether the request may proceed.
func (o *Outcome) Allowed() bool { return o.Decision != nil && o.Decision.Allow }

// Error is a coded failure inside the pipeline; it becomes a deny with Code and Status.
type Error struct {
	Code    string
	Status  int
	Message string
	Err     error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Code + ": " + e.Message + ": " + e.Err.Error()
	}
	return e.Code + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// Reason codes the pipeline adds itself.
const (
	ReasonRouteUnknown        = "route.unknown"
	ReasonRoutePublic         = "route.public"
	ReasonHeaderAmbiguous     = "request.header_ambiguous"
	ReasonCaseMismatch        = "request.case_mismatch"
	ReasonBodyInvalid         = "request.body_invalid"
	ReasonMediaType           = "request.media_type"
	ReasonObligation          = "obligation.unsupported"
	ReasonAuditUnavailable    = "audit.unavailable"
	ReasonInternal            = "pipeline.internal"
	ReasonTimeout             = "pipeline.timeout"
	ObligationJustification   = "record_justification"
	ObligationFilterRecords   = "filter_records"
	ObligationMinimizeFields  = "minimize_fields"
	auditPath                 = "consentry/decision"
	timerHandler              = "timer_server_handler_ns"
	timerEval                 = "timer_rego_query_eval_ns"
	timerEnrich               = "timer_enrich_ns"
	timerIdentity             = "timer_identity_ns"
	metricCacheHit            = "decision_cache_hit"
	maxLoggedTargetBytes      = 2048
	internalErrorPublicDetail = "internal error; see the decision log"
)

// Check runs the pipeline. It never returns nil and never panics: any failure is a deny.
func (p *Pipeline) Check(ctx context.Context, req *Request) (out *Outcome) {
	start := p.now()
	out = &Outcome{DecisionID: NewID(start), start: start, Metrics: map[string]int64{}}
	if req != nil {
		out.frontDoor = req.FrontDoor
	}
	defer func() {
		if r := recover(); r != nil {
			p.log.Error("pipeline panic", "decision_id", out.DecisionID, "panic", r, "stack", string(debug.Stack()))
			out.fail(&Error{Code: ReasonInternal, Status: http.StatusServiceUnavailable, Message: internalErrorPublicDetail, Err: fmt.Errorf("panic: %v", r)})
		}
		if out.Input == nil {
			out.Input = &input.Input{Time: input.NewTime(start), Enrichment: input.Enrichment{Consents: []input.Consent{}}}
		}
		p.respond(out)
		out.Metrics[timerHandler] = p.now().Sub(start).Nanoseconds()
		p.metrics.observe(out)
	}()
	if req == nil {
		out.fail(&Error{Code: normalize.ReasonPathInvalid, Status: http.StatusBadRequest, Message: "no request"})
		return out
	}
	if p.cfg.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.cfg.Timeout)
		defer cancel()
	}
	if err := p.check(ctx, req, out); err != nil {
		var pe *Error
		if !errors.As(err, &pe) {
			pe = &Error{Code: ReasonInternal, Status: http.StatusServiceUnavailable, Message: internalErrorPublicDetail, Err: err}
		}
		out.fail(pe)
	}
	return out
}

// Route returns the route a request's method and target match (nil when they do not
// normalize or no route matches), deciding nothing: a front door that must know whether a
// request is a write before it has its body asks here instead of running Check twice.
func (p *Pipeline) Route(method, target string) *routes.Match {
	m, err := p.norm.Method(method)
	if err != nil {
		return nil
	}
	t, err := p.norm.Target(target)
	if err != nil {
		return nil
	}
	_, rt := p.snapshot()
	match, ok := rt.Match(m, t.Path)
	if !ok {
		return nil
	}
	return match
}

// fail replaces the decision with a coded deny, keeping the decision id.
func (o *Outcome) fail(e *Error) {
	o.Decision = decision.Deny(e.Status, e.Code, e.Message)
	o.Decision.ID = o.DecisionID
	o.Err = e
}

// check runs the steps; a non-nil error is the deny.
func (p *Pipeline) check(ctx context.Context, req *Request, out *Outcome) error {
	// Consents is an empty list, never null, even in a decision denied before enrichment:
	// the logged input follows input.json, where it is an array.
	in := &input.Input{Time: input.NewTime(out.start), Phase: input.PhaseRequest, Enrichment: input.Enrichment{Consents: []input.Consent{}}}
	out.Input = in
	in.Request = input.Request{ID: req.ID, FrontDoor: req.FrontDoor, Host: req.Host, Source: req.Source,
		Method: strings.ToValidUTF8(req.Method, "?"), Path: loggable(req.Target)}
	// The policy and route map this request is routed and decided with, taken once.
	pol, rt := p.snapshot()
	out.policy = pol

	// 1. Normalize. A request refused here binds no customer, so the log could not
	// pseudonymize an id in its path or query: only the route map's literal segments of the
	// path are kept (unbound).
	unbound := func(err error) error {
		in.Request.Path, in.Request.Query = rt.Redact(in.Request.Path), nil
		return normErr(err)
	}
	method, err := p.norm.Method(req.Method)
	if err != nil {
		return unbound(err)
	}
	in.Request.Method = method
	target, err := p.norm.Target(req.Target)
	if err != nil {
		return unbound(err)
	}
	in.Request.Path, in.Request.Query = target.Path, target.Query
	headers, err := p.norm.Headers(req.Headers)
	if err != nil {
		return unbound(err)
	}
	authz := p.splitHeaders(headers, out)
	in.Request.Headers = headers

	// 2. Route (matching needs only method and path; public routes need nothing else).
	match, matched := rt.Match(method, target.Path)
	if matched {
		out.Match = match
		in.Request.Route = match.Route.Name()
		in.Request.Params = match.Params
		if match.Route.Public {
			out.Decision = &decision.Decision{Allow: true, Status: http.StatusOK, Fields: map[string]decision.Field{},
				Reasons: []decision.Reason{{Code: ReasonRoutePublic, Message: "the route map marks this route public"}}}
			return nil
		}
		// The action and customer are known from here on, so a request denied before the
		// policy (no credential, an ambiguous purpose) is logged under the customer's
		// pseudonym (its path and parameters too) and appears in the customer's access report.
		in.Action = match.Route.Action
		in.Resource = input.Resource{Type: match.Route.Resource, CustomerID: match.CustomerID()}
	}

	// 3. Authenticate (before revealing whether the route exists).
	t := p.now()
	subject, err := p.deps.Identity.Authenticate(ctx, identity.Credentials{Authorization: authz, Principal: req.Source.Principal})
	out.Metrics[timerIdentity] = p.now().Sub(t).Nanoseconds()
	if err != nil {
		var ie *identity.Error
		if errors.As(err, &ie) {
			return &Error{Code: ie.Code, Status: ie.Status, Message: ie.Message}
		}
		return &Error{Code: identity.ReasonKeySetUnavailable, Status: http.StatusServiceUnavailable, Message: "authentication failed", Err: err}
	}
	in.Subject = subject
	if !matched {
		// Nor does a path no route matches: a typo'd route with a customer id in it is logged
		// as /api/customer/*, and its query (which may name the customer too) not at all.
		in.Request.Path, in.Request.Query = rt.Redact(target.Path), nil
		return &Error{Code: ReasonRouteUnknown, Status: p.cfg.UnknownRouteStatus, Message: fmt.Sprintf("no route for %s %s in the route map", method, in.Request.Path)}
	}

	// 4. Purpose, case, break-glass, action, resource.
	if err := p.declarations(headers, match, in); err != nil {
		return err
	}
	fields, err := requestFields(match.Route, in.Action, req, headers)
	if err != nil {
		return err
	}
	in.Resource.Fields = fields

	// 5. Enrich.
	t = p.now()
	p.enrich(ctx, match, in)
	out.Metrics[timerEnrich] = p.now().Sub(t).Nanoseconds()

	// 6. Evaluate (or reuse the decision for an identical input).
	var key [32]byte
	var keyRev string
	var lead *flight
	cacheable := p.cache != nil && len(in.Enrichment.Errors) == 0
	if cacheable {
		// Keyed by the compile, not only the revision: a bundle republished under the same
		// revision must not be answered with the previous policy's decisions.
		cacheID := ""
		if p.policies != nil {
			keyRev, _ = pol.Revision()
			cacheID = pol.CacheID()
		} else {
			keyRev, _ = p.deps.Engine.(revisioner).Revision()
			cacheID = keyRev
		}
		key, cacheable = p.cache.key(cacheID, in)
	}
	if cacheable {
		hit, ok := p.cache.get(key, out.start)
		if !ok {
			f, leader := p.cache.join(key)
			if leader {
				lead = f
				// Land even if evaluation panics, or followers would wait forever.
				defer func() {
					if lead != nil {
						p.cache.land(key, lead, cached{}, false)
					}
				}()
			} else {
				select {
				case <-f.done:
					hit, ok = f.e, f.ok
				case <-ctx.Done():
				}
			}
		}
		if ok {
			out.Decision, out.Revision, out.Bundles = cloneDecision(hit.d), hit.revision, hit.bundles
			out.Decision.ID = out.DecisionID
			out.Metrics[metricCacheHit] = 1
			return p.obligations(req, match.Route, in, out.Decision)
		}
	}
	res, err := p.decide(ctx, pol, in)
	if lead != nil {
		if err == nil && res != nil && res.Decision != nil && res.Revision == keyRev && keyRev != "" {
			e := cached{d: cloneDecision(res.Decision), revision: res.Revision, bundles: res.Bundles}
			p.cache.put(key, e, in, out.start)
			p.cache.land(key, lead, e, true)
		} else {
			p.cache.land(key, lead, cached{}, false)
		}
		lead = nil
	}
	if res != nil {
		out.Revision, out.Bundles = res.Revision, res.Bundles
		out.Metrics[timerEval] = res.EvalNS
	}
	if res == nil || res.Decision == nil {
		return &Error{Code: decision.ReasonEngineError, Status: http.StatusServiceUnavailable, Message: "the engine returned no decision", Err: err}
	}
	out.Decision = res.Decision
	out.Decision.ID = out.DecisionID
	if err != nil {
		out.Err = err // the engine's deny already carries its code
		return nil
	}

	// 7. Obligations the door cannot fulfil turn an allow into a deny.
	return p.obligations(req, match.Route, in, out.Decision)
}

func normErr(err error) error {
	var ne *normalize.Error
	if errors.As(err, &ne) {
		return &Error{Code: ne.Code, Status: normalize.Status, Message: ne.Message}
	}
	return &Error{Code: normalize.ReasonPathInvalid, Status: http.StatusBadRequest, Message: err.Error()}
}

// splitHeaders removes credentials and reserved headers from the input headers. It returns
// the Authorization values for authentication.
func (p *Pipeline) splitHeaders(h map[string][]string, out *Outcome) []string {
	authz := h["authorization"]
	for name := range h {
		switch {
		case name == "authorization" || name == "cookie" || name == "proxy-authorization":
			delete(h, name)
		case p.cfg.Headers.Reserved(name):
			delete(h, name)
			out.RemoveHeaders = append(out.RemoveHeaders, name)
		case normalize.IsClientAddressHeader(name):
			// Kept in the input (the policy and the log see what the caller sent), removed
			// before the CRM: a caller cannot pose to it as another address.
			out.RemoveHeaders = append(out.RemoveHeaders, name)
		}
	}
	slices.Sort(out.RemoveHeaders)
	return authz
}

// declarations reads purpose, case and break-glass. A repeated or comma-joined purpose or case
// header is ambiguous and denied: picking one value is how last-value-wins bypasses happen.
func (p *Pipeline) declarations(h map[string][]string, match *routes.Match, in *input.Input) error {
	var err error
	if in.Purpose, err = single(h, p.cfg.Headers.Purpose, true); err != nil {
		return err
	}
	if in.CaseID, err = single(h, p.cfg.Headers.CaseID, true); err != nil {
		return err
	}
	if id := match.CaseID(); id != "" {
		if in.CaseID != "" && in.CaseID != id {
			return &Error{Code: ReasonCaseMismatch, Status: http.StatusBadRequest, Message: fmt.Sprintf("%s names case %q but the path names %q", p.cfg.Headers.CaseID, in.CaseID, id)}
		}
		in.CaseID = id
	}
	vals, ok := h[p.cfg.Headers.BreakGlass]
	if ok {
		if len(vals) != 1 {
			return &Error{Code: ReasonHeaderAmbiguous, Status: http.StatusBadRequest, Message: fmt.Sprintf("%d %s headers", len(vals), p.cfg.Headers.BreakGlass)}
		}
		in.BreakGlass = &input.BreakGlass{Justification: strings.TrimSpace(vals[0])}
	}
	return nil
}

func single(h map[string][]string, name string, noComma bool) (string, error) {
	vals := h[name]
	switch {
	case len(vals) == 0:
		return "", nil
	case len(vals) > 1:
		return "", &Error{Code: ReasonHeaderAmbiguous, Status: http.StatusBadRequest, Message: fmt.Sprintf("%d %s headers", len(vals), name)}
	}
	v := strings.TrimSpace(vals[0])
	if noComma && strings.Contains(v, ",") {
		return "", &Error{Code: ReasonHeaderAmbiguous, Status: http.StatusBadRequest, Message: fmt.Sprintf("%s holds several values", name)}
	}
	return v, nil
}

// enrich looks up state. A failed lookup is recorded in Enrichment.Errors and the policy
// denies (state.unavailable); it is never silently treated as "no consent needed".
func (p *Pipeline) enrich(ctx context.Context, match *routes.Match, in *input.Input) {
	q := enrich.Query{CustomerID: in.Resource.CustomerID, CaseID: in.CaseID, ProcessorID: in.Subject.ProcessorID, Purpose: in.Purpose}
	in.Enrichment = input.Enrichment{Consents: []input.Consent{}}
	if q.CustomerID == "" && q.CaseID == "" && q.ProcessorID == "" {
		return
	}
	e, err := p.deps.Enrich.Enrich(ctx, q)
	if err == nil && q.CustomerID == "" && match.Route.CaseParam != "" && e.Case != nil && e.Case.CustomerID != "" {
		// A case route touches the case's customer: decide with that customer's state.
		in.Resource.CustomerID = e.Case.CustomerID
		q.CustomerID = e.Case.CustomerID
		e, err = p.deps.Enrich.Enrich(ctx, q)
	}
	if err != nil {
		p.log.Warn("enrichment failed", "customer_id", q.CustomerID, "error", err)
		in.Enrichment.Errors = []string{"enrichment"}
		return
	}
	if e.Consents == nil {
		e.Consents = []input.Consent{}
	}
	in.Enrichment = e
}

// loggable makes a raw target safe to keep in the log until normalization replaces it: valid
// UTF-8, bounded, and without its query string or fragment, which can carry credentials
// (access_token) and personal data that the log's query masking never sees in a raw target.
func loggable(s string) string {
	if i := strings.IndexAny(s, "?#"); i >= 0 {
		s = s[:i]
	}
	if len(s) > maxLoggedTargetBytes {
		s = s[:maxLoggedTargetBytes]
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}
