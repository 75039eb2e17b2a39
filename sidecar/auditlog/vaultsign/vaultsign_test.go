package vaultsign

import (
	"context"
	"crypto/ed25519"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/audit"
	"github.com/consentry/consentry/sidecar/auditlog"
	"github.com/consentry/consentry/sidecar/decision"
	"github.com/consentry/consentry/vaultkeys/vaulttest"
)

// TestCheckpointsSignedByVaultTransit runs a real Vault dev server, signs checkpoints with a
// transit ed25519 key and verifies the log with the exported public key.
func TestCheckpointsSignedByVaultTransit(t *testing.T) {
	srv := vaulttest.Start(t)
	c := srv.Client(t)
	ctx := context.Background()
	if _, err := c.Logical().WriteWithContext(ctx, "transit/keys/decision-log", map[string]any{"type": "ed25519"}); err != nil {
		t.Fatal(err)
	}
	s, err := New(ctx, c, "transit", "decision-log")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	l, err := auditlog.Open(auditlog.Config{Dir: dir, CheckpointEvery: 3, SigningVaultKey: "transit/decision-log"},
		auditlog.Options{Signer: s, PseudonymKey: []byte("vaultsign-test-pseudonym-key-0123456789"), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 7; i++ {
		e := &audit.Entry{Timestamp: time.Now(), Decision: decision.Deny(403, "x", "y")}
		if err := l.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	pubPath := filepath.Join(t.TempDir(), "vault.pub")
	if err := s.WritePublicKey(pubPath); err != nil {
		t.Fatal(err)
	}
	pub, err := auditlog.LoadPublicKey(pubPath)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := auditlog.Verify(dir, auditlog.VerifyOptions{PublicKeys: map[string]ed25519.PublicKey{s.KeyID(): pub}, RequireSealed: true})
	if err != nil || !rep.OK() || rep.Checkpoints < 4 {
		t.Fatalf("verify: %v %+v", err, rep)
	}
	// The count checkpoints were signed off the writer's path: written deferred, their
	// signatures carried by later checkpoints.
	deferred, carried := 0, 0
	if err := auditlog.ScanEvents(dir, func(ev *auditlog.Event, _ []byte) error {
		if ev.Checkpoint != nil {
			if ev.Checkpoint.Deferred {
				deferred++
			}
			carried += len(ev.Checkpoint.Signatures)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if deferred < 2 || carried != deferred {
		t.Fatalf("%d deferred checkpoints, %d signatures carried", deferred, carried)
	}
	// A different key does not verify.
	other, _, _ := ed25519.GenerateKey(nil)
	rep, _ = auditlog.Verify(dir, auditlog.VerifyOptions{PublicKeys: map[string]ed25519.PublicKey{s.KeyID(): other}})
	if rep.OK() {
		t.Fatal("checkpoints verified with the wrong key")
	}
	// A non-ed25519 key is refused.
	c.Logical().WriteWithContext(ctx, "transit/keys/aes", map[string]any{"type": "aes256-gcm96"})
	if _, err := New(ctx, c, "transit", "aes"); err == nil {
		t.Fatal("accepted a non-ed25519 transit key")
	}
}
