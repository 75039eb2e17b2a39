package engine

import (
	"context"
	"reflect"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

func TestFrozenBaseServesStoreValues(t *testing.T) {
	ctx := context.Background()
	store := newStore(map[string]any{"consentry": map[string]any{"catalog": map[string]any{"a": []any{"x", "y"}}}, "system": map[string]any{"v": 1}})
	fb, err := newFrozenBase(ctx, store)
	if err != nil {
		t.Fatal(err)
	}
	for ref, want := range map[string]ast.Value{
		"data.consentry":              ast.MustParseTerm(`{"catalog": {"a": ["x", "y"]}}`).Value,
		"data.consentry.catalog.a":    ast.MustParseTerm(`["x", "y"]`).Value,
		"data.consentry.catalog.a[1]": ast.String("y"),
		"data.consentry.catalog.b":    nil,
		"data.consentry.catalog.a[5]": nil,
		"data.system.v":               nil, // never frozen: read from the store as OPA does
		"data.nothing":                nil,
		"data":                        nil,
		"input.consentry":             nil,
	} {
		got := fb.Get(ast.MustParseRef(ref))
		if (got == nil) != (want == nil) || (got != nil && got.Compare(want) != 0) {
			t.Errorf("%s: got %v, want %v", ref, got, want)
		}
	}
	fb.Put(ast.MustParseRef("data.other"), ast.String("ignored"))
	if fb.Get(ast.MustParseRef("data.other")) != nil {
		t.Error("Put stored a value")
	}
}

// The shared base documents are an optimization only: decisions are the same without them.
func TestFrozenBaseSameDecision(t *testing.T) {
	ctx := context.Background()
	frozen, plain := loadLibrary(t), loadLibrary(t)
	plain.noFrozenBase = true
	in := exampleInput(t)
	for _, mfa := range []bool{false, true} {
		in.Subject.MFA = mfa
		a, err := frozen.Decide(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		b, err := plain.Decide(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(a.Decision, b.Decision) {
			t.Fatalf("frozen %+v\nstore %+v", a.Decision, b.Decision)
		}
	}
}
