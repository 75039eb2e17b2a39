package auditlog

import "testing"

func TestReplaceInText(t *testing.T) {
	ids := idSet{{"c-1", "P1"}, {"c-10", "P10"}}
	cases := map[string]string{
		"c-1":                      "P1",
		"c-10":                     "P10",
		"/api/customers/c-1/notes": "/api/customers/P1/notes",
		"/api/customers/c-10":      "/api/customers/P10",
		"customer c-1 withdrew.":   "customer P1 withdrew.",
		"c-100 and xc-1 and c-1_x": "c-100 and xc-1 and c-1_x",
		"c-1,c-10":                 "P1,P10",
		"nothing here":             "nothing here",
	}
	for in, want := range cases {
		if got := replaceInText(in, ids); got != want {
			t.Errorf("%q: got %q, want %q", in, got, want)
		}
	}
}

func FuzzCanonicalize(f *testing.F) {
	for _, s := range []string{`{"b":1,"a":[true,null,"x\u2028"]}`, `"\u0001"`, `1.5e3`, `{"a":{"c":1,"b":2}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Canonicalize(data)
		if err != nil {
			return
		}
		// Canonical form is a fixed point.
		c2, err := Canonicalize(c)
		if err != nil || string(c) != string(c2) {
			t.Fatalf("not a fixed point: %s -> %s (%v)", c, c2, err)
		}
	})
}

func FuzzTopLevel(f *testing.F) {
	f.Add([]byte(`{"a":1,"b":{"c":"}"},"d":[1,{"e":"]"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		_ = topLevel(data, func(k, v []byte) bool { return true })
		_, _ = parseHeader(data)
	})
}
