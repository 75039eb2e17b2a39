package auditlog

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strconv"
)

// Checkpoint reasons.
const (
	CheckpointCount = "count" // CheckpointEvery records since the last one
	CheckpointTime  = "time"  // CheckpointInterval elapsed (possibly with no events)
	CheckpointOpen  = "open"  // the log was (re)opened: a restart explains a gap in time
	CheckpointClose = "close" // clean shutdown
)

// Signer signs checkpoints. Ed25519Signer signs with a key file, in place; any other signer
// (vaultsign: a Vault transit key) may do I/O, so the log calls it from its own goroutine and
// never lets an append wait on it (signing.go). Its KeyID and Sign are never called
// concurrently, and KeyID is called right before the Sign whose signature it names.
type Signer interface {
	// KeyID names the key; the verifier looks the public key up by it.
	KeyID() string
	// Algorithm is "ed25519".
	Algorithm() string
	Sign(ctx context.Context, msg []byte) ([]byte, error)
}

// CheckpointBody is the "checkpoint" member of a checkpoint record.
type CheckpointBody struct {
	Reason string `json:"reason"`
	// Events is the number of records since the previous checkpoint.
	Events int `json:"events"`
	// Every and IntervalMS are the writer's checkpoint settings, signed so the verifier can
	// tell a missing checkpoint from a configuration change.
	Every      int    `json:"every"`
	IntervalMS int64  `json:"interval_ms"`
	Algorithm  string `json:"alg,omitempty"`
	KeyID      string `json:"key_id,omitempty"`
	// Signature is base64 (std) of the signature over CheckpointMessage.
	Signature string `json:"signature,omitempty"`
	// Deferred marks a checkpoint written before its signature existed (a signer that is not
	// in memory signs off the writer's path): a later checkpoint carries the signature, over
	// the same CheckpointMessage, in Signatures. Not signed itself: the record's hash, which
	// the next signed checkpoint covers, is.
	Deferred bool `json:"deferred,omitempty"`
	// Signatures are the signatures of earlier deferred checkpoints, or their signing
	// failures, in seq order.
	Signatures []CheckpointSignature `json:"signatures,omitempty"`
	// KeyLedger is the shredded-keys ledger's head when the checkpoint was written (with a
	// vault section): at start the ledger must still hold that record, or it was truncated or
	// replaced while consentry was stopped and an erasure could be forgotten.
	KeyLedger *LedgerHead `json:"key_ledger,omitempty"`
	// PseudonymKey is the fingerprint of the pseudonym key the writer used
	// (Pseudonymizer.Fingerprint; absent in logs written before it was recorded). Not signed:
	// the hash chain covers it.
	PseudonymKey string `json:"pseudonym_key,omitempty"`
}

// CheckpointSignature is the signature of the deferred checkpoint Seq, or (Error, no
// Signature) why it could not be signed.
type CheckpointSignature struct {
	Seq       uint64 `json:"seq"`
	Algorithm string `json:"alg,omitempty"`
	KeyID     string `json:"key_id,omitempty"`
	Signature string `json:"signature,omitempty"`
	Error     string `json:"error,omitempty"`
}

// LedgerHead names the last record of the shredded-keys ledger (vaultkeys.Ledger.Head):
// its seq (0: empty ledger) and hash.
type LedgerHead struct {
	Seq  int64  `json:"seq"`
	Hash string `json:"hash"`
}

// CheckpointMessage is the byte string a checkpoint signs. prevHash is the hash of the record
// before the checkpoint, so the signature covers the whole chain up to it.
func CheckpointMessage(seq uint64, prevHash, timestamp string, b CheckpointBody) []byte {
	msg := []byte("consentry-checkpoint-v1\n")
	msg = strconv.AppendUint(msg, seq, 10)
	msg = append(msg, '\n')
	msg = append(msg, prevHash...)
	msg = append(msg, '\n')
	msg = append(msg, timestamp...)
	msg = append(msg, '\n')
	msg = append(msg, b.Reason...)
	msg = append(msg, '\n')
	msg = strconv.AppendInt(msg, int64(b.Events), 10)
	msg = append(msg, '\n')
	msg = strconv.AppendInt(msg, int64(b.Every), 10)
	msg = append(msg, '\n')
	msg = strconv.AppendInt(msg, b.IntervalMS, 10)
	if b.KeyLedger != nil {
		// Signed too: otherwise the last checkpoint's anchor could be rewritten undetected.
		msg = append(msg, "\nkey_ledger\n"...)
		msg = strconv.AppendInt(msg, b.KeyLedger.Seq, 10)
		msg = append(msg, '\n')
		msg = append(msg, b.KeyLedger.Hash...)
	}
	return msg
}

// Ed25519Signer signs with an in-memory Ed25519 key.
type Ed25519Signer struct {
	key ed25519.PrivateKey
	id  string
}

var _ Signer = (*Ed25519Signer)(nil)

// NewEd25519Signer wraps key.
func NewEd25519Signer(key ed25519.PrivateKey) *Ed25519Signer {
	return &Ed25519Signer{key: key, id: KeyIDOf(key.Public().(ed25519.PublicKey))}
}

// KeyID implements Signer.
func (s *Ed25519Signer) KeyID() string { return s.id }

// Algorithm implements Signer.
func (s *Ed25519Signer) Algorithm() string { return "ed25519" }

// Sign implements Signer.
func (s *Ed25519Signer) Sign(_ context.Context, msg []byte) ([]byte, error) {
	return ed25519.Sign(s.key, msg), nil
}

// Public returns the public key.
func (s *Ed25519Signer) Public() ed25519.PublicKey { return s.key.Public().(ed25519.PublicKey) }

// KeyIDOf derives a key id from a public key: "ed25519:" + 16 hex digits of its SHA-256.
func KeyIDOf(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return "ed25519:" + hex.EncodeToString(sum[:8])
}

// LoadSigner reads a PEM PKCS#8 Ed25519 private key.
func LoadSigner(path string) (*Ed25519Signer, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	blk, _ := pem.Decode(raw)
	if blk == nil {
		return nil, fmt.Errorf("signing key %s: no PEM block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("signing key %s: %T is not an Ed25519 key", path, k)
	}
	return NewEd25519Signer(ek), nil
}

// LoadPublicKey reads a PEM public key (PKIX) or derives it from a PEM PKCS#8 private key.
func LoadPublicKey(path string) (ed25519.PublicKey, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	blk, _ := pem.Decode(raw)
	if blk == nil {
		return nil, fmt.Errorf("public key %s: no PEM block", path)
	}
	if blk.Type == "PRIVATE KEY" {
		s, err := LoadSigner(path)
		if err != nil {
			return nil, err
		}
		return s.Public(), nil
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("public key %s: %w", path, err)
	}
	pk, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("public key %s: %T is not Ed25519", path, k)
	}
	return pk, nil
}

// WriteKeyPair writes a new Ed25519 key pair as PEM files (private 0600).
func WriteKeyPair(privPath, pubPath string) (*Ed25519Signer, error) {
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		return nil, err
	}
	p8, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	px, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(privPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}), 0o600); err != nil {
		return nil, err
	}
	if pubPath != "" {
		if err := os.WriteFile(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: px}), 0o644); err != nil {
			return nil, err
		}
	}
	return NewEd25519Signer(priv), nil
}

var errNoKey = errors.New("no public key for key id")
