package consent

import (
	"context"
	"strings"
	"testing"
)

// TestEmptyWebhookSecretRefused: state.expiry.webhook_secret_file set but empty (a secret
// mount that did not populate) refuses to start, and CheckConfig says so - before, every
// expiry notice went out unsigned, silently.
func TestEmptyWebhookSecretRefused(t *testing.T) {
	for _, content := range []string{"", "\n", "  \r\n", "\t\n"} {
		cfg := testConfig(t, "sqlite")
		cfg.Expiry.NoticeDays = 7
		cfg.Expiry.WebhookURL = "http://127.0.0.1:1/hook"
		cfg.Expiry.WebhookSecretFile = tempFile(t, "secret", content)
		if err := CheckConfig(cfg); err == nil || !strings.Contains(err.Error(), "empty") {
			t.Fatalf("CheckConfig with secret %q: %v", content, err)
		}
		s, err := Open(context.Background(), cfg, Options{Logger: quietLogger(), NoBackground: true})
		if err == nil {
			s.Close()
			t.Fatalf("Open with secret %q started", content)
		}
	}
	// A secret keeps its trailing newline trimmed, as before (signatures stay valid).
	cfg := testConfig(t, "sqlite")
	cfg.Expiry.WebhookSecretFile = tempFile(t, "secret", "s3cret\n")
	if b, err := webhookSecret(cfg); err != nil || string(b) != "s3cret" {
		t.Fatalf("secret %q %v", b, err)
	}
}
