// Package jsonstr appends JSON strings, for the hand-written encoders that must match a byte
// contract: the decision log's JSON lines (exactly encoding/json's output) and its canonical
// JSON (the hash chain's input). The two differ only in which ASCII bytes travel unescaped and
// in how invalid UTF-8 is written, so one function with those two choices serves both.
package jsonstr

import "unicode/utf8"

// Set marks the ASCII bytes a JSON string carries unescaped.
type Set [utf8.RuneSelf]bool

// Plain is every printable ASCII byte but '"' and '\\'.
var Plain = func() (t Set) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// HTMLSafe is Plain without '<', '>' and '&' (encoding/json's htmlSafeSet, its default).
var HTMLSafe = func() (t Set) {
	t = Plain
	t['<'], t['>'], t['&'] = false, false, false
	return t
}()

const hexDigits = "0123456789abcdef"

// Append appends s as a JSON string: bytes in plain as they are, '"', '\\' and the short
// control escapes (\b \f \n \r \t) as such, any other ASCII byte as \u00XX, U+2028 and U+2029
// as \u2028 and \u2029, and each invalid UTF-8 byte as invalid (encoding/json writes the
// escape `\ufffd`, canonical JSON the character itself).
func Append(b []byte, s string, plain *Set, invalid string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if plain[c] {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, invalid...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
