// Package pipelinetest builds a complete, real pipeline for tests and benchmarks of front
// doors: the default policy library compiled by the real engine, the demo CRM route map, a
// static enrichment file, real signed tokens (identitytest) and a JSON-lines decision log in a
// temporary directory. Nothing is mocked.
package pipelinetest

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/consentry/consentry/sidecar/audit"
	"github.com/consentry/consentry/sidecar/audit/jsonl"
	"github.com/consentry/consentry/sidecar/engine"
	"github.com/consentry/consentry/sidecar/enrich/static"
	"github.com/consentry/consentry/sidecar/identity"
	"github.com/consentry/consentry/sidecar/identity/identitytest"
	"github.com/consentry/consentry/sidecar/pipeline"
	"github.com/consentry/consentry/sidecar/routes"
)

// State is the enrichment data every fixture serves.
//
//	c-1001  support case case-7 (open, assigned to emp-17), marketing consent granted
//	c-2002  erased
//	c-3003  marketing consent withdrawn
//	c-4004  retention expired
//	case-8  closed case for c-1001; case-9 open case for c-3003 assigned to emp-99
const State = `
customers:
  - {id: c-1001, retention_until: "2035-01-01T00:00:00Z", erased: false}
  - {id: c-2002, erased: true, erased_at: "2026-05-01T00:00:00Z"}
  - {id: c-3003, retention_until: "2035-01-01T00:00:00Z"}
  - {id: c-4004, retention_until: "2020-01-01T00:00:00Z"}
consents:
  - {customer_id: c-1001, purpose: marketing.communications.email, status: granted, notice_version: "2026-03", channel: web, granted_at: "2026-03-02T10:00:00Z", expires_at: "2035-03-02T10:00:00Z"}
  - {customer_id: c-3003, purpose: marketing.communications.email, status: withdrawn, notice_version: "2026-03", granted_at: "2026-03-02T10:00:00Z", withdrawn_at: "2026-06-01T08:00:00Z"}
cases:
  - {id: case-7, customer_id: c-1001, assignees: [emp-17], status: open, purpose: essential.service.operations.support}
  - {id: case-8, customer_id: c-1001, assignees: [emp-17], status: closed}
  - {id: case-9, customer_id: c-3003, assignees: [emp-99], status: open}
agreements:
  - {processor_id: acme-mail, purposes: [third_party_sharing], categories: [user.unique_id, user.name, user.contact.email], valid_from: "2026-01-01T00:00:00Z", valid_until: "2035-01-01T00:00:00Z"}
`

// Fixture is a ready pipeline.
type Fixture struct {
	Pipeline *pipeline.Pipeline
	Engine   *engine.Engine
	Issuer   *identitytest.Issuer
	Identity *identity.Authenticator
	Sink     *jsonl.Sink
	Routes   *routes.Map
	Enrich   *static.Provider
	Logger   *slog.Logger
	LogPath  string
	Dir      string
	// SpiffeID is a configured service identity (billing-batch, role billing_agent).
	SpiffeID string
}

// Options tune a fixture.
type Options struct {
	// Sink replaces the JSON-lines log (e.g. a failing sink).
	Sink audit.Sink
	// Config is the pipeline config (zero: defaults).
	Config pipeline.Config
	// Logger (default: discard).
	Logger *slog.Logger
	// Unlisted overrides every route's unlisted. Default "pass": the shipped map drops what
	// it does not list, and tests of other behaviour answer with echo servers whose members
	// no route lists. Tests of the shipped map as it is set routes.UnlistedDrop.
	Unlisted string
}

// RepoRoot finds the repository root from this source file.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", ".."))
}

