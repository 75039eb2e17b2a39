package bundle_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/consentry/consentry/sidecar/bundle"
	"github.com/consentry/consentry/sidecar/bundle/bundletest"
)

// tarGz writes entries (name -> size in zero bytes) as a maximally compressed tarball, in
// name order as given by names.
func tarGz(t testing.TB, names []string, size func(i int) int) []byte {
	t.Helper()
	entries := make([]bundletest.Entry, len(names))
	for i, n := range names {
		entries[i] = bundletest.Entry{Name: n, Body: make([]byte, size(i))}
	}
	return bundletest.TarEntries(t, gzip.BestCompression, entries)
}

func numbered(n int, format string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf(format, i)
	}
	return out
}

// A small gzip tarball that inflates to far more than policy.max_size_bytes (many files, each
// just under the per-file limit) used to be decompressed whole into memory before its (missing)
// signature was looked at. It must be refused as too_large with memory bounded by the limit.
func TestTarBombRejectedBeforeInflating(t *testing.T) {
	const limit = 1 << 20 // policy.max_size_bytes
	const files = 120     // ~120 MiB inflated
	raw := tarGz(t, numbered(files, "/x/%d/data.json"), func(int) int { return limit - 1024 })
	if len(raw) > limit {
		t.Fatalf("compressed bundle is %d bytes, want < %d", len(raw), limit)
	}
	f := newFixture(t, bundle.Config{File: "unused.tar.gz", MaxSizeBytes: limit})
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	err := f.mgr.ActivateTarball(context.Background(), raw, "test")
	runtime.ReadMemStats(&after)
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("compressed %d bytes, rejected as %q after allocating %d MiB", len(raw), bundle.ReasonOf(err), alloc>>20)
	if err == nil {
		t.Fatal("accepted")
	}
	if bundle.ReasonOf(err) != bundle.ReasonTooLarge || alloc > 8*limit {
		t.Fatalf("an unsigned %d-byte bundle inflating to %d MiB was rejected as %q after allocating %d MiB (want too_large, bounded by max_size_bytes)",
			len(raw), files*(limit-1024)>>20, bundle.ReasonOf(err), alloc>>20)
	}
}

// The pre-scan's limits, through the verifier every tarball goes through (sidecar, `bundle
// verify`, replay): total inflated size, entry count and declared entry size. Within the
// limits OPA's reader decides (here: unsigned).
func TestReadTarballInflateLimits(t *testing.T) {
	const limit = 64 << 10
	tests := []struct {
		name string
		raw  []byte
		want string
	}{
		{"inflates past InflateFactor x limit", tarGz(t, numbered(bundle.InflateFactor+1, "/x/%d/data.json"), func(int) int { return limit - 1024 }), bundle.ReasonTooLarge},
		{"too many entries", tarGz(t, numbered(bundle.MaxBundleFiles+1, "/x/%d/data.json"), func(int) int { return 0 }), bundle.ReasonTooLarge},
		{"one file over the limit", tarGz(t, []string{"/data.json"}, func(int) int { return limit + 1 }), bundle.ReasonTooLarge},
		{"not gzip", []byte("not a tarball"), bundle.ReasonMalformed},
		{"truncated", tarGz(t, []string{"/data.json"}, func(int) int { return 4096 })[:40], bundle.ReasonMalformed},
		{"within limits", tarGzFiles(t, [][2]string{
			{"/.manifest", `{"revision":"1","roots":["consentry"]}`},
			{"/consentry/p.rego", "package consentry\n\ndecision := {}\n"},
		}), bundle.ReasonSignatureMissing},
	}
	f := newFixture(t, bundle.Config{File: "unused.tar.gz", MaxSizeBytes: limit})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := f.mgr.ActivateTarball(context.Background(), tc.raw, "test"); bundle.ReasonOf(err) != tc.want {
				t.Fatalf("got %q (%v), want %q", bundle.ReasonOf(err), err, tc.want)
			}
		})
	}
}

// policy.file is read with a bound: a file over max_size_bytes is refused as too_large
// without being read whole.
func TestFileSourceOverLimitIsTooLarge(t *testing.T) {
	const limit = 64 << 10
	path := filepath.Join(t.TempDir(), "bundle.tar.gz")
	if err := os.WriteFile(path, make([]byte, 4*limit), 0o644); err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, bundle.Config{File: path, MaxSizeBytes: limit})
	if _, err := f.mgr.CheckLocalSource(context.Background()); bundle.ReasonOf(err) != bundle.ReasonTooLarge {
		t.Fatalf("got %v, want too_large", err)
	}
}

