package vaultsign

import (
	"context"
	"errors"
	"testing"

	"github.com/hashicorp/vault/api"

	"github.com/consentry/consentry/vaultkeys/vaulttest"
)

// logKey is the checkpoint signing key that deploy/vault/consentry.hcl and the Kubernetes
// example name: outside the "consentry-" prefix of the customer keys the policy may delete.
const logKey = "decision-log-signing"

// TestShippedPolicySignsButCannotDestroyLogKey runs the signer with a token that has only
// deploy/vault/consentry.hcl: it must read the key and sign checkpoints (without the grant,
// every checkpoint fails 403 and the log verifies as checkpoint_missing), and it must not be
// able to configure, rotate, export or delete the key that makes the log verifiable.
func TestShippedPolicySignsButCannotDestroyLogKey(t *testing.T) {
	srv := vaulttest.Start(t)
	ctx := context.Background()
	if _, err := srv.Client(t).Logical().WriteWithContext(ctx, "transit/keys/"+logKey, map[string]any{"type": "ed25519"}); err != nil {
		t.Fatal(err)
	}
	c, err := api.NewClient(&api.Config{Address: srv.Addr})
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(srv.ConsentryToken(t))

	s, err := New(ctx, c, "transit", logKey)
	if err != nil {
		t.Fatalf("reading the signing key with the consentry policy: %v", err)
	}
	if _, err := s.Sign(ctx, []byte("consentry-checkpoint-v1\n0")); err != nil {
		t.Fatalf("signing with the consentry policy: %v", err)
	}

	denied := []struct {
		name string
		do   func() error
	}{
		{"allow deletion", func() error {
			_, err := c.Logical().WriteWithContext(ctx, "transit/keys/"+logKey+"/config", map[string]any{"deletion_allowed": true})
			return err
		}},
		{"delete", func() error { _, err := c.Logical().DeleteWithContext(ctx, "transit/keys/"+logKey); return err }},
		{"rotate", func() error {
			_, err := c.Logical().WriteWithContext(ctx, "transit/keys/"+logKey+"/rotate", nil)
			return err
		}},
		{"export", func() error {
			_, err := c.Logical().ReadWithContext(ctx, "transit/export/signing-key/"+logKey)
			return err
		}},
	}
	for _, tc := range denied {
		t.Run(tc.name, func(t *testing.T) {
			var re *api.ResponseError
			err := tc.do()
			if !errors.As(err, &re) || re.StatusCode != 403 {
				t.Fatalf("%s of the log signing key: want 403, got %v", tc.name, err)
			}
		})
	}
	// The key is still there and still signs.
	if _, err := s.Sign(ctx, []byte("after")); err != nil {
		t.Fatalf("signing after the denied attempts: %v", err)
	}
}
