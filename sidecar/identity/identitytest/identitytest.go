// Package identitytest mints real signed tokens for tests of packages that authenticate
// callers: it generates RSA, ECDSA P-256 and Ed25519 keys, writes their JWKS and signs JWTs.
package identitytest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"os"
	"path/filepath"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Issuer is a test identity provider.
type Issuer struct {
	Name     string
	Audience string
	Keys     map[jose.SignatureAlgorithm]Key
}

// Key is one signing key.
type Key struct {
	ID      string
	Alg     jose.SignatureAlgorithm
	Private crypto.Signer
}

// New generates one key per algorithm (RS256 2048-bit, ES256, EdDSA).
func New(name, audience string) (*Issuer, error) {
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	_, edk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return &Issuer{Name: name, Audience: audience, Keys: map[jose.SignatureAlgorithm]Key{
		jose.RS256: {ID: "rsa-1", Alg: jose.RS256, Private: rk},
		jose.ES256: {ID: "ec-1", Alg: jose.ES256, Private: ek},
		jose.EdDSA: {ID: "ed-1", Alg: jose.EdDSA, Private: edk},
	}}, nil
}

// JWKS returns the public key set.
func (is *Issuer) JWKS() jose.JSONWebKeySet {
	var set jose.JSONWebKeySet
	for _, k := range []jose.SignatureAlgorithm{jose.RS256, jose.ES256, jose.EdDSA} {
		key := is.Keys[k]
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: key.Private.Public(), KeyID: key.ID, Algorithm: string(key.Alg), Use: "sig"})
	}
	return set
}

// WriteJWKS writes the public key set to dir/jwks.json and returns the path.
func (is *Issuer) WriteJWKS(dir string) (string, error) {
	raw, err := json.Marshal(is.JWKS())
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, "jwks.json")
	return p, os.WriteFile(p, raw, 0o600)
}

// Claims returns standard claims valid for an hour for subject sub.
func (is *Issuer) Claims(sub string) map[string]any {
	now := time.Now()
	return map[string]any{
		"iss": is.Name, "aud": is.Audience, "sub": sub,
		"iat": now.Unix(), "nbf": now.Add(-time.Minute).Unix(), "exp": now.Add(time.Hour).Unix(),
	}
}

// Sign signs claims with the key for alg, setting kid unless kid is "-" (no kid header).
func (is *Issuer) Sign(alg jose.SignatureAlgorithm, claims map[string]any) (string, error) {
	key := is.Keys[alg]
	return SignWith(key.Private, alg, key.ID, claims)
}

// SignWith signs claims with any key (to forge tokens in tests).
func SignWith(priv crypto.Signer, alg jose.SignatureAlgorithm, kid string, claims map[string]any) (string, error) {
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if kid != "" && kid != "-" {
		opts = opts.WithHeader(jose.HeaderKey("kid"), kid)
	}
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: priv}, opts)
	if err != nil {
		return "", err
	}
	return jwt.Signed(sig).Claims(claims).Serialize()
}
