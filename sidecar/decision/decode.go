package decision

import (
	"encoding/json"
	"fmt"
	"sort"
)

func boolField(m map[string]any, key string, required bool) (bool, error) {
	v, ok := m[key]
	if !ok {
		if required {
			return false, fmt.Errorf("%w: %s missing", ErrInvalid, key)
		}
		return false, nil
	}
	b, ok := v.(bool)
	if !ok {
		return false, fmt.Errorf("%w: %s is %T, not a boolean", ErrInvalid, key, v)
	}
	return b, nil
}

func intField(m map[string]any, key string) (int, error) {
	v, ok := m[key]
	if !ok {
		return 0, fmt.Errorf("%w: %s missing", ErrInvalid, key)
	}
	switch n := v.(type) {
	case json.Number:
		i, err := n.Int64()
		if err != nil {
			return 0, fmt.Errorf("%w: %s: %v", ErrInvalid, key, err)
		}
		return int(i), nil
	case int:
		return n, nil
	case int64:
		return int(n), nil
	case float64:
		if n != float64(int(n)) {
			return 0, fmt.Errorf("%w: %s is not an integer", ErrInvalid, key)
		}
		return int(n), nil
	}
	return 0, fmt.Errorf("%w: %s is %T, not a number", ErrInvalid, key, v)
}

func str(v any, where string) (string, error) {
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("%w: %s is %T, not a string", ErrInvalid, where, v)
	}
	return s, nil
}

// list accepts arrays and sets (OPA returns sets as arrays in JSON form).
func list(v any, where string) ([]any, error) {
	if v == nil {
		return nil, nil
	}
	l, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("%w: %s is %T, not an array", ErrInvalid, where, v)
	}
	return l, nil
}

func stringList(v any, where string) ([]string, error) {
	l, err := list(v, where)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(l))
	for i, e := range l {
		s, err := str(e, fmt.Sprintf("%s[%d]", where, i))
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	sort.Strings(out)
	return out, nil
}

func object(v any, where string) (map[string]any, error) {
	if v == nil {
		return nil, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%w: %s is %T, not an object", ErrInvalid, where, v)
	}
	return m, nil
}

func stringMap(v any, where string) (map[string]string, error) {
	m, err := object(v, where)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(m))
	for k, e := range m {
		s, err := str(e, where+"."+k)
		if err != nil {
			return nil, err
		}
		out[k] = s
	}
	return out, nil
}

func reasons(v any, where string) ([]Reason, error) {
	l, err := list(v, where)
	if err != nil {
		return nil, err
	}
	out := make([]Reason, 0, len(l))
	for i, e := range l {
		at := fmt.Sprintf("%s[%d]", where, i)
		m, err := object(e, at)
		if err != nil {
			return nil, err
		}
		code, err := str(m["code"], at+".code")
		if err != nil {
			return nil, err
		}
		if code == "" {
			return nil, fmt.Errorf("%w: %s.code is empty", ErrInvalid, at)
		}
		msg, err := str(m["message"], at+".message")
		if err != nil {
			return nil, err
		}
		out = append(out, Reason{Code: code, Message: msg})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Code != out[j].Code {
			return out[i].Code < out[j].Code
		}
		return out[i].Message < out[j].Message
	})
	return out, nil
}

var maskKinds = map[string]bool{MaskLast4: true, MaskHMAC: true, MaskYear: true, MaskRedact: true}

func fields(v any, where string) (map[string]Field, error) {
	m, err := object(v, where)
	if err != nil {
		return nil, err
	}
	out := make(map[string]Field, len(m))
	for name, e := range m {
		at := where + "." + name
		fm, err := object(e, at)
		if err != nil {
			return nil, err
		}
		var f Field
		if f.Outcome, err = str(fm["outcome"], at+".outcome"); err != nil {
			return nil, err
		}
		switch f.Outcome {
		case OutcomeAllow, OutcomeDeny:
		case OutcomeMask:
			if f.Mask, err = str(fm["mask"], at+".mask"); err != nil {
				return nil, err
			}
			if !maskKinds[f.Mask] {
				return nil, fmt.Errorf("%w: %s.mask %q is not a mask kind", ErrInvalid, at, f.Mask)
			}
		default:
			return nil, fmt.Errorf("%w: %s.outcome %q is not allow, mask or deny", ErrInvalid, at, f.Outcome)
		}
		if c, ok := fm["category"]; ok {
			if f.Category, err = str(c, at+".category"); err != nil {
				return nil, err
			}
		}
		if k, ok := fm["key_scope"]; ok {
			if f.KeyScope, err = str(k, at+".key_scope"); err != nil {
				return nil, err
			}
		}
		out[name] = f
	}
	return out, nil
}

func obligations(v any) ([]Obligation, error) {
	l, err := list(v, "obligations")
	if err != nil {
		return nil, err
	}
	out := make([]Obligation, 0, len(l))
	for i, e := range l {
		at := fmt.Sprintf("obligations[%d]", i)
		m, err := object(e, at)
		if err != nil {
			return nil, err
		}
		t, err := str(m["type"], at+".type")
		if err != nil {
			return nil, err
		}
		p, err := object(m["params"], at+".params")
		if err != nil {
			return nil, err
		}
		out = append(out, Obligation{Type: t, Params: p})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Type < out[j].Type })
	return out, nil
}

func records(v any) (map[string]Record, error) {
	m, err := object(v, "records")
	if err != nil {
		return nil, err
	}
	out := make(map[string]Record, len(m))
	for id, e := range m {
		at := "records." + id
		rm, err := object(e, at)
		if err != nil {
			return nil, err
		}
		if err := requireMembers(rm, requiredRecordMembers, at+"."); err != nil {
			return nil, err
		}
		var r Record
		if r.Allow, err = boolField(rm, "allow", true); err != nil {
			return nil, fmt.Errorf("%s: %w", at, err)
		}
		if r.Reasons, err = reasons(rm["reasons"], at+".reasons"); err != nil {
			return nil, err
		}
		if !r.Allow && len(r.Reasons) == 0 {
			return nil, fmt.Errorf("%w: %s denied without a reason", ErrInvalid, at)
		}
		if r.Fields, err = fields(rm["fields"], at+".fields"); err != nil {
			return nil, err
		}
		if r.KeyScopes, err = stringList(rm["key_scopes"], at+".key_scopes"); err != nil {
			return nil, err
		}
		if err := checkScopes(r.KeyScopes, r.Fields, at+".key_scopes"); err != nil {
			return nil, err
		}
		if !r.Allow {
			r.KeyScopes = nil
			r.Fields = nil
		}
		out[id] = r
	}
	return out, nil
}
