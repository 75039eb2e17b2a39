package bundle

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// persistStore keeps the last good bundle on disk: <dir>/<name>/bundle.tar.gz plus
// meta.json. The tarball is stored exactly as received (signature included) and is
// verified again when loaded, so a tampered file on disk is rejected like any other.
type persistStore struct {
	dir string
}

type persistMeta struct {
	Name     string    `json:"name"`
	Revision string    `json:"revision"`
	ETag     string    `json:"etag,omitempty"`
	Source   string    `json:"source"`
	SHA256   string    `json:"sha256"`
	SavedAt  time.Time `json:"saved_at"`
}

func newPersistStore(root, name string) (*persistStore, error) {
	dir := filepath.Join(root, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("policy.persist_dir: %w", err)
	}
	return &persistStore{dir: dir}, nil
}

func (p *persistStore) bundlePath() string { return filepath.Join(p.dir, "bundle.tar.gz") }
func (p *persistStore) metaPath() string   { return filepath.Join(p.dir, "meta.json") }

// save writes the bundle then its metadata, each atomically (temp file, fsync, rename).
func (p *persistStore) save(raw []byte, meta persistMeta) error {
	sum := sha256.Sum256(raw)
	meta.SHA256 = hex.EncodeToString(sum[:])
	meta.SavedAt = time.Now().UTC()
	if err := writeAtomic(p.bundlePath(), raw); err != nil {
		return err
	}
	mb, err := json.MarshalIndent(meta, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(p.metaPath(), mb)
}

// load returns the persisted bundle, or fs.ErrNotExist when there is none.
func (p *persistStore) load() ([]byte, persistMeta, error) {
	var meta persistMeta
	mb, err := os.ReadFile(p.metaPath())
	if err != nil {
		return nil, meta, err
	}
	if err := json.Unmarshal(mb, &meta); err != nil {
		return nil, meta, fmt.Errorf("persisted bundle metadata: %w", err)
	}
	raw, err := os.ReadFile(p.bundlePath())
	if err != nil {
		return nil, meta, err
	}
	sum := sha256.Sum256(raw)
	if hex.EncodeToString(sum[:]) != meta.SHA256 {
		// A crash between the two renames leaves a newer bundle with older metadata; the
		// bundle is still verified on load, only the ETag is no longer trustworthy.
		meta.ETag = ""
	}
	return raw, meta, nil
}

func writeAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
