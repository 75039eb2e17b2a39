package bundle

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	opabundle "github.com/open-policy-agent/opa/v1/bundle"

	"github.com/consentry/consentry/sidecar/engine"
)

// Rejection reasons: the `reason` label of consentry_bundle_rejections_total and the
// Reason of a *RejectError.
const (
	ReasonSignatureMissing  = "signature_missing"  // no .signatures.json while signatures are required
	ReasonSignatureInvalid  = "signature_invalid"  // bad JWT signature, unknown or missing key id
	ReasonScopeMismatch     = "scope_mismatch"     // the signature's scope is not the configured one
	ReasonExtraFile         = "extra_file"         // a file the signature does not list
	ReasonMissingFile       = "missing_file"       // a file the signature lists is not in the bundle
	ReasonHashMismatch      = "hash_mismatch"      // a file's digest differs from the signed one
	ReasonRollback          = "rollback"           // revision older than (or not comparable with) the active one
	ReasonCompile           = "compile"            // policies do not compile strictly / fail the type-check
	ReasonActivationTimeout = "activation_timeout" // compile + tables took longer than engine.activation_timeout
	ReasonTooLarge          = "too_large"          // bundle or a file in it exceeds max_size_bytes
	ReasonMalformed         = "malformed"          // not a readable snapshot bundle
	ReasonNoDecision        = "no_decision"        // no rule defines data.consentry.decision
	ReasonUnsupported       = "unsupported"        // wasm modules, wasm resolvers or plan files: consentry evaluates Rego only
)

// rejectionReasons lists every reason above, in the order the metric's help text names them.
var rejectionReasons = []string{
	ReasonSignatureMissing, ReasonSignatureInvalid, ReasonScopeMismatch, ReasonExtraFile, ReasonMissingFile,
	ReasonHashMismatch, ReasonRollback, ReasonCompile, ReasonActivationTimeout, ReasonTooLarge, ReasonMalformed,
	ReasonNoDecision, ReasonUnsupported,
}

// RejectError is why a bundle was not activated.
type RejectError struct {
	Reason   string
	Revision string
	Err      error
}

func (e *RejectError) Error() string {
	if e.Revision != "" {
		return fmt.Sprintf("bundle rejected (%s, revision %q): %v", e.Reason, e.Revision, e.Err)
	}
	return fmt.Sprintf("bundle rejected (%s): %v", e.Reason, e.Err)
}
func (e *RejectError) Unwrap() error { return e.Err }

func reject(reason, revision string, err error) *RejectError {
	return &RejectError{Reason: reason, Revision: revision, Err: err}
}

// ReasonOf returns the rejection reason of err ("" when err is not a rejection).
func ReasonOf(err error) string {
	var re *RejectError
	if errors.As(err, &re) {
		return re.Reason
	}
	return ""
}

// Verified is a bundle that was read and, when signed, verified.
type Verified struct {
	Bundle   opabundle.Bundle
	Revision string
	// Signed is true when a signature was present and verified.
	Signed bool
	// KeyID and Scope are the verified signature's key id and scope.
	KeyID string
	Scope string
	// Schemas are the JSON schemas the bundle carries (manifest metadata.consentry.schemas).
	Schemas map[string]any
}

// Verifier reads bundles and verifies their signatures with OPA's bundle package.
type Verifier struct {
	vc          *opabundle.VerificationConfig
	required    bool
	maxFileSize int64
	// limitName names maxFileSize in errors (LimitSetting unless WithLimitName).
	limitName string
}

// NewVerifier builds a verifier. required rejects unsigned bundles; it needs keys.
func NewVerifier(v VerificationConfig, required bool, maxFileSize int64) (*Verifier, error) {
	vc, err := v.opaConfig()
	if err != nil {
		return nil, err
	}
	if required && vc == nil {
		return nil, errors.New("signatures are required but no verification key is configured")
	}
	if maxFileSize <= 0 {
		maxFileSize = DefaultMaxSizeBytes
	}
	return &Verifier{vc: vc, required: required, maxFileSize: maxFileSize, limitName: LimitSetting}, nil
}

// WithLimitName makes v's too_large errors name the size limit as name (a command's flag
// instead of policy.max_size_bytes, which a command that reads no configuration ignores).
func (v *Verifier) WithLimitName(name string) *Verifier {
	v.limitName = name
	return v
}

// ReadTarball reads and verifies a bundle tarball (bundle.tar.gz). It refuses (too_large) a
// tarball that inflates to more than InflateFactor x the size limit, or has more than
// MaxBundleFiles entries, before OPA's reader holds it in memory.
func (v *Verifier) ReadTarball(raw []byte) (*Verified, error) {
	if int64(len(raw)) > v.maxFileSize {
		return nil, reject(ReasonTooLarge, "", fmt.Errorf("bundle is %d bytes, %s is %d", len(raw), v.limitName, v.maxFileSize))
	}
	if err := prescanTarball(raw, v.maxFileSize, v.limitName); err != nil {
		return nil, err
	}
	return v.read(opabundle.NewTarballLoader(bytes.NewReader(raw)), "")
}

