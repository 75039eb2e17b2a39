package bundle

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/consentry/consentry/sidecar/engine"
)

// Limits on what a bundle may expand to. OPA's readers enforce only a per-file limit and
// read every file of a tarball into memory before the signature is looked at, so without
// these a small unsigned tarball (or directory) of many files just under max_size_bytes
// costs files * max_size_bytes of heap before it is refused.
const (
	// InflateFactor bounds a bundle's decompressed size (the whole tar stream, headers
	// included; for a directory, the sum of its files) to InflateFactor * max_size_bytes.
	// A bundle is dominated by one data.json, which the per-file limit (max_size_bytes)
	// already bounds, so this leaves room for several data files and the policies.
	InflateFactor = 4
	// MaxBundleFiles bounds the files of a tarball (its entries of every kind at
	// InflateFactor times this) and of a bundle or policy directory; each costs a descriptor,
	// a buffer and, for .rego, a parse.
	MaxBundleFiles = 10000
)

// inflateLimit is the decompressed size limit for a max_size_bytes of maxSize.
func inflateLimit(maxSize int64) int64 {
	if maxSize <= 0 {
		maxSize = DefaultMaxSizeBytes
	}
	if maxSize > (1<<62)/InflateFactor {
		return 1 << 62
	}
	return maxSize * InflateFactor
}

// errInflateLimit is returned by budgetReader once its budget is spent.
var errInflateLimit = errors.New("decompressed size limit exceeded")

// budgetReader fails with errInflateLimit as soon as more than left bytes were read.
type budgetReader struct {
	r    io.Reader
	left int64
}

func (b *budgetReader) Read(p []byte) (int, error) {
	if b.left < 0 {
		return 0, errInflateLimit
	}
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	if b.left < 0 {
		return n, errInflateLimit
	}
	return n, err
}

// LimitSetting names the size limit in the sidecar's errors: the setting an operator raises.
const LimitSetting = "policy.max_size_bytes"

// PrescanTarball is the limit check every reader of a bundle tarball runs before OPA's reader
// holds it in memory (the sidecar, `bundle build`, `bundle verify`, `bundle sign`); see
// prescanTarball. setting names maxFile in errors ("": LimitSetting): a command line tool
// names its flag, the setting its user can raise.
func PrescanTarball(raw []byte, maxFile int64, setting string) error {
	if maxFile <= 0 {
		maxFile = DefaultMaxSizeBytes
	}
	if setting == "" {
		setting = LimitSetting
	}
	return prescanTarball(raw, maxFile, setting)
}

// prescanTarball streams raw's gzip+tar once, discarding the contents, and refuses it
// (too_large) before OPA's reader buffers it when it inflates to more than
// inflateLimit(maxFile) bytes, declares entries totalling more than that, has more than
// MaxBundleFiles entries, or an entry larger than maxFile. Memory stays at the
// decompressor's window plus one copy buffer. An unreadable stream is malformed: OPA's reader
// would fail on it too, after buffering. So is a sparse entry (see sparseEntry).
func prescanTarball(raw []byte, maxFile int64, setting string) error {
	limit := inflateLimit(maxFile)
	tooLarge := func() error {
		return reject(ReasonTooLarge, "", fmt.Errorf("bundle inflates to more than %d bytes (%d x %s)", limit, InflateFactor, setting))
	}
	gz, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		return reject(ReasonMalformed, "", fmt.Errorf("archive read failed: %w", err))
	}
	defer gz.Close()
	tr := tar.NewReader(&budgetReader{r: gz, left: limit})
	files := 0
	// What the entries declare, which is what OPA allocates (one buffer of hdr.Size per
	// file): the stream's bytes alone undercount any entry archive/tar expands itself.
	var declared int64
	for entries := 0; ; entries++ {
		hdr, err := tr.Next()
		switch {
		case errors.Is(err, io.EOF):
			return nil
		case errors.Is(err, errInflateLimit):
			return tooLarge()
		case err != nil:
			return reject(ReasonMalformed, "", fmt.Errorf("archive read failed: %w", err))
		}
		// Files are what the limit is about (a directory tree's own entries do not count);
		// entries of every kind are bounded too, at a multiple, so headers alone cannot flood.
		if hdr.Typeflag == tar.TypeReg {
			files++
		}
		if files > MaxBundleFiles || entries >= InflateFactor*MaxBundleFiles {
			return reject(ReasonTooLarge, "", fmt.Errorf("bundle has more than %d files (or %d entries)", MaxBundleFiles, InflateFactor*MaxBundleFiles))
		}
		// OPA allocates the declared size up front, before it copies the entry.
		if hdr.Size > maxFile {
			return reject(ReasonTooLarge, "", fmt.Errorf("bundle file %s is %d bytes, %s is %d", hdr.Name, hdr.Size, setting, maxFile))
		}
		if declared += max(hdr.Size, 0); declared > limit {
			return reject(ReasonTooLarge, "", fmt.Errorf("bundle entries declare more than %d bytes (%d x %s)", limit, InflateFactor, setting))
		}
		if sparseEntry(hdr) {
			return reject(ReasonMalformed, "", fmt.Errorf("bundle file %s is a sparse tar entry, which bundles never hold (archive/tar expands its holes without reading them)", hdr.Name))
		}
		if _, err := io.Copy(io.Discard, tr); err != nil {
			if errors.Is(err, errInflateLimit) {
				return tooLarge()
			}
			return reject(ReasonMalformed, "", fmt.Errorf("archive read failed: %s: %w", hdr.Name, err))
		}
	}
}

