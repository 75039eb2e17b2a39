// Package normalize turns the raw request line and headers a front door received into the one
// canonical form every later step (route matching, identity, policy input) reads. It runs
// before anything looks at the path, so that two spellings of the same resource can never get
// two different decisions.
//
// Paths: slashes are merged, "." and ".." segments resolved, percent-encoding decoded exactly
// once. Forms that different servers interpret differently are rejected with a reason code
// instead of being guessed at: encoded separators (%2F, %5C), raw backslashes, NUL and other
// control characters, invalid UTF-8, double encoding (%25xx), malformed escapes, ".." above the
// root, fragments, ";" path parameters and anything that does not start with "/". The raw path
// is never handed to url.Parse: "//admin/x" is a path, not a host (CVE-2026-26205 class).
//
// Headers: names lowercased, every value of a multi-value header kept in order (a last-value-only
// view is how CVE-2021-32777 bypassed policies), values that are not valid UTF-8 or contain
// control characters rejected (CVE-2023-27488 class).
package normalize

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"
)

// Reason codes. Every rejection is a 400 deny carrying one of them.
const (
	ReasonPathInvalid       = "request.path_invalid"
	ReasonPathTooLong       = "request.path_too_long"
	ReasonEncodedSeparator  = "request.path_encoded_separator"
	ReasonPathNUL           = "request.path_nul"
	ReasonPathInvalidUTF8   = "request.path_invalid_utf8"
	ReasonPathNonCanonical  = "request.path_non_canonical"
	ReasonQueryInvalid      = "request.query_invalid"
	ReasonMethodInvalid     = "request.method_invalid"
	ReasonHeaderInvalid     = "request.header_invalid"
	ReasonHeaderInvalidUTF8 = "request.header_invalid_utf8"
	ReasonHeaderTooLarge    = "request.header_too_large"
	ReasonOverrideHeader    = "request.override_header"
)

// overrideHeaders make many frameworks handle a request as another method or path than the
// one on the request line (Express method-override, Symfony, IIS rewrites, Spring filters):
// the CRM would run something other than what was decided. Compared with '_' as '-', since
// CGI-style servers map both spellings to one variable.
var overrideHeaders = []string{"x-http-method-override", "x-http-method", "x-method-override", "x-original-url", "x-rewrite-url"}

// clientAddressHeaders tell a server who the client is, or how (which URI, method, scheme)
// the request reached the front door, other than X-Forwarded-For and X-Forwarded-Proto
// (which the proxy sets itself, and Envoy sets, or appends to with use_remote_address). A
// caller's own would let it pose to the CRM as another address, or make a CRM that trusts
// them (nginx auth_request setups, Traefik forward-auth, Rack's X-Forwarded-Ssl) read another
// path or method than the one decided: every front door removes them before the CRM (the
// Envoy doors through the pipeline's RemoveHeaders). The proxy removes every X-Forwarded-*
// and X-Original-* besides; the Envoy doors only these, since Envoy may set others itself
// before the filters run (X-Forwarded-Client-Cert with forward_client_cert_details).
var clientAddressHeaders = []string{"forwarded", "x-real-ip", "true-client-ip", "x-client-ip", "x-cluster-client-ip",
	"x-original-forwarded-for", "x-forwarded-host", "x-forwarded-port", "x-forwarded-prefix", "x-forwarded-server",
	"x-forwarded-uri", "x-forwarded-path", "x-forwarded-method", "x-forwarded-scheme", "x-forwarded-ssl",
	"x-original-uri", "x-original-method", "x-envoy-original-path"}

// ClientAddressHeaders returns a copy of the list above (lower case).
func ClientAddressHeaders() []string { return append([]string(nil), clientAddressHeaders...) }

// IsClientAddressHeader reports whether header name is one of them (compared with '_' as
// '-', any case).
func IsClientAddressHeader(name string) bool { return HeaderIn(name, clientAddressHeaders) }

// overrideParams are the query parameters that do the same (Laravel, Symfony with
// http_method_override, Rails/Rack MethodOverride on POST): "_method" in any case.
//
// PHP builds $_GET after renaming: leading spaces are dropped and '.', ' ' and an unclosed
// '[' become '_', so ".method", " _method" and "[method" all arrive as _method. Names are
// compared after the same renaming.
func isOverrideParam(name string) bool {
	name = strings.TrimLeft(name, " ")
	if len(name) != len("_method") {
		return false
	}
	var b [7]byte
	for i := range len(name) {
		switch c := name[i]; c {
		case '.', ' ', '[':
			b[i] = '_'
		default:
			b[i] = c
		}
	}
	return strings.EqualFold(string(b[:]), "_method")
}

func isOverrideHeader(lname string) bool {
	return strings.HasPrefix(lname, "x") && HeaderIn(lname, overrideHeaders)
}

// HeaderIn reports whether header name is one of names, compared as HasHeaderPrefix does.
func HeaderIn(name string, names []string) bool {
	for _, n := range names {
		if len(name) == len(n) && HasHeaderPrefix(name, n) {
			return true
		}
	}
	return false
}

