package transform

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// The scanner works on the raw response bytes instead of decoding into maps: it keeps the
// CRM's member order, numbers and whitespace byte for byte, costs no allocation per untouched
// value, and lets the transformer splice only the values it changes. It validates everything
// it skips, so a malformed document is rejected (fail closed), never half-transformed.

// errSyntax wraps every scanning error.
var errSyntax = errors.New("invalid JSON")

// maxDepth bounds nesting so a hostile document cannot exhaust the stack.
const maxDepth = 64

// span is a byte range [start, end) of the document.
type span struct{ start, end int }

// member is one object member: the key's span (with quotes), the decoded key, the value's span.
type member struct {
	keyStart int
	key      string
	val      span
}

func skipWS(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

func synErr(i int, what string) error { return fmt.Errorf("%w: offset %d: %s", errSyntax, i, what) }

// scanValue validates the JSON value starting at b[i] (after whitespace) and returns its span.
func scanValue(b []byte, i, depth int) (span, error) {
	i = skipWS(b, i)
	if i >= len(b) {
		return span{}, synErr(i, "unexpected end")
	}
	if depth > maxDepth {
		return span{}, synErr(i, "nested too deeply")
	}
	start := i
	switch c := b[i]; {
	case c == '{':
		end, err := scanObject(b, i, depth, nil)
		return span{start, end}, err
	case c == '[':
		end, err := scanArray(b, i, depth, nil)
		return span{start, end}, err
	case c == '"':
		end, err := scanString(b, i)
		return span{start, end}, err
	case c == 't':
		return literal(b, i, "true")
	case c == 'f':
		return literal(b, i, "false")
	case c == 'n':
		return literal(b, i, "null")
	case c == '-' || (c >= '0' && c <= '9'):
		end, err := scanNumber(b, i)
		return span{start, end}, err
	default:
		return span{}, synErr(i, fmt.Sprintf("unexpected byte %q", c))
	}
}

func literal(b []byte, i int, lit string) (span, error) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return span{}, synErr(i, "bad literal")
	}
	return span{i, i + len(lit)}, nil
}

func scanNumber(b []byte, i int) (int, error) {
	start := i
	if b[i] == '-' {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
			n++
		}
		return n
	}
	if i < len(b) && b[i] == '0' {
		i++
	} else if digits() == 0 {
		return 0, synErr(start, "bad number")
	}
	if i < len(b) && b[i] == '.' {
		i++
		if digits() == 0 {
			return 0, synErr(start, "bad fraction")
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if digits() == 0 {
			return 0, synErr(start, "bad exponent")
		}
	}
	return i, nil
}

// scanString validates the string starting at b[i] == '"' and returns the index after it.
func scanString(b []byte, i int) (int, error) {
	start := i
	i++
	for i < len(b) {
		c := b[i]
		switch {
		case c == '"':
			return i + 1, nil
		case c == '\\':
			if i+1 >= len(b) {
				return 0, synErr(start, "unterminated escape")
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) || !isHex4(b[i+2:i+6]) {
					return 0, synErr(i, "bad \\u escape")
				}
				i += 6
			default:
				return 0, synErr(i, "bad escape")
			}
		case c < 0x20:
			return 0, synErr(i, "control character in string")
		case c < utf8.RuneSelf:
			i++
		default:
			r, n := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && n == 1 {
				return 0, synErr(i, "invalid UTF-8")
			}
			i += n
		}
	}
	return 0, synErr(start, "unterminated string")
}

