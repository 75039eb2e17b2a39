// Package bundletest holds test helpers shared by the bundle packages' tests: the repository
// root, the development signing keys in bundles/dev, a real `opa` binary, and tarball
// surgery for tamper tests. It is imported by tests only.
package bundletest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
)

// OPAVersion is the OPA CLI version installed when none is found (matches go.mod).
const OPAVersion = "v1.22.2"

// Key is a development signing key pair from bundles/dev.
type Key struct {
	ID, Alg, Private, Public string
}

// RepoRoot returns the repository root (the directory holding go.mod).
func RepoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Dir(file)
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("bundletest: go.mod not found above " + file)
		}
		dir = parent
	}
}

// Policies is the repository's policy directory.
func Policies(t testing.TB) string { return filepath.Join(RepoRoot(t), "policies") }

// DevES256 and DevRS256 are the committed development keys (never for production).
func DevES256(t testing.TB) Key { return devKey(t, "dev-es256", "ES256") }
func DevRS256(t testing.TB) Key { return devKey(t, "dev-rs256", "RS256") }

func devKey(t testing.TB, base, alg string) Key {
	dir := filepath.Join(RepoRoot(t), "bundles", "dev")
	return Key{ID: "consentry-" + base, Alg: alg, Private: filepath.Join(dir, base+".key"), Public: filepath.Join(dir, base+".pub")}
}

var (
	opaOnce sync.Once
	opaPath string
	opaErr  error
)

// OPA returns a real opa binary: $OPA, else bin/opa in the repository, else one installed
// with `go install github.com/open-policy-agent/opa@OPAVersion` into the user cache directory
// (consentry/opa-<version>). It never skips.
func OPA(t testing.TB) string {
	t.Helper()
	opaOnce.Do(func() {
		if p := os.Getenv("OPA"); p != "" {
			opaPath = p
			return
		}
		if p := filepath.Join(RepoRoot(t), "bin", "opa"); isExec(p) {
			opaPath = p
			return
		}
		// A per-user cache directory, so the binary is built once, not once per test run.
		cache, err := os.UserCacheDir()
		if err != nil {
			cache = os.TempDir()
		}
		gobin := filepath.Join(cache, "consentry", "opa-"+OPAVersion)
		if p := filepath.Join(gobin, "opa"); isExec(p) {
			opaPath = p
			return
		}
		cmd := exec.Command("go", "install", "github.com/open-policy-agent/opa@"+OPAVersion)
		cmd.Env = append(os.Environ(), "GOBIN="+gobin)
		if out, err := cmd.CombinedOutput(); err != nil {
			opaErr = errors.New("go install opa: " + err.Error() + ": " + string(out))
			return
		}
		opaPath = filepath.Join(gobin, "opa")
	})
	if opaErr != nil {
		t.Fatal(opaErr)
	}
	return opaPath
}

func isExec(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// Files returns the regular files of a bundle tarball by name (without leading slash).
func Files(t testing.TB, raw []byte) map[string][]byte {
	t.Helper()
	gz, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	out := map[string][]byte{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out[strings.TrimPrefix(h.Name, "/")] = b
	}
}

// Tar packs files (name -> content) as a bundle tarball, in name order.
func Tar(t testing.TB, files map[string][]byte) []byte {
	t.Helper()
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	entries := make([]Entry, len(names))
	for i, n := range names {
		entries[i] = Entry{Name: "/" + n, Body: files[n]}
	}
	return TarEntries(t, gzip.DefaultCompression, entries)
}

// Entry is one tar entry, named exactly as given.
type Entry struct {
	Name string
	Body []byte
}

// TarEntries packs entries in the order given, at a gzip level: for tarballs a map cannot
// describe (two entries with one name) and for compression bombs.
func TarEntries(t testing.TB, level int, entries []Entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz, err := gzip.NewWriterLevel(&buf, level)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		if err := tw.WriteHeader(&tar.Header{Name: e.Name, Mode: 0o644, Size: int64(len(e.Body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.Body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// Rewrite unpacks raw, lets edit change the files, and packs them again.
func Rewrite(t testing.TB, raw []byte, edit func(files map[string][]byte)) []byte {
	t.Helper()
	files := Files(t, raw)
	edit(files)
	return Tar(t, files)
}

// CopyDir copies a directory tree (a policy directory into a test's temp dir).
func CopyDir(t testing.TB, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// DevES256Other returns the PEM public key of a second, throwaway ES256 key pair
// (generated once per test binary): "a valid key, but not the one that signed".
func DevES256Other(t testing.TB) string {
	t.Helper()
	otherOnce.Do(func() { otherPub, otherErr = genES256() })
	if otherErr != nil {
		t.Fatal(otherErr)
	}
	return otherPub
}

var (
	otherOnce sync.Once
	otherPub  string
	otherErr  error
)
