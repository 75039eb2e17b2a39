package normalize

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestTarget(t *testing.T) {
	n := New(Config{})
	tests := []struct {
		name, raw, want, code string
	}{
		{"plain", "/api/customers/c-1", "/api/customers/c-1", ""},
		{"root", "/", "/", ""},
		{"trailing slash", "/api/customers/", "/api/customers", ""},
		{"merge slashes", "/api//customers///c-1", "/api/customers/c-1", ""},
		// CVE-2026-26205 class: a leading "//" must stay a path, never become a host.
		{"leading double slash is a path", "//admin/customers", "/admin/customers", ""},
		{"dot segments", "/api/./public/../customers/c-1", "/api/customers/c-1", ""},
		{"encoded dot segments resolve after one decode", "/api/public/%2e%2e/customers", "/api/customers", ""},
		{"decode once", "/api/customers/c%201", "/api/customers/c 1", ""},
		{"utf8 ok", "/api/customers/J%C3%BCrgen", "/api/customers/Jürgen", ""},
		// CVE-2021-29492 class: an encoded slash must not split or join segments.
		{"encoded slash", "/api/customers%2Fc-1", "", ReasonEncodedSeparator},
		{"encoded slash lower", "/api/customers%2fc-1", "", ReasonEncodedSeparator},
		{"encoded backslash", "/api/customers%5Cc-1", "", ReasonEncodedSeparator},
		{"raw backslash", "/api\\customers", "", ReasonPathNonCanonical},
		{"NUL", "/api/customers\x00", "", ReasonPathNUL},
		{"encoded NUL", "/api/customers%00", "", ReasonPathNUL},
		{"control", "/api/\tcustomers", "", ReasonPathInvalid},
		{"invalid utf8 raw", "/api/\xff", "", ReasonPathInvalidUTF8},
		{"invalid utf8 encoded", "/api/%C0%AF", "", ReasonPathInvalidUTF8},
		{"double encoding", "/api/customers%252Fc-1", "", ReasonPathNonCanonical},
		{"malformed escape", "/api/%zz", "", ReasonPathNonCanonical},
		{"truncated escape", "/api/%2", "", ReasonPathNonCanonical},
		{"above root", "/../etc/passwd", "", ReasonPathNonCanonical},
		{"encoded above root", "/%2e%2e/etc", "", ReasonPathNonCanonical},
		{"semicolon", "/api;x=1/customers", "", ReasonPathNonCanonical},
		{"encoded semicolon", "/api%3Bx/customers", "", ReasonPathNonCanonical},
		{"fragment", "/api/customers#x", "", ReasonPathInvalid},
		{"absolute form", "http://evil/api/customers", "", ReasonPathInvalid},
		{"asterisk", "*", "", ReasonPathInvalid},
		{"empty", "", "", ReasonPathInvalid},
		{"too long", "/" + strings.Repeat("a", 9000), "", ReasonPathTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := n.Target(tt.raw)
			if tt.code != "" {
				var ne *Error
				if !errors.As(err, &ne) || ne.Code != tt.code {
					t.Fatalf("Target(%q) = %v, %v; want code %s", tt.raw, got, err, tt.code)
				}
				return
			}
			if err != nil {
				t.Fatalf("Target(%q): %v", tt.raw, err)
			}
			if got.Path != tt.want {
				t.Fatalf("Target(%q).Path = %q, want %q", tt.raw, got.Path, tt.want)
			}
		})
	}
}

func TestSemicolonAllowed(t *testing.T) {
	got, err := New(Config{AllowSemicolon: true}).Target("/a;b")
	if err != nil || got.Path != "/a;b" {
		t.Fatalf("got %v %v", got, err)
	}
}