// ReadDir reads and verifies an OPA bundle directory (one with a .manifest). As with
// `opa run -b DIR`, signed file names are DIR-prefixed: sign with `opa sign DIR --bundle`
// using the same DIR string the sidecar is configured with.
func (v *Verifier) ReadDir(dir string) (*Verified, error) {
	return v.read(opabundle.NewDirectoryLoader(dir), dir)
}

func (v *Verifier) read(loader opabundle.DirectoryLoader, baseDir string) (*Verified, error) {
	loader = loader.WithSizeLimitBytes(v.maxFileSize)
	r := opabundle.NewCustomReader(loader).
		WithRegoVersion(ast.RegoV1).
		WithProcessAnnotations(true).
		WithSizeLimitBytes(v.maxFileSize)
	if baseDir != "" {
		r = r.WithBaseDir(baseDir)
	}
	switch {
	case v.vc == nil:
		// No key: nothing can be verified. Only reachable with require_signatures: false,
		// and then a signature is ignored rather than trusted.
		r = r.WithSkipBundleVerification(true)
	case v.required:
		r = r.WithBundleVerificationConfig(v.vc)
	default:
		// Keys but signatures optional: a signature that is present must still verify.
		vc := *v.vc
		r = r.WithBundleVerificationConfig(vc.WithOptionalSignature())
	}
	b, err := r.Read()
	if err != nil {
		return nil, reject(classify(err), "", err)
	}
	out := &Verified{Bundle: b, Revision: b.Manifest.Revision}
	if b.Type() != opabundle.SnapshotBundleType {
		return nil, reject(ReasonMalformed, out.Revision, errors.New("delta bundles are not supported"))
	}
	// OPA would evaluate a wasm module (or an IR plan) in place of the Rego it ships beside,
	// for the entrypoints its resolvers name; consentry compiles and evaluates the Rego only.
	// A bundle whose behaviour depends on which engine runs it is refused rather than run
	// differently from how `opa` would run it.
	if len(b.WasmModules) > 0 || len(b.Wasm) > 0 || len(b.Manifest.WasmResolvers) > 0 || len(b.PlanModules) > 0 {
		return nil, reject(ReasonUnsupported, out.Revision, fmt.Errorf("bundle holds wasm modules (%d), wasm resolvers (%d) or plan files (%d): consentry evaluates Rego only",
			len(b.WasmModules), len(b.Manifest.WasmResolvers), len(b.PlanModules)))
	}
	if p := b.Signatures.Plugin; p != "" && p != "_default" {
		return nil, reject(ReasonSignatureInvalid, out.Revision, fmt.Errorf("signature plugin %q is not supported", b.Signatures.Plugin))
	}
	out.Signed = v.vc != nil && len(b.Signatures.Signatures) > 0
	// Defense in depth against the GHSA-g2pf-6v5v-qcc8 class: whatever the reader decided,
	// an unsigned bundle never passes when signatures are required.
	if v.required && !out.Signed {
		return nil, reject(ReasonSignatureMissing, out.Revision, errors.New("bundle has no signature"))
	}
	if out.Signed {
		out.KeyID, out.Scope = signatureInfo(b.Signatures.Signatures[0], v.vc.KeyID)
	}
	if out.Schemas, err = manifestSchemas(b.Manifest); err != nil {
		return nil, reject(ReasonMalformed, out.Revision, err)
	}
	if err := uniqueModulePaths(b.Modules); err != nil {
		return nil, reject(ReasonMalformed, out.Revision, err)
	}
	return out, nil
}

// classify maps an OPA bundle read error to a rejection reason. The messages are OPA's;
// each class has a test, so an OPA upgrade that rewords one fails loudly.
func classify(err error) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "missing .signatures.json"), strings.Contains(msg, "missing JWT"),
		strings.Contains(msg, "delta bundles do not support signature"):
		return ReasonSignatureMissing
	case strings.Contains(msg, "scope mismatch"):
		return ReasonScopeMismatch
	case strings.Contains(msg, "not included in bundle signature"):
		return ReasonExtraFile
	case strings.Contains(msg, "specified in bundle signatures but not found"):
		return ReasonMissingFile
	case strings.Contains(msg, "digest mismatch"):
		return ReasonHashMismatch
	case strings.Contains(msg, "exceeded max size"), strings.Contains(msg, "size_limit_bytes"):
		return ReasonTooLarge
	case strings.Contains(msg, "JWT"), strings.Contains(msg, "verification key"), strings.Contains(msg, "signature"),
		strings.Contains(msg, "key ID"), strings.Contains(msg, "signing algorithm"), strings.Contains(msg, "PEM"):
		return ReasonSignatureInvalid
	}
	return ReasonMalformed
}

