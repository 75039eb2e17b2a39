package bundle

import (
	"errors"
	"testing"
	"time"
)

func TestCompareRevisions(t *testing.T) {
	tests := []struct {
		a, b    string
		want    int
		comparr bool // want ErrIncomparable
	}{
		{"2", "10", -1, false},
		{"10", "2", 1, false},
		{"007", "7", 0, false},
		{"12345678901234567890123", "12345678901234567890124", -1, false},
		{"2026-11-22T07:40:00Z-aaa", "2026-11-22T07:41:00Z-bbb", -1, false},
		{"2026-11-22T07:40:00.5Z", "2026-11-22T07:40:00.25Z", 1, false},
		{"2026-11-22T08:40:00+01:00", "2026-11-22T07:40:00Z", 0, true}, // same instant, different text
		{"2026-11-22T07:40:00Z-x", "2026-11-22T07:40:00Z-x", 0, false},
		{"2026-11-22T09:00:00+01:00-x", "2026-11-22T07:40:00Z-y", 1, false},
		{"abc", "abd", 0, true},
		{"", "1", 0, true},
		{"1", "2026-11-22T07:40:00Z", 0, true},
		{"v2", "v1", 0, true},
	}
	for _, tt := range tests {
		got, err := CompareRevisions(tt.a, tt.b)
		if tt.comparr {
			if !errors.Is(err, ErrIncomparable) {
				t.Errorf("CompareRevisions(%q, %q) err = %v, want ErrIncomparable", tt.a, tt.b, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("CompareRevisions(%q, %q) = %d, %v; want %d", tt.a, tt.b, got, err, tt.want)
		}
	}
}

func TestNewRevisionOrders(t *testing.T) {
	t0 := time.Date(2026, 11, 22, 7, 0, 0, 0, time.UTC)
	a := NewRevision(t0, "ffff00000000aaaa")
	b := NewRevision(t0.Add(time.Nanosecond), "0000")
	if c, err := CompareRevisions(a, b); err != nil || c != -1 {
		t.Fatalf("%s vs %s: %d %v", a, b, c, err)
	}
	if a != "2026-11-22T07:00:00.000000000Z-ffff00000000" {
		t.Fatalf("revision format changed: %s", a)
	}
}

func FuzzCompareRevisions(f *testing.F) {
	f.Add("1", "2")
	f.Add("2026-11-22T07:40:00Z-a", "2026-11-22T07:40:01Z")
	f.Fuzz(func(t *testing.T, a, b string) {
		ab, errAB := CompareRevisions(a, b)
		ba, errBA := CompareRevisions(b, a)
		if (errAB == nil) != (errBA == nil) {
			t.Fatalf("asymmetric comparability %q %q: %v / %v", a, b, errAB, errBA)
		}
		if errAB == nil && ab != -ba {
			t.Fatalf("not antisymmetric: %q %q: %d %d", a, b, ab, ba)
		}
	})
}