func TestQuery(t *testing.T) {
	n := New(Config{})
	got, err := n.Target("/api/customers?q=ann&q=bob&page=2")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{"q": {"ann", "bob"}, "page": {"2"}}
	if !reflect.DeepEqual(got.Query, want) {
		t.Fatalf("query = %v, want %v", got.Query, want)
	}
	for _, bad := range []string{"/a?q=%zz", "/a?q=1;r=2", "/a?q=%00", "/a?q=%ff"} {
		var ne *Error
		if _, err := n.Target(bad); !errors.As(err, &ne) || ne.Code != ReasonQueryInvalid {
			t.Errorf("Target(%q) = %v, want %s", bad, err, ReasonQueryInvalid)
		}
	}
	// Laravel, Symfony and Rack run a POST carrying _method as that method.
	for _, bad := range []string{"/a?_method=DELETE", "/a?x=1&_METHOD=put", "/a?%5Fmethod=patch",
		// PHP's renaming of $_GET names: leading spaces dropped, '.', ' ' and '[' as '_'.
		"/a?.method=DELETE", "/a?%2Emethod=DELETE", "/a?+_method=DELETE", "/a?%20_method=DELETE", "/a?%20.method=x", "/a?[method=x"} {
		var ne *Error
		if _, err := n.Target(bad); !errors.As(err, &ne) || ne.Code != ReasonOverrideHeader {
			t.Errorf("Target(%q) = %v, want %s", bad, err, ReasonOverrideHeader)
		}
	}
	if _, err := n.Target("/a?method=x&_methods=y&a.method=z"); err != nil {
		t.Errorf("look-alike parameters refused: %v", err)
	}
}

