package bundle

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Revisions are compared for anti-rollback under one of two schemes, chosen by the shape of
// the strings (both revisions must use the same scheme):
//
//   - numeric: decimal digits only ("42", "0043"), compared as unsigned integers;
//   - timestamp: an RFC 3339 timestamp prefix, optionally followed by any suffix
//     ("2026-11-22T07:40:00.123Z-3f2a9c1b"), compared by the instant. Two different
//     revisions at the same instant are ambiguous and do not compare.
//
// Anything else (an empty revision, a git SHA, mixed schemes) is not comparable, and an
// incomparable revision is treated like an older one: rejected unless allow_rollback is set.
// `consentry bundle build` defaults to the timestamp scheme.
var timestampPrefix = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})`)

// ErrIncomparable is returned by CompareRevisions when the revisions share no scheme.
var ErrIncomparable = errors.New("revisions are not comparable")

// CompareRevisions returns -1, 0 or +1 as a is older than, the same as, or newer than b.
func CompareRevisions(a, b string) (int, error) {
	if a == b && a != "" {
		return 0, nil
	}
	if isNumeric(a) && isNumeric(b) {
		return compareNumeric(a, b), nil
	}
	ta, oka := revisionTime(a)
	tb, okb := revisionTime(b)
	if oka && okb {
		switch {
		case ta.Before(tb):
			return -1, nil
		case ta.After(tb):
			return 1, nil
		}
		return 0, fmt.Errorf("%w: %q and %q name the same instant", ErrIncomparable, a, b)
	}
	return 0, fmt.Errorf("%w: %q and %q (use numeric revisions or an RFC 3339 timestamp prefix)", ErrIncomparable, a, b)
}

// NewRevision returns a timestamp-scheme revision for now, with a content hash suffix.
func NewRevision(now time.Time, contentHash string) string {
	r := now.UTC().Format("2006-01-02T15:04:05.000000000Z")
	if contentHash != "" {
		r += "-" + contentHash[:min(12, len(contentHash))]
	}
	return r
}

func isNumeric(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func compareNumeric(a, b string) int {
	a = strings.TrimLeft(a, "0")
	b = strings.TrimLeft(b, "0")
	if len(a) != len(b) {
		if len(a) < len(b) {
			return -1
		}
		return 1
	}
	return strings.Compare(a, b)
}

func revisionTime(s string) (time.Time, bool) {
	m := timestampPrefix.FindString(s)
	if m == "" {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, m)
	if err != nil {
		return time.Time{}, false
	}
	return t, true
}
