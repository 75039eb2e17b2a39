package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// logSection stands for a section's config struct (auditlog.Config's shape).
type logSection struct {
	Dir                string        `yaml:"dir"`
	Mode               string        `yaml:"mode"`
	CheckpointInterval time.Duration `yaml:"checkpoint_interval"`
	PreallocateBytes   int64         `yaml:"preallocate_bytes"`
	Mask               []struct {
		Path string `yaml:"path"`
	} `yaml:"mask"`
}

// A file like an operator's: sections before, comments and blank lines inside the section.
const sectionFile = `policy:
  dir: p
admin:
  listen: 127.0.0.1:9400
state:
  data_dir: var/state
decision_log:
  dir: var/decisions
  mode: strict

  # group commit tuning
  checkpoint_interval: 5s
%s
proxy:
  listen: 127.0.0.1:8080
`

// Errors inside a section name the file's line of the offending key and the key itself, not a
// line counted within the re-encoded section nor the section's first line.
func TestSectionErrorsNameFileLineAndKey(t *testing.T) {
	t.Setenv("CONSENTRY_TEST_DIR", "/var/lib/x")
	for _, tc := range []struct {
		name, body, want string
	}{
		{"wrong type", "  preallocate_bytes: lots", "c.yaml:13: decision_log.preallocate_bytes: cannot unmarshal !!str `lots` into int64"},
		{"unknown key", "  preallocate: 4096", "c.yaml:13: decision_log.preallocate: field preallocate not found"},
		{"in a list", "  mask:\n    - path: a\n    - path: b\n      pth: c", "c.yaml:16: decision_log.mask[1].pth: field pth not found"},
		{"wrong type in a list", "  mask:\n    - path: [x]", "c.yaml:14: decision_log.mask[0].path: cannot unmarshal !!seq into string"},
		{"flow style", "  mask: [{path: a}, {path: b, pth: c}]", "c.yaml:13: decision_log.mask"},
		// An expanded file is re-encoded as a whole (comments and blank lines move): the lines
		// are still the file's.
		{"after expansion", "  dir: ${CONSENTRY_TEST_DIR}\n\n\n  preallocate_bytes: lots", "c.yaml:16: decision_log.preallocate_bytes: cannot unmarshal"},
		{"two errors", "  preallocate_bytes: lots\n  checkpoint_every: 3", "c.yaml:13: decision_log.preallocate_bytes: cannot unmarshal !!str `lots` into int64\nc.yaml:14: decision_log.checkpoint_every: field checkpoint_every not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := strings.Replace(sectionFile, "%s", tc.body, 1)
			if tc.name == "after expansion" {
				body = strings.Replace(body, "  dir: var/decisions\n", "", 1)
				tc.want = strings.Replace(tc.want, "c.yaml:16", "c.yaml:15", 1)
			}
			c, err := Parse("c.yaml", []byte(body))
			if err != nil {
				t.Fatal(err)
			}
			var s logSection
			_, err = c.Section("decision_log", &s)
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("error\n%v\nwant prefix\n%s\nin\n%s", err, tc.want, numbered(body))
			}
		})
	}
}

// Top-level sections (policy, engine, admin) decode with Parse: their errors name the file's
// line and key too, also when the file was expanded and re-encoded.
func TestParseErrorsNameFileLineAndKey(t *testing.T) {
	t.Setenv("CONSENTRY_TEST_LISTEN", "127.0.0.1:9400")
	for _, tc := range []struct{ name, yaml, want string }{
		{"unknown key", "engine:\n  timeuot: 1s\n", "c.yaml:2: engine.timeuot: field timeuot not found"},
		{"wrong type", "admin:\n  listen: x\n  token: [a]\n", "c.yaml:3: admin.token: cannot unmarshal !!seq into string"},
		{"expanded", "admin:\n  # the admin port\n\n  listen: ${CONSENTRY_TEST_LISTEN}\n\n  token: [a]\n", "c.yaml:6: admin.token: cannot unmarshal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("c.yaml", []byte(tc.yaml))
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("error %v, want prefix %q", err, tc.want)
			}
		})
	}
}

// A section's Validate error ("decision_log.mode: ...", also wrapped by the step that reports
// it) is located at the line of the most specific key it names that the file has.
func TestKeyErrorLocatesSectionValidateErrors(t *testing.T) {
	body := strings.Replace(sectionFile, "%s", "  mask:\n    - path: a\n    - path: b", 1)
	c, err := Parse("c.yaml", []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ err, want string }{
		{`decision_log.mode: must be strict or async, got "3"`, `c.yaml:9: decision_log.mode: must be`},
		{`vault: decision_log.checkpoint_interval: must be at least 10ms`, `c.yaml:12: vault: decision_log`},
		{`decision_log.mask[1]: path "b" is not a field`, `c.yaml:15: decision_log.mask[1]`},
		{`decision_log.retain_segments/retain_age: must not be negative`, `c.yaml:7: decision_log.retain_segments`},
		{`state.postgres: set, but state.backend is "sqlite"`, `c.yaml:5: state.postgres`},
		{`c.yaml:12: decision_log.checkpoint_interval: already located`, `c.yaml:12: decision_log.checkpoint_interval: already`},
		{`no key here: at all`, `c.yaml: no key here`},
	} {
		got := c.KeyError(errors.New(tc.err))
		if !strings.HasPrefix(got.Error(), tc.want) {
			t.Errorf("KeyError(%q) = %q, want prefix %q", tc.err, got, tc.want)
		}
	}
}

func numbered(s string) string {
	var b strings.Builder
	for i, l := range strings.Split(s, "\n") {
		b.WriteString(strings.Repeat(" ", 3-len(itoa(i+1))) + itoa(i+1) + " " + l + "\n")
	}
	return b.String()
}

func itoa(i int) string {
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoa(i/10) + string(rune('0'+i%10))
}
