package decision

import (
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"sort"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

// FromValue must be FromResult on the value's JSON form: the same Decision or the same error.
func TestFromValueIsFromResult(t *testing.T) {
	values := []string{
		// The shapes FromResult's own tests use, as Rego values.
		`{"allow": true, "status": 200}`,
		`{"allow": false, "status": 403, "reasons": [{"code": "a", "message": "m"}]}`,
		`{"allow": false, "status": 403, "reasons": [{"code": "a", "message": "m"}], "fields": {"e": {"outcome": "allow", "key_scope": "contact"}}, "key_scopes": ["contact"]}`,
		`{"allow": false, "status": 403, "reasons": [{"code": "b", "message": ""}, {"code": "a", "message": ""}]}`,
		`{"allow": true, "status": 200, "fields": {"d": {"outcome": "mask", "mask": "year", "key_scope": "identity"}}, "key_scopes": ["identity"]}`,
		`{"allow": true, "status": 200, "fields": {"d": {"outcome": "mask", "mask": "redact", "key_scope": "identity"}}, "key_scopes": ["identity"]}`,
		`{"allow": true, "status": 200, "records": {"c-1": {"allow": false, "reasons": [{"code": "x", "message": ""}], "key_scopes": []}}}`,
		`{"allow": true, "status": 200, "records": {"c-1": {"allow": true, "reasons": [], "fields": {"e": {"outcome": "allow", "key_scope": "contact"}}, "key_scopes": {"contact"}}}}`,
		`{"allow": true, "status": 200, "records": {"c-1": {"allow": false, "reasons": []}}}`,
		`{"allow": true, "status": 200, "records": null}`,
		`{"allow": true, "status": 200, "records": {"c-1": null}}`,
		`{"allow": true, "status": 200, "records": {"c-1": {"allow": true, "key_scopes": ["x"]}}}`,
		`{"status": 200}`,
		`{"allow": true}`,
		`{"allow": "true", "status": 200}`,
		`{"allow": false, "status": 1000, "reasons": [{"code": "a", "message": ""}]}`,
		`{"allow": true, "status": 200.5}`,
		`{"allow": true, "status": "200"}`,
		`{"allow": true, "status": 403}`,
		`{"allow": false, "status": 200, "reasons": [{"code": "a", "message": ""}]}`,
		`{"allow": false, "status": 403}`,
		`{"allow": false, "status": 403, "reasons": [{"code": "", "message": ""}]}`,
		`{"allow": false, "status": 403, "reasons": [{"code": "a"}]}`,
		`{"allow": false, "status": 403, "reasons": [null]}`,
		`{"allow": false, "status": 403, "reasons": {{"code": "a", "message": "m"}, {"code": "a", "message": "l"}}}`,
		`{"allow": false, "status": 403, "reasons": "a"}`,
		`{"allow": true, "status": 200, "reasons": null, "fields": null, "key_scopes": null, "obligations": null, "headers": null, "flags": null}`,
		`{"allow": true, "status": 200, "fields": {"x": {"outcome": "maybe"}}}`,
		`{"allow": true, "status": 200, "fields": {"x": {"outcome": "mask"}}}`,
		`{"allow": true, "status": 200, "fields": {"x": {"outcome": "mask", "mask": "rot13"}}}`,
		`{"allow": true, "status": 200, "fields": {"x": {"outcome": "allow", "category": null}}}`,
		`{"allow": true, "status": 200, "fields": {"x": {"outcome": "allow", "key_scope": 7}}}`,
		`{"allow": true, "status": 200, "fields": {"x": null}}`,
		`{"allow": true, "status": 200, "fields": [1]}`,
		`{"allow": true, "status": 200, "fields": {1: {"outcome": "allow"}}}`,
		`{1: true, "allow": true, "status": 200}`,
		`{"allow": true, "status": 200, "key_scopes": ["contact"]}`,
		`{"allow": true, "status": 200, "key_scopes": [1]}`,
		`{"allow": true, "status": 200, "flags": {"b", "a"}}`,
		`{"allow": true, "status": 200, "flags": "a"}`,
		`{"allow": true, "status": 200, "headers": {"a": "b"}}`,
		`{"allow": true, "status": 200, "headers": {"a": 1}}`,
		`{"allow": true, "status": 200, "headers": ["a"]}`,
		`{"allow": true, "status": 200, "obligations": [{"type": "b", "params": {}}, {"type": "a", "params": {"x": [1, {"y": null}], 2: 3}}]}`,
		`{"allow": true, "status": 200, "obligations": {{"type": "a", "params": {"j": "x"}}, {"type": "a", "params": {"j": "y"}}}}`,
		`{"allow": true, "status": 200, "obligations": [{"type": "a"}]}`,
		`{"allow": true, "status": 200, "obligations": [{"type": "a", "params": null}]}`,
		`{"allow": true, "status": 200, "obligations": [{"type": "a", "params": [1]}]}`,
		`{"allow": true, "status": 200, "obligations": [{"params": {}}]}`,
		`{"allow": true, "status": 200, "obligations": [null]}`,
		// The schema's required members, present, absent and null.
		`{"allow": true, "status": 200, "reasons": [], "fields": {}, "key_scopes": [], "obligations": [], "headers": {}, "flags": []}`,
		`{"allow": true, "status": 200, "reasons": [], "fields": {}, "key_scopes": [], "headers": {}, "flags": []}`,
		`{"allow": true, "status": 200, "reasons": [], "fields": {}, "key_scopes": [], "obligations": null, "headers": {}, "flags": []}`,
		`{"allow": true, "status": 200, "reasons": [], "fields": {}, "key_scopes": [], "obligations": [], "headers": {}, "flags": [], "records": {"c-1": {"allow": true}}}`,
		`{"allow": true, "status": 200, "reasons": [], "fields": {}, "key_scopes": [], "obligations": [], "headers": {}, "flags": [], "records": {"c-1": {"allow": true, "reasons": []}}}`,
		`[1]`,
		`"decision"`,
		`null`,
	}
	// Every decision the default library makes for the scenarios and examples.
	raw, err := os.ReadFile("../verify/testdata/decisions.golden.json")
	if err != nil {
		t.Fatal(err)
	}
	var golden map[string]json.RawMessage
	if err := json.Unmarshal(raw, &golden); err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, len(golden))
	for n := range golden {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		values = append(values, string(golden[n]))
	}
	for i, s := range values {
		term, err := ast.ParseTerm(s)
		if err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		want, wantErr := fromJSONForm(term.Value)
		got, gotErr := FromValue(term.Value)
		if fmt.Sprint(wantErr) != fmt.Sprint(gotErr) {
			t.Errorf("%s:\n FromResult error %v\n FromValue error  %v", s, wantErr, gotErr)
			continue
		}
		if !reflect.DeepEqual(want, got) {
			t.Errorf("%s:\n FromResult %#v\n FromValue  %#v", s, want, got)
		}
	}
}

func fromJSONForm(v ast.Value) (*Decision, error) {
	js, err := ast.JSON(v)
	if err != nil {
		return nil, err
	}
	return FromResult(js)
}

// The direct decoder accepts the library's decisions (no conversion on the hot path).
func TestFromValueDecodesDirectly(t *testing.T) {
	raw, err := os.ReadFile("../verify/testdata/decisions.golden.json")
	if err != nil {
		t.Fatal(err)
	}
	var golden map[string]json.RawMessage
	if err := json.Unmarshal(raw, &golden); err != nil {
		t.Fatal(err)
	}
	for n, g := range golden {
		term, err := ast.ParseTerm(string(g))
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := fromValue(term.Value); !ok {
			t.Errorf("%s: not decoded directly", n)
		}
	}
}
