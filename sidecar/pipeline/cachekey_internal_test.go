package pipeline

import (
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/input"
)

// filler populates every field of a value by reflection (pointers set, one element per slice,
// one entry per map). Leaf number `change` gets a different value, so comparing the keys of
// fill(-1) and fill(i) tells whether leaf i reaches the key.
type filler struct {
	change int
	n      int
	path   []string
	paths  []string
}

var timeType = reflect.TypeOf(time.Time{})

func (f *filler) leaf() bool {
	f.paths = append(f.paths, strings.Join(f.path, "."))
	f.n++
	return f.n-1 == f.change
}

func (f *filler) fill(v reflect.Value) {
	if v.Type() == timeType {
		t := time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)
		if f.leaf() {
			t = t.Add(time.Nanosecond)
		}
		v.Set(reflect.ValueOf(t))
		return
	}
	switch v.Kind() {
	case reflect.String:
		s := "v" + strconv.Itoa(f.n)
		if f.leaf() {
			s += "x"
		}
		v.SetString(s)
	case reflect.Bool:
		v.SetBool(f.leaf())
	case reflect.Int, reflect.Int64:
		n := int64(1)
		if f.leaf() {
			n = 2
		}
		v.SetInt(n)
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		f.fill(v.Elem())
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			f.path = append(f.path, v.Type().Field(i).Name)
			f.fill(v.Field(i))
			f.path = f.path[:len(f.path)-1]
		}
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 1, 1)
		f.path = append(f.path, "[0]")
		f.fill(s.Index(0))
		f.path = f.path[:len(f.path)-1]
		v.Set(s)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		k := reflect.New(v.Type().Key()).Elem()
		f.path = append(f.path, "{key}")
		f.fill(k)
		f.path[len(f.path)-1] = "{value}"
		e := reflect.New(v.Type().Elem()).Elem()
		f.fill(e)
		f.path = f.path[:len(f.path)-1]
		m.SetMapIndex(k, e)
		v.Set(m)
	case reflect.Interface:
		s := "v" + strconv.Itoa(f.n)
		if f.leaf() {
			s += "x"
		}
		v.Set(reflect.ValueOf(s))
	default:
		panic("cache key test: unhandled kind " + v.Kind().String() + " at " + strings.Join(f.path, "."))
	}
}

func filled(change int) (*input.Input, []string) {
	var in input.Input
	f := &filler{change: change}
	f.fill(reflect.ValueOf(&in).Elem())
	return &in, f.paths
}

// TestCacheKeyCoversEveryField changes each leaf of the input in turn: every change except the
// per-request parts must change the key. A field added to input.Input that the key encoder
// does not cover fails here.
func TestCacheKeyCoversEveryField(t *testing.T) {
	c := newDecisionCache(CacheConfig{}.withDefaults())
	base, paths := filled(-1)
	k0, ok := c.key("rev", base)
	if !ok {
		t.Fatal("no key")
	}
	ignored := map[string]bool{"Request.ID": true, "Time.Now": true, "Time.NowNS": true}
	for i, p := range paths {
		in, _ := filled(i)
		k, ok := c.key("rev", in)
		if !ok {
			t.Fatalf("%s: no key", p)
		}
		if ignored[p] != (k == k0) {
			if ignored[p] {
				t.Errorf("%s changed the key", p)
			} else {
				t.Errorf("%s does not reach the key", p)
			}
		}
	}
	if len(paths) < 50 {
		t.Fatalf("only %d leaves walked", len(paths))
	}
	// Shape: nil, empty and set stay distinct where the input's JSON form distinguishes them.
	for name, mod := range map[string]func(*input.Input){
		"nil consents":    func(in *input.Input) { in.Enrichment.Consents = nil },
		"no break glass":  func(in *input.Input) { in.BreakGlass = nil },
		"no case":         func(in *input.Input) { in.Enrichment.Case = nil },
		"no records":      func(in *input.Input) { in.Records = nil },
		"two fields":      func(in *input.Input) { in.Resource.Fields = append(in.Resource.Fields, "f") },
		"claim list":      func(in *input.Input) { in.Subject.Claims["l"] = []any{"a", 1.5, true, nil, map[string]any{"b": "c"}} },
		"moved separator": func(in *input.Input) { in.Purpose, in.CaseID = in.Purpose+in.CaseID[:1], in.CaseID[1:] },
	} {
		in, _ := filled(-1)
		mod(in)
		if k, _ := c.key("rev", in); k == k0 {
			t.Errorf("%s kept the key", name)
		}
	}
}

func TestCacheKeyClaimTypes(t *testing.T) {
	c := newDecisionCache(CacheConfig{}.withDefaults())
	seen := map[[32]byte]any{}
	for _, v := range []any{nil, true, false, "1", 1.0, 1, int64(2), []any{}, []any{"1"}, map[string]any{}, map[string]any{"1": "1"}, []string{"1"}, map[string]string{"1": "1"}, struct{ A int }{1}} {
		in := &input.Input{Subject: input.Subject{Claims: map[string]any{"c": v}}}
		k, ok := c.key("rev", in)
		if !ok {
			t.Fatalf("%#v: no key", v)
		}
		if prev, dup := seen[k]; dup {
			t.Errorf("%#v and %#v share a key", prev, v)
		}
		seen[k] = v
	}
}
