package config

import (
	"strings"
	"testing"
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

// TestEnvironmentReferences: only ${NAME} and ${NAME:-default} are replaced, in values, and
// the value arrives exactly as set (escaped for where it stands); any other "$" stays as
// written, "$${" is a literal "${", comments are left alone (also after an apostrophe in a
// plain value), and a variable that is not set, or another shell form, is an error naming the
// line instead of an empty or literal value.
func TestEnvironmentReferences(t *testing.T) {
	env := map[string]string{"TOKEN": "t0k", "EMPTY": "", "HASH": "s3cret #part2", "NULL": "null", "TILDE": "~",
		"STAR": "*star", "QUOTE": `a"b'c\d`, "PORT": "8080"}
	get := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	tests := []struct {
		name, in, want, err string
	}{
		{"reference", "token: ${TOKEN}\n", "token: t0k\n", ""},
		{"number stays plain", "max_conns: ${PORT}\n", "max_conns: 8080\n", ""},
		{"set to empty", "token: \"${EMPTY}\"\n", "token: \"\"\n", ""},
		{"default", "dir: ${NOPE:-var/x}\n", "dir: var/x\n", ""},
		{"empty default", "dir: ${NOPE:-}\n", "dir: \"\"\n", ""},
		{"dollars kept", "token: \"s3cr$t-Pa$$w0rd $HOME\"\n", "token: \"s3cr$t-Pa$$w0rd $HOME\"\n", ""},
		{"escaped reference", "note: \"$${TOKEN}\"\n", "note: \"${TOKEN}\"\n", ""},
		{"comment untouched", "a: 1 # ${NOT_SET} in prose\n# ${ALSO_NOT}\n", "a: 1 # ${NOT_SET} in prose\n# ${ALSO_NOT}\n", ""},
		{"comment after an apostrophe", "owner: O'Neil   # set ${NOT_SET} in prod\n", "owner: O'Neil   # set ${NOT_SET} in prod\n", ""},
		{"hash inside quotes is no comment", "url: \"http://x/#${TOKEN}\"\n", "url: \"http://x/#t0k\"\n", ""},
		{"in a URL", "url: postgres://u:${TOKEN}@db/x\n", "url: postgres://u:t0k@db/x\n", ""},
		{"unset", "a: 1\nsigning_key_file: ${SIGNING_KEY}\n", "", "x.yaml:2: ${SIGNING_KEY}"},
		{"other shell form", "token: ${TOKEN:?}\n", "", "unsupported reference"},
		{"other shell form with default", "token: ${TOKEN-x}\n", "", "unsupported reference"},
		{"value that would change the YAML inside a plain scalar", "url: x${HASH}\n", "", "double quotes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := expandEnv("x.yaml", []byte(tt.in), get)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || string(got) != tt.want {
				t.Fatalf("got %q (%v), want %q", got, err, tt.want)
			}
		})
	}
	// Whatever the value holds, the loaded string is the value.
	for _, name := range []string{"HASH", "NULL", "TILDE", "STAR", "QUOTE", "EMPTY"} {
		for _, form := range []string{"${%s}", "\"${%s}\"", "'${%s}'"} {
			t.Setenv("CONSENTRY_TEST_"+name, env[name])
			ref := strings.ReplaceAll(form, "%s", "CONSENTRY_TEST_"+name)
			c, err := Parse("x.yaml", []byte("admin:\n  token: "+ref+"\n"))
			if err != nil || c.Admin.Token != env[name] {
				t.Errorf("%s: admin.token %q (%v), want %q", ref, c.Admin.Token, err, env[name])
			}
		}
	}
	c, err := Parse("x.yaml", []byte("admin:\n  token: \"s3cr$t-Pa$$w0rd\"\n"))
	if err != nil || c.Admin.Token != "s3cr$t-Pa$$w0rd" {
		t.Fatalf("admin.token loaded as %q (%v)", c.Admin.Token, err)
	}
}
