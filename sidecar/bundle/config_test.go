package bundle

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	pub := filepath.Join("..", "..", "bundles", "dev", "dev-es256.pub")
	priv := filepath.Join("..", "..", "bundles", "dev", "dev-es256.key")
	key := KeyConfig{ID: "k", Algorithm: "ES256", KeyFile: pub}
	off := false
	tests := []struct {
		name string
		cfg  Config
		want string // substring of the error naming the key; "" = valid
	}{
		{"file with key", Config{File: "b.tar.gz", Verification: VerificationConfig{Keys: []KeyConfig{key}}}, ""},
		{"no source", Config{Verification: VerificationConfig{Keys: []KeyConfig{key}}}, "exactly one of policy.dir"},
		{"two sources", Config{Dir: "p", File: "b", Verification: VerificationConfig{Keys: []KeyConfig{key}}}, "exactly one of policy.dir"},
		{"signatures need keys", Config{File: "b"}, "policy.verification.keys"},
		{"unsigned dev dir", Config{Dir: "p", RequireSignatures: &off}, ""},
		{"url needs persist", Config{URL: "http://h/b", Verification: VerificationConfig{Keys: []KeyConfig{key}}}, "policy.persist_dir"},
		{"url opt out", Config{URL: "http://h/b", NoPersist: true, Verification: VerificationConfig{Keys: []KeyConfig{key}}}, ""},
		{"bad url", Config{URL: "ftp://h/b", NoPersist: true, Verification: VerificationConfig{Keys: []KeyConfig{key}}}, "policy.url"},
		{"hmac refused", Config{File: "b", Verification: VerificationConfig{Keys: []KeyConfig{{ID: "k", Algorithm: "HS256", Key: "-----BEGIN x"}}}}, "algorithm"},
		{"private key refused", Config{File: "b", Verification: VerificationConfig{Keys: []KeyConfig{{ID: "k", Algorithm: "ES256", KeyFile: priv}}}}, "private key"},
		{"key without id", Config{File: "b", Verification: VerificationConfig{Keys: []KeyConfig{{Algorithm: "ES256", KeyFile: pub}}}}, ".id: required"},
		{"pinned unknown keyid", Config{File: "b", Verification: VerificationConfig{KeyID: "other", Keys: []KeyConfig{key}}}, "policy.verification.keyid"},
		{"long poll below 1s", Config{File: "b", Polling: PollingConfig{LongPollTimeout: time.Millisecond}, Verification: VerificationConfig{Keys: []KeyConfig{key}}}, "long_poll_timeout"},
		{"max below min", Config{File: "b", Polling: PollingConfig{MinDelay: time.Minute, MaxDelay: time.Second}, Verification: VerificationConfig{Keys: []KeyConfig{key}}}, "max_delay"},
		{"missing key file", Config{File: "b", Verification: VerificationConfig{Keys: []KeyConfig{{ID: "k", Algorithm: "ES256", KeyFile: "nope.pub"}}}}, "key_file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.WithDefaults().Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want it to mention %q", err, tt.want)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	c := Config{}.WithDefaults()
	if !c.SignaturesRequired() || c.Name != "consentry" || c.MaxSizeBytes != DefaultMaxSizeBytes || c.Polling.MaxDelay < c.Polling.MinDelay {
		t.Fatalf("defaults: %+v", c)
	}
	if _, err := os.Stat(filepath.Join("..", "..", "bundles", "dev", "dev-rs256.pub")); err != nil {
		t.Fatal("development keys missing from bundles/dev: ", err)
	}
}