// sparseEntry reports a GNU sparse entry: an old GNU 'S' entry, or a PAX entry with
// GNU.sparse.* records (which archive/tar returns as a regular file whose Size is the expanded
// size). Its holes are zeros archive/tar makes up without reading the stream, so a few bytes
// of tarball could declare (and make OPA's reader allocate) gigabytes; no bundle writer
// produces them, so they are refused outright rather than counted.
func sparseEntry(hdr *tar.Header) bool {
	if hdr.Typeflag == tar.TypeGNUSparse {
		return true
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

// readFileLimited reads at most max+1 bytes of path: enough for the caller to see (and
// reject as too_large) a file over max without reading all of it.
func readFileLimited(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, max+1))
}

// dirDigest is a digest of the regular files under dir, a symlinked file counted as the file
// it points to (LoadDir reads through it; for a bundle directory, which OPA's loader reads
// without them, it only means a change there is verified again): sha256 over each file's
// sorted relative path, size and bytes. skip, when set, leaves out a directory (by relative slash path).
// It reads at most inflateLimit(maxSize) bytes: past that, or past MaxBundleFiles files, it
// returns a digest of the names and sizes it saw with a too_large rejection, so a directory
// too large to activate is still remembered as rejected and not re-read on every poll.
func dirDigest(dir string, maxSize int64, skip func(rel string) bool) (string, error) {
	root := dir
	if resolved, err := filepath.EvalSymlinks(dir); err == nil {
		root = resolved // a symlinked directory is read where it points
	}
	type entry struct {
		rel  string
		size int64
	}
	var files []entry
	var tooMany bool
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if rel != "." && skip != nil && skip(rel) {
				return filepath.SkipDir
			}
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink != 0 {
			// A file symlink (a Kubernetes ConfigMap volume is all symlinks) is read where it
			// points, as LoadDir reads it; a dangling one, or one to a directory, counts as absent.
			if info, err = os.Stat(p); err != nil || !info.Mode().IsRegular() {
				return nil
			}
		} else if !d.Type().IsRegular() {
			return nil
		}
		if len(files) >= MaxBundleFiles {
			tooMany = true
			return filepath.SkipAll
		}
		files = append(files, entry{rel, info.Size()})
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("read %s: %w", dir, err)
	}
	sort.Slice(files, func(i, j int) bool { return files[i].rel < files[j].rel })
	h := sha256.New()
	limit := inflateLimit(maxSize)
	var total int64
	for _, f := range files {
		total += f.size
	}
	withContent := !tooMany && total <= limit
	for _, f := range files {
		fmt.Fprintf(h, "%s\x00%d\x00", f.rel, f.size)
		if !withContent {
			continue
		}
		if err := hashFile(h, filepath.Join(root, filepath.FromSlash(f.rel)), f.size); err != nil {
			return "", fmt.Errorf("read %s: %w", dir, err)
		}
	}
	digest := "sha256:" + hex.EncodeToString(h.Sum(nil))
	switch {
	case tooMany:
		return digest, reject(ReasonTooLarge, "", fmt.Errorf("%s has more than %d files", dir, MaxBundleFiles))
	case !withContent:
		return digest, reject(ReasonTooLarge, "", fmt.Errorf("%s holds %d bytes, more than %d (%d x policy.max_size_bytes)", dir, total, limit, InflateFactor))
	}
	return digest, nil
}

// hashFile adds path's bytes to h, at most size+1 of them (a file that grew since it was
// listed changes the digest without being read whole).
func hashFile(h io.Writer, path string, size int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(h, io.LimitReader(f, size+1))
	return err
}

// skipPolicyDirExtras leaves out of a policy directory's digest what engine.LoadDir does
// not read: hidden directories and scenarios/.
func skipPolicyDirExtras(rel string) bool {
	return rel == engine.ScenarioDir || strings.HasPrefix(filepath.Base(rel), ".")
}
