package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
)

// envRef is one environment reference: ${NAME}, or ${NAME:-default}.
var envRef = regexp.MustCompile(`^\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}$`)

// expandEnv replaces ${NAME} with the variable's value in the values of a configuration file,
// and ${NAME:-default} with the default when NAME is unset. The value arrives exactly as set:
// it is written into the YAML escaped for where the reference stands (a whole plain scalar
// stays plain when YAML reads it back as written - a number, a word - and becomes a
// double-quoted string otherwise, so "s3cret #2", "null" or "~" stay text; inside quotes it
// is escaped for them). Nothing else is touched: a "$" in a password stays as written, and "$${"
// writes a literal "${". A reference to a variable that is not set, or of another shell form
// (${NAME:?}, ${NAME-x}), is an error naming file and line: an empty or literal value would
// silently replace a secret (an empty signing_key_file falls back to a generated key).
// Comments are not expanded: a YAML comment may name ${VAR} in prose.
func expandEnv(path string, raw []byte, getenv func(string) (string, bool)) ([]byte, error) {
	var b strings.Builder
	for i, line := range strings.SplitAfter(string(raw), "\n") {
		out, err := expandLine(line, getenv)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, i+1, err)
		}
		b.WriteString(out)
	}
	return []byte(b.String()), nil
}

// expandLine expands the references in one line, up to its comment. It tracks YAML quoting:
// a quote opens a quoted scalar only where a scalar starts (O'Neil is plain text).
func expandLine(line string, getenv func(string) (string, bool)) (string, error) {
	var b strings.Builder
	var quote byte
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quote == 0 && c == '#' && (i == 0 || line[i-1] == ' ' || line[i-1] == '\t'):
			b.WriteString(line[i:]) // the comment, as written
			return b.String(), nil
		case quote == '"' && c == '\\' && i+1 < len(line):
			b.WriteString(line[i : i+2])
			i++
			continue
		case quote == '\'' && c == '\'' && strings.HasPrefix(line[i:], "''"):
			b.WriteString("''")
			i++
			continue
		case quote != 0 && c == quote:
			quote = 0
		case quote == 0 && (c == '"' || c == '\'') && startsScalar(line[:i]):
			quote = c
		case strings.HasPrefix(line[i:], "$${"):
			b.WriteString("${")
			i += 2
			continue
		case strings.HasPrefix(line[i:], "${"):
			end := strings.IndexByte(line[i:], '}')
			if end < 0 {
				return "", fmt.Errorf("%q: unterminated reference (write ${VAR}, ${VAR:-default}, or $${ for a literal)", strings.TrimSpace(line[i:]))
			}
			ref := line[i : i+end+1]
			v, err := resolve(ref, getenv)
			if err != nil {
				return "", err
			}
			placed, err := place(v, quote, startsScalar(line[:i]) && endsScalar(line[i+end+1:]))
			if err != nil {
				return "", fmt.Errorf("%s: %w", ref, err)
			}
			b.WriteString(placed)
			i += end
			continue
		}
		b.WriteByte(c)
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

// place escapes value v for where its reference stands: inside a double- or single-quoted
// scalar, as a whole plain scalar (then a double-quoted string), or inside a plain scalar
// with other text (then it must not change the YAML around it).
func place(v string, quote byte, whole bool) (string, error) {
	switch {
	case quote == '"':
		q, err := jsonString(v)
		return q[1 : len(q)-1], err
	case quote == '\'':
		if strings.ContainsAny(v, "\r\n") {
			return "", errors.New("a value with a line break cannot stand in a single-quoted scalar: use double quotes")
		}
		return strings.ReplaceAll(v, "'", "''"), nil
	case whole && plainSafe.MatchString(v) && !yamlNull[v]:
		return v, nil // a number, a bool, a word: read as written (an int field may take it)
	case whole:
		return jsonString(v)
	case strings.Contains(v, " #") || strings.Contains(v, ": ") || strings.ContainsAny(v, "\r\n\t"):
		return "", errors.New("the value would change the YAML around it (it holds \" #\", \": \" or a line break): put the scalar in double quotes")
	}
	return v, nil
}

// plainSafe matches values YAML reads back as written in a plain scalar (no indicator at the
// start, no space, no "#"); yamlNull are the plain scalars YAML reads as null.
var (
	plainSafe = regexp.MustCompile(`^[A-Za-z0-9._/+=-][A-Za-z0-9._/@%+=:,-]*$`)
	yamlNull  = map[string]bool{"null": true, "Null": true, "NULL": true, "~": true}
)

// jsonString is v as a JSON string, which YAML reads as a double-quoted scalar.
func jsonString(v string) (string, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return "", err
	}
	return strings.TrimSuffix(buf.String(), "\n"), nil
}

// startsScalar reports whether a scalar starts after before: at the line's start (after
// indentation), after a mapping key's ":", a sequence's "-", or in a flow collection.
func startsScalar(before string) bool {
	t := strings.TrimRight(before, " \t")
	return t == "" || strings.HasSuffix(t, ":") || strings.HasSuffix(t, "-") ||
		strings.HasSuffix(t, "[") || strings.HasSuffix(t, "{") || strings.HasSuffix(t, ",")
}

// endsScalar reports whether nothing but a comment, a flow separator or the line's end
// follows.
func endsScalar(after string) bool {
	t := strings.TrimSpace(after)
	return t == "" || strings.HasPrefix(t, "#") || strings.HasPrefix(t, ",") || strings.HasPrefix(t, "]") || strings.HasPrefix(t, "}")
}

// lookupEnv is os.LookupEnv; a variable set to "" counts as set.
func lookupEnv(k string) (string, bool) { return os.LookupEnv(k) }
