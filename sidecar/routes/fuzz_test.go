package routes

import (
	"strings"
	"testing"
)

// FuzzRouteMap: any route map text either fails to parse with an error or yields a map whose
// matcher never panics and only binds parameters to whole path segments.
func FuzzRouteMap(f *testing.F) {
	f.Add([]byte("routes:\n  - {method: GET, path: /api/customers/{customer_id}, action: read, resource: customer, customer_param: customer_id, fields: [id]}\n"), "GET", "/api/customers/c-1")
	f.Add([]byte("routes:\n  - {method: GET, path: /a/{x}/b, action: read, resource: r}\n  - {method: GET, path: /a/c/b, action: list, resource: r}\n"), "GET", "/a/c/b")
	f.Add([]byte("routes: [{method: POST, path: /, action: create, resource: r, public: true}]"), "POST", "/")
	f.Fuzz(func(t *testing.T, raw []byte, method, path string) {
		m, err := Parse(raw)
		if err != nil {
			return
		}
		mt, ok := m.Match(method, path)
		if !ok {
			return
		}
		if mt == nil || mt.Route == nil {
			t.Fatal("a match must name its route")
		}
		segs := strings.Split(strings.Trim(path, "/"), "/")
		for name, v := range mt.Params {
			found := false
			for _, s := range segs {
				if s == v {
					found = true
				}
			}
			if !found {
				t.Fatalf("param %s=%q is not a segment of %q", name, v, path)
			}
		}
	})
}
