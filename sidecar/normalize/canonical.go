package normalize

import "strings"

// CheckCanonical reports whether the path part of target (a request target as received, query
// allowed) is already the one canonical spelling of the path Target decides on. A front door
// that forwards the raw target instead of the decided path (Envoy's ext_authz and ext_proc
// pass on the caller's :path; the proxy forwards the decided path itself) must refuse any
// other spelling: "/api/customers/c-1/" and "/api/customers/c-1/notes/.." are decided as
// "/api/customers/c-1", but a Go ServeMux subtree pattern or a Django URLconf routes them
// elsewhere.
//
// The canonical spelling (RFC 3986 section 6.2.2) has no empty segment (repeated or trailing
// "/", except the root), no "." or ".." segment, and percent-encodes exactly the bytes a path
// segment cannot carry as they are: unreserved characters appear as they are ("%2D" for "-"
// is refused: RFC 3986 makes the two spellings equivalent and Envoy's normalize_path decodes
// them), everything else (non-ASCII, space, '"', '<', ...) is percent-encoded. The
// sub-delimiters ("!$&'()*+,;="), ":" and "@" may come either way: raw, as Envoy's
// normalize_path leaves them (Go's url.URL.EscapedPath would escape "'()*!"), or encoded, as
// every client library's component encoder sends them (encodeURIComponent, Python's quote,
// Java's URLEncoder: "ada%40example.com"); both decode to the one path decided, and an encoded
// one stays data in the segment for the CRM too. Hex digits may be either case ("%c3%a9" and
// "%C3%A9" alike).
//
// The error is an *Error with ReasonPathNonCanonical. Forms Target rejects with a code of
// their own (encoded separators, NUL, double encoding, malformed escapes, fragments) pass
// here: callers also normalize the target, which refuses them.
func CheckCanonical(target string) error {
	raw, _, _ := strings.Cut(target, "?")
	if raw == "/" || raw == "" || raw[0] != '/' {
		return nil // the root, or not origin-form at all (Target refuses that)
	}
	start := 1
	for i := 1; i <= len(raw); i++ {
		if i == len(raw) || raw[i] == '/' {
			switch raw[start:i] {
			case "":
				return reject(ReasonPathNonCanonical, "empty path segment at byte %d (repeated or trailing /): the path is forwarded as sent", start)
			case ".", "..":
				return reject(ReasonPathNonCanonical, "dot segment at byte %d: the path is forwarded as sent", start)
			}
			start = i + 1
			continue
		}
		c := raw[i]
		if c == '%' {
			if i+2 >= len(raw) || !isHex(raw[i+1]) || !isHex(raw[i+2]) {
				return nil // malformed: Target refuses it
			}
			if d := unhex(raw[i+1])<<4 | unhex(raw[i+2]); unreservedByte(d) {
				return reject(ReasonPathNonCanonical, "%s at byte %d encodes %q, which is sent unencoded: the path is forwarded as sent", raw[i:i+3], i, string(rune(d)))
			}
			i += 2
			continue
		}
		if !pathByte(c) {
			return reject(ReasonPathNonCanonical, "byte 0x%02x at byte %d must be percent-encoded: the path is forwarded as sent", c, i)
		}
	}
	return nil
}

// unreservedByte reports whether c is an RFC 3986 unreserved character: letters, digits and
// "-._~", whose escapes are only another spelling of the same path.
func unreservedByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return c == '-' || c == '.' || c == '_' || c == '~'
}

// pathByte reports whether c may appear unencoded in a path segment (RFC 3986 pchar without
// pct-encoded): unreserved, sub-delims, ':' and '@'.
func pathByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '-', '.', '_', '~', '!', '$', '&', '\'', '(', ')', '*', '+', ',', ';', '=', ':', '@':
		return true
	}
	return false
}
