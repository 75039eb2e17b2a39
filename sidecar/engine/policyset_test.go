package engine

import (
	"os"
	"path/filepath"
	"testing"
)

// LoadDir records each module's path relative to the directory it walked (and skips hidden
// files such as editor lock files), also when it was given a symlink to that directory: callers that recomputed paths from the unresolved
// directory got "../.." and collapsed same-named modules in different directories.
func TestLoadDirRecordsRelativePaths(t *testing.T) {
	root := t.TempDir()
	real := filepath.Join(root, "releases", "1", "policies")
	files := map[string]string{
		"consentry/a/rules.rego":      "package consentry.a\n\nx := 1\n",
		"consentry/b/rules.rego":      "package consentry.b\n\nx := 2\n",
		"top.rego":                    "package consentry\n\ny := 1\n",
		"consentry/a/rules_test.rego": "package consentry.a_test\n\ntest_x if { true }\n",
	}
	for rel, src := range files {
		p := filepath.Join(real, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// An editor's lock file beside a module being edited (Emacs: a dangling symlink named
	// .#<file>) is not a module: a directory with one still loads.
	if err := os.Symlink("user@host.1234:1700000000", filepath.Join(real, "consentry", "a", ".#rules.rego")); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(root, "current")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		dir   string
		tests bool
		want  []string
	}{
		{"real dir", real, false, []string{"consentry/a/rules.rego", "consentry/b/rules.rego", "top.rego"}},
		{"symlink", link, false, []string{"consentry/a/rules.rego", "consentry/b/rules.rego", "top.rego"}},
		{"symlink with tests", link, true, []string{"consentry/a/rules.rego", "consentry/a/rules_test.rego", "consentry/b/rules.rego", "top.rego"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ps, err := LoadDir(tc.dir, LoadOptions{Tests: tc.tests})
			if err != nil {
				t.Fatal(err)
			}
			if len(ps.Paths) != len(ps.Modules) || len(ps.Modules) != len(tc.want) {
				t.Fatalf("%d modules, %d paths, want %d", len(ps.Modules), len(ps.Paths), len(tc.want))
			}
			got := map[string]bool{}
			for name, rel := range ps.Paths {
				if _, ok := ps.Modules[name]; !ok {
					t.Errorf("path recorded for %s, which is not a module", name)
				}
				if ps.Modules[name] != files[rel] {
					t.Errorf("module %s recorded as %s, whose source differs", name, rel)
				}
				got[rel] = true
			}
			for _, w := range tc.want {
				if !got[w] {
					t.Errorf("no module recorded as %s (got %v)", w, ps.Paths)
				}
			}
		})
	}
}
