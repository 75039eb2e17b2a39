package engine

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/loader"
)

// PolicySet is everything the engine compiles: Rego modules, base data and JSON schemas.
// Front doors never see it; the bundle issue produces it from bundles, LoadDir from a directory.
type PolicySet struct {
	// Modules maps a file name (used in error locations) to parsed Rego v1 source.
	Modules map[string]string
	// Paths maps a module name (a Modules key) to its slash-separated path relative to the
	// directory LoadDir walked, e.g. "consentry/custom/a/rules.rego". LoadDir records it because
	// only LoadDir knows that directory (a symlinked one is walked where it points): a bundle
	// names modules by these paths, and recomputing them from the unresolved directory lost
	// modules that share a base name. Nil for sets not loaded from a directory.
	Paths map[string]string
	// Data is the base document (data.*), e.g. {"consentry": {"catalog": {...}}}.
	Data map[string]any
	// Schemas maps a schema name ("input" for schema.input) to a JSON schema document.
	Schemas map[string]any
	// Revision identifies the policy revision; recorded in every decision.
	Revision string
	// Bundles maps bundle name to revision, as in OPA decision logs' "bundles" field.
	Bundles map[string]string
}

// Directory layout of a policy directory (policies/ in the repository):
//
//	*.rego (any depth)   policies; *_test.rego are loaded only for tests
//	data/                data documents, placed by their path under data/ (data/consentry/catalog/data.json -> data.consentry.catalog)
//	schema/              JSON schemas (schema/input.json -> schema.input)
//	scenarios/           scenario files for `consentry test`
const (
	DataDir      = "data"
	SchemaDir    = "schema"
	ScenarioDir  = "scenarios"
	testSuffix   = "_test.rego"
	regoSuffix   = ".rego"
	noRevisionID = "dev"
)

// LoadOptions tune LoadDir.
type LoadOptions struct {
	// Tests also loads *_test.rego files.
	Tests bool
	// DataDir overrides <dir>/data.
	DataDir string
}

// LoadDir reads a policy directory into a PolicySet. Rego parse errors carry file:line:col.
func LoadDir(dir string, opts LoadOptions) (*PolicySet, error) {
	// A symlinked policy directory (a Kubernetes volume, a release symlink) is read where it
	// points: WalkDir would otherwise see only the link itself.
	if resolved, err := filepath.EvalSymlinks(dir); err == nil {
		dir = resolved
	}
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("load policies: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("load policies: %s is not a directory", dir)
	}
	ps := &PolicySet{Modules: map[string]string{}, Paths: map[string]string{}, Data: map[string]any{}, Schemas: map[string]any{}, Revision: noRevisionID}
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if d.IsDir() {
			if rel == DataDir || rel == SchemaDir || rel == ScenarioDir || (rel != "." && strings.HasPrefix(d.Name(), ".")) {
				return filepath.SkipDir
			}
			return nil
		}
		// Hidden files are skipped like hidden directories: editors keep theirs beside the
		// file being edited (Emacs' lock ".#util.rego", a dangling symlink, exists while a
		// buffer is unsaved and would refuse the whole directory).
		if strings.HasPrefix(d.Name(), ".") || !strings.HasSuffix(path, regoSuffix) || (!opts.Tests && strings.HasSuffix(path, testSuffix)) {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		ps.Modules[path] = string(src)
		ps.Paths[path] = filepath.ToSlash(rel)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load policies: %w", err)
	}
	if len(ps.Modules) == 0 {
		return nil, fmt.Errorf("load policies: no .rego files under %s", dir)
	}
	dataDir := opts.DataDir
	if dataDir == "" {
		dataDir = filepath.Join(dir, DataDir)
	}
	if err := loadData(dataDir, ps); err != nil {
		return nil, err
	}
	if err := loadSchemas(filepath.Join(dir, SchemaDir), ps); err != nil {
		return nil, err
	}
	return ps, nil
}

func loadData(dir string, ps *PolicySet) error {
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	res, err := loader.NewFileLoader().WithRegoVersion(ast.RegoV1).Filtered([]string{dir}, func(_ string, info fs.FileInfo, _ int) bool {
		return !info.IsDir() && strings.HasSuffix(info.Name(), regoSuffix)
	})
	if err != nil {
		return fmt.Errorf("load policy data %s: %w", dir, err)
	}
	ps.Data = res.Documents
	return nil
}

func loadSchemas(dir string, ps *PolicySet) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("load schemas: %w", err)
	}
	for _, e := range entries {
		if e.IsDir() || filepath.Ext(e.Name()) != ".json" {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return fmt.Errorf("load schemas: %w", err)
		}
		var doc any
		if err := jsonUnmarshal(raw, &doc); err != nil {
			return fmt.Errorf("load schema %s: %w", e.Name(), err)
		}
		ps.Schemas[strings.TrimSuffix(e.Name(), ".json")] = doc
	}
	return nil
}

// SchemaSet converts the set's schemas to OPA's form (schema.<name>).
func (ps *PolicySet) SchemaSet() *ast.SchemaSet {
	ss := ast.NewSchemaSet()
	names := make([]string, 0, len(ps.Schemas))
	for n := range ps.Schemas {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		ss.Put(ast.MustParseRef("schema."+n), ps.Schemas[n])
	}
	return ss
}

// ParseModules parses every module as Rego v1, collecting all errors with locations.
func (ps *PolicySet) ParseModules() (map[string]*ast.Module, error) {
	out := make(map[string]*ast.Module, len(ps.Modules))
	var errs []string
	names := make([]string, 0, len(ps.Modules))
	for n := range ps.Modules {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		m, err := ast.ParseModuleWithOpts(name, ps.Modules[name], ast.ParserOptions{RegoVersion: ast.RegoV1, ProcessAnnotation: true})
		if err != nil {
			errs = append(errs, astErrors(err)...)
			continue
		}
		out[name] = m
	}
	if len(errs) > 0 {
		return nil, &CompileError{Errs: errs}
	}
	return out, nil
}

// astErrors renders OPA errors as "file:line:col: code: message".
func astErrors(err error) []string {
	var ae ast.Errors
	if errors.As(err, &ae) {
		out := make([]string, 0, len(ae))
		for _, e := range ae {
			loc := "?"
			if e.Location != nil {
				loc = fmt.Sprintf("%s:%d:%d", e.Location.File, e.Location.Row, e.Location.Col)
			}
			out = append(out, fmt.Sprintf("%s: %s: %s", loc, e.Code, e.Message))
		}
		return out
	}
	return []string{err.Error()}
}