// A bundle directory (or policy directory) whose files total more than InflateFactor x
// max_size_bytes is refused before OPA's directory loader (or LoadDir) reads it.
func TestDirOverInflateLimitIsTooLarge(t *testing.T) {
	const limit = 64 << 10
	for _, bundleDir := range []bool{true, false} {
		t.Run(fmt.Sprintf("bundle dir %v", bundleDir), func(t *testing.T) {
			dir := t.TempDir()
			if bundleDir {
				if err := os.WriteFile(filepath.Join(dir, ".manifest"), []byte(`{"revision":"1"}`), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			for i := 0; i <= bundle.InflateFactor; i++ {
				if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("p%d.rego", i)), make([]byte, limit-1), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			no := false
			f := newFixture(t, bundle.Config{Dir: dir, MaxSizeBytes: limit, RequireSignatures: &no})
			if err := f.mgr.ActivatePolicyDir(context.Background()); bundle.ReasonOf(err) != bundle.ReasonTooLarge {
				t.Fatalf("got %v, want too_large", err)
			}
		})
	}
}

// A sparse tar entry expands in archive/tar without being in the stream: 40 entries of a
// PAX 1.0 sparse file (`tar --sparse --sparse-version=1.0 --format=pax`), or old GNU 'S'
// entries, from about a kilobyte each. The pre-scan counted only the stream's bytes, so
// OPA's loader then allocated every entry's expanded size before the (missing) signature was
// looked at. They are refused before anything is buffered.
func TestSparseTarballRejectedBeforeAllocating(t *testing.T) {
	const limit = 1 << 20 // policy.max_size_bytes
	const files = 40      // 40 MiB expanded, 10x the inflate limit
	for _, format := range []string{bundletest.SparsePAX10, bundletest.SparseOldGNU} {
		t.Run(format, func(t *testing.T) {
			raw := bundletest.SparseTar(t, format, files, limit-1024)
			sparseEntriesAsExpected(t, raw, format, limit-1024)
			f := newFixture(t, bundle.Config{File: "unused.tar.gz", MaxSizeBytes: limit})
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			err := f.mgr.ActivateTarball(context.Background(), raw, "test")
			runtime.ReadMemStats(&after)
			alloc := after.TotalAlloc - before.TotalAlloc
			t.Logf("compressed %d bytes, rejected as %q after allocating %d KiB: %v", len(raw), bundle.ReasonOf(err), alloc>>10, err)
			if bundle.ReasonOf(err) != bundle.ReasonMalformed || alloc > limit {
				t.Fatalf("a %d-byte sparse tarball expanding to %d MiB was rejected as %q after allocating %d KiB (want malformed, under %d KiB)",
					len(raw), files*(limit-1024)>>20, bundle.ReasonOf(err), alloc>>10, limit>>10)
			}
			// The same limits hold for every reader of a tarball.
			if err := bundle.PrescanTarball(raw, limit, ""); bundle.ReasonOf(err) != bundle.ReasonMalformed {
				t.Fatalf("PrescanTarball: %v", err)
			}
		})
	}
}

// sparseEntriesAsExpected checks the test's tarball: archive/tar reads it, and each entry is
// the sparse file it means to be (so the test does not pass on a tarball nobody can read).
func sparseEntriesAsExpected(t *testing.T, raw []byte, format string, realSize int64) {
	t.Helper()
	gz, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	hdr, err := tr.Next()
	if err != nil {
		t.Fatal(err)
	}
	if hdr.Size != realSize || hdr.Name != "/x/0/data.json" {
		t.Fatalf("entry %q of %d bytes, want /x/0/data.json of %d", hdr.Name, hdr.Size, realSize)
	}
	if want := map[string]byte{bundletest.SparsePAX10: tar.TypeReg, bundletest.SparseOldGNU: tar.TypeGNUSparse}[format]; hdr.Typeflag != want {
		t.Fatalf("type %q, want %q", hdr.Typeflag, want)
	}
	n, err := io.Copy(io.Discard, tr)
	if err != nil || n != realSize {
		t.Fatalf("read %d bytes (%v), want %d", n, err, realSize)
	}
}
