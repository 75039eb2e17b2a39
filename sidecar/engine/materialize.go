package engine

import (
	"context"
	"fmt"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
)

// A materialized rule is a rule of the policy that depends on data only, never on input
// (tables derived from the catalogue). OPA has no cross-query cache, so a decision that used
// it would recompute it on every evaluation. The engine evaluates it once when it compiles a
// policy and writes the value into the store at Path, where the policy looks it up first and
// falls back to the rule itself when the path is absent (as under plain `opa test`). Because
// the stored value is the rule's own result, both ways give the same decision.
type materialized struct {
	Rule string // e.g. data.consentry.minimization.tables
	Path string // store path, e.g. /consentry/generated/minimization_tables
}

// materializedRules are the default library's data-only tables. A policy that does not define a
// rule simply gets nothing written for it.
var materializedRules = []materialized{
	{Rule: "data.consentry.minimization.tables", Path: "/consentry/generated/minimization_tables"},
	{Rule: "data.consentry.fastpath.tables", Path: "/consentry/generated/fastpath_tables"},
	{Rule: "data.consentry.util.covering_table", Path: "/consentry/generated/covering_purposes"},
}

// materialize evaluates each materialized rule of the compiled policy (no input) and writes
// its value into store. An error in the rule is a compile error: the policy would fail the same
// way on every request.
func materialize(ctx context.Context, compiler *ast.Compiler, store storage.Store) error {
	for _, m := range materializedRules {
		ref := ast.MustParseRef(m.Rule)
		if len(compiler.GetRulesExact(ref)) == 0 {
			continue
		}
		pq, err := rego.New(rego.ParsedQuery(ast.NewBody(ast.NewExpr(ast.NewTerm(ref)))), rego.Compiler(compiler), rego.Store(store), rego.StrictBuiltinErrors(true)).PrepareForEval(ctx)
		if err != nil {
			return &CompileError{Errs: []string{fmt.Sprintf("materialize %s: %v", m.Rule, err)}}
		}
		rs, err := pq.Eval(ctx)
		if err != nil {
			return &CompileError{Errs: []string{fmt.Sprintf("materialize %s: %v", m.Rule, err)}}
		}
		if len(rs) == 0 || len(rs[0].Expressions) == 0 {
			continue
		}
		if err := writeValue(ctx, store, storage.MustParsePath(m.Path), rs[0].Expressions[0].Value); err != nil {
			return &CompileError{Errs: []string{fmt.Sprintf("materialize %s at %s: %v", m.Rule, m.Path, err)}}
		}
	}
	return nil
}

// writeValue writes v at path, creating missing parent objects.
func writeValue(ctx context.Context, store storage.Store, path storage.Path, v any) error {
	return storage.Txn(ctx, store, storage.WriteParams, func(txn storage.Transaction) error {
		for i := 1; i < len(path); i++ {
			if _, err := store.Read(ctx, txn, path[:i]); err != nil {
				if !storage.IsNotFound(err) {
					return err
				}
				if err := store.Write(ctx, txn, storage.AddOp, path[:i], map[string]any{}); err != nil {
					return err
				}
			}
		}
		return store.Write(ctx, txn, storage.AddOp, path, v)
	})
}
