package vaultkeys

import (
	"encoding/json"
	"fmt"
)

// Locating dotted field paths in a decoded JSON record, for EncryptJSONLines.

// loc is one place a field's value sits: member key of obj.
type loc struct {
	obj map[string]any
	key string
}

func (l loc) get() any  { return l.obj[l.key] }
func (l loc) set(v any) { l.obj[l.key] = v }
func (l loc) remove()   { delete(l.obj, l.key) }

// locate finds every member of rec that a dotted path names: the literal member
// ("contact.email") and every nesting of it ("contact" -> "email", and for longer paths each
// split in between). More than one is ambiguous. Arrays on the way are descended into, as the
// read path applies a path to every element of an array; inArray reports a value found so.
func locate(rec map[string]any, path string, under bool, out []loc) (locs []loc, inArray bool) {
	if _, ok := rec[path]; ok {
		out = append(out, loc{rec, path})
		inArray = inArray || under
	}
	for i := 0; i < len(path); i++ {
		if path[i] != '.' {
			continue
		}
		var in bool
		out, in = locateIn(rec[path[:i]], path[i+1:], under, out)
		inArray = inArray || in
	}
	return out, inArray
}

func locateIn(v any, rest string, under bool, out []loc) ([]loc, bool) {
	switch v := v.(type) {
	case map[string]any:
		return locate(v, rest, under, out)
	case []any:
		inArray := false
		for _, e := range v {
			var in bool
			out, in = locateIn(e, rest, true, out)
			inArray = inArray || in
		}
		return out, inArray
	}
	return out, false
}

// customerIDOf reads the customer id at the dotted field, or says why the record has none.
func customerIDOf(rec map[string]any, field string) (id, refusal string) {
	locs, inArray := locate(rec, field, false, nil)
	switch {
	case len(locs) == 0:
		return "", fmt.Sprintf("no customer id in field %q", field)
	case len(locs) > 1 || inArray:
		return "", fmt.Sprintf("customer id field %q is ambiguous (found %d times)", field, len(locs))
	}
	switch v := locs[0].get().(type) {
	case string:
		if v != "" {
			return v, ""
		}
	case json.Number:
		return v.String(), ""
	}
	return "", fmt.Sprintf("customer id field %q holds no string or number", field)
}
