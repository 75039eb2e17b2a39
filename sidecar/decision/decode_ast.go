package decision

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"

	"github.com/open-policy-agent/opa/v1/ast"
)

// FromValue decodes a policy result given as an OPA value, without first converting it to
// Go maps and slices. It is FromResult applied to the value's JSON form: the same Decision
// for a well-formed result, the same error for any other. A result that is well formed in the
// common way is decoded directly; anything the direct decoder does not accept (a malformed
// decision, or an unusual but valid shape) is converted and decoded by FromResult, so every
// error comes from FromResult and reads exactly as it does.
func FromValue(v ast.Value) (*Decision, error) {
	if d, ok := fromValue(v); ok {
		return d, nil
	}
	js, err := ast.JSON(v)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return FromResult(js)
}

// fromValue mirrors FromResult check for check; ok is false wherever FromResult would fail
// (and also where it is merely unsure, e.g. an object with a non-string key).
func fromValue(v ast.Value) (*Decision, bool) {
	m, ok := v.(ast.Object)
	if !ok || !stringKeys(m) || !hasMembers(m, requiredMembers) {
		return nil, false
	}
	d := &Decision{}
	if d.Allow, ok = astBool(m, "allow", true); !ok {
		return nil, false
	}
	status, ok := astInt(m, "status")
	if !ok || status < 100 || status > 599 {
		return nil, false
	}
	d.Status = status
	if (d.Allow && status != http.StatusOK) || (!d.Allow && status < 400) {
		return nil, false
	}
	if d.Reasons, ok = astReasons(get(m, "reasons")); !ok {
		return nil, false
	}
	if !d.Allow && len(d.Reasons) == 0 {
		return nil, false
	}
	if d.Fields, ok = astFields(get(m, "fields")); !ok {
		return nil, false
	}
	if d.KeyScopes, ok = astStringList(get(m, "key_scopes")); !ok {
		return nil, false
	}
	if checkScopes(d.KeyScopes, d.Fields, "") != nil {
		return nil, false
	}
	if d.Obligations, ok = astObligations(get(m, "obligations")); !ok {
		return nil, false
	}
	if d.Headers, ok = astStringMap(get(m, "headers")); !ok {
		return nil, false
	}
	if d.Flags, ok = astStringList(get(m, "flags")); !ok {
		return nil, false
	}
	if rv := m.Get(keyTerm("records")); rv != nil {
		if d.Records, ok = astRecords(rv.Value); !ok {
			return nil, false
		}
	}
	if !d.Allow {
		d.KeyScopes = []string{}
		for name, f := range d.Fields {
			d.Fields[name] = Field{Outcome: OutcomeDeny, Category: f.Category, KeyScope: f.KeyScope}
		}
	}
	return d, true
}

// keyTerms are the decision's member names as terms, built once (a lookup by a fresh term
// allocates).
var keyTerms = func() map[string]*ast.Term {
	m := map[string]*ast.Term{}
	for _, k := range []string{"allow", "category", "code", "fields", "flags", "headers", "key_scope", "key_scopes", "mask", "message", "obligations", "outcome", "params", "reasons", "records", "status", "type"} {
		m[k] = ast.StringTerm(k)
	}
	return m
}()

func keyTerm(k string) *ast.Term {
	if t, ok := keyTerms[k]; ok {
		return t
	}
	return ast.StringTerm(k)
}

// get returns the member k of m, nil when absent (FromResult reads an absent member as nil).
func get(m ast.Object, k string) ast.Value {
	if t := m.Get(keyTerm(k)); t != nil {
		return t.Value
	}
	return nil
}

// hasMembers mirrors requireMembers: every key present and not null.
func hasMembers(m ast.Object, keys []string) bool {
	for _, k := range keys {
		t := m.Get(keyTerm(k))
		if t == nil {
			return false
		}
		if _, null := t.Value.(ast.Null); null {
			return false
		}
	}
	return true
}

// stringKeys reports whether every key of m is a string (JSON conversion renders other keys
// as strings; such results are left to FromResult).
func stringKeys(m ast.Object) bool {
	return !m.Until(nonStringKey)
}

// nonStringKey is a package-level func so that stringKeys allocates no closure.
func nonStringKey(k, _ *ast.Term) bool {
	_, s := k.Value.(ast.String)
	return !s
}

func astBool(m ast.Object, key string, required bool) (bool, bool) {
	t := m.Get(keyTerm(key))
	if t == nil {
		return false, !required
	}
	b, ok := t.Value.(ast.Boolean)
	return bool(b), ok
}

func astInt(m ast.Object, key string) (int, bool) {
	t := m.Get(keyTerm(key))
	if t == nil {
		return 0, false
	}
	n, ok := t.Value.(ast.Number)
	if !ok {
		return 0, false
	}
	i, err := json.Number(n).Int64()
	return int(i), err == nil
}

func astStr(v ast.Value) (string, bool) {
	s, ok := v.(ast.String)
	return string(s), ok
}

// astList is list: null or absent is empty, arrays and sets (JSON arrays) are accepted.
func astList(v ast.Value) ([]ast.Value, bool) {
	switch x := v.(type) {
	case nil, ast.Null:
		return nil, true
	case *ast.Array:
		out := make([]ast.Value, x.Len())
		for i := range out {
			out[i] = x.Elem(i).Value
		}
		return out, true
	case ast.Set:
		out := make([]ast.Value, 0, x.Len())
		x.Foreach(func(t *ast.Term) { out = append(out, t.Value) })
		return out, true
	}
	return nil, false
}

