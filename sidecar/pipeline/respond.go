package pipeline

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/consentry/consentry/sidecar/audit"
	"github.com/consentry/consentry/sidecar/decision"
	"github.com/consentry/consentry/sidecar/input"
)

// denyBody is what a denied caller receives.
type denyBody struct {
	DecisionID string      `json:"decision_id"`
	Reasons    []publicWhy `json:"reasons"`
}

type publicWhy struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// respond fills status, body and headers from the decision.
func (p *Pipeline) respond(out *Outcome) {
	if out.Decision == nil {
		out.fail(&Error{Code: ReasonInternal, Status: http.StatusServiceUnavailable, Message: internalErrorPublicDetail})
	}
	d := out.Decision
	d.ID = out.DecisionID
	out.ResponseHeaders = map[string]string{HeaderDecisionID: out.DecisionID}
	if d.Allow {
		out.Status = http.StatusOK
		out.Body = nil
		up := map[string]string{}
		for k, v := range d.Headers {
			// Policies may only set consentry's own headers upstream: a policy bug must not be
			// able to inject credentials or routing headers.
			lk := strings.ToLower(k)
			if strings.HasPrefix(lk, p.cfg.Headers.ReservedPrefix) && cleanHeaderValue(v) {
				up[lk] = v
			}
		}
		if _, ok := up[HeaderFields]; !ok {
			up[HeaderFields] = strings.Join(d.FieldsWith(decision.OutcomeAllow), ",")
		}
		if _, ok := up[HeaderPurpose]; !ok && out.Input != nil && out.Input.Purpose != "" {
			up[HeaderPurpose] = out.Input.Purpose
		}
		up[HeaderDecisionID] = out.DecisionID
		out.UpstreamHeaders = up
		return
	}
	out.UpstreamHeaders = nil
	out.Status = d.Status
	if out.Status < 400 || out.Status > 599 {
		out.Status = http.StatusForbidden
	}
	body := denyBody{DecisionID: out.DecisionID, Reasons: make([]publicWhy, 0, len(d.Reasons))}
	for _, r := range d.Reasons {
		body.Reasons = append(body.Reasons, publicWhy{Code: r.Code, Message: r.Message})
	}
	raw, err := json.Marshal(body)
	if err != nil {
		raw = []byte(`{"decision_id":"` + out.DecisionID + `","reasons":[{"code":"pipeline.internal","message":"internal error"}]}`)
	}
	out.Body = raw
	out.ResponseHeaders["content-type"] = "application/json"
}

func cleanHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 || v[i] == 0x7f {
			return false
		}
	}
	return true
}

// Record hands the decision to the decision log, with what the door enforced. It runs on a
// context detached from the request's cancellation (a cancelled request is still recorded)
// and bounded by audit_timeout. If the log cannot store the entry, the outcome becomes a 503
// deny (audit.unavailable) and the error is returned: no durable record, no allow. Record is
// idempotent per outcome.
func (p *Pipeline) Record(ctx context.Context, out *Outcome, enf audit.Enforcement) error {
	if out == nil || out.recorded {
		return nil
	}
	out.recorded = true
	if enf.Status == 0 && !out.Allowed() {
		enf.Status = out.Status
	}
	return p.append(ctx, out, p.entry(out, enf))
}

// RecordIntent writes the write-ahead entry of an allowed request that may change the CRM's
// state (ChangesState), before the front door forwards it: enf is what the door did to the
// request (a write's key use). Record still records the outcome once the CRM has answered;
// the intent is what remains if the sidecar dies in between, when the CRM may have executed
// the change and no decision entry says so. In strict mode RecordIntent returns once the
// entry is durable. If the log cannot store it, the outcome becomes a 503 deny
// (audit.unavailable) and the error is returned: the door must not forward the request.
// RecordIntent does nothing for a request that changes nothing, for an outcome recorded or
// intended already, and for a denied one.
func (p *Pipeline) RecordIntent(ctx context.Context, out *Outcome, enf audit.Enforcement) error {
	if out == nil || out.recorded || out.intended || !out.Allowed() || !ChangesState(out) {
		return nil
	}
	out.intended = true
	e := p.entry(out, enf)
	e.Intent = true
	return p.append(ctx, out, e)
}

