package pipeline

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"math"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/consentry/consentry/sidecar/input"
)

// The decision cache key is a SHA-256 over a compact binary form of the input: every field in
// a fixed order, strings length-prefixed, optional parts and slices tagged (nil, empty and
// absent stay distinct), maps in sorted key order. The form is injective for the input's
// structure, so two inputs share a key only if they are equal except for what the key leaves
// out on purpose (request id, decision time, source port, volatile headers). It replaces a
// JSON encoding of the whole input, which cost more than the rest of a cached check.
//
// TestCacheKeyCoversEveryField walks input.Input by reflection and fails when a field is
// added that this encoder does not cover.

// keyWriter accumulates the binary form.
type keyWriter struct {
	b    []byte
	keys []string // scratch for sorting map keys
}

var keyWriters = sync.Pool{New: func() any { return &keyWriter{b: make([]byte, 0, 1024), keys: make([]string, 0, 16)} }}

const maxPooledKeyBuffer = 64 << 10

// Tags separate optional values and the dynamic types of claim values.
const (
	tagNil byte = iota
	tagSet
	tagFalse
	tagTrue
	tagString
	tagNumber
	tagFloat
	tagInt
	tagList
	tagObject
	tagStrings
	tagStringMap
	tagJSON
)

func (w *keyWriter) byte(t byte) { w.b = append(w.b, t) }

func (w *keyWriter) uvarint(n uint64) { w.b = binary.AppendUvarint(w.b, n) }

func (w *keyWriter) str(s string) {
	w.uvarint(uint64(len(s)))
	w.b = append(w.b, s...)
}

func (w *keyWriter) bool(v bool) {
	if v {
		w.byte(tagTrue)
	} else {
		w.byte(tagFalse)
	}
}

func (w *keyWriter) strs(v []string) {
	if v == nil {
		w.byte(tagNil)
		return
	}
	w.byte(tagSet)
	w.uvarint(uint64(len(v)))
	for _, s := range v {
		w.str(s)
	}
}

