package transform

import (
	"bytes"
	"sort"
	"strings"
	"sync"

	"github.com/consentry/consentry/sidecar/decision"
	"github.com/consentry/consentry/sidecar/routes"
	"github.com/consentry/consentry/vaultkeys"
)

// trie maps JSON member paths of a record to catalogue field names.
type trie struct {
	field    string // catalogue name of the field that ends here ("" if none)
	path     string // JSON path of this node inside a record ("" for the record itself)
	children map[string]*trie
	// pass marks a passthrough member: served without a decision (ciphertext withheld).
	pass bool
	// covered: this node is a field or lies inside one, so a member it does not list is
	// part of that field's value (which was allowed, or the walk would not be here).
	covered bool
	// drop: unlisted members of this node are removed (the route's unlisted is drop and the
	// node is not covered).
	drop bool
	// names (root only) are the member names a record's fields are made of, at any depth,
	// and the customer id field: an error document's member so named is no message (the
	// list rule, errRule.recordField, and the single-record drop rule, messageMember).
	names map[string]bool
}

func (t *trie) child(k string) *trie {
	if t == nil || t.children == nil {
		return nil
	}
	return t.children[k]
}

// node returns the node at path p under root, creating it and its parents.
func (t *trie) node(p string) *trie {
	n := t
	for _, seg := range splitPath(p) {
		if n.children == nil {
			n.children = map[string]*trie{}
		}
		c := n.children[seg]
		if c == nil {
			c = &trie{path: joinPath(n.path, seg)}
			n.children[seg] = c
		}
		n = c
	}
	return n
}

// buildTrie compiles a route's fields: the route's field_prefix is stripped to get the JSON
// path inside a record ("note.body" with prefix "note." is the member "body"). Passthrough
// members are leaves of their own (routes.compile keeps them apart from the fields).
func buildTrie(r *routes.Route) *trie {
	root := &trie{}
	for _, f := range r.Fields {
		p := f
		if r.FieldPrefix != "" {
			p = strings.TrimPrefix(f, r.FieldPrefix)
		}
		if n := root.node(p); n != root {
			n.field = f
		}
	}
	for _, p := range r.Passthrough {
		if n := root.node(p); n != root && n.field == "" {
			n.pass = true
		}
	}
	root.mark(false, r.Unlisted == routes.UnlistedDrop)
	root.names = map[string]bool{r.CustomerIDField: true}
	for _, f := range r.Fields {
		for seg := range strings.SplitSeq(strings.TrimPrefix(f, r.FieldPrefix), ".") {
			root.names[seg] = true
		}
		for seg := range strings.SplitSeq(f, ".") {
			root.names[seg] = true
		}
	}
	return root
}

// mark sets covered and drop on t's subtree.
func (t *trie) mark(covered, drop bool) {
	t.covered = covered || t.field != ""
	t.drop = drop && !t.covered
	for _, c := range t.children {
		c.mark(t.covered, drop)
	}
}

// trieCache holds compiled tries per route (routes are immutable once compiled).
type trieCache struct{ m sync.Map }

func (c *trieCache) get(r *routes.Route) *trie {
	if v, ok := c.m.Load(r); ok {
		return v.(*trie)
	}
	t := buildTrie(r)
	c.m.Store(r, t)
	return t
}

// pending is a value that needs its plaintext: decrypted, then served or masked.
type pending struct {
	span
	field string
	f     decision.Field
}

// report collects what one response did, by field name (never values).
type report struct {
	released, masked, dropped map[string]bool
	withheld                  map[string]bool
	scopes                    map[string]bool
}

func newReport() *report {
	return &report{released: map[string]bool{}, masked: map[string]bool{}, dropped: map[string]bool{},
		withheld: map[string]bool{}, scopes: map[string]bool{}}
}

