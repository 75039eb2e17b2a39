package consent

import (
	"os"
	"path/filepath"
	"testing"
)

// TestSQLitePathWithURIChars: state.data_dir goes into a file: URI escaped. Pasted in as is,
// '#' or '?' ended the path and the database was created elsewhere (next to the directory,
// named after its prefix, shared by every store with that prefix).
func TestSQLitePathWithURIChars(t *testing.T) {
	for _, dir := range []string{"state#1", "state?mode=ro", "a%20b", "sp ace", "semi;colon&amp"} {
		t.Run(dir, func(t *testing.T) {
			base := t.TempDir()
			cfg := Config{Backend: "sqlite", PurposesFile: catalog, DataDir: filepath.Join(base, dir)}
			s := openStore(t, cfg, Options{})
			if _, err := s.Grant(t.Context(), grantInput("C-1", "marketing.communications.email"), "a"); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(base, dir, "consentry-state.db")); err != nil {
				ents, _ := os.ReadDir(base)
				var names []string
				for _, e := range ents {
					names = append(names, e.Name())
				}
				t.Fatalf("no database in %q (%v); %s holds %v", cfg.DataDir, err, base, names)
			}
			if ents, _ := os.ReadDir(base); len(ents) != 1 {
				t.Fatalf("%s holds more than the data dir: %v", base, ents)
			}
		})
	}
}

// TestSQLiteRelativePath: a relative data_dir is made absolute for the URI (a URI path is).
func TestSQLiteRelativePath(t *testing.T) {
	purposes := mustAbs(t, catalog)
	t.Chdir(t.TempDir())
	s := openStore(t, Config{Backend: "sqlite", PurposesFile: purposes, DataDir: "var/state#x"}, Options{})
	_ = s
	if _, err := os.Stat("var/state#x/consentry-state.db"); err != nil {
		t.Fatal(err)
	}
}

func mustAbs(t *testing.T, p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
