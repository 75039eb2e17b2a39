package input

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

// FuzzToValueMatchesJSON: for any input document the JSON decoder accepts, the hand-written
// conversion the engine evaluates equals the documented JSON form (what the schema and the
// decision log say), up to one documented equivalence: an absent list (JSON null) is the empty
// list to policies. Replay decodes logged inputs into Input and converts them the same way, so
// the equivalence cannot make a replayed decision differ from the live one.
func FuzzToValueMatchesJSON(f *testing.F) {
	if raw, err := os.ReadFile("../../policies/examples/support-read.json"); err == nil {
		f.Add(raw)
	}
	full, _ := json.Marshal(full())
	f.Add(full)
	f.Add([]byte(`{"subject":{"claims":{"n":1e400}},"request":{"headers":{"a":[]}}}`))
	f.Add([]byte(`{"records":[{"customer_id":"c","enrichment":{"consents":null}}],"enrichment":{"errors":["x"]}}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		var in Input
		if err := json.Unmarshal(raw, &in); err != nil {
			return
		}
		js, err := json.Marshal(&in)
		if err != nil {
			return // e.g. a claim that is not representable; the pipeline never builds one
		}
		want, err := ast.ValueFromReader(bytesReader(js))
		if err != nil {
			t.Fatalf("JSON form does not parse: %v", err)
		}
		want = nullListsToEmpty(want)
		if got := in.ToValue(); got.Compare(want) != 0 {
			t.Fatalf("ToValue differs from JSON form:\n got %v\nwant %v", got, want)
		}
	})
}

// nullListsToEmpty replaces null members of objects by [] (nil slices encode as null).
func nullListsToEmpty(v ast.Value) ast.Value {
	switch x := v.(type) {
	case ast.Object:
		out := ast.NewObject()
		x.Foreach(func(k, val *ast.Term) {
			if _, isNull := val.Value.(ast.Null); isNull {
				out.Insert(k, ast.ArrayTerm())
				return
			}
			out.Insert(k, ast.NewTerm(nullListsToEmpty(val.Value)))
		})
		return out
	case *ast.Array:
		terms := make([]*ast.Term, 0, x.Len())
		x.Foreach(func(t *ast.Term) { terms = append(terms, ast.NewTerm(nullListsToEmpty(t.Value))) })
		return ast.NewArray(terms...)
	}
	return v
}
