package jsonl

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/audit"
	"github.com/consentry/consentry/sidecar/decision"
	"github.com/consentry/consentry/sidecar/input"
)

// randomFill populates a value by reflection: pointers nil or set, slices and maps nil, empty
// or filled, strings from a set that exercises escaping, times in several zones.
type randomFill struct{ r *rand.Rand }

var (
	timeType = reflect.TypeOf(time.Time{})
	tricky   = []string{"", "a", "emp-7", "<script>&", "quote\"back\\slash", "ctl\x00\x01\b\f\n\r\t\x1f\x7f", "bad\xff\xfeutf8",
		"line\u2028para\u2029", "ünïcödé 日本", "/api/customers/{customer_id}", "x-consentry-decision-id", "\xe2\x80"}
	zones = []*time.Location{time.UTC, time.FixedZone("CET", 3600), time.FixedZone("odd", -(5*3600 + 30*60 + 15))}
)

func (f randomFill) str() string { return tricky[f.r.IntN(len(tricky))] }

func (f randomFill) any(depth int) any {
	switch n := f.r.IntN(9); {
	case n == 0:
		return nil
	case n == 1:
		return f.r.IntN(2) == 0
	case n == 2:
		return []float64{0, 1, -1.5, 1e21, 1e-7, 123456789, 1.7976931348623157e308, 5e-324}[f.r.IntN(8)]
	case n == 3 && depth < 3:
		l := make([]any, f.r.IntN(3))
		for i := range l {
			l[i] = f.any(depth + 1)
		}
		return l
	case n == 4 && depth < 3:
		m := map[string]any{}
		for range f.r.IntN(3) {
			m[f.str()] = f.any(depth + 1)
		}
		return m
	case n == 5:
		return []string{f.str()}
	case n == 6:
		return json.Number("12.5")
	case n == 7:
		return struct{ A string }{f.str()}
	default:
		return f.str()
	}
}

func (f randomFill) fill(v reflect.Value) {
	if v.Type() == timeType {
		t := time.Date(1990+f.r.IntN(60), time.Month(1+f.r.IntN(12)), 1+f.r.IntN(28), f.r.IntN(24), f.r.IntN(60), f.r.IntN(60), []int{0, 1, 120000000, 999999999}[f.r.IntN(4)], time.UTC)
		v.Set(reflect.ValueOf(t.In(zones[f.r.IntN(len(zones))])))
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(f.str())
	case reflect.Bool:
		v.SetBool(f.r.IntN(2) == 0)
	case reflect.Int, reflect.Int64:
		v.SetInt([]int64{0, 1, -1, 200, 451, 1 << 40}[f.r.IntN(6)])
	case reflect.Pointer:
		if f.r.IntN(4) > 0 {
			v.Set(reflect.New(v.Type().Elem()))
			f.fill(v.Elem())
		}
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			f.fill(v.Field(i))
		}
	case reflect.Slice:
		switch f.r.IntN(4) {
		case 0: // nil
		case 1:
			v.Set(reflect.MakeSlice(v.Type(), 0, 0))
		default:
			s := reflect.MakeSlice(v.Type(), 1+f.r.IntN(3), 3)
			for i := 0; i < s.Len(); i++ {
				f.fill(s.Index(i))
			}
			v.Set(s)
		}
	case reflect.Map:
		switch f.r.IntN(4) {
		case 0: // nil
		case 1:
			v.Set(reflect.MakeMap(v.Type()))
		default:
			m := reflect.MakeMap(v.Type())
			for range 1 + f.r.IntN(4) {
				k := reflect.New(v.Type().Key()).Elem()
				f.fill(k)
				e := reflect.New(v.Type().Elem()).Elem()
				f.fill(e)
				m.SetMapIndex(k, e)
			}
			v.Set(m)
		}
	case reflect.Interface:
		if a := f.any(0); a != nil {
			v.Set(reflect.ValueOf(a))
		}
	default:
		panic("unhandled kind " + v.Kind().String())
	}
}

func encodingJSON(e *audit.Entry) ([]byte, error) {
	var buf bytes.Buffer
	err := json.NewEncoder(&buf).Encode(EventOf(e))
	return buf.Bytes(), err
}

// TestEncoderMatchesEncodingJSON compares the hand-written encoder with encoding/json on
// randomly filled entries (every field of the entry, input and decision types reached by
// reflection, so a field added there and not here fails).
func TestEncoderMatchesEncodingJSON(t *testing.T) {
	f := randomFill{rand.New(rand.NewPCG(1, 2))}
	n := 3000
	if testing.Short() {
		n = 300
	}
	for i := 0; i < n; i++ {
		var e audit.Entry
		f.fill(reflect.ValueOf(&e).Elem())
		want, werr := encodingJSON(&e)
		got, gerr := appendEntry(nil, &e)
		if (werr != nil) != (gerr != nil) {
			t.Fatalf("entry %d: encoding/json error %v, ours %v", i, werr, gerr)
		}
		if werr == nil && !bytes.Equal(got, want) {
			t.Fatalf("entry %d differs:\nours: %s\njson: %s", i, got, want)
		}
	}
}

func TestEncoderTimeRange(t *testing.T) {
	for _, ts := range []time.Time{time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2020, 1, 1, 0, 0, 0, 0, time.FixedZone("x", 24*3600))} {
		in := &input.Input{Enrichment: input.Enrichment{Customer: &input.CustomerState{ErasedAt: &ts}}}
		e := &audit.Entry{Input: in, Decision: decision.Deny(403, "c", "m")}
		_, werr := encodingJSON(e)
		_, gerr := appendEntry(nil, e)
		if werr == nil || gerr == nil {
			t.Errorf("%v: encoding/json error %v, ours %v", ts, werr, gerr)
		}
	}
}

// TestRandomFillReachesEveryField makes sure the comparison above is not vacuous: a filled
// entry's JSON mentions every tagged field name of the types it covers.
func TestRandomFillReachesEveryField(t *testing.T) {
	f := randomFill{rand.New(rand.NewPCG(3, 4))}
	seen := map[string]bool{}
	for i := 0; i < 500; i++ {
		var e audit.Entry
		f.fill(reflect.ValueOf(&e).Elem())
		raw, err := appendEntry(nil, &e)
		if err != nil {
			continue
		}
		var walk func(v any)
		walk = func(v any) {
			switch x := v.(type) {
			case map[string]any:
				for k, c := range x {
					seen[k] = true
					walk(c)
				}
			case []any:
				for _, c := range x {
					walk(c)
				}
			}
		}
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			t.Fatal(err)
		}
		walk(v)
	}
	var missing []string
	var names func(tp reflect.Type, done map[reflect.Type]bool)
	names = func(tp reflect.Type, done map[reflect.Type]bool) {
		for tp.Kind() == reflect.Pointer || tp.Kind() == reflect.Slice || tp.Kind() == reflect.Map {
			tp = tp.Elem()
		}
		if tp.Kind() != reflect.Struct || tp == timeType || done[tp] {
			return
		}
		done[tp] = true
		for i := 0; i < tp.NumField(); i++ {
			fl := tp.Field(i)
			name := strings.Split(fl.Tag.Get("json"), ",")[0]
			if name == "" {
				name = fl.Name
			}
			if !seen[name] {
				missing = append(missing, tp.Name()+"."+name)
			}
			names(fl.Type, done)
		}
	}
	names(reflect.TypeOf(Event{}), map[reflect.Type]bool{})
	if len(missing) > 0 {
		t.Fatalf("never encoded: %v", missing)
	}
}
