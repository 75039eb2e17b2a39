package proxy

import (
	"net/http"
	"slices"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/consentry/consentry/sidecar/decision"
	"github.com/consentry/consentry/sidecar/normalize"
	"github.com/consentry/consentry/sidecar/pipeline"
	"github.com/consentry/consentry/sidecar/transform"
)

// hopByHop are the connection-scoped headers (RFC 9110 7.6.1) never forwarded either way.
var hopByHop = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// clientAddressHeaders tell a server who the client is and how it reached the proxy
// (normalize.ClientAddressHeaders: Forwarded, X-Real-IP, X-Envoy-Original-Path, ...).
var clientAddressHeaders = normalize.ClientAddressHeaders()

// stripCallerForwarding removes what a caller may claim about how the request reached a front
// door: every X-Forwarded-* and X-Original-* (not only the ones consentry knows: CRMs behind
// nginx auth_request or Traefik forward-auth read X-Forwarded-Uri, X-Forwarded-Method or
// X-Original-URI as the request's own, and X-Forwarded-Client-Cert as a verified
// certificate) and the other client-address headers, also spelled with '_' for '-' (CGI-style
// servers read both as the same variable). The proxy then sets its own X-Forwarded-For,
// -Proto and -Host, so a caller can pose to the CRM neither as another address nor as
// another request.
func stripCallerForwarding(h *fasthttp.RequestHeader) {
	var del []string
	for k := range h.All() {
		if hasPrefixFold(k, "x-forwarded-") || hasPrefixFold(k, "x-original-") || headerIn(k, clientAddressHeaders) {
			del = append(del, string(k))
		}
	}
	for _, k := range del {
		h.Del(k)
	}
}

// stripHeaders removes every header named in names (compared with '_' as '-').
func stripHeaders(h *fasthttp.RequestHeader, names []string) {
	var del []string
	for k := range h.All() {
		if headerIn(k, names) {
			del = append(del, string(k))
		}
	}
	for _, k := range del {
		h.Del(k)
	}
}

// refuseOtherSpelling refuses an allowed request that carries another spelling of a header
// the decision reads (otherSpelling).
func refuseOtherSpelling(out *pipeline.Outcome, h map[string][]string, hc pipeline.HeaderConfig) {
	if name := otherSpelling(h, hc); name != "" {
		refuse(out, pipeline.ReasonHeaderAmbiguous, "header "+name+" is another spelling of one the decision reads; the CRM may read either")
	}
}

// otherSpelling returns the first header of h (names lower case, as the pipeline request
// holds them) that is another spelling of one the decision reads - purpose, case,
// break-glass justification - with '_' for '-' or the other way round ("x_purpose" beside
// or instead of "x-purpose"), or "" when there is none. The pipeline reads only the
// configured spelling, but PHP, WSGI and Rack map both to one variable and the CRM may read
// the other: such a request is ambiguous (pipeline.ReasonHeaderAmbiguous), like two purposes.
func otherSpelling(h map[string][]string, hc pipeline.HeaderConfig) string {
	decided := []string{hc.Purpose, hc.CaseID, hc.BreakGlass}
	for k := range h {
		if normalize.HeaderIn(k, decided) && !slices.Contains(decided, k) {
			return k
		}
	}
	return ""
}

// refuse turns an allowed outcome into a 400 deny with code, so that the decision log records
// the request as the refusal it was, under the subject and customer it was decided for.
func refuse(out *pipeline.Outcome, code, msg string) {
	if !out.Allowed() {
		return // a deny already: nothing is forwarded
	}
	d := decision.Deny(http.StatusBadRequest, code, msg)
	d.ID = out.DecisionID
	out.Decision = d
	out.Status = http.StatusBadRequest
	out.Body = transform.DenyBody(out.DecisionID, code, msg)
	out.ResponseHeaders = map[string]string{pipeline.HeaderDecisionID: out.DecisionID, "content-type": "application/json"}
	out.UpstreamHeaders = nil
	out.Err = &pipeline.Error{Code: code, Status: http.StatusBadRequest, Message: msg}
}

