package bundle

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	opabundle "github.com/open-policy-agent/opa/v1/bundle"

	"github.com/consentry/consentry/sidecar/engine"
)

// FromPolicySet maps a policy directory's PolicySet (engine.LoadDir, without tests) into an
// OPA bundle:
//
//	<dir>/consentry/*.rego          -> /consentry/*.rego (ps.Paths: relative to the directory LoadDir walked)
//	<dir>/data/consentry/catalog/   -> one /data.json {"consentry": {"catalog": ...}}
//	<dir>/schema/*.json             -> .manifest metadata.consentry.schemas (signed with the manifest)
//	revision, rego_version 1, roots -> .manifest (roots: first segment of every package and data key)
//
// Tests (*_test.rego) are not shipped: they ran at build time, and test packages such as
// consentry_test would fall outside the bundle's roots. Two modules that map to one bundle
// path are an error wrapping ErrDuplicateModule.
func FromPolicySet(dir string, ps *engine.PolicySet, revision string) (*opabundle.Bundle, error) {
	parsed, err := ps.ParseModules()
	if err != nil {
		return nil, err
	}
	roots := map[string]bool{}
	names := make([]string, 0, len(ps.Modules))
	for n := range ps.Modules {
		names = append(names, n)
	}
	sort.Strings(names)
	b := &opabundle.Bundle{Data: ps.Data}
	if b.Data == nil {
		b.Data = map[string]any{}
	}
	seen := make(map[string]string, len(names))
	for _, n := range names {
		p := "/" + modulePath(dir, ps, n)
		// Two modules under one bundle path would be one module after the round trip through
		// a tarball (or PolicySet): a deny rule could vanish without an error. Refuse instead.
		if other, dup := seen[p]; dup {
			return nil, fmt.Errorf("%w: %s and %s both map to %s", ErrDuplicateModule, other, n, p)
		}
		seen[p] = n
		m := parsed[n]
		roots[rootOf(m.Package.Path)] = true
		b.Modules = append(b.Modules, opabundle.ModuleFile{URL: p, Path: p, RelativePath: p, Raw: []byte(ps.Modules[n]), Parsed: m})
	}
	for k := range b.Data {
		roots[k] = true
	}
	rootList := make([]string, 0, len(roots))
	for r := range roots {
		rootList = append(rootList, r)
	}
	sort.Strings(rootList)
	v := ast.RegoV1.Int()
	b.Manifest = opabundle.Manifest{Revision: revision, Roots: &rootList, RegoVersion: &v}
	if len(ps.Schemas) > 0 {
		b.Manifest.Metadata = map[string]any{metadataKey: map[string]any{metadataSchemasKey: ps.Schemas}}
	}
	return b, nil
}

// ErrDuplicateModule is wrapped by the error for two modules with the same bundle path.
var ErrDuplicateModule = errors.New("duplicate module path")

// modulePath is module n's slash path inside the bundle, without the leading slash: the
// path engine.LoadDir recorded relative to the directory it walked, or, for a set not
// loaded by LoadDir, n relative to dir (its base name when n is not under dir).
func modulePath(dir string, ps *engine.PolicySet, n string) string {
	if rel, ok := ps.Paths[n]; ok && rel != "" {
		return strings.TrimPrefix(rel, "/")
	}
	rel, err := filepath.Rel(dir, n)
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		rel = filepath.Base(n)
	}
	return filepath.ToSlash(rel)
}

// rootOf is the first path segment of a package ref (data.consentry.x -> consentry).
func rootOf(pkg ast.Ref) string {
	if len(pkg) < 2 {
		return ""
	}
	if s, ok := pkg[1].Value.(ast.String); ok {
		return string(s)
	}
	return pkg[1].Value.String()
}

// ContentHash is a digest of a PolicySet's modules, data and schemas (not its revision),
// used for default revisions and to skip reloading an unchanged directory.
func ContentHash(ps *engine.PolicySet) string {
	h := sha256.New()
	names := make([]string, 0, len(ps.Modules))
	for n := range ps.Modules {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(h, "%s\x00%d\x00%s", n, len(ps.Modules[n]), ps.Modules[n])
	}
	// encoding/json sorts map keys, so equal documents hash equally.
	_ = json.NewEncoder(h).Encode(ps.Data)
	_ = json.NewEncoder(h).Encode(ps.Schemas)
	return hex.EncodeToString(h.Sum(nil))
}

// WriteTarball serializes b as bundle.tar.gz bytes (OPA's writer, module paths as given).
func WriteTarball(b *opabundle.Bundle) ([]byte, error) {
	var buf bytes.Buffer
	if err := opabundle.NewWriter(&buf).UseModulePath(true).DisableFormat(true).Write(*b); err != nil {
		return nil, fmt.Errorf("write bundle: %w", err)
	}
	return buf.Bytes(), nil
}
