package proxy

import (
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/consentry/consentry/sidecar/normalize"
	"github.com/consentry/consentry/sidecar/transform"
)

// hopByHop are the connection-scoped headers (RFC 9110 7.6.1) never forwarded either way.
var hopByHop = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// clientAddressHeaders tell a server who the client is and how it reached the proxy. The
// proxy sets X-Forwarded-For/-Proto/-Host itself; every caller-supplied spelling of these and
// of the other common ones (also with '_' for '-', which CGI-style servers read as the same
// variable) is removed first, so that a caller cannot pose to the CRM as another address.
var clientAddressHeaders = append([]string{"X-Forwarded-For", "X-Forwarded-Proto"}, normalize.ClientAddressHeaders()...)

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
