// Package configdoc renders docs/configuration.md from the config structs themselves: every
// section's fields, YAML keys, types and doc comments. The structs are the documentation; this
// keeps the reference from drifting (a test fails when the file is stale; regenerate with
// `go test ./sidecar/config/configdoc -update`).
package configdoc

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"strings"
)

// Section is one top-level YAML section and the struct that decodes it.
type Section struct {
	Key     string
	Dir     string // package directory, relative to the repository root
	Type    string
	Summary string
}

// Sections lists every section `consentry run` reads, in the order it assembles them.
var Sections = []Section{
	{"policy", "sidecar/bundle", "Config", "where policies come from and how they are trusted (docs/bundles.md)"},
	{"engine", "sidecar/engine", "Config", "policy evaluation"},
	{"admin", "sidecar/admin", "Config", "the admin listener: health, readiness, metrics, status, admin API (docs/admin-api.md)"},
	{"vault", "vaultkeys", "Config", "Vault connection and the key model (docs/key-model.md)"},
	{"decision_log", "sidecar/auditlog", "Config", "the audit trail (docs/decision-log.md)"},
	{"state", "sidecar/consent", "Config", "consent, cases, processor agreements, customer state (docs/admin-api.md)"},
	{"enrichment", "sidecar/enrich/static", "Config", "a static state file instead of `state` (fixtures, tests)"},
	{"identity", "sidecar/identity", "Config", "who is calling: JWT issuers and mTLS service identities (docs/front-doors.md)"},
	{"routes", "sidecar/routes", "Config", "the CRM's route map (docs/route-map.md)"},
	{"pipeline", "sidecar/pipeline", "Config", "the request pipeline every front door shares"},
	{"envoy", "sidecar/envoy", "Config", "the gRPC listener for Envoy's ext_authz and ext_proc filters (docs/front-doors.md)"},
	{"proxy", "sidecar/proxy", "Config", "the HTTP reverse proxy front door (docs/front-doors.md)"},
	{"transform", "sidecar/transform", "Config", "response and write-body enforcement (docs/response-transform.md)"},
}

// Markdown renders the reference for the repository at root.
func Markdown(root string) (string, error) {
	var b strings.Builder
	b.WriteString(header)
	for _, s := range Sections {
		fmt.Fprintf(&b, "- [`%s`](#%s): %s\n", s.Key, s.Key, s.Summary)
	}
	for _, s := range Sections {
		pkg, err := parseDir(root, filepath.Join(root, s.Dir))
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "\n## `%s`\n\n%s. Go type: `%s.%s` (`%s`).\n\n", s.Key, upperFirst(s.Summary), filepath.Base(s.Dir), s.Type, s.Dir)
		if doc := pkg.typeDoc(s.Type); doc != "" {
			b.WriteString(doc + "\n\n")
		}
		b.WriteString("| key | type | meaning |\n|---|---|---|\n")
		if err := pkg.fields(&b, s.Type, s.Key, map[string]bool{}); err != nil {
			return "", fmt.Errorf("%s: %w", s.Key, err)
		}
	}
	return b.String(), nil
}

const header = `# Configuration reference

consentry reads one YAML file (` + "`consentry run --config FILE`" + `). Each top-level section is
decoded strictly into the config struct of the package it configures: an unknown key is an error
that names the file and line. ` + "`${VAR}`" + ` in values is replaced from the environment (keep
secrets out of the file); a variable that is not set is an error naming the line, unless written
` + "`${VAR:-default}`" + ` (` + "`${VAR:-}`" + ` for empty); other shell forms (` + "`${VAR:?}`" + `) are errors too. References are
expanded in the parsed values, so the value arrives exactly as set (` + "`s3cret #2`" + `, ` + "`null`" + ` stay text)
wherever it stands; YAML's own rules apply first (quote a reference that carries ` + "` #`" + ` in a default,
or stands in a flow ` + "`[...]`" + `/` + "`{...}`" + `). No other ` + "`$`" + ` is touched (a password ` + "`Pa$$w0rd`" + ` stays as written), ` + "`$${`" + ` writes a literal ` + "`${`" + `, and comments are not
expanded. Relative paths (` + "`policy.dir`" + `, ` + "`routes.file`" + `, ` + "`decision_log.dir`" + `, ...) are relative to the
working directory ` + "`consentry`" + ` runs in, not to the file. ` + "`consentry run --config FILE --check`" + ` validates the file, with the
key and purposes files it names, and verifies and compiles a local policy source (policy.dir or
policy.file), without serving and without opening the decision log or the state database;
services it depends on (Vault, the database, a bundle URL, a JWKS URL) are checked by readiness
once it runs (docs/operations.md, start-up).

This file is generated from the structs' doc comments (` + "`go test ./sidecar/config/configdoc -update`" + `);
a test fails when it is out of date. Durations are Go durations (` + "`50ms`, `10s`, `24h`" + `).
Examples: ` + "`deploy/config/`" + ` and the file ` + "`make demo`" + ` writes to ` + "`var/demo/consentry.yaml`" + `.

Sections:

`

type parsed struct {
	root  string
	dir   string
	types map[string]*ast.TypeSpec
	docs  map[string]string
	// imports maps a type to its file's imports (alias -> import path), to follow struct
	// types from other packages of this module (envoy.TLSConfig = tlsserver.Config).
	imports map[string]map[string]string
}

const module = "github.com/consentry/consentry/"

