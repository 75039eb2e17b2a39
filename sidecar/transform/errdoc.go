package transform

import (
	"slices"
	"strings"

	"github.com/consentry/consentry/sidecar/routes"
)

// Error documents on per-record (list) routes.
//
// On a route whose records are decided one by one (the filter_records obligation), the
// request-level decision only says the caller may list for the purpose: it is no customer's
// decision. A non-2xx document there (a 409 problem+json echoing the conflicting customer, a
// 500 with debugging context) has no per-record decision, so nothing in it may be served as a
// customer's data. Minimizing it with the page's decision would serve a customer who withdrew
// consent to marketing, and records nested under a member the route map does not list would
// pass whole. The rule keeps what an error message needs and nothing that can be a record:
//
//   - the records at the record_path, if the document has them, are filtered per record like
//     a success (list), and the objects leading to them are kept under this same rule;
//   - a member whose value is a scalar (string, number, true, false, null) and whose name is
//     neither a field of the route map's records (id, name, contact, ...), nor a part of one
//     (email, card_number), nor the route's customer_id_field is kept: type, title, status, detail, instance, error, code.
//     Ciphertext there is withheld, as everywhere;
//   - every other member is dropped: any object or array (it could hold records, whatever its
//     name), and any member named like a record field (the page's decision is not that
//     customer's). A document that is an array is emptied.
//
// What is dropped is logged in fields.dropped: the catalogue fields the route map finds in the
// member, or the member's JSON path when it holds none ("records", "$" for the document).

// noSkip is a span no value has: an error document without records skips nothing.
var noSkip = span{-1, -1}

// errRule is the rule for one error document: the route's compiled fields and the span of
// its records (noSkip when it has none).
type errRule struct {
	root *trie
	skip span
}

// recordField reports whether a member name is one of a record's (a catalogue field, an object
// holding some, or the customer id), or names a part of one at any depth: an error that
// echoes a flattened value ({"email": "..."} for contact.email) carries it as plainly. The
// trie keeps those names (trie.names), which the drop rule for single records reads too.
func (r *errRule) recordField(key string) bool {
	return r.root.child(key) != nil || r.root.names[key]
}

// errorDocument applies the rule to a non-2xx document without records on a per-record route.
func (t *Transformer) errorDocument(b []byte, route *routes.Route, rep *report) ([]byte, string, error) {
	doc, err := document(b)
	if err != nil {
		return nil, ReasonInvalidJSON, err
	}
	edits, err := (&walker{t: t, b: b, rep: rep}).errorEnvelope(doc, noSkip, route)
	if err != nil {
		return nil, ReasonInvalidJSON, err
	}
	return apply(b, edits), "", nil
}

// envelope returns the edits of a list response's members outside its records (arr): a
// success's envelope ({"page":1,"total":20}) only loses ciphertext (on a drop route, also the
// members its envelope does not list), an error's keeps only its message.
func (w *walker) envelope(doc, arr span, errDoc bool, route *routes.Route) ([]edit, error) {
	switch {
	case errDoc:
		return w.errorEnvelope(doc, arr, route)
	case route.Unlisted == routes.UnlistedDrop:
		env := &record{}
		if err := w.listedEnvelope(env, doc, arr, route.Envelope, "", 0); err != nil {
			return nil, err
		}
		slices.SortFunc(env.edits, func(a, b edit) int { return a.start - b.start })
		return env.edits, nil
	}
	return w.scrubOutside(doc, arr)
}