// ChangesState reports whether out's request may change the CRM's state: its route's action
// writes (create, update, delete, erase) whatever the method, or its method is not one HTTP
// defines as safe (GET, HEAD, OPTIONS, TRACE) - a POST on a read route counts: an intent too
// many costs one record, one too few loses a change - unless its route declares a list or an
// export (a POST search). Those read by declaration, and their customers are known only from
// the response: an intent written before it could not pseudonymize a customer id the request
// names in free text (a case id, a query), which the decision's record does.
func ChangesState(out *Outcome) bool {
	if out == nil || out.Input == nil {
		return false
	}
	switch out.Input.Action {
	case input.ActionCreate, input.ActionUpdate, input.ActionDelete, input.ActionErase:
		return true
	case input.ActionList, input.ActionExport:
		return false
	}
	switch out.Input.Request.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return false
	}
	return true
}

// entry is the decision log entry of out with enf.
func (p *Pipeline) entry(out *Outcome, enf audit.Enforcement) *audit.Entry {
	e := &audit.Entry{
		DecisionID:  out.DecisionID,
		Timestamp:   out.start.UTC(),
		Path:        auditPath,
		Input:       out.Input,
		Decision:    out.Decision,
		Revision:    out.Revision,
		Bundles:     out.Bundles,
		Enforcement: enf,
		Labels:      p.labels(out),
		Metrics:     out.Metrics,
	}
	if out.Input != nil {
		e.TraceID = traceID(out.Input.Request.Headers)
		e.RequestedBy = out.Input.Request.Source.Address
	}
	if out.Err != nil {
		e.Error = out.Err.Error()
	}
	return e
}

// append hands e to the decision log on a context detached from the request's cancellation
// and bounded by audit_timeout; a failure turns out into a 503 deny (audit.unavailable).
func (p *Pipeline) append(ctx context.Context, out *Outcome, e *audit.Entry) error {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.AuditTimeout)
	defer cancel()
	if err := p.deps.Log.Append(actx, e); err != nil {
		p.metrics.auditFailures.Inc()
		p.log.Error("decision log unavailable: denying", "decision_id", out.DecisionID, "error", err)
		out.fail(&Error{Code: ReasonAuditUnavailable, Status: http.StatusServiceUnavailable, Message: "the decision could not be recorded", Err: err})
		p.respond(out)
		return err
	}
	return nil
}

// CheckAndRecord runs Check and records the outcome immediately (doors that enforce nothing after the
// decision, like ext_authz). The returned outcome reflects a decision log failure.
func (p *Pipeline) CheckAndRecord(ctx context.Context, req *Request) *Outcome {
	out := p.Check(ctx, req)
	_ = p.Record(ctx, out, audit.Enforcement{})
	return out
}

// labels returns the log labels of out's front door: pipeline.labels plus front_door, built
// once per front door and shared by every entry from it (sinks only read them).
func (p *Pipeline) labels(out *Outcome) map[string]string {
	if l, ok := p.labelsByDoor.Load(out.frontDoor); ok {
		return l.(map[string]string)
	}
	l := make(map[string]string, len(p.cfg.Labels)+1)
	for k, v := range p.cfg.Labels {
		l[k] = v
	}
	if out.frontDoor != "" {
		l["front_door"] = out.frontDoor
	}
	p.labelsByDoor.Store(out.frontDoor, l)
	return l
}

// traceID extracts the trace id of a W3C traceparent header.
func traceID(h map[string][]string) string {
	v := h["traceparent"]
	if len(v) != 1 {
		return ""
	}
	parts := strings.Split(v[0], "-")
	if len(parts) != 4 || len(parts[1]) != 32 {
		return ""
	}
	return parts[1]
}
