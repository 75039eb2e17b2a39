package normalize

import (
	"errors"
	"strconv"
	"strings"
	"testing"
)

func TestCheckCanonical(t *testing.T) {
	tests := []struct {
		name, target string
		ok           bool
	}{
		{"root", "/", true},
		{"plain", "/api/customers/c-1001", true},
		{"query is not checked", "/api/customers/c-1001?q=a%2Db//c", true},
		{"encoded non-ASCII", "/api/customers/J%C3%BCrgen", true},
		{"encoded non-ASCII, lower-case hex", "/api/customers/J%c3%bcrgen", true},
		{"encoded space", "/api/customers/c%201", true},
		{"sub-delims, colon and at raw", "/odata/Customers('c-1')/a:b@c!$&*+,=", true},
		{"unreserved raw", "/a-b.c_d~e", true},
		// As client libraries encode a path component (encodeURIComponent, Python's quote,
		// Go's url.PathEscape): the same decided path, and data in the segment for the CRM.
		{"encoded at", "/api/customers/ada%40example.com", true},
		{"encoded colon", "/api/customers/urn%3Acrm%3a1001", true},
		{"encoded sub-delims", "/api/customers/c%2C1001%21%2B%27%28%29", true},
		// Forms Target refuses with a code of its own pass here.
		{"encoded slash is Target's", "/api/customers%2Fc-1001", true},
		{"double encoding is Target's", "/api/%252e", true},
		{"malformed escape is Target's", "/api/%zz", true},
		{"not origin-form is Target's", "*", true},

		{"trailing slash", "/api/customers/c-1001/", false},
		{"trailing slash with query", "/healthz/?x=1", false},
		{"repeated slash", "/api//customers/c-1001", false},
		{"leading double slash", "//api/customers/c-1001", false},
		{"dot dot", "/api/customers/c-1001/notes/..", false},
		{"dot", "/api/./customers/c-1001", false},
		{"encoded dot", "/api/%2e%2e/customers", false},
		{"encoded unreserved", "/api/customers/c%2D1001", false},
		{"encoded letter", "/api/customers/%63-1001", false},
		{"raw non-ASCII", "/api/customers/Jürgen", false},
		{"raw space", "/api/customers/c 1", false},
		{"raw quote", "/api/\"x\"", false},
		{"raw pipe", "/api/a|b", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckCanonical(tt.target)
			if tt.ok {
				if err != nil {
					t.Fatalf("CheckCanonical(%q): %v", tt.target, err)
				}
				return
			}
			var ne *Error
			if !errors.As(err, &ne) || ne.Code != ReasonPathNonCanonical {
				t.Fatalf("CheckCanonical(%q) = %v, want %s", tt.target, err, ReasonPathNonCanonical)
			}
		})
	}
}

// FuzzCheckCanonical: a target that normalizes and passes CheckCanonical is, up to the case of
// hex digits, exactly the escaped form of the path it is decided on, so a door forwarding it
// as sent forwards the decided path.
func FuzzCheckCanonical(f *testing.F) {
	for _, s := range []string{"/", "/a/", "/a//b", "/a/%2e", "/a%2Db", "/J%c3%bcrgen", "/a('b')", "/a b", "/a?b/../c", "/a%40b%3Ac%2C"} {
		f.Add(s)
	}
	n := New(Config{AllowSemicolon: true})
	f.Fuzz(func(t *testing.T, raw string) {
		tg, err := n.Target(raw)
		if err != nil || CheckCanonical(raw) != nil {
			return
		}
		rawPath, _, _ := strings.Cut(raw, "?")
		if want := escapeRef(tg.Path); upperEscapes(decodeEitherWay(rawPath)) != want {
			t.Fatalf("%q passed CheckCanonical but is decided as %q (escaped %q)", raw, tg.Path, want)
		}
	})
}

// escapeRef is an independent reference for the canonical escaping.
func escapeRef(p string) string {
	const keep = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@/"
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if strings.IndexByte(keep, p[i]) >= 0 {
			b.WriteByte(p[i])
		} else {
			b.WriteString("%" + strings.ToUpper(string("0123456789abcdef"[p[i]>>4])+string("0123456789abcdef"[p[i]&15])))
		}
	}
	return b.String()
}

// decodeEitherWay decodes the escapes of the characters the canonical form takes either way
// (sub-delims, ':' and '@'), which escapeRef writes raw.
func decodeEitherWay(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			if d, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil && strings.IndexByte("!$&'()*+,;=:@", byte(d)) >= 0 {
				b.WriteByte(byte(d))
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// upperEscapes upper-cases the hex digits of every escape in s (the only freedom the
// canonical form leaves).
func upperEscapes(s string) string {
	b := []byte(s)
	for i := 0; i+2 < len(b); i++ {
		if b[i] == '%' {
			b[i+1], b[i+2] = strings.ToUpper(string(b[i+1]))[0], strings.ToUpper(string(b[i+2]))[0]
			i += 2
		}
	}
	return string(b)
}