func TestHeaders(t *testing.T) {
	n := New(Config{})
	// CVE-2021-32777 class: every value of a multi-value header is kept, in order.
	got, err := n.Headers(map[string][]string{
		"X-Purpose":  {"essential.service", "marketing.communications.email"},
		"Accept":     {"application/json"},
		":path":      {"/x"},
		"X-Empty":    {},
		"User-Agent": {"curl/8\t1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"x-purpose":  {"essential.service", "marketing.communications.email"},
		"accept":     {"application/json"},
		"x-empty":    {},
		"user-agent": {"curl/8\t1"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("headers = %v, want %v", got, want)
	}
	bad := []struct {
		name string
		h    map[string][]string
		code string
	}{
		// CVE-2023-27488 class: non-UTF-8 values are rejected, not passed on or mangled.
		{"non utf8 value", map[string][]string{"x-purpose": {"support\xff"}}, ReasonHeaderInvalidUTF8},
		{"NUL in value", map[string][]string{"x-a": {"a\x00b"}}, ReasonHeaderInvalid},
		{"CRLF in value", map[string][]string{"x-a": {"a\r\nx-b: c"}}, ReasonHeaderInvalid},
		{"bad name", map[string][]string{"x a": {"1"}}, ReasonHeaderInvalid},
		{"too large", map[string][]string{"x-a": {strings.Repeat("a", 70000)}}, ReasonHeaderTooLarge},
		// Headers that make the CRM's framework run another method or path than the decided one.
		{"method override", map[string][]string{"X-HTTP-Method-Override": {"DELETE"}}, ReasonOverrideHeader},
		{"method override, other spelling", map[string][]string{"x-method-override": {"DELETE"}}, ReasonOverrideHeader},
		{"method", map[string][]string{"X-HTTP-Method": {"PUT"}}, ReasonOverrideHeader},
		{"method override with underscores", map[string][]string{"X_HTTP_Method_Override": {"DELETE"}}, ReasonOverrideHeader},
		{"original url", map[string][]string{"X-Original-URL": {"/admin"}}, ReasonOverrideHeader},
		{"rewrite url", map[string][]string{"x-rewrite-url": {"/admin"}}, ReasonOverrideHeader},
	}
	for _, tt := range bad {
		var ne *Error
		if _, err := n.Headers(tt.h); !errors.As(err, &ne) || ne.Code != tt.code {
			t.Errorf("%s: err %v, want %s", tt.name, err, tt.code)
		}
	}
}

func TestMethod(t *testing.T) {
	n := New(Config{})
	for _, ok := range []string{"GET", "PATCH", "MERGE", "M-SEARCH"} {
		if m, err := n.Method(ok); err != nil || m != ok {
			t.Errorf("Method(%q) = %q %v", ok, m, err)
		}
	}
	// A front door forwards the method as sent: "get" is not decided as GET.
	for _, bad := range []string{"", "GE T", "G\x00", strings.Repeat("A", 40), "get", "Get", "patcH"} {
		var ne *Error
		if _, err := n.Method(bad); !errors.As(err, &ne) || ne.Code != ReasonMethodInvalid {
			t.Errorf("Method(%q) = %v, want %s", bad, err, ReasonMethodInvalid)
		}
	}
}

// TestClientAddressHeaders: headers that tell the CRM which URI, method or scheme the request
// came with are removed before it like the client-address ones, in either spelling.
func TestClientAddressHeaders(t *testing.T) {
	for _, h := range []string{"X-Forwarded-Uri", "x_forwarded_path", "X-Forwarded-Method", "X-Original-URI", "X_Original_Method", "X-Envoy-Original-Path", "X-Real-IP"} {
		if !IsClientAddressHeader(h) {
			t.Errorf("%s is not removed before the CRM", h)
		}
	}
	for _, h := range []string{"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Client-Cert", "X-Purpose"} {
		if IsClientAddressHeader(h) {
			t.Errorf("%s is removed (Envoy sets it, or it is not about the client)", h)
		}
	}
}

func FuzzPath(f *testing.F) {
	for _, s := range []string{"/", "//a", "/a/../b", "/%2e%2e/", "/a%2Fb", "/\xff", "/a?b=c"} {
		f.Add(s)
	}
	n := New(Config{})
	f.Fuzz(func(t *testing.T, raw string) {
		tg, err := n.Target(raw)
		if err != nil {
			return
		}
		p := tg.Path
		// Invariants of the canonical form.
		if !strings.HasPrefix(p, "/") || strings.Contains(p, "//") || strings.Contains(p, "\\") ||
			strings.ContainsRune(p, 0) || (len(p) > 1 && strings.HasSuffix(p, "/")) {
			t.Fatalf("non-canonical result %q for %q", p, raw)
		}
		for _, seg := range strings.Split(p[1:], "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("dot segment left in %q for %q", p, raw)
			}
		}
		// Idempotent on paths without '%' (a decoded '%' would be re-decoded).
		if !strings.ContainsAny(p, "%?#") {
			again, err := n.Path(p)
			if err != nil || again != p {
				t.Fatalf("not idempotent: %q -> %q (%v)", p, again, err)
			}
		}
	})
}

// TestHeadersDoNotWriteIntoInput: the output may share value lists with the input, but merging
// two spellings of a name must not write into the input's arrays.
func TestHeadersDoNotWriteIntoInput(t *testing.T) {
	upper := make([]string, 1, 4)
	upper[0] = "a"
	lower := make([]string, 1, 4)
	lower[0] = "b"
	in := map[string][]string{"Accept": upper, "accept": lower, "x": {}}
	out, err := New(Config{}).Headers(in)
	if err != nil {
		t.Fatal(err)
	}
	got := append([]string(nil), out["accept"]...)
	if len(got) != 2 || !(got[0] == "a" && got[1] == "b" || got[0] == "b" && got[1] == "a") {
		t.Fatalf("merged %v", got)
	}
	if upper[:2][1] != "" || lower[:2][1] != "" {
		t.Fatalf("input arrays written: %q %q", upper[:2], lower[:2])
	}
	if v, ok := out["x"]; !ok || v == nil || len(v) != 0 {
		t.Fatalf("empty header: %#v", v)
	}
}

// TestResolveFastPath: the canonical-path shortcut returns what the general resolution does.
func TestResolveFastPath(t *testing.T) {
	for _, p := range []string{"/", "//", "/a", "/a/", "/a//b", "/a/./b", "/a/../b", "/..", "/.", "/a/.", "/a/..", "/.a/..b/...", "a/b", "", "/a/b/c-1001", "/a b/%", "/./", "/a/b/"} {
		got, gerr := resolve(p)
		segs := strings.Split(p, "/")
		var out []string
		var werr bool
		for _, s := range segs {
			switch s {
			case "", ".":
			case "..":
				if len(out) == 0 {
					werr = true
				} else {
					out = out[:len(out)-1]
				}
			default:
				out = append(out, s)
			}
		}
		if werr != (gerr != nil) || (!werr && got != "/"+strings.Join(out, "/")) {
			t.Errorf("%q: got %q, %v", p, got, gerr)
		}
	}
}
