package pipeline

import (
	"fmt"
	"net/http"
	"slices"

	"github.com/consentry/consentry/sidecar/decision"
	"github.com/consentry/consentry/sidecar/input"
	"github.com/consentry/consentry/sidecar/routes"
)

// obligations denies when the decision needs something this door cannot do.
func (p *Pipeline) obligations(req *Request, route *routes.Route, in *input.Input, d *decision.Decision) error {
	if !d.Allow {
		return nil
	}
	can := func(t string) bool { return slices.Contains(req.CanFulfil, t) }
	// A request bound to no customer (a list, an export, a search mapped as a read) holds
	// records of customers the request-level decision never looked at: only filter_records
	// has each decided with its own customer's state. A policy (a custom decision rule) that
	// allows it without the obligation would have every record served under the request's
	// field outcomes, so the decision is refused as not one the library could have made.
	if in.Resource.CustomerID == "" && (route != nil && route.List || in.Action == input.ActionRead || in.Action == input.ActionList || in.Action == input.ActionExport) &&
		!slices.ContainsFunc(d.Obligations, func(o decision.Obligation) bool { return o.Type == ObligationFilterRecords }) {
		return &Error{Code: decision.ReasonEngineInvalid, Status: http.StatusServiceUnavailable,
			Message: fmt.Sprintf("the policy allowed a %s bound to no customer without the %s obligation", in.Action, ObligationFilterRecords)}
	}
	for _, o := range d.Obligations {
		switch o.Type {
		case ObligationJustification:
			// Fulfilled by Record: the justification is in the logged input.
			if in.BreakGlass == nil {
				return &Error{Code: ReasonObligation, Status: http.StatusForbidden, Message: "record_justification without a justification"}
			}
		default:
			if !can(o.Type) {
				return &Error{Code: ReasonObligation, Status: http.StatusForbidden, Message: fmt.Sprintf("the %s front door cannot fulfil obligation %q", req.FrontDoor, o.Type)}
			}
		}
	}
	// A read whose response would carry a plaintext field the decision masks or denies needs
	// response-side enforcement. Encrypted fields (with a key scope) are safe: without the key
	// the CRM only ever returns ciphertext.
	if in.Action == input.ActionRead || in.Action == input.ActionList || in.Action == input.ActionExport {
		var exposed []string
		for name, f := range d.Fields {
			if f.Outcome != decision.OutcomeAllow && f.KeyScope == "" {
				exposed = append(exposed, name)
			}
		}
		if len(exposed) > 0 && !can(ObligationMinimizeFields) {
			slices.Sort(exposed)
			return &Error{Code: ReasonObligation, Status: http.StatusForbidden,
				Message: fmt.Sprintf("fields %v must be removed or masked from the response, which the %s front door cannot do", exposed, req.FrontDoor)}
		}
	}
	// A route that drops the response members it does not list needs a response phase for
	// every request: a write's answer (the CRM's echo of the whole record) is a response too.
	if route != nil && route.Unlisted == routes.UnlistedDrop && !can(ObligationMinimizeFields) {
		return &Error{Code: ReasonObligation, Status: http.StatusForbidden,
			Message: fmt.Sprintf("the route drops response members it does not list, which the %s front door cannot do", req.FrontDoor)}
	}
	return nil
}
