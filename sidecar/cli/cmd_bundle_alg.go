package cli

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"strings"
)

// keyAlgorithm returns the JWS algorithm to sign or verify a bundle with the PEM key in path.
// Without an explicit algorithm it follows the key (RSA: RS256; EC P-256, P-384, P-521: ES256,
// ES384, ES512), so a key from `bundle keygen` works with default flags whatever --alg made
// it. An explicit algorithm stays authoritative, and one the key cannot make or check is
// refused here, by name, rather than as a failed signature later.
func keyAlgorithm(path, explicit string) (string, error) {
	explicit = strings.ToUpper(strings.TrimSpace(explicit))
	key, err := readBundleKey(path)
	if err != nil {
		if explicit != "" {
			return explicit, nil // the signer or verifier reports the unreadable key
		}
		return "", Usagef("cannot choose the signing algorithm from the key: %v (or pass --signing-alg)", err)
	}
	var fits func(string) bool
	var inferred, kind string
	switch k := key.(type) {
	case *rsa.PublicKey:
		kind, inferred = "an RSA key", "RS256"
		fits = func(a string) bool {
			switch a {
			case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
				return true
			}
			return false
		}
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			inferred = "ES256"
		case elliptic.P384():
			inferred = "ES384"
		case elliptic.P521():
			inferred = "ES512"
		default:
			return "", Usagef("%s: EC curve %s is not usable for bundle signatures (P-256, P-384, P-521)", path, k.Curve.Params().Name)
		}
		kind = "an EC " + k.Curve.Params().Name + " key"
		fits = func(a string) bool { return a == inferred }
	case ed25519.PublicKey:
		return "", Usagef("%s: Ed25519 keys cannot sign OPA bundles (RS256/384/512, PS256/384/512, ES256/384/512); make one with `consentry bundle keygen`", path)
	default:
		return "", Usagef("%s: %T is not a key bundles can be signed with", path, key)
	}
	if explicit == "" {
		return inferred, nil
	}
	if !fits(explicit) {
		return "", Usagef("--signing-alg %s does not fit %s, %s (use %s, or leave --signing-alg out)", explicit, path, kind, inferred)
	}
	return explicit, nil
}

// readBundleKey returns the public key of a PEM private key (PKCS#8, PKCS#1 RSA, SEC 1 EC),
// public key (PKIX, PKCS#1 RSA) or certificate.
func readBundleKey(path string) (any, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(raw)
	if blk == nil {
		return nil, fmt.Errorf("%s: no PEM block", path)
	}
	var k any
	switch blk.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(blk.Bytes)
	case "PUBLIC KEY":
		k, err = x509.ParsePKIXPublicKey(blk.Bytes)
	case "RSA PUBLIC KEY":
		k, err = x509.ParsePKCS1PublicKey(blk.Bytes)
	case "CERTIFICATE":
		var c *x509.Certificate
		if c, err = x509.ParseCertificate(blk.Bytes); err == nil {
			k = c.PublicKey
		}
	default:
		return nil, fmt.Errorf("%s: PEM block %q is not a key", path, blk.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	switch p := k.(type) {
	case *rsa.PrivateKey:
		return &p.PublicKey, nil
	case *ecdsa.PrivateKey:
		return &p.PublicKey, nil
	case ed25519.PrivateKey:
		return p.Public(), nil
	}
	return k, nil
}