func isHex4(b []byte) bool {
	for _, c := range b {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// decodeString returns the value of the JSON string token s (with quotes).
func decodeString(s []byte) (string, error) {
	if len(s) < 2 {
		return "", synErr(0, "not a string")
	}
	inner := s[1 : len(s)-1]
	simple := true
	for _, c := range inner {
		if c == '\\' {
			simple = false
			break
		}
	}
	if simple {
		return string(inner), nil
	}
	var out string
	if err := json.Unmarshal(s, &out); err != nil {
		return "", fmt.Errorf("%w: %v", errSyntax, err)
	}
	return out, nil
}

// scanObject validates the object at b[i] == '{'. fn, when set, sees every member in order.
func scanObject(b []byte, i, depth int, fn func(m member) error) (int, error) {
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1, nil
	}
	for {
		i = skipWS(b, i)
		if i >= len(b) || b[i] != '"' {
			return 0, synErr(i, "expected a member name")
		}
		ks := i
		ke, err := scanString(b, i)
		if err != nil {
			return 0, err
		}
		i = skipWS(b, ke)
		if i >= len(b) || b[i] != ':' {
			return 0, synErr(i, "expected ':'")
		}
		v, err := scanValue(b, i+1, depth+1)
		if err != nil {
			return 0, err
		}
		if fn != nil {
			key, err := decodeString(b[ks:ke])
			if err != nil {
				return 0, err
			}
			if err := fn(member{keyStart: ks, key: key, val: v}); err != nil {
				return 0, err
			}
		}
		i = skipWS(b, v.end)
		if i >= len(b) {
			return 0, synErr(i, "unterminated object")
		}
		switch b[i] {
		case ',':
			i++
		case '}':
			return i + 1, nil
		default:
			return 0, synErr(i, "expected ',' or '}'")
		}
	}
}

// scanArray validates the array at b[i] == '['. fn, when set, sees every element in order.
func scanArray(b []byte, i, depth int, fn func(v span) error) (int, error) {
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == ']' {
		return i + 1, nil
	}
	for {
		v, err := scanValue(b, i, depth+1)
		if err != nil {
			return 0, err
		}
		if fn != nil {
			if err := fn(v); err != nil {
				return 0, err
			}
		}
		i = skipWS(b, v.end)
		if i >= len(b) {
			return 0, synErr(i, "unterminated array")
		}
		switch b[i] {
		case ',':
			i++
		case ']':
			return i + 1, nil
		default:
			return 0, synErr(i, "expected ',' or ']'")
		}
	}
}

// document validates that b holds exactly one JSON value and returns its span.
func document(b []byte) (span, error) {
	v, err := scanValue(b, 0, 0)
	if err != nil {
		return span{}, err
	}
	if skipWS(b, v.end) != len(b) {
		return span{}, synErr(v.end, "trailing data after the document")
	}
	return v, nil
}

// kind is the first byte class of a value.
func kind(b []byte, v span) byte {
	if v.end <= v.start {
		return 0
	}
	return b[v.start]
}

// edit replaces b[start:end] with repl.
type edit struct {
	span
	repl []byte
}

// removals returns the edits that delete the items marked in drop from a comma-separated
// list (object members or array elements), keeping the commas right. items[i] spans the item
// including an object member's key. Ranges never overlap: a removed item takes the separator
// after it, except a trailing run, which takes the separator before it.
func removals(items []span, drop []bool) []edit {
	n := len(items)
	last := n - 1
	for last >= 0 && drop[last] {
		last--
	}
	// last is the last kept item (-1: none kept).
	var out []edit
	for i := 0; i < n; i++ {
		if !drop[i] {
			continue
		}
		switch {
		case last < 0:
			// Everything goes: one range from the first item to the last.
			return []edit{{span: span{items[0].start, items[n-1].end}}}
		case i < last:
			out = append(out, edit{span: span{items[i].start, items[i+1].start}})
		default:
			// Trailing run after the last kept item.
			return append(out, edit{span: span{items[last].end, items[n-1].end}})
		}
	}
	return out
}

// apply writes b with the sorted, disjoint edits applied.
func apply(b []byte, edits []edit) []byte {
	if len(edits) == 0 {
		return b
	}
	size := len(b)
	for _, e := range edits {
		size += len(e.repl) - (e.end - e.start)
	}
	out := make([]byte, 0, max(size, 0))
	pos := 0
	for _, e := range edits {
		out = append(out, b[pos:e.start]...)
		out = append(out, e.repl...)
		pos = e.end
	}
	return append(out, b[pos:]...)
}

// appendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD; <, > and & are kept
// (the response is JSON, not HTML).
func appendString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c == '\n':
				dst = append(dst, '\\', 'n')
			case c == '\r':
				dst = append(dst, '\\', 'r')
			case c == '\t':
				dst = append(dst, '\\', 't')
			case c < 0x20:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			dst = append(dst, `\ufffd`...)
		} else if r == '\u2028' || r == '\u2029' {
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xf])
		} else {
			dst = append(dst, s[i:i+n]...)
		}
		i += n
	}
	return append(dst, '"')
}

// splitPath splits a dotted path ("contact.email") into JSON member names.
func splitPath(p string) []string {
	if p == "" {
		return nil
	}
	return strings.Split(p, ".")
}
