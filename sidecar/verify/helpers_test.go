package verify

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type bufWriter struct{ b *[]byte }

func (w *bufWriter) Write(p []byte) (int, error) { *w.b = append(*w.b, p...); return len(p), nil }

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.Walk(src, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if info.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		raw, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, raw, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}
