// Package vaultsign signs decision-log checkpoints with a Vault transit key (type ed25519), so
// the signing key never leaves Vault. It implements auditlog.Signer; the signatures are plain
// Ed25519 and verify with the key's public half (`consentry audit verify --public-key`). The
// log calls it off its writer's path (checkpoints are written deferred and a later checkpoint
// carries the signature), so a hung or slow Vault never holds an append.
package vaultsign

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/hashicorp/vault/api"

	"github.com/consentry/consentry/sidecar/auditlog"
)

// Signer signs with one pinned version of a transit key: a key rotation in Vault does not
// silently change the key id recorded in checkpoints (reopen the log to pick the new version).
type Signer struct {
	c       *api.Client
	mount   string
	key     string
	version int
	pub     ed25519.PublicKey
	id      string
}

var _ auditlog.Signer = (*Signer)(nil)

// New reads the transit key mount/keys/key (which must be of type ed25519) and pins its latest
// version.
func New(ctx context.Context, c *api.Client, mount, key string) (*Signer, error) {
	if mount == "" {
		mount = "transit"
	}
	sec, err := c.Logical().ReadWithContext(ctx, mount+"/keys/"+key)
	if err != nil {
		return nil, fmt.Errorf("vault transit key %s/%s: %w", mount, key, err)
	}
	if sec == nil || sec.Data == nil {
		return nil, fmt.Errorf("vault transit key %s/%s: not found", mount, key)
	}
	if t, _ := sec.Data["type"].(string); t != "ed25519" {
		return nil, fmt.Errorf("vault transit key %s/%s: type %q, need ed25519", mount, key, t)
	}
	latest, err := number(sec.Data["latest_version"])
	if err != nil {
		return nil, fmt.Errorf("vault transit key %s/%s: latest_version: %w", mount, key, err)
	}
	keys, _ := sec.Data["keys"].(map[string]any)
	kv, _ := keys[strconv.Itoa(latest)].(map[string]any)
	pubB64, _ := kv["public_key"].(string)
	pub, err := base64.StdEncoding.DecodeString(pubB64)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("vault transit key %s/%s: no ed25519 public key for version %d", mount, key, latest)
	}
	return &Signer{c: c, mount: mount, key: key, version: latest, pub: pub, id: auditlog.KeyIDOf(pub)}, nil
}

func number(v any) (int, error) {
	switch n := v.(type) {
	case json.Number:
		i, err := n.Int64()
		return int(i), err
	case float64:
		return int(n), nil
	case int:
		return n, nil
	}
	return 0, fmt.Errorf("%T is not a number", v)
}

// KeyID implements auditlog.Signer.
func (s *Signer) KeyID() string { return s.id }

// Algorithm implements auditlog.Signer.
func (s *Signer) Algorithm() string { return "ed25519" }

// Public returns the public key of the pinned version.
func (s *Signer) Public() ed25519.PublicKey { return s.pub }

// Sign implements auditlog.Signer with transit/sign.
func (s *Signer) Sign(ctx context.Context, msg []byte) ([]byte, error) {
	sec, err := s.c.Logical().WriteWithContext(ctx, s.mount+"/sign/"+s.key, map[string]any{
		"input":       base64.StdEncoding.EncodeToString(msg),
		"key_version": s.version,
	})
	if err != nil {
		return nil, fmt.Errorf("vault transit sign: %w", err)
	}
	if sec == nil || sec.Data == nil {
		return nil, fmt.Errorf("vault transit sign: empty response")
	}
	sig, _ := sec.Data["signature"].(string)
	parts := strings.SplitN(sig, ":", 3)
	if len(parts) != 3 || parts[0] != "vault" {
		return nil, fmt.Errorf("vault transit sign: unexpected signature format")
	}
	raw, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil {
		return nil, fmt.Errorf("vault transit sign: %w", err)
	}
	if !ed25519.Verify(s.pub, msg, raw) {
		// Never write a checkpoint the verifier would reject as forged.
		return nil, fmt.Errorf("vault transit sign: signature does not verify with key version %d", s.version)
	}
	return raw, nil
}

// WritePublicKey writes the public key as PEM for `consentry audit verify --public-key`.
func (s *Signer) WritePublicKey(path string) error {
	der, err := x509.MarshalPKIXPublicKey(s.pub)
	if err != nil {
		return err
	}
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644)
}
