package transform

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/consentry/consentry/sidecar/decision"
	"github.com/consentry/consentry/sidecar/routes"
	"github.com/consentry/consentry/vaultkeys"
)

func TestRemovals(t *testing.T) {
	tests := []struct {
		name, in string
		drop     []string
		want     string
	}{
		{"first", `{"a":1,"b":2,"c":3}`, []string{"a"}, `{"b":2,"c":3}`},
		{"middle", `{"a":1,"b":2,"c":3}`, []string{"b"}, `{"a":1,"c":3}`},
		{"last", `{"a":1,"b":2,"c":3}`, []string{"c"}, `{"a":1,"b":2}`},
		{"all", `{"a":1,"b":2}`, []string{"a", "b"}, `{}`},
		{"first two", `{"a":1,"b":2,"c":3}`, []string{"a", "b"}, `{"c":3}`},
		{"last two", `{"a":1,"b":2,"c":3}`, []string{"b", "c"}, `{"a":1}`},
		{"alternate", `{"a":1,"b":2,"c":3,"d":4}`, []string{"a", "c"}, `{"b":2,"d":4}`},
		{"whitespace", "{ \"a\" : 1 ,\n \"b\" : [1, 2] }", []string{"b"}, "{ \"a\" : 1 }"},
		{"duplicate keys both go", `{"a":1,"a":2,"b":3}`, []string{"a"}, `{"b":3}`},
		{"nested subtree", `{"a":{"x":[1,{"y":2}]},"b":3}`, []string{"a"}, `{"b":3}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := []byte(tt.in)
			var items []span
			var drop []bool
			if _, err := scanObject(b, skipWS(b, 0), 0, func(m member) error {
				items = append(items, span{m.keyStart, m.val.end})
				d := false
				for _, k := range tt.drop {
					d = d || k == m.key
				}
				drop = append(drop, d)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			got := string(apply(b, removals(items, drop)))
			if got != tt.want {
				t.Fatalf("got %s want %s", got, tt.want)
			}
			if !json.Valid([]byte(got)) {
				t.Fatalf("invalid JSON %s", got)
			}
		})
	}
}

func TestScannerRejects(t *testing.T) {
	for _, in := range []string{``, `{`, `{"a"}`, `{"a":}`, `[1,]`, `{"a":1,}`, `01`, `1.`, `"\x01"`, "\"\xff\"", `"\u12"`, `{"a":1}{}`, `nul`, `[` + strings.Repeat("[", 100) + strings.Repeat("]", 101)} {
		if _, err := document([]byte(in)); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
	for _, in := range []string{`{}`, `[]`, `"x"`, `-0.5e+3`, ` {"a" : [true, false, null, "\u00e9\n"]} `} {
		if _, err := document([]byte(in)); err != nil {
			t.Errorf("%q rejected: %v", in, err)
		}
	}
}

func TestMasks(t *testing.T) {
	tr := &Transformer{hmacKey: []byte("0123456789abcdef")}
	tests := []struct{ kind, in, want string }{
		{decision.MaskLast4, "4111 1111 1111 1234", "****1234"},
		{decision.MaskLast4, "12/29", "****"},
		{decision.MaskYear, "1815-12-10", "1815"},
		{decision.MaskYear, "1815-12-10T00:00:00Z", "1815"},
		{decision.MaskYear, "10 Dec 1815", Redacted},
		{decision.MaskRedact, "x", Redacted},
		{"rot13", "x", Redacted},
	}
	for _, tt := range tests {
		if got := tr.maskValue("f", tt.kind, tt.in); got != tt.want {
			t.Errorf("%s(%q) = %q, want %q", tt.kind, tt.in, got, tt.want)
		}
	}
	h1, h2 := tr.maskValue("id", decision.MaskHMAC, "c-1"), tr.maskValue("id", decision.MaskHMAC, "c-1")
	if h1 != h2 || !strings.HasPrefix(h1, "hmac-sha256:") || strings.Contains(h1, "c-1") {
		t.Errorf("hmac not stable or leaks: %q %q", h1, h2)
	}
	if tr.maskValue("other", decision.MaskHMAC, "c-1") == h1 {
		t.Error("hmac of the same value in another field must differ")
	}
	if (&Transformer{}).maskValue("id", decision.MaskHMAC, "c-1") != Redacted {
		t.Error("hmac without a key must redact")
	}
}

// fuzzFields is the route the fuzz target walks: top-level, nested and array paths.
var fuzzRoute = &routes.Route{Fields: []string{"a", "b.c", "d", "e.f", "g"}}

var fuzzDecision = map[string]decision.Field{
	"a":   {Outcome: decision.OutcomeDeny},
	"b.c": {Outcome: decision.OutcomeMask, Mask: decision.MaskRedact},
	"d":   {Outcome: decision.OutcomeAllow},
	"e.f": {Outcome: decision.OutcomeMask, Mask: decision.MaskLast4},
	"g":   {Outcome: decision.OutcomeAllow, KeyScope: "contact"},
}

// FuzzWalk: whatever the document, the walker either rejects it or produces valid JSON in
// which no denied member survives, no redacted value survives, and - without a key nothing
// decrypts - no ciphertext string survives anywhere: not in a field, an intermediate node
// ("b" as a string), an array or object under an allowed field, or an unlisted member.
func FuzzWalk(f *testing.F) {
	for _, s := range []string{`{"a":1,"b":{"c":"x"},"d":2}`, `[{"a":1},{"e":[{"f":"4111111111111111"}]}]`,
		`{"a":1,"a":2}`, `{"g":"vault:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}`, `{"x":["vault:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"]}`, `{"x":"vault\u003av1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}`, `{"b":[{"c":{"a":1}}]}`, `"a"`, `{"e":{"f":12345678}}`,
		`{"b":"vault:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}`, `{"e":["vault:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"]}`,
		`{"g":["vault:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"]}`, `{"d":{"x":["vault:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"]}}`} {
		f.Add([]byte(s))
	}
	tr := &Transformer{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	root := buildTrie(fuzzRoute)
	f.Fuzz(func(t *testing.T, in []byte) {
		doc, err := document(in)
		if err != nil {
			return
		}
		if !json.Valid(in) {
			t.Fatalf("scanner accepted invalid JSON %q", in)
		}
		rep := newReport()
		w := &walker{t: tr, b: in, rep: rep}
		rec := &record{fields: fuzzDecision}
		if err := w.descend(rec, doc, root, 0); err != nil {
			return
		}
		w.finish(rec, nil)
		sortEdits(rec.edits)
		out := apply(in, rec.edits)
		if !json.Valid(out) {
			t.Fatalf("output not JSON: %q -> %q", in, out)
		}
		var v any
		dec := json.NewDecoder(bytes.NewReader(out))
		dec.UseNumber()
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
		check(t, v, root, in, out)
		noCiphertext(t, v, in, out)
	})
}

func sortEdits(e []edit) {
	for i := 1; i < len(e); i++ {
		for j := i; j > 0 && e[j].start < e[j-1].start; j-- {
			e[j], e[j-1] = e[j-1], e[j]
		}
	}
	for i := 1; i < len(e); i++ {
		if e[i].start < e[i-1].end {
			panic("overlapping edits")
		}
	}
}

func check(t *testing.T, v any, n *trie, in, out []byte) {
	switch x := v.(type) {
	case []any:
		for _, e := range x {
			check(t, e, n, in, out)
		}
	case map[string]any:
		for k, val := range x {
			c := n.child(k)
			if c == nil {
				noCiphertext(t, val, in, out)
				continue
			}
			switch c.field {
			case "a":
				t.Fatalf("denied member survived: %q -> %q", in, out)
			case "b.c":
				if val != Redacted {
					t.Fatalf("redacted member survived: %q -> %q", in, out)
				}
				continue
			case "g":
				if s, ok := val.(string); ok && vaultkeys.IsCiphertext(s) {
					t.Fatalf("ciphertext passed as a value: %q -> %q", in, out)
				}
			}
			check(t, val, c, in, out)
		}
	}
}

func noCiphertext(t *testing.T, v any, in, out []byte) {
	switch x := v.(type) {
	case string:
		if vaultkeys.IsCiphertext(x) {
			t.Fatalf("ciphertext passed as a value: %q -> %q", in, out)
		}
	case []any:
		for _, e := range x {
			noCiphertext(t, e, in, out)
		}
	case map[string]any:
		for _, e := range x {
			noCiphertext(t, e, in, out)
		}
	}
}
