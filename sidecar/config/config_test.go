package config

import (
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

func TestParseErrorsNameFileAndLine(t *testing.T) {
	cases := []struct{ name, yaml, want string }{
		{"unknown section", "policy: {dir: p}\nbogus: {}\n", "c.yaml:2: unknown section \"bogus\""},
		{"unknown key", "engine:\n  timeuot: 1s\n", "c.yaml:2"},
		{"bad engine timeout", "engine:\n  timeout: -1s\n", "engine.timeout"},
		{"not yaml", "policy: [", "c.yaml"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("c.yaml", []byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want error containing %q, got %v", tc.want, err)
			}
		})
	}
}

func TestEnvironmentExpansionAndSections(t *testing.T) {
	t.Setenv("CONSENTRY_TEST_UPSTREAM", "http://crm:8081")
	c, err := Parse("c.yaml", []byte("proxy:\n  upstream: ${CONSENTRY_TEST_UPSTREAM}\n"))
	if err != nil {
		t.Fatal(err)
	}
	var px struct {
		Upstream string `yaml:"upstream"`
	}
	ok, err := c.Section("proxy", &px)
	if err != nil || !ok || px.Upstream != "http://crm:8081" {
		t.Fatalf("section: %v %v %+v", ok, err, px)
	}
	if c.Policy.Dir != "policies" {
		t.Errorf("default policy dir: %q", c.Policy.Dir)
	}
	if ok, _ := c.Section("vault", &px); ok {
		t.Error("absent section reported present")
	}
}

// FuzzParse: no configuration text makes the loader panic; every error names the file.
func FuzzParse(f *testing.F) {
	f.Add([]byte("policy: {dir: policies}\nadmin: {listen: 127.0.0.1:9400}\n"))
	f.Add([]byte("engine:\n  timeout: 5s\nproxy: {listen: x}\n"))
	f.Add([]byte("- a\n- b\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		_, err := Parse("fuzz.yaml", raw)
		if err != nil && !strings.Contains(err.Error(), "fuzz.yaml") {
			t.Fatalf("error does not name the file: %v", err)
		}
	})
}

