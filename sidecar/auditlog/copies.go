package auditlog

import (
	"slices"
	"strings"

	"github.com/consentry/consentry/sidecar/audit"
	"github.com/consentry/consentry/sidecar/input"
)

// copies are the top-level members of a decision record that repeat values of the input, so
// that reviewers and the query tool need not dig into it. They must not hold what masking took
// out of the input: with mask rules they are read from the masked input (maskedCopies).
type copies struct {
	requestedBy, traceID                  string
	purpose, caseID, action, resourceType string
	subject                               Subject
}

// inputCopies returns the copies of an input no mask rule applies to.
func (b *builder) inputCopies(e *audit.Entry, in *input.Input) copies {
	c := copies{requestedBy: e.RequestedBy, traceID: e.TraceID, purpose: in.Purpose, caseID: in.CaseID, action: in.Action,
		resourceType: in.Resource.Type, subject: Subject{ID: in.Subject.ID, Type: in.Subject.Type, Roles: slices.Clone(in.Subject.Roles)}}
	// drop_headers may name the header the trace id was read from.
	if b.masker.dropHeaders["traceparent"] && containsID(in.Request.Headers["traceparent"], e.TraceID) {
		c.traceID = ""
	}
	return c
}

// maskedCopies returns the copies read from tree, the input after credential scrubbing and mask
// rules (nil when it was erased), before customer ids are replaced in it: a member whose source
// a rule removed is left out, one whose source a rule replaced takes the replacement (or is
// left out when that is not a string). requested_by and trace_id are the entry's, which the
// pipeline reads from the input (request.source.address, the traceparent header); when they
// hold that input value they follow what the rules did to it.
func maskedCopies(tree any, e *audit.Entry, in *input.Input) copies {
	get := func(path ...string) any {
		v := tree
		for _, k := range path {
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		}
		return v
	}
	str := func(path ...string) string {
		s, _ := get(path...).(string)
		return s
	}
	strs := func(path ...string) []string {
		var out []string
		l, _ := get(path...).([]any)
		for _, v := range l {
			if s, ok := v.(string); ok { // a removed element is nil
				out = append(out, s)
			}
		}
		return out
	}
	c := copies{purpose: str("purpose"), caseID: str("case_id"), action: str("action"), resourceType: str("resource", "type"),
		subject: Subject{ID: str("subject", "id"), Type: str("subject", "type"), Roles: strs("subject", "roles")}}
	c.requestedBy = e.RequestedBy
	if addr := in.Request.Source.Address; addr != "" && strings.Contains(e.RequestedBy, addr) {
		switch masked := str("request", "source", "address"); {
		case masked == addr:
		case e.RequestedBy == addr:
			c.requestedBy = masked
		default:
			c.requestedBy = ""
		}
	}
	c.traceID = e.TraceID
	if containsID(in.Request.Headers["traceparent"], e.TraceID) && !containsID(strs("request", "headers", "traceparent"), e.TraceID) {
		c.traceID = ""
	}
	return c
}

// containsID reports whether one of vals contains id.
func containsID(vals []string, id string) bool {
	if id == "" {
		return false
	}
	for _, v := range vals {
		if strings.Contains(v, id) {
			return true
		}
	}
	return false
}
