package jsonstr

import (
	"encoding/json"
	"testing"
	"unicode/utf8"
)

var cases = []string{
	"", "plain", `quote " and backslash \`, "<script>&</script>", "tab\tnl\ncr\rbs\bff\f",
	"\x00\x01\x1f\x7f", "é 日本 🙂", "line\u2028sep\u2029", "bad \xff utf8 \xc3", "\xed\xa0\x80",
}

// With HTMLSafe and an escaped replacement, Append is encoding/json's string encoding.
func TestAppendHTMLSafeIsEncodingJSON(t *testing.T) {
	for _, s := range cases {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := Append(nil, s, &HTMLSafe, `\ufffd`); string(got) != string(want) {
			t.Errorf("%q: got %s, want %s", s, got, want)
		}
	}
}

// With Plain, only what JSON requires is escaped; the output always decodes back to s (with
// invalid bytes as U+FFFD) and is valid UTF-8.
func TestAppendPlain(t *testing.T) {
	tests := map[string]string{
		"<a>&b":     `"<a>&b"`,
		"\x01":      `"\u0001"`,
		"\x7f":      "\"\x7f\"",
		"bad \xff":  "\"bad \ufffd\"",
		"\u2028":    `"\u2028"`,
		`"\`:        `"\"\\"`,
		"tab\tnl\n": `"tab\tnl\n"`,
	}
	for s, want := range tests {
		if got := Append(nil, s, &Plain, "\ufffd"); string(got) != want {
			t.Errorf("%q: got %s, want %s", s, got, want)
		}
	}
}

func FuzzAppend(f *testing.F) {
	for _, s := range cases {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, _ := json.Marshal(s)
		if got := Append(nil, s, &HTMLSafe, `\ufffd`); string(got) != string(want) {
			t.Fatalf("%q: got %s, want %s", s, got, want)
		}
		plain := Append(nil, s, &Plain, "\ufffd")
		if !utf8.Valid(plain) {
			t.Fatalf("%q: invalid UTF-8 out", s)
		}
		var back string
		if err := json.Unmarshal(plain, &back); err != nil {
			t.Fatalf("%q: %s does not decode: %v", s, plain, err)
		}
		if want := string([]rune(s)); back != want {
			t.Fatalf("%q: decodes to %q, want %q", s, back, want)
		}
	})
}
