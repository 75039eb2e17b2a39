package bundle

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// debounce lets an editor or `cp` finish writing before the source is re-read.
const debounce = 150 * time.Millisecond

// watchFile follows a local tarball: read at start, re-read when the file changes (the
// parent directory is watched, so replacing the file by rename is seen) and, as a safety
// net for file systems without inotify, every polling interval.
func (m *Manager) watchFile(ctx context.Context) error {
	path := filepath.Clean(m.cfg.File)
	check := func() {
		// At most max_size_bytes+1 bytes: activate rejects more as too_large.
		raw, err := readFileLimited(path, m.cfg.MaxSizeBytes)
		if err != nil {
			m.fetchFailed(err)
			return
		}
		m.fetchOK()
		_ = m.activate(ctx, candidate{source: "file:" + path, raw: raw, persist: true})
	}
	return m.watch(ctx, []string{filepath.Dir(path)}, false, func(name string) bool {
		return filepath.Clean(name) == path
	}, check)
}

// watchDir follows a development directory (policy directory or OPA bundle directory),
// recursively, and hot reloads it.
func (m *Manager) watchDir(ctx context.Context) error {
	dir := filepath.Clean(m.cfg.Dir)
	check := func() {
		if _, err := os.Stat(dir); err != nil {
			m.fetchFailed(err)
			return
		}
		m.fetchOK()
		_ = m.activate(ctx, m.dirCandidate())
	}
	return m.watch(ctx, []string{dir}, true, func(string) bool { return true }, check)
}

// dirCandidate is the configured directory (policy.dir) as a candidate: an OPA bundle
// directory or a consentry policy directory.
func (m *Manager) dirCandidate() candidate {
	dir := filepath.Clean(m.cfg.Dir)
	c := candidate{source: "dir:" + dir}
	if isBundleDir(dir) {
		c.bundleDir = m.cfg.Dir // as configured: signed names carry this exact prefix
	} else {
		c.policyDir = dir
	}
	return c
}

// ActivatePolicyDir activates the configured directory (policy.dir) now and returns why it
// was rejected, if it was (a compile error is an *engine.CompileError in the chain): a start
// can fail on it. Run's first check then finds the directory unchanged.
func (m *Manager) ActivatePolicyDir(ctx context.Context) error {
	if m.cfg.Dir == "" {
		return errors.New("no policy.dir configured")
	}
	return m.activate(ctx, m.dirCandidate())
}

// CheckLocalSource reads, verifies, compiles and activates a local policy source
// (policy.dir or policy.file) now, for `consentry run --check`, and returns the bundle it
// activated or why the source was refused: a *RejectError (ReasonOf names the reason), with an
// *engine.CompileError in the chain when the policies do not compile. Nothing is persisted. A
// policy.url source is not fetched here, since a check must not depend on the network: it
// returns (nil, nil), and readiness reports the fetch once the sidecar runs.
func (m *Manager) CheckLocalSource(ctx context.Context) (*ActiveBundle, error) {
	switch {
	case m.cfg.Dir != "":
		if err := m.ActivatePolicyDir(ctx); err != nil {
			return nil, err
		}
	case m.cfg.File != "":
		path := filepath.Clean(m.cfg.File)
		raw, err := readFileLimited(path, m.cfg.MaxSizeBytes)
		if err != nil {
			return nil, fmt.Errorf("policy.file: %w", err)
		}
		if err := m.activate(ctx, candidate{source: "file:" + path, raw: raw}); err != nil {
			return nil, err
		}
	default:
		return nil, nil
	}
	return m.Active(), nil
}

// watch runs check now, after file events matching relevant (debounced), and on a jittered
// polling interval, until ctx ends.
func (m *Manager) watch(ctx context.Context, roots []string, recursive bool, relevant func(string) bool, check func()) error {
	// Watch first, then read: a change made right after the first read is never missed.
	w, err := fsnotify.NewWatcher()
	if err != nil {
		m.log.Warn("file watching unavailable; polling only", "error", err)
	} else {
		defer w.Close()
		for _, r := range roots {
			m.addWatch(w, r, recursive)
		}
	}
	check()
	var events <-chan fsnotify.Event
	var errs <-chan error
	if w != nil {
		events, errs = w.Events, w.Errors
	}
	poll := time.NewTimer(m.pollDelay())
	defer poll.Stop()
	fire := time.NewTimer(time.Hour)
	fire.Stop()
	defer fire.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if recursive && ev.Has(fsnotify.Create) {
				if st, err := os.Stat(ev.Name); err == nil && st.IsDir() {
					m.addWatch(w, ev.Name, true)
				}
			}
			if relevant(ev.Name) {
				fire.Reset(debounce)
			}
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			m.log.Warn("file watch error", "error", err)
		case <-fire.C:
			check()
		case <-poll.C:
			check()
			poll.Reset(m.pollDelay())
		}
	}
}

func (m *Manager) addWatch(w *fsnotify.Watcher, root string, recursive bool) {
	if !recursive {
		if err := w.Add(root); err != nil {
			m.log.Warn("cannot watch", "path", root, "error", err)
		}
		return
	}
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if p != root && strings.HasPrefix(d.Name(), ".") {
			return filepath.SkipDir
		}
		if err := w.Add(p); err != nil {
			m.log.Warn("cannot watch", "path", p, "error", err)
		}
		return nil
	})
}

// pollDelay is a jittered delay in [min_delay, max_delay].
func (m *Manager) pollDelay() time.Duration {
	lo, hi := m.cfg.Polling.MinDelay, m.cfg.Polling.MaxDelay
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(rand.Int64N(int64(hi-lo)))
}
