package decision

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

func decode(t testing.TB, s string) (*Decision, error) {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatal(err)
	}
	return FromResult(v)
}

// complete adds the required members a case leaves out (empty), so that each case tests
// what it names rather than the required members (which the "missing" cases test).
func complete(t testing.TB, s string) string {
	t.Helper()
	var m map[string]any
	if json.Unmarshal([]byte(s), &m) != nil || m == nil {
		return s
	}
	empty := map[string]any{"reasons": []any{}, "fields": map[string]any{}, "key_scopes": []any{}, "obligations": []any{}, "headers": map[string]any{}, "flags": []any{}}
	for k, v := range empty {
		if _, ok := m[k]; !ok {
			m[k] = v
		}
	}
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func TestFromResult(t *testing.T) {
	cases := []struct {
		name  string
		in    string
		ok    bool
		check func(*Decision) bool
	}{
		{"minimal allow", `{"allow": true, "status": 200}`, true, func(d *Decision) bool { return d.Allow }},
		{"deny with reason", `{"allow": false, "status": 403, "reasons": [{"code": "a", "message": "m"}]}`, true, nil},
		{"denied decision releases no keys", `{"allow": false, "status": 403, "reasons": [{"code": "a", "message": "m"}], "fields": {"e": {"outcome": "allow", "key_scope": "contact"}}, "key_scopes": ["contact"]}`, true,
			func(d *Decision) bool { return len(d.KeyScopes) == 0 && d.Fields["e"].Outcome == OutcomeDeny }},
		{"reasons sorted", `{"allow": false, "status": 403, "reasons": [{"code": "b", "message": ""}, {"code": "a", "message": ""}]}`, true,
			func(d *Decision) bool { return d.Reasons[0].Code == "a" }},
		{"masked field needs key", `{"allow": true, "status": 200, "fields": {"d": {"outcome": "mask", "mask": "year", "key_scope": "identity"}}, "key_scopes": ["identity"]}`, true, nil},
		{"redacted field may not release key", `{"allow": true, "status": 200, "fields": {"d": {"outcome": "mask", "mask": "redact", "key_scope": "identity"}}, "key_scopes": ["identity"]}`, false, nil},
		{"records decoded", `{"allow": true, "status": 200, "records": {"c-1": {"allow": false, "reasons": [{"code": "x", "message": ""}], "key_scopes": []}}}`, true,
			func(d *Decision) bool { return !d.Records["c-1"].Allow }},
		{"record denied without reason", `{"allow": true, "status": 200, "records": {"c-1": {"allow": false, "reasons": []}}}`, false, nil},
		{"missing allow", `{"status": 200}`, false, nil},
		{"missing status", `{"allow": true}`, false, nil},
		{"status out of range", `{"allow": false, "status": 1000, "reasons": [{"code": "a", "message": ""}]}`, false, nil},
		{"fractional status", `{"allow": true, "status": 200.5}`, false, nil},
		{"allow with 403", `{"allow": true, "status": 403}`, false, nil},
		{"deny with 200", `{"allow": false, "status": 200, "reasons": [{"code": "a", "message": ""}]}`, false, nil},
		{"empty reason code", `{"allow": false, "status": 403, "reasons": [{"code": "", "message": ""}]}`, false, nil},
		{"unknown mask", `{"allow": true, "status": 200, "fields": {"a": {"outcome": "mask", "mask": "rot13"}}}`, false, nil},
		{"headers must be strings", `{"allow": true, "status": 200, "headers": {"a": 1}}`, false, nil},
		{"obligation needs type", `{"allow": true, "status": 200, "obligations": [{"params": {}}]}`, false, nil},
		{"not an object", `[1, 2]`, false, nil},
		// The schema's required members: a custom rule that leaves obligations out (and with
		// them filter_records) does not decode as if it had said "none".
		{"missing reasons", `{"allow": true, "status": 200, "fields": {}, "key_scopes": [], "obligations": [], "headers": {}, "flags": []}`, false, nil},
		{"missing obligations", `{"allow": true, "status": 200, "reasons": [], "fields": {}, "key_scopes": [], "headers": {}, "flags": []}`, false, nil},
		{"null fields", `{"allow": true, "status": 200, "reasons": [], "fields": null, "key_scopes": [], "obligations": [], "headers": {}, "flags": []}`, false, nil},
		{"record without reasons", `{"allow": true, "status": 200, "records": {"c-1": {"allow": true}}}`, false, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in
			if !strings.HasPrefix(tc.name, "missing") && !strings.HasPrefix(tc.name, "null") {
				in = complete(t, in)
			}
			d, err := decode(t, in)
			if tc.ok != (err == nil) {
				t.Fatalf("ok=%v, err=%v", tc.ok, err)
			}
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Errorf("error must wrap ErrInvalid: %v", err)
			}
			if err == nil && tc.check != nil && !tc.check(d) {
				t.Errorf("check failed: %+v", d)
			}
		})
	}
}

// FuzzFromResult: any JSON value either decodes to a well-formed decision or fails; never a
// panic, and never an allow that releases a key no served field needs.
func FuzzFromResult(f *testing.F) {
	f.Add(`{"allow": true, "status": 200, "fields": {"e": {"outcome": "allow", "key_scope": "contact"}}, "key_scopes": ["contact"]}`)
	f.Add(`{"allow": false, "status": 451, "reasons": [{"code": "consent.missing", "message": "m"}]}`)
	f.Add(`{"allow": true, "status": 200, "records": {"c": {"allow": true, "reasons": []}}}`)
	f.Fuzz(func(t *testing.T, s string) {
		var v any
		if json.Unmarshal([]byte(s), &v) != nil {
			return
		}
		d, err := FromResult(v)
		if err != nil {
			return
		}
		if d.Allow && d.Status != 200 || !d.Allow && (d.Status < 400 || len(d.Reasons) == 0 || len(d.KeyScopes) > 0) {
			t.Fatalf("ill-formed decision accepted: %+v", d)
		}
		for _, s := range d.KeyScopes {
			needed := false
			for _, f := range d.Fields {
				needed = needed || (f.KeyScope == s && f.NeedsKey())
			}
			if !needed {
				t.Fatalf("scope %s released for no field", s)
			}
		}
	})
}

// A denied document still has its arrays: key_scopes, obligations and flags are [] in JSON,
// never null, whether the deny came from the policy (both decoders) or from Deny.
func TestDeniedDocumentHasEmptyArrays(t *testing.T) {
	raw := `{"allow": false, "status": 403, "reasons": [{"code": "c", "message": "m"}], "fields": {"x": {"outcome": "allow", "category": "user.name"}}, "key_scopes": [], "obligations": [], "headers": {}, "flags": []}`
	var generic any
	if err := json.Unmarshal([]byte(raw), &generic); err != nil {
		t.Fatal(err)
	}
	fromResult, err := FromResult(generic)
	if err != nil {
		t.Fatal(err)
	}
	fromValue, err := FromValue(ast.MustParseTerm(raw).Value)
	if err != nil {
		t.Fatal(err)
	}
	for name, d := range map[string]*Decision{"FromResult": fromResult, "FromValue": fromValue, "Deny": Deny(403, "c", "m")} {
		out, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		if err := json.Unmarshal(out, &doc); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"key_scopes", "obligations", "flags"} {
			if l, ok := doc[k].([]any); !ok || len(l) != 0 {
				t.Errorf("%s: %s = %#v, want []", name, k, doc[k])
			}
		}
		if h, ok := doc["headers"].(map[string]any); !ok || len(h) != 0 {
			t.Errorf("%s: headers = %#v, want {}", name, doc["headers"])
		}
	}
}
