package e2e_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/consentry/consentry/e2e/harness"
)

// binDir holds the consentry and democrm binaries under test: the ones `make build` put next
// to $CONSENTRY_BIN, or freshly built ones (plain `go test ./e2e/...`).
var binDir string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if p := os.Getenv("CONSENTRY_BIN"); p != "" {
		dir := filepath.Dir(p)
		if exists(filepath.Join(dir, "consentry")) && exists(filepath.Join(dir, "democrm")) {
			binDir = dir
		}
	}
	if binDir == "" {
		tmp, err := os.MkdirTemp("", "consentry-e2e-bin")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(tmp)
		if _, err := harness.Build(context.Background(), tmp, "./cmd/consentry", "./cmd/democrm"); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: build:", err)
			return 1
		}
		binDir = tmp
	}
	return m.Run()
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func freeAddr(t testing.TB) string {
	t.Helper()
	a, err := harness.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return a
}
