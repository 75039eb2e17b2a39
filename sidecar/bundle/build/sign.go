package build

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	opabundle "github.com/open-policy-agent/opa/v1/bundle"

	"github.com/consentry/consentry/sidecar/bundle"
	"github.com/consentry/consentry/sidecar/engine"
	"github.com/consentry/consentry/sidecar/routes"
)

// SignOptions choose the signing key.
type SignOptions struct {
	// KeyFile is a PEM private key (PKCS#8, PKCS#1 RSA or SEC 1 EC).
	KeyFile string
	// Algorithm is RS256 (default), RS384/512, PS256/384/512 or ES256/384/512.
	Algorithm string
	// KeyID is the key id put in the JWT header (kid); required, because sidecars pick the
	// verification key by it.
	KeyID string
	// Scope is an optional scope claim the verifier must be configured to expect.
	Scope string
	// MaxSizeBytes is the limit Sign reads the tarball under (see maxSize).
	MaxSizeBytes int64
}

// MaxSizeFlag is the flag of `bundle build`, `bundle sign` and `bundle verify` that sets their
// size limit (Options, SignOptions and VerifyOptions .MaxSizeBytes); their too_large errors
// name it, since they read no configuration and policy.max_size_bytes does not apply to them.
const MaxSizeFlag = "--max-size-bytes"

// maxSize is the size limit of a command: n, the sidecar's policy.max_size_bytes it should
// match, or bundle.DefaultMaxSizeBytes (the sidecar's default) when n is not positive.
func maxSize(n int64) int64 {
	if n <= 0 {
		return bundle.DefaultMaxSizeBytes
	}
	return n
}

// checkSize refuses (too_large) a tarball a sidecar whose policy.max_size_bytes is limit
// refuses: larger than limit, or failing bundle.PrescanTarball.
func checkSize(raw []byte, limit int64) error {
	if int64(len(raw)) > limit {
		return &bundle.RejectError{Reason: bundle.ReasonTooLarge, Err: fmt.Errorf("bundle is %d bytes, %s is %d", len(raw), MaxSizeFlag, limit)}
	}
	return bundle.PrescanTarball(raw, limit, MaxSizeFlag)
}

func (o SignOptions) validate() error {
	if o.KeyFile == "" {
		return errors.New("a signing key file is required")
	}
	if o.KeyID == "" {
		return errors.New("a key id (--keyid) is required: sidecars select the verification key by it")
	}
	switch strings.ToUpper(o.Algorithm) {
	case "", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512":
		return nil
	}
	return fmt.Errorf("signing algorithm %q is not supported (RS256/384/512, PS256/384/512, ES256/384/512)", o.Algorithm)
}

