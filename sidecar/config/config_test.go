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
