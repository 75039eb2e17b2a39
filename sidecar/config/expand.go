package config

import (
	"fmt"
	"os"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// envRef is one environment reference: ${NAME}, or ${NAME:-default}.
var envRef = regexp.MustCompile(`^\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}$`)

// expandNodes replaces ${NAME} with the variable's value in every scalar of a parsed
// configuration file, and ${NAME:-default} with the default when NAME is unset. It works on
// the parsed document, not its text, so the value arrives exactly as set wherever the
// reference stands - a plain, quoted, block or flow scalar, several lines, a key - and
// comments, which are no scalars, are never expanded. A plain scalar whose value is now null
// ("null", "~", "") stays the string; a number stays a number (an int field may take it).
// Nothing else is touched: a "$" in a password stays as written, and "$${" writes a literal
// "${". A reference to a variable that is not set, or of another shell form (${NAME:?},
// ${NAME-x}), is an error naming file and line: an empty or literal value would silently
// replace a secret (an empty signing_key_file falls back to a generated key). It reports
// whether anything was expanded.
func expandNodes(path string, n *yaml.Node, getenv func(string) (string, bool)) (bool, error) {
	if n == nil {
		return false, nil
	}
	changed := false
	if n.Kind == yaml.ScalarNode && strings.Contains(n.Value, "${") {
		v, err := expandValue(n.Value, getenv)
		if err != nil {
			return false, fmt.Errorf("%s:%d: %w", path, n.Line, err)
		}
		if v != n.Value {
			n.Value, changed = v, true
			if n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle|yaml.LiteralStyle|yaml.FoldedStyle|yaml.TaggedStyle) == 0 {
				// A plain scalar: its type follows its new value, except that a value read as
				// null would lose the text the environment gave.
				n.Tag = ""
				if yamlNull[v] {
					n.Tag = "!!str"
				}
			}
		}
	}
	for _, c := range n.Content {
		ch, err := expandNodes(path, c, getenv)
		if err != nil {
			return false, err
		}
		changed = changed || ch
	}
	return changed, nil
}

// yamlNull are the plain scalars YAML reads as null.
var yamlNull = map[string]bool{"": true, "null": true, "Null": true, "NULL": true, "~": true}

// expandValue expands the references in one scalar's value.
func expandValue(s string, getenv func(string) (string, bool)) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); {
		switch {
		case strings.HasPrefix(s[i:], "$${"):
			b.WriteString("${")
			i += 3
		case strings.HasPrefix(s[i:], "${"):
			end := strings.IndexByte(s[i:], '}')
			if end < 0 {
				return "", fmt.Errorf("%q: unterminated reference (write ${VAR}, ${VAR:-default}, or $${ for a literal)", s[i:])
			}
			v, err := resolve(s[i:i+end+1], getenv)
			if err != nil {
				return "", err
			}
			b.WriteString(v)
			i += end + 1
		default:
			b.WriteByte(s[i])
			i++
		}
	}
	return b.String(), nil
}

// resolve returns the value of a reference.
func resolve(ref string, getenv func(string) (string, bool)) (string, error) {
	m := envRef.FindStringSubmatch(ref)
	if m == nil {
		return "", fmt.Errorf("%s: unsupported reference (write ${VAR}, ${VAR:-default}, or $${ for a literal)", ref)
	}
	if v, ok := getenv(m[1]); ok {
		return v, nil
	}
	if m[2] != "" {
		return m[3], nil
	}
	return "", fmt.Errorf("%s: the environment variable is not set (write ${%s:-} for an empty default)", ref, m[1])
}

// lookupEnv is os.LookupEnv; a variable set to "" counts as set.
func lookupEnv(k string) (string, bool) { return os.LookupEnv(k) }
