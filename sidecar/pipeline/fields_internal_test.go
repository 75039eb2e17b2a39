package pipeline

import (
	"bytes"
	"encoding/json"
	"testing"
)

func TestNoRepeatedKeys(t *testing.T) {
	tests := []struct {
		body     string
		repeated bool
	}{
		{`{}`, false},
		{`{"a":1,"b":{"a":1},"c":[{"a":1},{"a":2}]}`, false},
		{`{"a":"a","b":"a"}`, false}, // a value equal to a key is not a key
		{`{"a":1,"a":2}`, true},
		{`{"a":{"b":[1,{"c":1,"d":[],"c":2}]}}`, true},
		{`{"a":{},"a":[]}`, true},
		{`{"\u0061":1,"a":2}`, true}, // escapes name the same key
		{`[{"a":1},{"a":1}]`, false},
		{`{"a":1,"b"`, false}, // malformed: left to the decoder
	}
	for _, tt := range tests {
		if err := noRepeatedKeys([]byte(tt.body)); (err != nil) != tt.repeated {
			t.Errorf("%s: err %v, want repeated=%v", tt.body, err, tt.repeated)
		}
	}
}

// FuzzNoRepeatedKeys: never panics; an object with unique keys (re-encoded by Go) passes, and
// the same object with its first key written again is refused.
func FuzzNoRepeatedKeys(f *testing.F) {
	for _, s := range []string{`{"a":1}`, `{"a":{"b":[1,{"c":null}]},"d":"e"}`, `[1,2]`, `{"x":{"x":{"x":1}}}`, `{"a":1,"a":2}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		_ = noRepeatedKeys(body)
		var obj map[string]any
		if json.Unmarshal(body, &obj) != nil || len(obj) == 0 {
			return
		}
		unique, err := json.Marshal(obj)
		if err != nil {
			return
		}
		if err := noRepeatedKeys(unique); err != nil {
			t.Fatalf("unique keys refused: %s: %v", unique, err)
		}
		// Go encodes map keys sorted; repeat the first one at the end.
		var first string
		for k := range obj {
			if first == "" || k < first {
				first = k
			}
		}
		k, _ := json.Marshal(first)
		dup := append(bytes.TrimSuffix(unique, []byte("}")), []byte(","+string(k)+":0}")...)
		if noRepeatedKeys(dup) == nil {
			t.Fatalf("repeated key %s not found in %s", k, dup)
		}
	})
}