// HasHeaderPrefix reports whether header name starts with prefix, comparing as CGI-style
// servers (PHP, WSGI, Rack) see names: case-insensitively, with '_' as '-'. Without
// allocating: it runs for every request header.
func HasHeaderPrefix(name, prefix string) bool {
	if len(name) < len(prefix) {
		return false
	}
	for i := range len(prefix) {
		if foldHeaderByte(name[i]) != foldHeaderByte(prefix[i]) {
			return false
		}
	}
	return true
}

func foldHeaderByte(c byte) byte {
	switch {
	case 'A' <= c && c <= 'Z':
		return c + 'a' - 'A'
	case c == '_':
		return '-'
	}
	return c
}

// Error is a rejected request. Status is always 400.
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Status is the HTTP status of every normalization rejection.
const Status = http.StatusBadRequest

func reject(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Normalizer applies one configuration. It is immutable and safe for concurrent use.
type Normalizer struct{ cfg Config }

// New returns a Normalizer for cfg (defaults applied).
func New(cfg Config) *Normalizer { return &Normalizer{cfg: cfg.WithDefaults()} }

// Target is a normalized request target.
type Target struct {
	// Path is the canonical, decoded path: leading "/", no empty, "." or ".." segments, no
	// trailing "/" (except the root).
	Path string
	// Query holds every value of every query parameter, decoded.
	Query map[string][]string
	// RawQuery is the query string as received (for forwarding).
	RawQuery string
}

// Method validates an HTTP method: a token without lower-case letters. Methods are
// case-sensitive (RFC 9110 9.1) and a front door forwards the method as sent (Envoy passes
// "get" on unchanged): a "get" decided as GET could run as another method, or another
// route, at the CRM, so it is refused rather than upper-cased.
func (n *Normalizer) Method(m string) (string, error) {
	if m == "" || len(m) > 32 || !isToken(m) {
		return "", reject(ReasonMethodInvalid, "method %q is not a valid HTTP method", truncate(m))
	}
	for i := 0; i < len(m); i++ {
		if 'a' <= m[i] && m[i] <= 'z' {
			return "", reject(ReasonMethodInvalid, "method %q is not upper case (methods are case-sensitive)", truncate(m))
		}
	}
	return m, nil
}

// Target normalizes a request target (path plus optional query) as found in the request line
// or Envoy's :path.
func (n *Normalizer) Target(raw string) (*Target, error) {
	if raw == "" {
		return nil, reject(ReasonPathInvalid, "empty path")
	}
	if len(raw) > n.cfg.MaxPathLength {
		return nil, reject(ReasonPathTooLong, "path is %d bytes, limit %d", len(raw), n.cfg.MaxPathLength)
	}
	if strings.IndexByte(raw, '#') >= 0 {
		return nil, reject(ReasonPathInvalid, "a fragment is never sent to a server")
	}
	rawPath, rawQuery, _ := strings.Cut(raw, "?")
	p, err := n.Path(rawPath)
	if err != nil {
		return nil, err
	}
	q, err := n.Query(rawQuery)
	if err != nil {
		return nil, err
	}
	return &Target{Path: p, Query: q, RawQuery: rawQuery}, nil
}

// Path normalizes the path part of a target (without query).
func (n *Normalizer) Path(raw string) (string, error) {
	if !strings.HasPrefix(raw, "/") {
		// "*", absolute-form ("http://host/x") and relative paths are not origin-form.
		return "", reject(ReasonPathInvalid, "path does not start with / (absolute-form and asterisk-form targets are not accepted)")
	}
	decoded, err := decodeOnce(raw)
	if err != nil {
		return "", err
	}
	if !utf8.ValidString(decoded) {
		return "", reject(ReasonPathInvalidUTF8, "path is not valid UTF-8 after decoding")
	}
	if !n.cfg.AllowSemicolon && strings.IndexByte(decoded, ';') >= 0 {
		// Servlet containers strip ";params" from segments, others do not: "/api;x/customers"
		// would match one route here and another upstream.
		return "", reject(ReasonPathNonCanonical, "path parameters (;) are not allowed")
	}
	return resolve(decoded)
}

// decodeOnce percent-decodes raw exactly once and rejects bytes that must not appear in a
// path in either form.
func decodeOnce(raw string) (string, error) {
	var b strings.Builder
	b.Grow(len(raw))
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c == '%' {
			if i+2 >= len(raw) || !isHex(raw[i+1]) || !isHex(raw[i+2]) {
				return "", reject(ReasonPathNonCanonical, "malformed percent-encoding at byte %d", i)
			}
			d := unhex(raw[i+1])<<4 | unhex(raw[i+2])
			switch {
			case d == '/' || d == '\\':
				return "", reject(ReasonEncodedSeparator, "encoded path separator %s at byte %d", raw[i:i+3], i)
			case d == 0:
				return "", reject(ReasonPathNUL, "encoded NUL at byte %d", i)
			case d < 0x20 || d == 0x7f:
				return "", reject(ReasonPathInvalid, "encoded control character at byte %d", i)
			case d == '%':
				// %25xx decodes to %xx: a server that decodes twice would see another path.
				return "", reject(ReasonPathNonCanonical, "double percent-encoding at byte %d", i)
			}
			b.WriteByte(d)
			i += 2
			continue
		}
		switch {
		case c == 0:
			return "", reject(ReasonPathNUL, "NUL at byte %d", i)
		case c == '\\':
			// Some servers treat "\" as "/"; we do not guess.
			return "", reject(ReasonPathNonCanonical, "backslash at byte %d", i)
		case c < 0x20 || c == 0x7f:
			return "", reject(ReasonPathInvalid, "control character at byte %d", i)
		}
		b.WriteByte(c)
	}
	return b.String(), nil
}