// New builds a fixture in dir (a temporary directory the caller removes).
func New(dir string, opts Options) (*Fixture, error) {
	root := RepoRoot()
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(discard{}, nil))
	}
	ps, err := engine.LoadDir(filepath.Join(root, "policies"), engine.LoadOptions{})
	if err != nil {
		return nil, err
	}
	// Generous evaluation timeout: CI machines are shared and slow; the pipeline timeout and
	// the caller's deadline still bound the request.
	eng := engine.New(engine.Config{Timeout: 5 * time.Second}, logger)
	if err := eng.Load(context.Background(), ps); err != nil {
		return nil, err
	}
	rm, err := routes.Load(filepath.Join(root, "deploy", "routes", "democrm.yaml"))
	if err != nil {
		return nil, err
	}
	unlisted := opts.Unlisted
	if unlisted == "" {
		unlisted = routes.UnlistedPass
	}
	for _, r := range rm.Routes() {
		r.Unlisted = unlisted
	}
	enr, err := static.Parse([]byte(State))
	if err != nil {
		return nil, err
	}
	is, err := identitytest.New("https://idp.consentry.test", "consentry")
	if err != nil {
		return nil, err
	}
	jwks, err := is.WriteJWKS(dir)
	if err != nil {
		return nil, err
	}
	f := &Fixture{Engine: eng, Issuer: is, Dir: dir, Routes: rm, Enrich: enr, Logger: logger, SpiffeID: "spiffe://demo.test/ns/billing/sa/batch"}
	f.Identity, err = identity.New(identity.Config{
		Issuers:  []identity.IssuerConfig{{Issuer: is.Name, Audiences: []string{is.Audience}, JWKSFile: jwks}},
		Services: []identity.ServiceConfig{{SPIFFEID: f.SpiffeID, ID: "billing-batch", Roles: []string{"billing_agent"}}},
	})
	if err != nil {
		return nil, err
	}
	sink := opts.Sink
	if sink == nil {
		f.LogPath = filepath.Join(dir, "decisions.jsonl")
		if f.Sink, err = jsonl.Open(f.LogPath, false); err != nil {
			return nil, err
		}
		sink = f.Sink
	}
	cfg := opts.Config
	if cfg.Timeout == 0 {
		// CI machines are shared and tests run with -race: allow slow evaluations.
		cfg.Timeout = 5 * time.Second
	}
	f.Pipeline, err = pipeline.New(cfg, pipeline.Deps{Engine: eng, Routes: rm, Identity: f.Identity, Enrich: enr, Log: sink, Logger: logger})
	if err != nil {
		return nil, err
	}
	return f, nil
}

// WithConfig returns another pipeline sharing the fixture's engine, routes, identity,
// enrichment and decision log, with its own configuration.
func (f *Fixture) WithConfig(cfg pipeline.Config) (*pipeline.Pipeline, error) {
	return f.WithConfigAndLog(cfg, f.Sink)
}

// WithConfigAndLog is WithConfig writing decisions to log instead of the fixture's JSON-lines
// file (e.g. the production decision log, to measure it).
func (f *Fixture) WithConfigAndLog(cfg pipeline.Config, log audit.Sink) (*pipeline.Pipeline, error) {
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	return pipeline.New(cfg, pipeline.Deps{Engine: f.Engine, Routes: f.Routes, Identity: f.Identity, Enrich: f.Enrich, Log: log, Logger: f.Logger})
}

// Close closes the decision log.
func (f *Fixture) Close() error {
	if f.Sink != nil {
		return f.Sink.Close()
	}
	return nil
}

// Token signs an employee/customer/processor token. typ "" leaves the type claim out.
func (f *Fixture) Token(sub, typ string, roles []string, extra map[string]any) string {
	c := f.Issuer.Claims(sub)
	if typ != "" {
		c["subject_type"] = typ
	}
	if roles != nil {
		r := make([]any, len(roles))
		for i, s := range roles {
			r[i] = s
		}
		c["roles"] = r
	}
	for k, v := range extra {
		c[k] = v
	}
	tok, err := f.Issuer.Sign(jose.ES256, c)
	if err != nil {
		panic(fmt.Sprintf("sign: %v", err))
	}
	return tok
}

// Agent is the support agent emp-17's token.
func (f *Fixture) Agent() string {
	return f.Token("emp-17", "employee", []string{"support_agent"}, nil)
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
