package config

import (
	"fmt"
	"os"
	"regexp"
	"strings"
)

// envRef is one environment reference: ${NAME}, or ${NAME:-default}.
var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}`)

// expandEnv replaces ${NAME} with the variable's value in the values of a configuration file,
// and ${NAME:-default} with the default when NAME is unset. Nothing else is touched: a "$" in a
// password ("s3cr$t", "Pa$$w0rd") stays as written, and "$${" writes a literal "${". An unset
// variable without a default is an error naming file and line, not an empty value (an empty
// signing_key_file would fall back to a generated key). Comments are not expanded: a YAML
// comment may name ${VAR} in prose.
func expandEnv(path string, raw []byte, getenv func(string) (string, bool)) ([]byte, error) {
	lines := strings.SplitAfter(string(raw), "\n")
	var b strings.Builder
	for i, line := range lines {
		code, comment := splitComment(line)
		var missing string
		code = envRef.ReplaceAllStringFunc(code, func(ref string) string {
			m := envRef.FindStringSubmatch(ref)
			if v, ok := getenv(m[1]); ok {
				return v
			}
			if m[2] != "" {
				return m[3]
			}
			if missing == "" {
				missing = m[1]
			}
			return ref
		})
		if missing != "" {
			return nil, fmt.Errorf("%s:%d: ${%s}: the environment variable is not set (write ${%s:-} for an empty default)", path, i+1, missing, missing)
		}
		b.WriteString(unescapeDollar(code))
		b.WriteString(comment)
	}
	return []byte(b.String()), nil
}

// unescapeDollar turns each "$${" that protect set aside back into a literal "${".
func unescapeDollar(s string) string { return strings.ReplaceAll(s, escapedRef, "${") }

// escapedRef stands for "$${" while references are expanded.
const escapedRef = "\x00consentry-escaped-ref\x00"

// splitComment splits a YAML line at the "#" that starts its comment: one at the line's start
// or after a space or tab, outside single- and double-quoted scalars. "$${" in the code part is
// protected from expansion.
func splitComment(line string) (code, comment string) {
	var quote byte
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quote == '"' && c == '\\':
			i++ // an escaped character inside a double-quoted scalar
		case quote != 0 && c == quote:
			quote = 0
		case quote == 0 && (c == '"' || c == '\''):
			quote = c
		case quote == 0 && c == '#' && (i == 0 || line[i-1] == ' ' || line[i-1] == '\t'):
			return protect(line[:i]), line[i:]
		}
	}
	return protect(line), ""
}

func protect(s string) string { return strings.ReplaceAll(s, "$${", escapedRef) }

// lookupEnv is os.LookupEnv; a variable set to "" counts as set.
func lookupEnv(k string) (string, bool) { return os.LookupEnv(k) }