func parseDir(root, dir string) (*parsed, error) {
	fset := token.NewFileSet()
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	p := &parsed{root: root, dir: dir, types: map[string]*ast.TypeSpec{}, docs: map[string]string{}, imports: map[string]map[string]string{}}
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() || !strings.HasSuffix(n, ".go") || strings.HasSuffix(n, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, n), nil, parser.ParseComments)
		if err != nil {
			return nil, err
		}
		imports := map[string]string{}
		for _, im := range f.Imports {
			path := strings.Trim(im.Path.Value, `"`)
			alias := filepath.Base(path)
			if im.Name != nil {
				alias = im.Name.Name
			}
			imports[alias] = path
		}
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.TYPE {
				continue
			}
			for _, sp := range gd.Specs {
				ts := sp.(*ast.TypeSpec)
				p.types[ts.Name.Name] = ts
				p.imports[ts.Name.Name] = imports
				doc := ts.Doc
				if doc == nil && len(gd.Specs) == 1 {
					doc = gd.Doc
				}
				if doc != nil {
					p.docs[ts.Name.Name] = strings.TrimSpace(doc.Text())
				}
			}
		}
	}
	return p, nil
}

func (p *parsed) typeDoc(name string) string {
	return oneParagraph(p.docs[name])
}

// fields writes one table row per YAML key of struct name, prefixed with prefix, recursing
// into struct types of the same package.
func (p *parsed) fields(b *strings.Builder, name, prefix string, seen map[string]bool) error {
	ts, ok := p.types[name]
	if !ok {
		return fmt.Errorf("type %s not found", name)
	}
	st, ok := ts.Type.(*ast.StructType)
	if !ok {
		return fmt.Errorf("type %s is not a struct", name)
	}
	key := p.dir + "." + name // Config is a common name: qualify by package
	if seen[key] {
		return nil
	}
	seen[key] = true
	defer delete(seen, key)
	for _, f := range st.Fields.List {
		if f.Tag == nil || len(f.Names) == 0 || !f.Names[0].IsExported() {
			continue
		}
		tag := reflect.StructTag(strings.Trim(f.Tag.Value, "`")).Get("yaml")
		key, _, _ := strings.Cut(tag, ",")
		if key == "" || key == "-" {
			continue
		}
		full := prefix + "." + key
		typ := typeString(f.Type)
		doc := ""
		if f.Doc != nil {
			doc = oneParagraph(f.Doc.Text())
		}
		fmt.Fprintf(b, "| `%s` | %s | %s |\n", full, typ, escape(doc))
		sub, inner, err := p.resolve(name, f.Type)
		if err != nil {
			return err
		}
		if sub != nil {
			if err := sub.fields(b, inner, full+elemSuffix(f.Type), seen); err != nil {
				return err
			}
		}
	}
	return nil
}

// resolve finds the struct behind a field type: a struct of this package, an alias of one in
// another package of the module, or a selector into one (nil when it is not such a struct).
func (p *parsed) resolve(owner string, e ast.Expr) (*parsed, string, error) {
	if x, ok := e.(*ast.StarExpr); ok {
		return p.resolve(owner, x.X)
	}
	if x, ok := e.(*ast.ArrayType); ok {
		return p.resolve(owner, x.Elt)
	}
	switch x := e.(type) {
	case *ast.Ident:
		ts, ok := p.types[x.Name]
		if !ok {
			return nil, "", nil
		}
		if _, isStruct := ts.Type.(*ast.StructType); isStruct {
			return p, x.Name, nil
		}
		if sel, isSel := ts.Type.(*ast.SelectorExpr); isSel {
			return p.resolve(x.Name, sel)
		}
	case *ast.SelectorExpr:
		pkg, ok := x.X.(*ast.Ident)
		if !ok {
			return nil, "", nil
		}
		path := p.imports[owner][pkg.Name]
		if !strings.HasPrefix(path, module) {
			return nil, "", nil
		}
		other, err := parseDir(p.root, filepath.Join(p.root, strings.TrimPrefix(path, module)))
		if err != nil {
			return nil, "", err
		}
		if other.isStruct(x.Sel.Name) {
			return other, x.Sel.Name, nil
		}
	}
	return nil, "", nil
}

func (p *parsed) isStruct(name string) bool {
	ts, ok := p.types[name]
	if !ok {
		return false
	}
	_, ok = ts.Type.(*ast.StructType)
	return ok
}

func elemSuffix(e ast.Expr) string {
	if _, ok := e.(*ast.ArrayType); ok {
		return "[]"
	}
	return ""
}

func typeString(e ast.Expr) string {
	switch x := e.(type) {
	case *ast.Ident:
		switch x.Name {
		case "string", "bool", "int", "int64", "uint32", "float64":
			return x.Name
		}
		return "object"
	case *ast.StarExpr:
		return typeString(x.X)
	case *ast.ArrayType:
		return "list of " + typeString(x.Elt)
	case *ast.MapType:
		return "map of " + typeString(x.Value)
	case *ast.SelectorExpr:
		if x.Sel.Name == "Duration" {
			return "duration"
		}
		return "object"
	}
	return "value"
}

func oneParagraph(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.Index(s, "\n\n"); i >= 0 {
		s = s[:i]
	}
	return strings.Join(strings.Fields(s), " ")
}

func escape(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// Keys lists every documented key (for tests that check examples use real keys).
func Keys(root string) (map[string]bool, error) {
	md, err := Markdown(root)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, s := range Sections {
		out[s.Key] = true
	}
	for _, line := range strings.Split(md, "\n") {
		if strings.HasPrefix(line, "| `") {
			k := strings.TrimPrefix(line, "| `")
			k, _, _ = strings.Cut(k, "`")
			out[k] = true
		}
	}
	return out, nil
}
