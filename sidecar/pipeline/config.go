package pipeline

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/consentry/consentry/sidecar/normalize"
)

// Config is the `pipeline:` section, shared by every front door.
type Config struct {
	// Headers names the request headers the pipeline reads and writes.
	Headers HeaderConfig `yaml:"headers" json:"headers"`
	// Normalize tunes path and header normalization.
	Normalize normalize.Config `yaml:"normalize" json:"normalize"`
	// Timeout bounds one whole check (authentication, enrichment, evaluation) when the caller's
	// deadline is later or absent. Default 150ms: below Envoy's 200ms ext_authz timeout, so
	// consentry answers with its own coded deny rather than Envoy timing out. The evaluation
	// itself is bounded by engine.timeout.
	Timeout time.Duration `yaml:"timeout" json:"timeout"`
	// AuditTimeout bounds writing the decision log entry. It runs on a context detached from the
	// request's cancellation, so a cancelled request is still recorded. Default 2s.
	AuditTimeout time.Duration `yaml:"audit_timeout" json:"audit_timeout"`
	// UnknownRouteStatus is the status of a route.unknown deny: 403 (default) or 404.
	UnknownRouteStatus int `yaml:"unknown_route_status" json:"unknown_route_status"`
	// Labels are added to every decision log entry (instance id, environment, ...).
	Labels map[string]string `yaml:"labels" json:"labels"`
	// DecisionCache reuses decisions for identical inputs (see CacheConfig for what "identical"
	// means and when an entry ends). On by default.
	DecisionCache CacheConfig `yaml:"decision_cache" json:"decision_cache"`
	// RecordsPerEvaluation: the response phase of a list page with more records than this
	// (the proxy and ext_proc decide every record of a page) is split into one slice per this
	// many records, at most GOMAXPROCS slices of about equal size, evaluated in parallel: a
	// page of 100 then costs about half the latency on two cores. It relies on each record's
	// outcome and the request-level decision depending only on that record and the request,
	// as in the default library. Slices that disagree on
	// the request-level decision are decided again in one evaluation, but slices of a
	// page-dependent policy can also happen to agree: such a policy (one that counts or
	// compares the page's records) must set -1, one evaluation per page. Default 50.
	RecordsPerEvaluation int `yaml:"records_per_evaluation" json:"records_per_evaluation"`
}

// DefaultRecordsPerEvaluation is used when Config.RecordsPerEvaluation is zero.
const DefaultRecordsPerEvaluation = 50

// HeaderConfig names headers. Names are case-insensitive.
type HeaderConfig struct {
	// Purpose carries the declared purpose (fideslang data-use key). Default x-purpose.
	Purpose string `yaml:"purpose" json:"purpose"`
	// CaseID carries the case the caller works on. Default x-case-id.
	CaseID string `yaml:"case_id" json:"case_id"`
	// BreakGlass carries an emergency-access justification. Default x-break-glass.
	BreakGlass string `yaml:"break_glass" json:"break_glass"`
	// ReservedPrefix: request headers with this prefix are consentry's own; caller-supplied ones
	// are removed before the request reaches the CRM (no spoofing). Default x-consentry-.
	ReservedPrefix string `yaml:"reserved_prefix" json:"reserved_prefix"`
}

// Reserved reports whether a caller-supplied header name is in consentry's namespace. '_'
// counts as '-': CGI-style servers (PHP, WSGI, Rack) map X_Consentry_Fields and
// x-consentry-fields to the same variable, so either spelling could spoof consentry's header.
func (h HeaderConfig) Reserved(name string) bool {
	return normalize.HasHeaderPrefix(name, h.ReservedPrefix) // the prefix is lower case (WithDefaults)
}

// Header names consentry sets.
const (
	HeaderDecisionID = "x-consentry-decision-id"
	HeaderFields     = "x-consentry-fields"
	HeaderPurpose    = "x-consentry-purpose"
)

// WithDefaults fills defaults.
func (c Config) WithDefaults() Config {
	h := &c.Headers
	if h.Purpose == "" {
		h.Purpose = "x-purpose"
	}
	if h.CaseID == "" {
		h.CaseID = "x-case-id"
	}
	if h.BreakGlass == "" {
		h.BreakGlass = "x-break-glass"
	}
	if h.ReservedPrefix == "" {
		h.ReservedPrefix = "x-consentry-"
	}
	h.Purpose, h.CaseID, h.BreakGlass, h.ReservedPrefix = strings.ToLower(h.Purpose), strings.ToLower(h.CaseID), strings.ToLower(h.BreakGlass), strings.ToLower(h.ReservedPrefix)
	c.Normalize = c.Normalize.WithDefaults()
	if c.Timeout == 0 {
		c.Timeout = 150 * time.Millisecond
	}
	if c.AuditTimeout == 0 {
		c.AuditTimeout = 2 * time.Second
	}
	c.DecisionCache = c.DecisionCache.withDefaults()
	if c.UnknownRouteStatus == 0 {
		c.UnknownRouteStatus = http.StatusForbidden
	}
	if c.RecordsPerEvaluation == 0 {
		c.RecordsPerEvaluation = DefaultRecordsPerEvaluation
	}
	return c
}

// Validate reports the first invalid key.
func (c Config) Validate() error {
	if c.UnknownRouteStatus != http.StatusForbidden && c.UnknownRouteStatus != http.StatusNotFound {
		return fmt.Errorf("pipeline.unknown_route_status: %d is not 403 or 404", c.UnknownRouteStatus)
	}
	if c.DecisionCache.TTL < 0 {
		return fmt.Errorf("pipeline.decision_cache.ttl: must not be negative")
	}
	if c.RecordsPerEvaluation < -1 {
		return fmt.Errorf("pipeline.records_per_evaluation: must be -1 (one evaluation per page) or positive, got %d", c.RecordsPerEvaluation)
	}
	if c.Timeout < 0 || c.AuditTimeout < 0 {
		return fmt.Errorf("pipeline.timeout, pipeline.audit_timeout: must not be negative")
	}
	for k, v := range map[string]string{"purpose": c.Headers.Purpose, "case_id": c.Headers.CaseID, "break_glass": c.Headers.BreakGlass} {
		if normalize.HasHeaderPrefix(v, c.Headers.ReservedPrefix) { // '_' as '-', as Reserved strips them
			return fmt.Errorf("pipeline.headers.%s: %q uses the reserved prefix %q (it would be stripped)", k, v, c.Headers.ReservedPrefix)
		}
	}
	return c.Normalize.Validate()
}