// bodyMode is what became of the CRM's body, which decides which of its headers pass.
type bodyMode int

const (
	// bodyPassed: a route whose body is not transformed (public): the CRM's body as is.
	bodyPassed bodyMode = iota
	// bodyTransformed: the CRM's body, minimized (or found to need nothing).
	bodyTransformed
	// bodyReplaced: consentry's deny document replaced the CRM's body (response.encoded,
	// response.too_large, ...). Only CORS headers pass (a browser must be able to read the
	// deny); everything else described or came with a body that is not sent: its encoding,
	// length, range, validators, cookies, Location, Content-Disposition, caching.
	bodyReplaced
)

// copyResponseHeaders copies the CRM's headers that may pass under mode. Always dropped:
// hop-by-hop headers and those the CRM's Connection header names, the length (the body may
// change), and consentry's reserved x-consentry-* (the CRM cannot speak for consentry).
func copyResponseHeaders(dst *fasthttp.ResponseHeader, src *fasthttp.ResponseHeader, mode bodyMode) {
	var named []string // headers the CRM's Connection header makes hop-by-hop
	for k, v := range src.All() {
		if headerIs(k, "Connection") {
			for _, t := range strings.Split(string(v), ",") {
				if t = strings.TrimSpace(t); t != "" {
					named = append(named, t)
				}
			}
		}
	}
	for k, v := range src.All() {
		if forwardResponseHeader(k, mode) && !headerIn(k, named) {
			dst.AddBytesKV(k, v)
		}
	}
}

// forwardResponseHeader reports whether the CRM's response header k passes under mode.
func forwardResponseHeader(k []byte, mode bodyMode) bool {
	if mode == bodyReplaced {
		return hasPrefixFold(k, "access-control-")
	}
	if headerIs(k, "Content-Length") || hasPrefixFold(k, "x-consentry-") || headerIn(k, hopByHop) {
		return false
	}
	return mode != bodyTransformed || !headerIn(k, transform.BodyDerivedHeaders)
}

// stripUnenforceable removes from an upstream request the headers that would make the CRM
// answer with less than the whole record (transform.RangeHeaders; transform.ReadConditionalHeaders when read is true).
// Names are compared with '_' as '-': CGI-style servers read If_Range as If-Range.
func stripUnenforceable(h *fasthttp.RequestHeader, read bool) {
	stripHeaders(h, transform.RangeHeaders)
	if read {
		stripHeaders(h, transform.ReadConditionalHeaders)
	}
}

// connectionTokens lists the headers the caller named in Connection (hop-by-hop too).
func connectionTokens(h *fasthttp.RequestHeader) []string {
	var out []string
	for k, v := range h.All() {
		if headerIs(k, "Connection") {
			for _, t := range strings.Split(string(v), ",") {
				if t = strings.TrimSpace(t); t != "" {
					out = append(out, t)
				}
			}
		}
	}
	return out
}

// headerIs compares a header name case-insensitively, '_' matching '-', without allocating
// (it runs for every header of every response).
func headerIs(k []byte, name string) bool {
	if len(k) != len(name) {
		return false
	}
	for i := range len(k) {
		if foldHeaderByte(k[i]) != foldHeaderByte(name[i]) {
			return false
		}
	}
	return true
}

func headerIn(k []byte, names []string) bool {
	for _, n := range names {
		if headerIs(k, n) {
			return true
		}
	}
	return false
}

func hasPrefixFold(k []byte, prefix string) bool {
	return len(k) >= len(prefix) && headerIs(k[:len(prefix)], prefix)
}

func foldHeaderByte(c byte) byte {
	switch {
	case c >= 'A' && c <= 'Z':
		return c + 'a' - 'A'
	case c == '_':
		return '-'
	}
	return c
}
