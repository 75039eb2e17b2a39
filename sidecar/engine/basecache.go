package engine

import (
	"context"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// frozenBase serves base documents (data.<root>...) to every evaluation of one prepared policy
// straight from the values read once after the policy was compiled and its tables materialized.
// Without it each evaluation opens its own cache, reads the store and records what it read.
// The store of a prepared policy is never written after that point (a new policy gets a new
// store), so the values cannot go stale. It is read-only and safe for concurrent evaluations:
// Put does nothing, and a miss (data.system, a root that does not exist) is read from the store
// as before.
type frozenBase struct {
	roots map[ast.String]ast.Value
}

var _ topdown.BaseCache = (*frozenBase)(nil)

// newFrozenBase reads every top-level document of store except data.system, which OPA never
// serves from a root read either.
func newFrozenBase(ctx context.Context, store storage.Store) (*frozenBase, error) {
	fb := &frozenBase{roots: map[ast.String]ast.Value{}}
	err := storage.Txn(ctx, store, storage.TransactionParams{}, func(txn storage.Transaction) error {
		v, err := store.Read(ctx, txn, storage.RootPath)
		if err != nil {
			return err
		}
		root, err := ast.InterfaceToValue(v)
		if err != nil {
			return err
		}
		obj, ok := root.(ast.Object)
		if !ok {
			return nil
		}
		obj.Foreach(func(k, v *ast.Term) {
			if s, ok := k.Value.(ast.String); ok && s != ast.String(ast.SystemDocumentKey) {
				fb.roots[s] = v.Value
			}
		})
		return nil
	})
	return fb, err
}

// Get returns the value at ref (data.<root>.<path...>), nil when it is not a frozen document.
func (fb *frozenBase) Get(ref ast.Ref) ast.Value {
	if len(ref) < 2 || !ref[0].Equal(ast.DefaultRootDocument) {
		return nil
	}
	k, ok := ref[1].Value.(ast.String)
	if !ok {
		return nil
	}
	v, ok := fb.roots[k]
	if !ok {
		return nil
	}
	if len(ref) == 2 {
		return v
	}
	found, err := v.Find(ref[2:])
	if err != nil {
		return nil
	}
	return found
}

// Put does nothing: the frozen documents are shared by concurrent evaluations.
func (*frozenBase) Put(ast.Ref, ast.Value) {}
