package bundle_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/consentry/consentry/sidecar/bundle"
	"github.com/consentry/consentry/sidecar/bundle/build"
	"github.com/consentry/consentry/sidecar/bundle/bundletest"
)

// signedBundle builds the repository's policy library at revision rev, signed with key
// (scope optional). Tests are skipped here: bundle/build's tests cover them.
func signedBundle(t testing.TB, rev string, key bundletest.Key, scope string) []byte {
	t.Helper()
	res, err := build.Build(context.Background(), bundletest.Policies(t), build.Options{
		Revision: rev, SkipTests: true,
		Sign: &build.SignOptions{KeyFile: key.Private, Algorithm: key.Alg, KeyID: key.ID, Scope: scope},
	})
	if err != nil {
		t.Fatal(err)
	}
	return res.Tarball
}

func unsignedBundle(t testing.TB, rev string) []byte {
	t.Helper()
	res, err := build.Build(context.Background(), bundletest.Policies(t), build.Options{Revision: rev, SkipTests: true})
	if err != nil {
		t.Fatal(err)
	}
	return res.Tarball
}

func keyCfg(k bundletest.Key) bundle.KeyConfig {
	return bundle.KeyConfig{ID: k.ID, Algorithm: k.Alg, KeyFile: k.Public}
}

func TestVerifierRejects(t *testing.T) {
	es, rs := bundletest.DevES256(t), bundletest.DevRS256(t)
	good := signedBundle(t, "10", es, "")
	scoped := signedBundle(t, "10", es, "prod")
	unsigned := unsignedBundle(t, "10")
	esOnly := bundle.VerificationConfig{Keys: []bundle.KeyConfig{keyCfg(es)}}
	both := bundle.VerificationConfig{Keys: []bundle.KeyConfig{keyCfg(es), keyCfg(rs)}}

	tamper := func(edit func(map[string][]byte)) []byte { return bundletest.Rewrite(t, good, edit) }
	tests := []struct {
		name     string
		raw      []byte
		vc       bundle.VerificationConfig
		required bool
		maxFile  int64
		want     string // rejection reason, "" = accepted
	}{
		{"valid ES256", good, esOnly, true, 0, ""},
		{"valid, key chosen by kid among several", good, both, true, 0, ""},
		{"valid, keyid pinned", good, bundle.VerificationConfig{KeyID: es.ID, Keys: []bundle.KeyConfig{keyCfg(es), keyCfg(rs)}}, true, 0, ""},
		{"stripped signature", tamper(func(f map[string][]byte) { delete(f, ".signatures.json") }), esOnly, true, 0, bundle.ReasonSignatureMissing},
		// GHSA-g2pf-6v5v-qcc8 class: keys configured but no keyid pinned must still require a signature.
		{"unsigned, config without keyid", unsigned, both, true, 0, bundle.ReasonSignatureMissing},
		{"empty signatures list", tamper(func(f map[string][]byte) { f[".signatures.json"] = []byte(`{"signatures":[]}`) }), esOnly, true, 0, bundle.ReasonSignatureMissing},
		{"signed by another key under the same kid", good, bundle.VerificationConfig{Keys: []bundle.KeyConfig{{ID: es.ID, Algorithm: "ES256", Key: bundletest.DevES256Other(t)}}}, true, 0, bundle.ReasonSignatureInvalid},
		{"algorithm confusion: kid configured as RS256", good, bundle.VerificationConfig{Keys: []bundle.KeyConfig{{ID: es.ID, Algorithm: "RS256", KeyFile: rs.Public}}}, true, 0, bundle.ReasonSignatureInvalid},
		{"unknown kid", good, bundle.VerificationConfig{Keys: []bundle.KeyConfig{keyCfg(rs)}}, true, 0, bundle.ReasonSignatureInvalid},
		{"keyid pinned to another key", good, bundle.VerificationConfig{KeyID: rs.ID, Keys: []bundle.KeyConfig{keyCfg(es), keyCfg(rs)}}, true, 0, bundle.ReasonSignatureInvalid},
		{"scope expected, none signed", good, bundle.VerificationConfig{Scope: "prod", Keys: []bundle.KeyConfig{keyCfg(es)}}, true, 0, bundle.ReasonScopeMismatch},
		{"wrong scope", scoped, bundle.VerificationConfig{Scope: "staging", Keys: []bundle.KeyConfig{keyCfg(es)}}, true, 0, bundle.ReasonScopeMismatch},
		{"scoped bundle, no scope configured", scoped, esOnly, true, 0, bundle.ReasonScopeMismatch},
		{"right scope", scoped, bundle.VerificationConfig{Scope: "prod", Keys: []bundle.KeyConfig{keyCfg(es)}}, true, 0, ""},
		{"extra file", tamper(func(f map[string][]byte) {
			f["consentry/backdoor.rego"] = []byte("package consentry.backdoor\nallow := true\n")
		}), esOnly, true, 0, bundle.ReasonExtraFile},
		{"extra non-policy file", tamper(func(f map[string][]byte) { f["README.md"] = []byte("hi") }), esOnly, true, 0, bundle.ReasonExtraFile},
		{"missing file", tamper(func(f map[string][]byte) { delete(f, "consentry/util.rego") }), esOnly, true, 0, bundle.ReasonMissingFile},
		{"data changed", tamper(func(f map[string][]byte) { f["data.json"] = []byte(`{"consentry":{"catalog":{}}}`) }), esOnly, true, 0, bundle.ReasonHashMismatch},
		{"policy changed", tamper(func(f map[string][]byte) { f["consentry/util.rego"] = append(f["consentry/util.rego"], "\n# x\n"...) }), esOnly, true, 0, bundle.ReasonHashMismatch},
		{"manifest revision changed", tamper(func(f map[string][]byte) {
			var m map[string]any
			_ = json.Unmarshal(f[".manifest"], &m)
			m["revision"] = "11"
			f[".manifest"], _ = json.Marshal(m)
		}), esOnly, true, 0, bundle.ReasonHashMismatch},
		{"file over the size limit", good, esOnly, true, 1024, bundle.ReasonTooLarge},
		{"not a tarball", []byte("hello"), esOnly, true, 0, bundle.ReasonMalformed},
		{"unsigned allowed when not required", unsigned, bundle.VerificationConfig{}, false, 0, ""},
		{"optional signature still verified when present", good, bundle.VerificationConfig{Keys: []bundle.KeyConfig{keyCfg(rs)}}, false, 0, bundle.ReasonSignatureInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := bundle.NewVerifier(tt.vc, tt.required, tt.maxFile)
			if err != nil {
				t.Fatal(err)
			}
			got, err := v.ReadTarball(tt.raw)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				if tt.required && (!got.Signed || got.KeyID != es.ID) {
					t.Fatalf("signed=%v keyid=%q", got.Signed, got.KeyID)
				}
				if got.Revision != "10" || len(got.Schemas) == 0 || len(got.Bundle.Modules) == 0 {
					t.Fatalf("revision %q, %d schemas, %d modules", got.Revision, len(got.Schemas), len(got.Bundle.Modules))
				}
				return
			}
			if err == nil {
				t.Fatal("accepted, want rejection " + tt.want)
			}
			if r := bundle.ReasonOf(err); r != tt.want {
				t.Fatalf("reason %q, want %q (%v)", r, tt.want, err)
			}
		})
	}
}