// sortedKeys fills the scratch slice with m's keys, sorted; callers use it before recursing.
func sortedMapKeys[V any](w *keyWriter, m map[string]V) []string {
	keys := w.keys[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	w.keys = keys[:0]
	return keys
}

func (w *keyWriter) strMap(m map[string]string) {
	if m == nil {
		w.byte(tagNil)
		return
	}
	w.byte(tagSet)
	w.uvarint(uint64(len(m)))
	for _, k := range sortedMapKeys(w, m) {
		w.str(k)
		w.str(m[k])
	}
}

// listMap writes a map of string lists, leaving out the names skip reports.
func (w *keyWriter) listMap(m map[string][]string, skip map[string]bool) {
	if m == nil {
		w.byte(tagNil)
		return
	}
	w.byte(tagSet)
	keys := sortedMapKeys(w, m)
	n := 0
	for _, k := range keys {
		if !skip[k] {
			n++
		}
	}
	w.uvarint(uint64(n))
	for _, k := range keys {
		if !skip[k] {
			w.str(k)
			w.strs(m[k])
		}
	}
}

// time writes an instant and its zone offset (both shape the input's JSON form).
func (w *keyWriter) time(t *time.Time) {
	if t == nil {
		w.byte(tagNil)
		return
	}
	w.byte(tagSet)
	_, off := t.Zone()
	w.b = binary.AppendVarint(w.b, t.Unix())
	w.uvarint(uint64(t.Nanosecond()))
	w.b = binary.AppendVarint(w.b, int64(off))
}

// any writes a claim value: the JSON types, plus a JSON fallback for anything else.
func (w *keyWriter) any(v any) bool {
	switch x := v.(type) {
	case nil:
		w.byte(tagNil)
	case bool:
		w.bool(x)
	case string:
		w.byte(tagString)
		w.str(x)
	case json.Number:
		w.byte(tagNumber)
		w.str(string(x))
	case float64:
		w.byte(tagFloat)
		w.b = binary.BigEndian.AppendUint64(w.b, math.Float64bits(x))
	case int:
		w.byte(tagInt)
		w.b = binary.AppendVarint(w.b, int64(x))
	case int64:
		w.byte(tagInt)
		w.b = binary.AppendVarint(w.b, x)
	case []string:
		w.byte(tagStrings)
		w.strs(x)
	case []any:
		w.byte(tagList)
		w.uvarint(uint64(len(x)))
		for _, e := range x {
			if !w.any(e) {
				return false
			}
		}
	case map[string]string:
		w.byte(tagStringMap)
		w.strMap(x)
	case map[string]any:
		w.byte(tagObject)
		if !w.anyMap(x) {
			return false
		}
	default:
		raw, err := json.Marshal(x)
		if err != nil {
			return false
		}
		w.byte(tagJSON)
		w.str(string(raw))
	}
	return true
}

func (w *keyWriter) anyMap(m map[string]any) bool {
	if m == nil {
		w.byte(tagNil)
		return true
	}
	w.byte(tagSet)
	w.uvarint(uint64(len(m)))
	// Nested maps reuse the scratch slice: take a private copy of this level's keys.
	keys := slices.Clone(sortedMapKeys(w, m))
	for _, k := range keys {
		w.str(k)
		if !w.any(m[k]) {
			return false
		}
	}
	return true
}

func (w *keyWriter) enrichment(e *input.Enrichment) {
	if e.Consents == nil {
		w.byte(tagNil)
	} else {
		w.byte(tagSet)
		w.uvarint(uint64(len(e.Consents)))
		for i := range e.Consents {
			c := &e.Consents[i]
			w.str(c.Purpose)
			w.str(c.Status)
			w.str(c.NoticeVersion)
			w.str(c.NoticeHash)
			w.str(c.Channel)
			w.str(c.CapturedBy)
			w.time(c.GrantedAt)
			w.time(c.ExpiresAt)
			w.time(c.WithdrawnAt)
			w.str(c.EventID)
		}
	}
	if c := e.Case; c == nil {
		w.byte(tagNil)
	} else {
		w.byte(tagSet)
		w.str(c.ID)
		w.str(c.CustomerID)
		w.strs(c.Assignees)
		w.str(c.Status)
		w.str(c.Purpose)
	}
	if a := e.Agreement; a == nil {
		w.byte(tagNil)
	} else {
		w.byte(tagSet)
		w.str(a.ProcessorID)
		w.strs(a.Purposes)
		w.strs(a.Categories)
		w.time(a.ValidFrom)
		w.time(a.ValidUntil)
	}
	if c := e.Customer; c == nil {
		w.byte(tagNil)
	} else {
		w.byte(tagSet)
		w.str(c.ID)
		w.time(c.RetentionUntil)
		w.bool(c.Erased)
		w.time(c.ErasedAt)
	}
	w.strs(e.Errors)
}

// input writes everything in the input the decision can depend on: all of it except the
// request id, the decision time, the source port and the volatile headers.
func (w *keyWriter) input(in *input.Input, volatile map[string]bool) bool {
	r := &in.Request
	w.str(r.FrontDoor)
	w.str(r.Method)
	w.str(r.Path)
	w.str(r.Route)
	w.strMap(r.Params)
	w.listMap(r.Headers, volatile)
	w.listMap(r.Query, nil)
	w.str(r.Host)
	addr := r.Source.Address
	if host, _, err := net.SplitHostPort(addr); err == nil {
		addr = host
	}
	w.str(addr)
	w.str(r.Source.Principal)

	s := &in.Subject
	w.str(s.ID)
	w.str(s.Type)
	w.strs(s.Roles)
	w.str(s.ProcessorID)
	w.str(s.CustomerID)
	w.bool(s.MFA)
	w.str(s.AuthMethod)
	if !w.anyMap(s.Claims) {
		return false
	}

	w.str(in.Purpose)
	w.str(in.CaseID)
	if in.BreakGlass == nil {
		w.byte(tagNil)
	} else {
		w.byte(tagSet)
		w.str(in.BreakGlass.Justification)
	}
	w.str(in.Action)
	w.str(in.Resource.Type)
	w.str(in.Resource.CustomerID)
	w.strs(in.Resource.Fields)
	w.enrichment(&in.Enrichment)
	w.str(in.Phase)
	if in.Records == nil {
		w.byte(tagNil)
	} else {
		w.byte(tagSet)
		w.uvarint(uint64(len(in.Records)))
		for i := range in.Records {
			w.str(in.Records[i].CustomerID)
			w.enrichment(&in.Records[i].Enrichment)
		}
	}
	return true
}

// key hashes the revision and the input without its per-request parts.
func (c *decisionCache) key(revision string, in *input.Input) ([32]byte, bool) {
	w := keyWriters.Get().(*keyWriter)
	defer func() {
		if cap(w.b) <= maxPooledKeyBuffer {
			keyWriters.Put(w)
		}
	}()
	w.b = w.b[:0]
	w.str(revision)
	if !w.input(in, c.volatile) {
		return [32]byte{}, false
	}
	return sha256.Sum256(w.b), true
}