// signBundle adds a .signatures.json to b with OPA's signer (the JWT lists every file's hash).
func signBundle(b *opabundle.Bundle, o SignOptions) error {
	if err := o.validate(); err != nil {
		return err
	}
	alg := strings.ToUpper(o.Algorithm)
	if alg == "" {
		alg = "RS256"
	}
	key, err := os.ReadFile(o.KeyFile)
	if err != nil {
		return fmt.Errorf("signing key: %w", err)
	}
	// OPA's signer takes extra claims (scope) only from a claims file, as `opa sign
	// --claims-file` does; write one for this call.
	claimsDir, err := os.MkdirTemp("", "consentry-claims-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(claimsDir)
	claims := map[string]any{"keyid": o.KeyID}
	if o.Scope != "" {
		claims["scope"] = o.Scope
	}
	cb, _ := json.Marshal(claims)
	claimsPath := filepath.Join(claimsDir, "claims.json")
	if err := os.WriteFile(claimsPath, cb, 0o600); err != nil {
		return err
	}
	sc := opabundle.NewSigningConfig(string(key), alg, claimsPath)
	b.Signatures = opabundle.SignaturesConfig{}
	if err := b.GenerateSignature(sc, o.KeyID, true); err != nil {
		return fmt.Errorf("sign bundle: %w", err)
	}
	return nil
}

// Sign (re-)signs a bundle tarball, replacing any existing signature. It reads raw under
// the sidecar's limits (o.MaxSizeBytes, default bundle.DefaultMaxSizeBytes, for the tarball
// and each file; bundle.PrescanTarball before OPA's reader buffers it): a bundle a sidecar
// would refuse as too_large is not worth signing, and a small tar bomb must not cost the
// signer gigabytes.
func Sign(raw []byte, o SignOptions) ([]byte, error) {
	limit := maxSize(o.MaxSizeBytes)
	if err := checkSize(raw, limit); err != nil {
		return nil, err
	}
	loader := opabundle.NewTarballLoader(bytes.NewReader(raw)).WithSizeLimitBytes(limit)
	b, err := opabundle.NewCustomReader(loader).WithSizeLimitBytes(limit).WithSkipBundleVerification(true).WithProcessAnnotations(true).Read()
	if err != nil {
		return nil, fmt.Errorf("read bundle: %w", err)
	}
	if err := signBundle(&b, o); err != nil {
		return nil, err
	}
	return bundle.WriteTarball(&b)
}

// VerifyOptions are the trusted keys, as in the sidecar's policy.verification section.
type VerifyOptions struct {
	Verification bundle.VerificationConfig
	// Engine is the configuration the bundle must compile under.
	Engine engine.Config
	// MaxSizeBytes is the sidecar's policy.max_size_bytes to verify under (see maxSize).
	MaxSizeBytes int64
}

// Verify checks what the sidecar would check before activating raw (signature, file list,
// hashes, scope, no wasm, strict compile within engine.activation_timeout, a
// data.consentry.decision rule, a route map in
// data.consentry.routes that parses), except anti-rollback,
// which needs the active revision.
func Verify(ctx context.Context, raw []byte, o VerifyOptions) (*bundle.Verified, error) {
	v, err := bundle.NewVerifier(o.Verification, true, maxSize(o.MaxSizeBytes))
	if err != nil {
		return nil, err
	}
	v.WithLimitName(MaxSizeFlag)
	vb, err := v.ReadTarball(raw)
	if err != nil {
		return nil, err
	}
	if err := vb.RequireDecision(); err != nil {
		return nil, err
	}
	ps := vb.PolicySet("verify")
	if err := engine.New(o.Engine, slog.New(slog.DiscardHandler)).Check(ctx, ps); err != nil {
		reason := bundle.ReasonCompile
		if errors.Is(err, engine.ErrActivationTimeout) {
			reason = bundle.ReasonActivationTimeout // as the sidecar would reject it
		}
		return nil, &bundle.RejectError{Reason: reason, Revision: vb.Revision, Err: err}
	}
	if _, _, err := routes.FromData(ps.Data); err != nil {
		return nil, &bundle.RejectError{Reason: bundle.ReasonCompile, Revision: vb.Revision, Err: err}
	}
	return vb, nil
}

// Keygen writes a new key pair (PEM: <base>.key private PKCS#8, <base>.pub public PKIX)
// for alg RS256 (RSA 3072) or ES256 (P-256).
func Keygen(alg, base string) error {
	var priv any
	var err error
	switch strings.ToUpper(alg) {
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
		priv, err = rsa.GenerateKey(rand.Reader, 3072)
	case "ES256":
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "ES384":
		priv, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	default:
		return fmt.Errorf("keygen: algorithm %q is not supported (RS256, ES256, ES384)", alg)
	}
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return err
	}
	pubKey := priv.(crypto.Signer).Public()
	pubDER, err := x509.MarshalPKIXPublicKey(pubKey)
	if err != nil {
		return err
	}
	// Never over an existing key: replacing a signing key by mistake orphans every bundle
	// signed with it (and an existing file would keep its own, possibly looser, mode).
	f, err := os.OpenFile(base+".key", os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("keygen: %w (remove it first to replace the key)", err)
	}
	if _, err := f.Write(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.WriteFile(base+".pub", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644)
}