// listedEnvelope keeps, of the object at v, the members leading to the records (skip) and those
// the route's envelope lists (ciphertext in them withheld); it removes the others.
func (w *walker) listedEnvelope(rec *record, v, skip span, listed []string, path string, depth int) error {
	if kind(w.b, v) != '{' {
		return nil // the records themselves (record_path "" is no envelope)
	}
	return w.members(rec, v, depth, func(m member) (bool, error) {
		p := joinPath(path, m.key)
		switch {
		case m.val == skip:
			return false, nil
		case m.val.start <= skip.start && skip.end <= m.val.end:
			return false, w.listedEnvelope(rec, m.val, skip, listed, p, depth+1)
		case slices.Contains(listed, p):
			return false, w.scrub(rec, m.val, p, depth+1)
		case kind(w.b, m.val) == '{' && slices.ContainsFunc(listed, func(l string) bool { return strings.HasPrefix(l, p+".") }):
			// An object holding a listed member (meta for meta.cursor): kept, with only that.
			return false, w.listedEnvelope(rec, m.val, skip, listed, p, depth+1)
		}
		w.rep.dropped[p] = true
		return true, nil
	})
}

// errorEnvelope returns the sorted edits that apply the rule to the document at v, except
// inside skip (the record array, which the records' decisions handle).
func (w *walker) errorEnvelope(v, skip span, route *routes.Route) ([]edit, error) {
	env := &record{}
	r := &errRule{root: w.t.tries.get(route), skip: skip}
	if err := w.errorValue(env, v, r, "", 0); err != nil {
		return nil, err
	}
	// Removals are appended after the edits of kept members they follow: sort them.
	slices.SortFunc(env.edits, func(a, b edit) int { return a.start - b.start })
	return env.edits, nil
}

func (w *walker) errorValue(rec *record, v span, r *errRule, path string, depth int) error {
	if v == r.skip {
		// The document is the record array itself (record_path ""): the caller filters it
		// per record; removing it here too made overlapping edits.
		return nil
	}
	switch kind(w.b, v) {
	case '{':
		return w.members(rec, v, depth, func(m member) (bool, error) {
			p := joinPath(path, m.key)
			switch {
			case m.val == r.skip:
				// The records: filtered per record by the caller.
				return false, nil
			case r.skip.start >= 0 && m.val.start <= r.skip.start && r.skip.end <= m.val.end:
				// The object leading to the records (a record_path of several members).
				return false, w.errorValue(rec, m.val, r, p, depth+1)
			case !isContainer(w.b, m.val) && !r.recordField(m.key):
				// A message member (title, detail, status): kept, but never ciphertext.
				return false, w.scrub(rec, m.val, p, depth+1)
			}
			return true, w.droppedAs(m.val, r.root.child(m.key), p, depth+1)
		})
	case '[':
		// Only the document itself can be an array here (a record_path runs through objects):
		// its elements may be records, and none has a decision.
		var items []span
		if _, err := scanArray(w.b, v.start, depth, func(e span) error {
			items = append(items, e)
			return nil
		}); err != nil {
			return err
		}
		if len(items) > 0 {
			w.rep.dropped[pathName(path)] = true
			rec.edits = append(rec.edits, edit{span: span{items[0].start, items[len(items)-1].end}})
		}
		return nil
	default:
		// A document that is a bare string or number: a message.
		return w.scrub(rec, v, pathName(path), depth)
	}
}

// droppedAs logs a dropped member: the catalogue fields that trie node n finds in v (arrays
// are transparent, as for paths), or path when it finds none.
func (w *walker) droppedAs(v span, n *trie, path string, depth int) error {
	found, err := w.fieldsIn(v, n, depth)
	if err == nil && !found {
		w.rep.dropped[path] = true
	}
	return err
}

func (w *walker) fieldsIn(v span, n *trie, depth int) (bool, error) {
	if n == nil {
		return false, nil
	}
	if n.field != "" {
		w.rep.dropped[n.field] = true
		return true, nil
	}
	found := false
	var err error
	switch kind(w.b, v) {
	case '{':
		_, err = scanObject(w.b, v.start, depth, func(m member) error {
			f, err := w.fieldsIn(m.val, n.child(m.key), depth+1)
			found = found || f
			return err
		})
	case '[':
		_, err = scanArray(w.b, v.start, depth, func(e span) error {
			f, err := w.fieldsIn(e, n, depth+1)
			found = found || f
			return err
		})
	}
	return found, err
}