// TestEnvironmentReferences: only ${NAME} and ${NAME:-default} are replaced, in the parsed
// values, so the value arrives exactly as set wherever it stands (plain, quoted, block, flow,
// several lines, a key); any other "$" stays as written, "$${" is a literal "${", comments are
// never expanded, and a variable that is not set, or another shell form, is an error naming
// the line instead of an empty or literal value.
func TestEnvironmentReferences(t *testing.T) {
	pem := "-----BEGIN KEY-----\nAAA\n-----END KEY-----"
	tests := []struct {
		name, in string
		env      map[string]string
		want     any    // the value of key k
		err      string // an error containing this instead
	}{
		{"plain", "k: ${X}\n", map[string]string{"X": "t0k"}, "t0k", ""},
		{"number stays a number", "k: ${X}\n", map[string]string{"X": "8080"}, 8080, ""},
		{"null stays text", "k: ${X}\n", map[string]string{"X": "null"}, "null", ""},
		{"tilde stays text", "k: ${X}\n", map[string]string{"X": "~"}, "~", ""},
		{"empty", "k: ${X}\n", map[string]string{"X": ""}, "", ""},
		{"hash", "k: ${X}\n", map[string]string{"X": "s3cret #part2"}, "s3cret #part2", ""},
		{"star", "k: ${X}\n", map[string]string{"X": "*star"}, "*star", ""},
		{"quotes and backslash", "k: \"${X}\"\n", map[string]string{"X": `a"b'c\d`}, `a"b'c\d`, ""},
		{"single quoted", "k: '${X}'\n", map[string]string{"X": "it's"}, "it's", ""},
		{"default", "k: ${NOPE:-var/x}\n", nil, "var/x", ""},
		{"empty default", "k: x${NOPE:-}\n", nil, "x", ""},
		{"default with hash (quoted: a plain \" #\" starts a YAML comment)", "k: \"${N:-a #b}\"\n", nil, "a #b", ""},
		{"inside a plain scalar", "k: postgres://user:${PW}@db/x\n", map[string]string{"PW": "s3cret! #2"}, "postgres://user:s3cret! #2@db/x", ""},
		{"after a dash", "k: crm-${T}\n", map[string]string{"T": "my tenant"}, "crm-my tenant", ""},
		{"flow sequence (quoted: braces are flow indicators)", "k: [a, \"${X}\"]\n", map[string]string{"X": "b,c"}, []any{"a", "b,c"}, ""},
		{"flow mapping", "k: {x: \"${X}\"}\n", map[string]string{"X": "b,c"}, map[string]any{"x": "b,c"}, ""},
		{"literal block", "k: |\n  ${X}\n", map[string]string{"X": pem}, pem + "\n", ""},
		{"folded block", "k: >\n  a ${X}\n", map[string]string{"X": "b #c"}, "a b #c\n", ""},
		{"multi-line double quoted", "k: \"first\n  ${X} last\"\n", map[string]string{"X": `C:\temp "q"`}, `first C:\temp "q" last`, ""},
		{"tagged", "k: !!str ${X}\n", map[string]string{"X": "8080"}, "8080", ""},
		{"anchor", "k: &a ${X}\n", map[string]string{"X": "null"}, "null", ""},
		{"key", "${K}: v\n", map[string]string{"K": "k"}, "v", ""},
		{"sequence item", "k:\n  - ${X}\n", map[string]string{"X": "null"}, []any{"null"}, ""},
		{"dollars kept", "k: \"s3cr$t-Pa$$w0rd $HOME\"\n", nil, "s3cr$t-Pa$$w0rd $HOME", ""},
		{"escaped reference", "k: \"$${X}\"\n", nil, "${X}", ""},
		{"comments untouched", "a: 1 # ${NOT_SET} in prose\n# ${ALSO_NOT}\nk: O'Neil   # set ${NOT_SET} in prod\n", nil, "O'Neil", ""},
		{"carriage returns", "a: 1 # c\rk: ${X}\r", map[string]string{"X": "v"}, "v", ""},
		{"unset", "a: 1\nk: ${SIGNING_KEY}\n", nil, nil, "x.yaml:2: ${SIGNING_KEY}"},
		{"other shell form", "k: ${X:?}\n", map[string]string{"X": "v"}, nil, "unsupported reference"},
		{"other shell form with default", "k: ${X-x}\n", nil, nil, "unsupported reference"},
		{"unterminated", "k: \"${X\"\n", nil, nil, "unterminated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			get := func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok }
			var root yaml.Node
			if err := yaml.Unmarshal([]byte(tt.in), &root); err != nil {
				t.Fatal(err)
			}
			_, err := expandNodes("x.yaml", &root, get)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			out, err := yaml.Marshal(&root)
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			if err := yaml.Unmarshal(out, &m); err != nil {
				t.Fatalf("re-encoded %q does not parse: %v", out, err)
			}
			if !reflect.DeepEqual(m["k"], tt.want) {
				t.Fatalf("k = %#v (from %q), want %#v", m["k"], out, tt.want)
			}
		})
	}
	// Through Parse: a secret with every character YAML cares about, and an int field.
	t.Setenv("CONSENTRY_TEST_TOKEN", `s3cr$t #2: "x" 'y' null`)
	t.Setenv("CONSENTRY_TEST_EMPTY", "")
	c, err := Parse("x.yaml", []byte("admin:\n  token: ${CONSENTRY_TEST_TOKEN}\n"))
	if err != nil || c.Admin.Token != `s3cr$t #2: "x" 'y' null` {
		t.Fatalf("admin.token %q (%v)", c.Admin.Token, err)
	}
	if _, err := Parse("x.yaml", []byte("admin:\n  listen: 127.0.0.1:1\n  token: ${CONSENTRY_TEST_UNSET_X}\n")); err == nil || !strings.Contains(err.Error(), "x.yaml:3:") {
		t.Fatalf("unset: %v", err)
	}
	c, err = Parse("x.yaml", []byte("admin:\n  token: \"s3cr$t-Pa$$w0rd\"\n"))
	if err != nil || c.Admin.Token != "s3cr$t-Pa$$w0rd" {
		t.Fatalf("admin.token loaded as %q (%v)", c.Admin.Token, err)
	}
}