// astObject is object: null or absent is nil, objects need string keys.
func astObject(v ast.Value) (ast.Object, bool) {
	switch x := v.(type) {
	case nil, ast.Null:
		return nil, true
	case ast.Object:
		return x, stringKeys(x)
	}
	return nil, false
}

func astStringList(v ast.Value) ([]string, bool) {
	l, ok := astList(v)
	if !ok {
		return nil, false
	}
	out := make([]string, 0, len(l))
	for _, e := range l {
		s, ok := astStr(e)
		if !ok {
			return nil, false
		}
		out = append(out, s)
	}
	sort.Strings(out)
	return out, true
}

func astStringMap(v ast.Value) (map[string]string, bool) {
	m, ok := astObject(v)
	if !ok {
		return nil, false
	}
	out := make(map[string]string, objLen(m))
	if m == nil {
		return out, true
	}
	m.Foreach(func(k, e *ast.Term) {
		s, isStr := astStr(e.Value)
		if !isStr {
			ok = false
			return
		}
		out[string(k.Value.(ast.String))] = s
	})
	return out, ok
}

func objLen(m ast.Object) int {
	if m == nil {
		return 0
	}
	return m.Len()
}

func astReasons(v ast.Value) ([]Reason, bool) {
	l, ok := astList(v)
	if !ok {
		return nil, false
	}
	out := make([]Reason, 0, len(l))
	for _, e := range l {
		m, ok := astObject(e)
		if !ok || m == nil {
			return nil, false
		}
		code, ok := astStr(get(m, "code"))
		if !ok || code == "" {
			return nil, false
		}
		msg, ok := astStr(get(m, "message"))
		if !ok {
			return nil, false
		}
		out = append(out, Reason{Code: code, Message: msg})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Code != out[j].Code {
			return out[i].Code < out[j].Code
		}
		return out[i].Message < out[j].Message
	})
	return out, true
}

func astFields(v ast.Value) (map[string]Field, bool) {
	m, ok := astObject(v)
	if !ok {
		return nil, false
	}
	out := make(map[string]Field, objLen(m))
	if m == nil {
		return out, true
	}
	m.Foreach(func(k, e *ast.Term) {
		if !ok {
			return
		}
		f, fok := astField(e.Value)
		if !fok {
			ok = false
			return
		}
		out[string(k.Value.(ast.String))] = f
	})
	return out, ok
}

func astField(v ast.Value) (Field, bool) {
	var f Field
	fm, ok := astObject(v)
	if !ok || fm == nil {
		return f, false
	}
	if f.Outcome, ok = astStr(get(fm, "outcome")); !ok {
		return f, false
	}
	switch f.Outcome {
	case OutcomeAllow, OutcomeDeny:
	case OutcomeMask:
		if f.Mask, ok = astStr(get(fm, "mask")); !ok || !maskKinds[f.Mask] {
			return f, false
		}
	default:
		return f, false
	}
	if c := fm.Get(keyTerm("category")); c != nil {
		if f.Category, ok = astStr(c.Value); !ok {
			return f, false
		}
	}
	if k := fm.Get(keyTerm("key_scope")); k != nil {
		if f.KeyScope, ok = astStr(k.Value); !ok {
			return f, false
		}
	}
	return f, true
}

func astObligations(v ast.Value) ([]Obligation, bool) {
	l, ok := astList(v)
	if !ok {
		return nil, false
	}
	out := make([]Obligation, 0, len(l))
	for _, e := range l {
		m, ok := astObject(e)
		if !ok || m == nil {
			return nil, false
		}
		t, ok := astStr(get(m, "type"))
		if !ok {
			return nil, false
		}
		pv := get(m, "params")
		pm, ok := astObject(pv)
		if !ok {
			return nil, false
		}
		var params map[string]any
		if pm != nil {
			js, err := ast.JSON(pm)
			if err != nil {
				return nil, false
			}
			if params, ok = js.(map[string]any); !ok {
				return nil, false
			}
		}
		out = append(out, Obligation{Type: t, Params: params})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Type < out[j].Type })
	return out, true
}

func astRecords(v ast.Value) (map[string]Record, bool) {
	m, ok := astObject(v)
	if !ok {
		return nil, false
	}
	out := make(map[string]Record, objLen(m))
	if m == nil {
		return out, true
	}
	m.Foreach(func(k, e *ast.Term) {
		if !ok {
			return
		}
		r, rok := astRecord(e.Value)
		if !rok {
			ok = false
			return
		}
		out[string(k.Value.(ast.String))] = r
	})
	return out, ok
}

func astRecord(v ast.Value) (Record, bool) {
	var r Record
	rm, ok := astObject(v)
	if !ok || rm == nil || !hasMembers(rm, requiredRecordMembers) {
		return r, false
	}
	if r.Allow, ok = astBool(rm, "allow", true); !ok {
		return r, false
	}
	if r.Reasons, ok = astReasons(get(rm, "reasons")); !ok {
		return r, false
	}
	if !r.Allow && len(r.Reasons) == 0 {
		return r, false
	}
	if r.Fields, ok = astFields(get(rm, "fields")); !ok {
		return r, false
	}
	if r.KeyScopes, ok = astStringList(get(rm, "key_scopes")); !ok {
		return r, false
	}
	if checkScopes(r.KeyScopes, r.Fields, "") != nil {
		return r, false
	}
	if !r.Allow {
		r.KeyScopes = nil
		r.Fields = nil
	}
	return r, true
}
