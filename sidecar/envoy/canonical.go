package envoy

import (
	"errors"

	"github.com/consentry/consentry/sidecar/decision"
	"github.com/consentry/consentry/sidecar/normalize"
	"github.com/consentry/consentry/sidecar/pipeline"
	"github.com/consentry/consentry/sidecar/transform"
)

// refuseNonCanonical turns an allowed outcome into a 400 deny (request.path_non_canonical)
// when target's path is not the canonical spelling of the path the pipeline decided on.
// Envoy forwards the caller's :path as it is, not the decided path: "/api/customers/c-1/" or
// "/api/customers/c-1/notes/.." would be decided as "/api/customers/c-1" and reach a CRM that
// routes them elsewhere (a Go ServeMux subtree, a Django URLconf). The request is decided
// first, so the log entry names the subject and the customer like any other deny; an outcome
// that is already a deny stays as it is (nothing is forwarded). It reports whether it refused.
func refuseNonCanonical(out *pipeline.Outcome, target string) bool {
	if out == nil || !out.Allowed() {
		return false
	}
	err := normalize.CheckCanonical(target)
	if err == nil {
		return false
	}
	var ne *normalize.Error
	if !errors.As(err, &ne) {
		ne = &normalize.Error{Code: normalize.ReasonPathNonCanonical, Message: err.Error()}
	}
	d := decision.Deny(normalize.Status, ne.Code, ne.Message)
	d.ID = out.DecisionID
	out.Decision = d
	out.Status = normalize.Status
	out.Body = transform.DenyBody(out.DecisionID, ne.Code, ne.Message)
	out.ResponseHeaders = map[string]string{pipeline.HeaderDecisionID: out.DecisionID, "content-type": "application/json"}
	out.UpstreamHeaders = nil
	out.Err = ne
	return true
}
