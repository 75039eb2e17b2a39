package app_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/consentry/consentry/vaultkeys/vaulttest"
)

// TestSignerReadinessNeedsASignature: the token can read the transit key but cannot sign
// with it (the grant the shipped policy once lacked; a revoked grant does the same at
// runtime). Reading the key is not enough: decision_log_signer stays unready, naming its
// failing probe, for as long as no checkpoint can be signed.
func TestSignerReadinessNeedsASignature(t *testing.T) {
	srv := vaulttest.Start(t)
	createSigningKey(t, srv)
	srv.WritePolicy(t, "read-only-log-key", `
path "transit/keys/decision-log" { capabilities = ["read"] }
path "auth/token/renew-self" { capabilities = ["update"] }
path "auth/token/lookup-self" { capabilities = ["read"] }
`)
	token := srv.CreateToken(t, time.Hour, "read-only-log-key")

	_, adminURL, _, _ := signedLogSidecarAs(t, srv.Addr, token)
	// Watched for at least 3s (never 200 meanwhile); on a busy machine the first probe may take
	// longer than that to report, so the watch goes on until it has, for up to 20s.
	watch, deadline := time.Now().Add(3*time.Second), time.Now().Add(20*time.Second)
	seenUnready := false
	for time.Now().Before(watch) || !seenUnready && time.Now().Before(deadline) {
		code, body := readyBody(adminURL)
		if code == http.StatusOK {
			t.Fatalf("/ready = 200 (%s) with a token that cannot sign", strings.TrimSpace(body))
		}
		if strings.Contains(body, "decision_log_signer") && strings.Contains(body, "probe") {
			seenUnready = true
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !seenUnready {
		t.Fatal("readiness never named the signer and its failing probe")
	}
}
