package bundle_test

import (
	"testing"

	"github.com/consentry/consentry/sidecar/bundle"
	"github.com/consentry/consentry/sidecar/bundle/bundletest"
)

// FuzzReadTarball feeds arbitrary bytes (seeded with a real signed bundle, an unsigned one
// and a stripped one) to a verifier that requires signatures: it must never panic, and
// anything it accepts must carry a verified signature by the configured key.
func FuzzReadTarball(f *testing.F) {
	es := bundletest.DevES256(f)
	signed := signedBundle(f, "1", es, "")
	f.Add(signed)
	f.Add(unsignedBundle(f, "1"))
	f.Add(bundletest.Rewrite(f, signed, func(m map[string][]byte) { delete(m, ".signatures.json") }))
	f.Add([]byte{0x1f, 0x8b, 0x08, 0x00})
	v, err := bundle.NewVerifier(bundle.VerificationConfig{Keys: []bundle.KeyConfig{keyCfg(es)}}, true, 1<<20)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		got, err := v.ReadTarball(raw)
		if err != nil {
			if bundle.ReasonOf(err) == "" {
				t.Fatalf("error without a rejection reason: %v", err)
			}
			return
		}
		if !got.Signed || got.KeyID != es.ID {
			t.Fatalf("accepted without a verified signature: signed=%v kid=%q", got.Signed, got.KeyID)
		}
	})
}
