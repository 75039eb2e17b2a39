package tlsserver

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestReloaderFollowsContent: the reloader parses again only when the files' content changed
// (whatever their modification time), keeps the last good value while a file is missing or
// does not parse, and retries at the next check.
func TestReloaderFollowsContent(t *testing.T) {
	file := filepath.Join(t.TempDir(), "f")
	tick := time.Now().Add(-time.Hour).Truncate(time.Second)
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(file, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(file, tick, tick); err != nil { // one mtime throughout
			t.Fatal(err)
		}
	}
	loads := 0
	load := func(b [][]byte) (string, error) {
		loads++
		if string(b[0]) == "bad" {
			return "", errors.New("does not parse")
		}
		return string(b[0]), nil
	}
	write("one")
	r, err := newReloader(time.Nanosecond, "test.file", load, file) // every get checks
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name      string
		change    func()
		want      string
		wantLoads int
	}{
		{"unchanged: not parsed again", func() {}, "one", 1},
		{"same mtime, new content", func() { write("two") }, "two", 2},
		{"does not parse: previous kept", func() { write("bad") }, "two", 3},
		{"still bad: retried", func() {}, "two", 4},
		{"missing (mid-rename): previous kept", func() { _ = os.Remove(file) }, "two", 4},
		{"back with the content last loaded: not parsed again", func() { write("two") }, "two", 4},
		{"fixed", func() { write("three") }, "three", 5},
	}
	for _, s := range steps {
		s.change()
		time.Sleep(time.Millisecond)
		if got := r.get(); got != s.want || loads != s.wantLoads {
			t.Errorf("%s: got %q after %d loads, want %q after %d", s.name, got, loads, s.want, s.wantLoads)
		}
	}
	if _, err := newReloader(time.Second, "test.file", load, filepath.Join(t.TempDir(), "none")); err == nil {
		t.Error("missing file at start accepted")
	}
}