func sortedKeys(m map[string]bool) []string {
	if len(m) == 0 {
		return nil
	}
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// record is the work on one record (an object the route's fields describe).
type record struct {
	fields  map[string]decision.Field
	edits   []edit
	pending []pending
}

// walker applies field outcomes to one record.
type walker struct {
	t   *Transformer
	b   []byte
	rep *report
	// message: the document is a non-2xx on a single-record route; on a drop route its
	// unlisted scalar members (title, detail, error) are kept as its message, unless named
	// like a part of a record (messageMember).
	message bool
}

var redactedJSON = []byte(`"` + Redacted + `"`)
var nullJSON = []byte("null")

// object walks the object at v with the trie node n.
func (w *walker) object(rec *record, v span, n *trie, depth int) error {
	return w.members(rec, v, depth, func(m member) (bool, error) {
		c := n.child(m.key)
		switch {
		case c != nil && !c.pass:
			return w.member(rec, m.val, c, depth+1)
		case c == nil && n.drop && !w.messageMember(n, m):
			// Unlisted on a drop route: not served (an error document keeps its message).
			w.rep.dropped[joinPath(n.path, m.key)] = true
			return true, nil
		}
		// A passthrough member, or one the route map does not list on a pass route: served
		// as it is, except ciphertext, which is never passed off as a value.
		if !mayHoldCiphertext(w.b[m.val.start:m.val.end]) {
			return false, nil
		}
		return false, w.scrub(rec, m.val, joinPath(n.path, m.key), depth+1)
	})
}

// members scans the object at v, asks drop of each member whether it goes, and adds the
// removals of those that go to rec's edits.
func (w *walker) members(rec *record, v span, depth int, drop func(m member) (bool, error)) error {
	var items []span
	var dropped []bool
	anyDrop := false
	_, err := scanObject(w.b, v.start, depth, func(m member) error {
		d, err := drop(m)
		if err != nil {
			return err
		}
		items = append(items, span{m.keyStart, m.val.end})
		dropped = append(dropped, d)
		anyDrop = anyDrop || d
		return nil
	})
	if err != nil {
		return err
	}
	if anyDrop {
		rec.edits = append(rec.edits, removals(items, dropped)...)
	}
	return nil
}

// member handles a value at trie node c; it reports whether the member must be removed.
func (w *walker) member(rec *record, v span, c *trie, depth int) (bool, error) {
	if c.field != "" {
		f, ok := rec.fields[c.field]
		if !ok {
			f = decision.Field{Outcome: decision.OutcomeDeny} // not decided: fail closed
		}
		switch f.Outcome {
		case decision.OutcomeAllow:
			if len(c.children) == 0 || !isContainer(w.b, v) {
				// The whole value is the field's: served only as what the decision released.
				return false, w.allow(rec, v, c.field, f, depth)
			}
			// A field whose members are listed fields too: the listed members decide
			// themselves below, and ciphertext in the others is scrubbed (object).
			w.rep.released[c.field] = true
		case decision.OutcomeMask:
			w.mask(rec, v, c.field, f)
			return false, nil // a masked value replaces the whole subtree
		default:
			w.rep.dropped[c.field] = true
			return true, nil
		}
	}
	if len(c.children) == 0 {
		return false, nil
	}
	if c.drop && isScalar(w.b, v) {
		// A string or number where the route map expects an object ("contact": "ann@..."):
		// no listed field's value, so unlisted.
		w.rep.dropped[c.path] = true
		return true, nil
	}
	return false, w.descend(rec, v, c, depth)
}

// messageMember reports whether an unlisted member m of node n is kept as an error
// document's message on a drop route: a scalar at the document's top whose name is no part
// of a record (an error echoing {"card_number": "4111..."} flattened carries the field as
// plainly as the record would).
func (w *walker) messageMember(n *trie, m member) bool {
	return w.message && n.path == "" && isScalar(w.b, m.val) && !n.names[m.key]
}

// isScalar reports whether v is a string, number, true or false (not null, an object or an
// array).
func isScalar(b []byte, v span) bool {
	switch kind(b, v) {
	case '{', '[', 'n':
		return false
	}
	return true
}

// descend walks into objects, and through arrays transparently (a path "addresses.street"
// applies to every element of an "addresses" array). A string where the route map expects an
// object (an intermediate node such as "contact") is no field's value: ciphertext there is
// scrubbed like ciphertext in an unlisted member.
func (w *walker) descend(rec *record, v span, c *trie, depth int) error {
	switch kind(w.b, v) {
	case '{':
		return w.object(rec, v, c, depth)
	case '[':
		_, err := scanArray(w.b, v.start, depth, func(e span) error {
			return w.descend(rec, e, c, depth+1)
		})
		return err
	}
	if c.drop && isScalar(w.b, v) {
		// A string or number where the route map expects an object, as an array element or
		// the whole document: unlisted, so not served.
		w.rep.dropped[pathName(c.path)] = true
		rec.edits = append(rec.edits, edit{span: v, repl: nullJSON})
		return nil
	}
	if kind(w.b, v) == '"' && mayHoldCiphertext(w.b[v.start:v.end]) {
		return w.scrub(rec, v, pathName(c.path), depth)
	}
	return nil
}

// allow serves an allowed value: plaintext as is, ciphertext decrypted (pending). An array or
// object value is served member by member under the same rule (arrays are transparent, as
// for paths): its ciphertext strings are decrypted with the field's key scope or withheld,
// never passed as they are. The field counts as released only for what was served as
// plaintext; a value that was all ciphertext and not decrypted is withheld, not released.
func (w *walker) allow(rec *record, v span, name string, f decision.Field, depth int) error {
	switch kind(w.b, v) {
	case '"':
	case '{', '[':
		if !mayHoldCiphertext(w.b[v.start:v.end]) {
			w.rep.released[name] = true // the common case: no ciphertext inside, one check
			return nil
		}
		if kind(w.b, v) == '[' {
			_, err := scanArray(w.b, v.start, depth, func(e span) error {
				return w.allow(rec, e, name, f, depth+1)
			})
			return err
		}
		_, err := scanObject(w.b, v.start, depth, func(m member) error {
			return w.allow(rec, m.val, name, f, depth+1)
		})
		return err
	default: // null, number, true, false
		w.rep.released[name] = true
		return nil
	}
	s, err := decodeString(w.b[v.start:v.end])
	if err != nil || s == "" {
		w.rep.released[name] = true
		return nil
	}
	if !vaultkeys.IsCiphertext(s) {
		// Stored in plaintext (not yet migrated, or a plaintext field): the decision allows
		// the field, so serving it leaks nothing.
		w.rep.released[name] = true
		return nil
	}
	if f.KeyScope == "" {
		// Ciphertext in a field the catalogue says is plaintext: there is no key to release,
		// and ciphertext is never passed off as the value.
		w.withhold(rec, v, name)
		return nil
	}
	rec.pending = append(rec.pending, pending{span: v, field: name, f: f})
	return nil
}

func isContainer(b []byte, v span) bool {
	k := kind(b, v)
	return k == '{' || k == '['
}

// pathName names a JSON path in the report: "$" for the record (or document) itself.
func pathName(p string) string {
	if p == "" {
		return "$"
	}
	return p
}

// mask serves a masked value; value-derived masks of ciphertext wait for the key (pending).
func (w *walker) mask(rec *record, v span, name string, f decision.Field) {
	if f.Mask == decision.MaskRedact || f.Mask == "" {
		w.rep.masked[name] = true
		rec.edits = append(rec.edits, edit{span: v, repl: redactedJSON})
		return
	}
	var plain string
	switch kind(w.b, v) {
	case 'n':
		w.rep.masked[name] = true
		return // null stays null: there is nothing to mask
	case '"':
		s, err := decodeString(w.b[v.start:v.end])
		if err != nil {
			w.withhold(rec, v, name)
			return
		}
		if vaultkeys.IsCiphertext(s) {
			if f.KeyScope == "" {
				w.withhold(rec, v, name)
				return
			}
			rec.pending = append(rec.pending, pending{span: v, field: name, f: f})
			return
		}
		plain = s
	case '{', '[':
		w.rep.masked[name] = true
		rec.edits = append(rec.edits, edit{span: v, repl: redactedJSON})
		return
	default: // number, true, false
		plain = string(w.b[v.start:v.end])
	}
	w.rep.masked[name] = true
	rec.edits = append(rec.edits, edit{span: v, repl: appendString(nil, w.t.maskValue(name, f.Mask, plain))})
}

func (w *walker) withhold(rec *record, v span, name string) {
	w.rep.withheld[name] = true
	rec.edits = append(rec.edits, edit{span: v, repl: nullJSON})
}

// needsKeys reports whether any pending value needs a key scope.
func (rec *record) needsKeys() bool { return len(rec.pending) > 0 }

// finish decrypts the pending values with ks (nil: no keys, every pending value is withheld).
func (w *walker) finish(rec *record, ks *vaultkeys.KeySet) {
	for _, p := range rec.pending {
		s, _ := decodeString(w.b[p.start:p.end])
		var pt []byte
		var err error
		if ks == nil {
			err = vaultkeys.ErrNotReleased
		} else {
			pt, err = ks.Decrypt(p.f.KeyScope, s)
		}
		if err != nil {
			w.t.log.Debug("field withheld", "field", p.field, "reason", vaultkeys.Reason(err))
			w.withhold(rec, p.span, p.field)
			continue
		}
		w.rep.scopes[p.f.KeyScope] = true
		if p.f.Outcome == decision.OutcomeAllow {
			w.rep.released[p.field] = true
			rec.edits = append(rec.edits, edit{span: p.span, repl: appendString(nil, string(pt))})
		} else {
			w.rep.masked[p.field] = true
			rec.edits = append(rec.edits, edit{span: p.span, repl: appendString(nil, w.t.maskValue(p.field, p.f.Mask, string(pt)))})
		}
		clear(pt)
	}
	rec.pending = nil
}

func joinPath(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

// mayHoldCiphertext is a cheap pre-check before scrub: transit ciphertext starts with
// "vault:v", possibly written with \u escapes.
func mayHoldCiphertext(b []byte) bool {
	return bytes.Contains(b, []byte("vault:v")) || bytes.Contains(b, []byte(`\u`))
}

// scrubOutside withholds every ciphertext string of the document at v except inside skip (the
// record array of a list response, which the records' rules handle): envelope members
// ("customer_email" next to "items") are not records, and ciphertext is never passed off as a
// value there either. The byte check keeps the common envelope ({"page":1,"total":20}) free.
func (w *walker) scrubOutside(v, skip span) ([]edit, error) {
	if !mayHoldCiphertext(w.b[v.start:skip.start]) && !mayHoldCiphertext(w.b[skip.end:v.end]) {
		return nil, nil
	}
	env := &record{}
	err := w.scrubSkip(env, v, skip, "", 0)
	return env.edits, err
}

func (w *walker) scrubSkip(rec *record, v, skip span, path string, depth int) error {
	if v == skip {
		return nil
	}
	switch kind(w.b, v) {
	case '{':
		_, err := scanObject(w.b, v.start, depth, func(m member) error {
			return w.scrubSkip(rec, m.val, skip, joinPath(path, m.key), depth+1)
		})
		return err
	case '[':
		_, err := scanArray(w.b, v.start, depth, func(e span) error {
			return w.scrubSkip(rec, e, skip, path, depth+1)
		})
		return err
	}
	return w.scrub(rec, v, pathName(path), depth)
}

// scrub withholds every ciphertext string under v (an unlisted member) as path.
func (w *walker) scrub(rec *record, v span, path string, depth int) error {
	switch kind(w.b, v) {
	case '"':
		if s, err := decodeString(w.b[v.start:v.end]); err == nil && vaultkeys.IsCiphertext(s) {
			w.withhold(rec, v, path)
		}
	case '{':
		_, err := scanObject(w.b, v.start, depth, func(m member) error {
			return w.scrub(rec, m.val, joinPath(path, m.key), depth+1)
		})
		return err
	case '[':
		_, err := scanArray(w.b, v.start, depth, func(e span) error {
			return w.scrub(rec, e, path, depth+1)
		})
		return err
	}
	return nil
}
