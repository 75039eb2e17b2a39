package auditlog

import (
	"bytes"
	"errors"
	"io"
)

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

var errScan = errors.New("malformed json record")

// topLevel calls fn for each member of the JSON object in line, with the raw (undecoded)
// value. It skips nested values by bracket matching, which is far cheaper than decoding them;
// the verifier only needs a handful of top-level members of each record.
func topLevel(line []byte, fn func(key, raw []byte) bool) error {
	i := skipWS(line, 0)
	if i >= len(line) || line[i] != '{' {
		return errScan
	}
	i++
	for {
		i = skipWS(line, i)
		if i < len(line) && line[i] == '}' {
			return nil
		}
		ks := i
		ke, err := skipString(line, i)
		if err != nil {
			return err
		}
		i = skipWS(line, ke)
		if i >= len(line) || line[i] != ':' {
			return errScan
		}
		i = skipWS(line, i+1)
		vs := i
		ve, err := skipValue(line, i)
		if err != nil {
			return err
		}
		if !fn(line[ks+1:ke-1], line[vs:ve]) {
			return nil
		}
		i = skipWS(line, ve)
		if i >= len(line) {
			return errScan
		}
		if line[i] == ',' {
			i++
			continue
		}
		if line[i] == '}' {
			return nil
		}
		return errScan
	}
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\r' || b[i] == '\t') {
		i++
	}
	return i
}

// skipString returns the index after the closing quote of the string starting at i. It jumps
// from quote to quote (bytes.IndexByte is vectorized); a quote preceded by an odd number of
// backslashes is escaped.
func skipString(b []byte, i int) (int, error) {
	if i >= len(b) || b[i] != '"' {
		return 0, errScan
	}
	for j := i + 1; ; {
		k := bytes.IndexByte(b[j:], '"')
		if k < 0 {
			return 0, errScan
		}
		q := j + k
		n := 0
		for p := q - 1; p > i && b[p] == '\\'; p-- {
			n++
		}
		if n%2 == 0 {
			return q + 1, nil
		}
		j = q + 1
	}
}

func skipValue(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, errScan
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				e, err := skipString(b, i)
				if err != nil {
					return 0, err
				}
				i = e - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1, nil
				}
			}
		}
		return 0, errScan
	default:
		s := i
		for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ']' && b[i] != ' ' && b[i] != '\n' {
			i++
		}
		if i == s {
			return 0, errScan
		}
		return i, nil
	}
}
