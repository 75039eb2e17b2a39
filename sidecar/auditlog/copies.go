package auditlog

import (
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/consentry/consentry/sidecar/audit"
	"github.com/consentry/consentry/sidecar/input"
)

// copies are the top-level members of a decision record that repeat values of the input, so
// that reviewers and the query tool need not dig into it. They must not hold what masking took
// out of the input: with mask rules they are read from the masked input (maskedCopies). They
// are read before customer ids are replaced in the input, so pseudonymize must replace them
// in the copies too: a case id or purpose a caller set to a customer id ("c-1001", "ticket for
// c-1001") would otherwise reach the log raw next to the pseudonymized input.
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

// pseudonymize replaces the customer ids of ids in the copies as the input encoders replace
// them in every input string (replaceInText, after the same UTF-8 repair), so a copy never
// holds a raw customer id its source in the input no longer does. A customer subject's id is
// left alone: the record maps it whole to the customer's pseudonym (ids.lookup), which a
// replacement here would defeat.
func (c *copies) pseudonymize(ids idSet, customerSubject bool) {
	if len(ids) == 0 {
		return
	}
	for _, s := range []*string{&c.requestedBy, &c.traceID, &c.purpose, &c.caseID, &c.action, &c.resourceType} {
		*s = pseudonymizeText(*s, ids)
	}
	if !customerSubject {
		c.subject.ID = pseudonymizeText(c.subject.ID, ids)
	}
	for i, r := range c.subject.Roles {
		c.subject.Roles[i] = pseudonymizeText(r, ids)
	}
}

// pseudonymizeList replaces the ids of a list's customers in the copies, as the encoders do
// in the request-level strings of the input (a purpose or case id naming a customer of the
// list).
func (c *copies) pseudonymizeList(list *listIDs, customerSubject bool) {
	if list == nil {
		return
	}
	for _, s := range []*string{&c.requestedBy, &c.traceID, &c.purpose, &c.caseID, &c.action, &c.resourceType} {
		*s = list.text(*s)
	}
	if !customerSubject {
		c.subject.ID = list.text(c.subject.ID)
	}
	for i, r := range c.subject.Roles {
		c.subject.Roles[i] = list.text(r)
	}
}

// pseudonymizeText is typedEncoder.id for a copy.
func pseudonymizeText(s string, ids idSet) string {
	if s == "" {
		return s
	}
	if !utf8.ValidString(s) {
		s = sanitizeUTF8(s)
	}
	return replaceInText(s, ids)
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