// signatureInfo decodes (for display only - OPA verified it already) the kid and scope.
func signatureInfo(token, pinned string) (kid, scope string) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return pinned, ""
	}
	var hdr struct {
		Kid string `json:"kid"`
	}
	var payload struct {
		KeyID string `json:"keyid"`
		Scope string `json:"scope"`
	}
	if raw, err := base64.RawURLEncoding.DecodeString(parts[0]); err == nil {
		_ = json.Unmarshal(raw, &hdr)
	}
	if raw, err := base64.RawURLEncoding.DecodeString(parts[1]); err == nil {
		_ = json.Unmarshal(raw, &payload)
	}
	kid = pinned
	if kid == "" {
		kid = hdr.Kid
	}
	if kid == "" {
		kid = payload.KeyID
	}
	return kid, payload.Scope
}

// Manifest metadata keys under which consentry bundles carry their JSON schemas, so the
// sidecar type-checks a bundle at activation exactly as `bundle build` did. The manifest
// is signed, so the schemas are as trusted as the policies. Bundles made by `opa build`
// carry none and are compiled strictly without the schema type-check.
const (
	metadataKey        = "consentry"
	metadataSchemasKey = "schemas"
)

func manifestSchemas(m opabundle.Manifest) (map[string]any, error) {
	md, ok := m.Metadata[metadataKey]
	if !ok {
		return nil, nil
	}
	obj, ok := md.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("manifest metadata.%s must be an object", metadataKey)
	}
	raw, ok := obj[metadataSchemasKey]
	if !ok {
		return nil, nil
	}
	schemas, ok := raw.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("manifest metadata.%s.%s must be an object of schemas", metadataKey, metadataSchemasKey)
	}
	return schemas, nil
}

// PolicySet converts the bundle into what the engine compiles, recording name and revision.
func (v *Verified) PolicySet(name string) *engine.PolicySet {
	ps := &engine.PolicySet{
		Modules:  make(map[string]string, len(v.Bundle.Modules)),
		Data:     v.Bundle.Data,
		Schemas:  v.Schemas,
		Revision: v.Revision,
		Bundles:  map[string]string{name: v.Revision},
	}
	if ps.Data == nil {
		ps.Data = map[string]any{}
	}
	for i, m := range v.Bundle.Modules {
		name := m.Path
		if _, dup := ps.Modules[name]; dup {
			// The verifier refuses such bundles (uniqueModulePaths); a Verified built another
			// way still loses no module: a dropped one could be a deny rule.
			name = fmt.Sprintf("%s#%d", m.Path, i)
		}
		ps.Modules[name] = string(m.Raw)
	}
	return ps
}

// uniqueModulePaths refuses two modules with one path: PolicySet keys modules by path, and
// a bundle that says two different things under one name is not one consentry built.
func uniqueModulePaths(mods []opabundle.ModuleFile) error {
	seen := make(map[string]bool, len(mods))
	for _, m := range mods {
		if seen[m.Path] {
			return fmt.Errorf("%w: %s appears twice", ErrDuplicateModule, m.Path)
		}
		seen[m.Path] = true
	}
	return nil
}

// RequireDecision returns a no_decision rejection unless some module defines
// data.consentry.decision, the one query the sidecar evaluates: a bundle without it would
// compile and then deny everything. The sidecar and `bundle verify` both run it.
func (v *Verified) RequireDecision() error {
	if !v.definesDecision() {
		return reject(ReasonNoDecision, v.Revision, errors.New("no rule defines data.consentry.decision"))
	}
	return nil
}

// definesDecision reports whether some module defines data.consentry.decision.
func (v *Verified) definesDecision() bool {
	want := ast.MustParseRef("data.consentry.decision")
	for _, m := range v.Bundle.Modules {
		if m.Parsed == nil {
			continue
		}
		for _, r := range m.Parsed.Rules {
			if r.Module != nil && r.Module.Package.Path.Extend(r.Head.Ref()).HasPrefix(want) {
				return true
			}
		}
	}
	return false
}

// isBundleDir reports whether dir is an OPA bundle directory rather than a policy directory.
func isBundleDir(dir string) bool {
	for _, f := range []string{".manifest", ".signatures.json"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			return true
		}
	}
	return false
}

// IsBundleDir reports whether dir is an OPA bundle directory (it has a .manifest or
// .signatures.json) rather than a consentry policy directory.
func IsBundleDir(dir string) bool { return isBundleDir(dir) }
