package auditlog

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"

	"github.com/consentry/consentry/sidecar/internal/jsonstr"
)

// Canonical JSON (docs/decision-log.md, "Canonical form"):
//
//   - objects: members sorted by key, compared byte-wise on the UTF-8 encoding; no duplicates
//   - no insignificant whitespace anywhere
//   - strings: UTF-8; escaped are `"` `\` as \" \\, \b \f \n \r \t, other control characters
//     below 0x20 and U+2028/U+2029 as \u00xx / \u2028 (lowercase hex); invalid UTF-8 becomes U+FFFD;
//     nothing else is escaped (no HTML escaping)
//   - numbers: integers in decimal without exponent or leading zeros; other numbers in Go's
//     shortest 'g' form (strconv.FormatFloat(f, 'g', -1, 64)); NaN and infinities are rejected
//   - true, false, null as literals
//
// The hash of a record is SHA-256 over the canonical JSON of the record without its "hash"
// member. The writer stores exactly that canonical text with `,"hash":"<hex>"` inserted before
// the final `}`, so a verifier may hash the stored bytes directly.

// appendCanonical appends the canonical JSON of v, a value as produced by encoding/json decoding
// with UseNumber (map[string]any, []any, string, json.Number, bool, nil) or a few Go scalars.
func appendCanonical(b []byte, v any) ([]byte, error) {
	switch x := v.(type) {
	case nil:
		return append(b, "null"...), nil
	case bool:
		if x {
			return append(b, "true"...), nil
		}
		return append(b, "false"...), nil
	case string:
		return appendString(b, x), nil
	case json.Number:
		return appendNumber(b, string(x))
	case int:
		return strconv.AppendInt(b, int64(x), 10), nil
	case int64:
		return strconv.AppendInt(b, x, 10), nil
	case uint64:
		return strconv.AppendUint(b, x, 10), nil
	case float64:
		return appendFloat(b, x)
	case []any:
		b = append(b, '[')
		for i, e := range x {
			if i > 0 {
				b = append(b, ',')
			}
			var err error
			if b, err = appendCanonical(b, e); err != nil {
				return b, err
			}
		}
		return append(b, ']'), nil
	case []string:
		b = append(b, '[')
		for i, e := range x {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, e)
		}
		return append(b, ']'), nil
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
			b = append(b, ':')
			var err error
			if b, err = appendCanonical(b, x[k]); err != nil {
				return b, err
			}
		}
		return append(b, '}'), nil
	case map[string]string:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
			b = append(b, ':')
			b = appendString(b, x[k])
		}
		return append(b, '}'), nil
	}
	return b, fmt.Errorf("canonical json: unsupported type %T", v)
}

func appendNumber(b []byte, s string) ([]byte, error) {
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		return strconv.AppendInt(b, i, 10), nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return b, fmt.Errorf("canonical json: bad number %q", s)
	}
	return appendFloat(b, f)
}

func appendFloat(b []byte, f float64) ([]byte, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return b, fmt.Errorf("canonical json: %v is not representable", f)
	}
	if f == math.Trunc(f) && math.Abs(f) < 1e15 {
		return strconv.AppendInt(b, int64(f), 10), nil
	}
	return strconv.AppendFloat(b, f, 'g', -1, 64), nil
}

// appendString appends s as a canonical JSON string: invalid UTF-8 as U+FFFD itself, no HTML
// escaping.
func appendString(b []byte, s string) []byte {
	return jsonstr.Append(b, s, &jsonstr.Plain, "\ufffd")
}

// Canonicalize returns the canonical form of the JSON document data.
func Canonicalize(data []byte) ([]byte, error) {
	v, err := decodeGeneric(data)
	if err != nil {
		return nil, err
	}
	return appendCanonical(nil, v)
}

// decodeGeneric decodes JSON keeping numbers exact.
func decodeGeneric(data []byte) (any, error) {
	var v any
	d := json.NewDecoder(bytesReader(data))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		return nil, fmt.Errorf("decode json: %w", err)
	}
	return v, nil
}