func TestNewVerifierNeedsKeysWhenRequired(t *testing.T) {
	if _, err := bundle.NewVerifier(bundle.VerificationConfig{}, true, 0); err == nil {
		t.Fatal("a verifier that requires signatures and has no key must not be built")
	}
}

// `bundle verify` runs the sidecar's no_decision check (docs/bundles.md): a signed bundle
// without a data.consentry.decision rule used to pass it and then be refused by every sidecar.
func TestBuildVerifyRequiresDecisionRule(t *testing.T) {
	es := bundletest.DevES256(t)
	raw := signRaw(t, map[string][]byte{
		".manifest":            []byte(`{"revision":"9","roots":["consentry"]}`),
		"data.json":            []byte("{}"),
		"consentry/other.rego": []byte("package consentry.other\n\nallow := true\n"),
	})
	f := newFixture(t, bundle.Config{File: "unused.tar.gz"})
	if err := f.mgr.ActivateTarball(context.Background(), raw, "test"); bundle.ReasonOf(err) != bundle.ReasonNoDecision {
		t.Fatalf("sidecar: %v", err)
	}
	_, err := build.Verify(context.Background(), raw, build.VerifyOptions{Verification: bundle.VerificationConfig{Keys: []bundle.KeyConfig{keyCfg(es)}}})
	if bundle.ReasonOf(err) != bundle.ReasonNoDecision {
		t.Fatalf("bundle verify accepted a bundle the sidecar refuses with no_decision (err=%v)", err)
	}
}
