package bundle_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/bundle"
	"github.com/consentry/consentry/sidecar/bundle/bundletest"
)

// TestSymlinkedModuleFixedAfterRejectionIsLoaded: a policy directory whose .rego files are
// symlinks (a Kubernetes ConfigMap volume, a shared library checkout). A rejected edit is
// remembered by what LoadDir loaded, so the fix, made through the symlink's target, loads.
func TestSymlinkedModuleFixedAfterRejectionIsLoaded(t *testing.T) {
	dir := t.TempDir()
	bundletest.CopyDir(t, bundletest.Policies(t), dir)
	shared := t.TempDir()
	util := filepath.Join(dir, "consentry", "util.rego")
	target := filepath.Join(shared, "util.rego")
	src, err := os.ReadFile(util)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(target, src, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(util); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, util); err != nil {
		t.Fatal(err)
	}
	off := false
	f := newFixture(t, bundle.Config{Dir: dir, RequireSignatures: &off,
		Polling: bundle.PollingConfig{MinDelay: 20 * time.Millisecond, MaxDelay: 20 * time.Millisecond}})
	f.run(t)
	eventually(t, 30*time.Second, "first activation", func() bool { return f.mgr.Active() != nil })
	first := f.mgr.Active().Revision
	if err := os.WriteFile(target, append(append([]byte{}, src...), "\nbroken :=\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "a compile rejection", func() bool { return f.rejections(bundle.ReasonCompile) >= 1 })
	if err := os.WriteFile(target, append(append([]byte{}, src...), "\n# fixed\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the fixed policy to activate", func() bool { return f.mgr.Active().Revision != first })
}
