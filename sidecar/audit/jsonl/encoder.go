package jsonl

// The encoder's primitives: JSON values written byte for byte as encoding/json writes them.
// encode.go writes the decision-log documents with them.

import (
	"encoding/json"
	"errors"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/consentry/consentry/sidecar/internal/jsonstr"
)

type encoder struct {
	b    []byte
	err  error
	keys *[]string // scratch for sorting the keys of maps whose values hold no map
}

var keysPool = sync.Pool{New: func() any { k := make([]string, 0, 32); return &k }}

// sortedFlat returns m's keys sorted, in the encoder's scratch slice: only for maps whose
// values are written without sorting another map.
func sortedFlat[V any](w *encoder, m map[string]V) []string {
	keys := (*w.keys)[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	*w.keys = keys
	return keys
}

func (w *encoder) open()  { w.b = append(w.b, '{') }
func (w *encoder) close() { w.b = append(w.b, '}') }

// sep writes the comma before a member or element unless it is the first.
func (w *encoder) sep() {
	if c := w.b[len(w.b)-1]; c != '{' && c != '[' {
		w.b = append(w.b, ',')
	}
}

// key writes a constant member name (plain ASCII, no escaping needed).
func (w *encoder) key(k string) {
	w.sep()
	w.b = append(w.b, '"')
	w.b = append(w.b, k...)
	w.b = append(w.b, '"', ':')
}

// key2 writes a member name from data (escaped).
func (w *encoder) key2(k string) {
	w.sep()
	w.str(k)
	w.b = append(w.b, ':')
}

func (w *encoder) optStr(k, v string) {
	if v != "" {
		w.key(k)
		w.str(v)
	}
}

func (w *encoder) bool(v bool) {
	if v {
		w.b = append(w.b, "true"...)
	} else {
		w.b = append(w.b, "false"...)
	}
}

func (w *encoder) int(v int) { w.b = strconv.AppendInt(w.b, int64(v), 10) }

func (w *encoder) null() { w.b = append(w.b, "null"...) }

// strs writes a list (null when nil).
func (w *encoder) strs(v []string) {
	if v == nil {
		w.null()
		return
	}
	w.b = append(w.b, '[')
	for i, s := range v {
		if i > 0 {
			w.b = append(w.b, ',')
		}
		w.str(s)
	}
	w.b = append(w.b, ']')
}

func (w *encoder) optStrs(k string, v []string) {
	if len(v) > 0 {
		w.key(k)
		w.strs(v)
	}
}

// strMap writes a map (null when nil) in sorted key order.
func (w *encoder) strMap(m map[string]string) {
	if m == nil {
		w.null()
		return
	}
	w.open()
	for _, k := range sortedFlat(w, m) {
		w.key2(k)
		w.str(m[k])
	}
	w.close()
}

func (w *encoder) listMap(m map[string][]string) {
	if m == nil {
		w.null()
		return
	}
	w.open()
	for _, k := range sortedFlat(w, m) {
		w.key2(k)
		w.strs(m[k])
	}
	w.close()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// time writes t as encoding/json does (time.Time.MarshalJSON: RFC 3339 with nanoseconds, and
// the same range checks).
func (w *encoder) time(t time.Time) {
	w.b = append(w.b, '"')
	n0 := len(w.b)
	w.b = t.AppendFormat(w.b, time.RFC3339Nano)
	b := w.b
	num2 := func(b []byte) byte { return 10*(b[0]-'0') + (b[1] - '0') }
	switch {
	case len(b) < n0+5 || b[n0+4] != '-':
		w.fail(errors.New("Time.MarshalJSON: year outside of range [0,9999]"))
	case b[len(b)-1] != 'Z':
		c := b[len(b)-len("Z07:00")]
		if ('0' <= c && c <= '9') || num2(b[len(b)-len("07:00"):]) >= 24 {
			w.fail(errors.New("Time.MarshalJSON: timezone hour outside of range [0,23]"))
		}
	}
	w.b = append(w.b, '"')
}

func (w *encoder) optTime(k string, t *time.Time) {
	if t != nil {
		w.key(k)
		w.time(*t)
	}
}

func (w *encoder) fail(err error) {
	if w.err == nil {
		w.err = err
	}
}

// value writes a dynamically typed value (claims, obligation parameters): the JSON types
// directly, anything else through encoding/json.
func (w *encoder) value(v any) {
	switch x := v.(type) {
	case nil:
		w.null()
	case string:
		w.str(x)
	case bool:
		w.bool(x)
	case float64:
		w.float(x)
	case []any:
		if x == nil {
			w.null()
			return
		}
		w.b = append(w.b, '[')
		for i, e := range x {
			if i > 0 {
				w.b = append(w.b, ',')
			}
			w.value(e)
		}
		w.b = append(w.b, ']')
	case []string:
		w.strs(x)
	case map[string]any:
		w.anyMap(x)
	case map[string]string:
		w.strMap(x)
	default:
		raw, err := json.Marshal(x)
		if err != nil {
			w.fail(err)
			return
		}
		w.b = append(w.b, raw...)
	}
}

func (w *encoder) anyMap(m map[string]any) {
	if m == nil {
		w.null()
		return
	}
	w.open()
	for _, k := range sortedKeys(m) {
		w.key2(k)
		w.value(m[k])
	}
	w.close()
}

// float writes f as encoding/json does.
func (w *encoder) float(f float64) {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		w.fail(errors.New("json: unsupported value: " + strconv.FormatFloat(f, 'g', -1, 64)))
		return
	}
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	w.b = strconv.AppendFloat(w.b, f, format, -1, 64)
	if format == 'e' {
		// clean up e-09 to e-9
		n := len(w.b)
		if n >= 4 && w.b[n-4] == 'e' && w.b[n-3] == '-' && w.b[n-2] == '0' {
			w.b[n-2] = w.b[n-1]
			w.b = w.b[:n-1]
		}
	}
}

// str writes a JSON string exactly as encoding/json does with HTML escaping on (its default):
// <, > and & as \u003c..., control characters escaped, invalid UTF-8 as \ufffd, U+2028 and
// U+2029 escaped.
func (w *encoder) str(s string) {
	w.b = jsonstr.Append(w.b, s, &jsonstr.HTMLSafe, `\ufffd`)
}