// resolve merges slashes and resolves dot segments (RFC 3986 5.2.4), rejecting ".." above
// the root instead of clamping it.
func resolve(p string) (string, error) {
	if canonicalPath(p) {
		return p, nil // what the general case below returns for it, without allocating
	}
	segs := strings.Split(p, "/")
	out := make([]string, 0, len(segs))
	for _, s := range segs {
		switch s {
		case "", ".":
			continue
		case "..":
			if len(out) == 0 {
				return "", reject(ReasonPathNonCanonical, "'..' climbs above the root")
			}
			out = out[:len(out)-1]
		default:
			out = append(out, s)
		}
	}
	return "/" + strings.Join(out, "/"), nil
}

// canonicalPath reports whether p is "/" or "/" followed by segments that are neither empty,
// "." nor "..": the paths resolve leaves as they are.
func canonicalPath(p string) bool {
	if p == "/" {
		return true
	}
	if len(p) < 2 || p[0] != '/' {
		return false
	}
	start := 1
	for i := 1; i <= len(p); i++ {
		if i == len(p) || p[i] == '/' {
			if seg := p[start:i]; seg == "" || seg == "." || seg == ".." {
				return false
			}
			start = i + 1
		}
	}
	return true
}

// Query parses a raw query string, keeping every value. Malformed escapes, ";" separators,
// invalid UTF-8 and control characters are rejected.
func (n *Normalizer) Query(raw string) (map[string][]string, error) {
	if raw == "" {
		return nil, nil
	}
	if len(raw) > n.cfg.MaxPathLength {
		return nil, reject(ReasonPathTooLong, "query is %d bytes, limit %d", len(raw), n.cfg.MaxPathLength)
	}
	v, err := url.ParseQuery(raw)
	if err != nil {
		return nil, reject(ReasonQueryInvalid, "query: %v", err)
	}
	for k, vals := range v {
		if !cleanText(k) {
			return nil, reject(ReasonQueryInvalid, "query parameter name is not clean UTF-8 text")
		}
		if isOverrideParam(k) {
			return nil, reject(ReasonOverrideHeader, "query parameter %q would make the CRM run another method than the one decided", truncate(k))
		}
		for _, s := range vals {
			if !cleanText(s) {
				return nil, reject(ReasonQueryInvalid, "value of query parameter %q is not clean UTF-8 text", truncate(k))
			}
		}
	}
	return v, nil
}

// Headers lowercases names and keeps every value. Pseudo-headers (":path", ...) are dropped:
// the front door passes method, path and authority separately.
func (n *Normalizer) Headers(in map[string][]string) (map[string][]string, error) {
	out := make(map[string][]string, len(in))
	total := 0
	for name, vals := range in {
		if strings.HasPrefix(name, ":") {
			continue
		}
		if name == "" || !isToken(name) {
			return nil, reject(ReasonHeaderInvalid, "header name %q is not a token", truncate(name))
		}
		lname := strings.ToLower(name)
		if isOverrideHeader(lname) {
			return nil, reject(ReasonOverrideHeader, "header %q would make the CRM run another method or path than the one decided", lname)
		}
		for _, v := range vals {
			total += len(lname) + len(v)
			if !utf8.ValidString(v) {
				return nil, reject(ReasonHeaderInvalidUTF8, "value of header %q is not valid UTF-8", lname)
			}
			if !headerValueOK(v) {
				return nil, reject(ReasonHeaderInvalid, "value of header %q contains a control character", lname)
			}
		}
		prev, seen := out[lname]
		switch {
		case !seen && len(vals) == 0:
			out[lname] = []string{}
		case !seen:
			// The common case (one spelling of the name): share the values, capped so that
			// appending another spelling's values copies instead of writing into in's array.
			out[lname] = vals[:len(vals):len(vals)]
		default:
			out[lname] = append(prev, vals...)
		}
	}
	if total > n.cfg.MaxHeaderBytes {
		return nil, reject(ReasonHeaderTooLarge, "headers are %d bytes, limit %d", total, n.cfg.MaxHeaderBytes)
	}
	return out, nil
}

// headerValueOK allows visible characters, space and horizontal tab (RFC 9110 field-value).
func headerValueOK(v string) bool {
	for i := 0; i < len(v); i++ {
		c := v[i]
		if (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

func cleanText(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return false
		}
	}
	return true
}

// isToken reports whether s is an RFC 9110 token.
func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

func truncate(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return strings.ToValidUTF8(s, "?")
}
