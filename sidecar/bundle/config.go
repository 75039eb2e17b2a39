package bundle

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	opabundle "github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/keys"
)

// Config is the `policy:` section: where the sidecar gets its policy bundle and how it
// decides whether to trust it. Exactly one of Dir, File and URL is set.
type Config struct {
	// Name is the bundle name recorded with every decision (bundles{name: revision}) and shown
	// on /status. Default "consentry".
	Name string `yaml:"name" json:"name"`

	// Dir is a local directory, watched and hot reloaded - for development. It is either an
	// OPA bundle directory (it has a .manifest or .signatures.json, verified like a tarball)
	// or a consentry policy directory (policies/ layout), which is unsigned and so needs
	// require_signatures: false.
	Dir string `yaml:"dir" json:"dir"`
	// File is a local bundle tarball (bundle.tar.gz), watched and re-read when replaced.
	File string `yaml:"file" json:"file"`
	// URL is a bundle server URL (OPA bundle protocol: GET with If-None-Match/ETag, long
	// polling when the server answers with Content-Type application/vnd.openpolicyagent.bundles).
	URL string `yaml:"url" json:"url"`

	// Polling tunes how often the source is checked.
	Polling PollingConfig `yaml:"polling" json:"polling"`
	// Timeout bounds one HTTP request (connect, headers and body), on top of the long-poll
	// wait when long polling. Default 30s.
	Timeout time.Duration `yaml:"timeout" json:"timeout"`
	// BearerTokenFile holds a token sent as "Authorization: Bearer ..." to the bundle server.
	BearerTokenFile string `yaml:"bearer_token_file" json:"bearer_token_file"`
	// CAFile is a PEM bundle of CAs trusted for an https bundle server (default: system roots).
	CAFile string `yaml:"ca_file" json:"ca_file"`

	// Verification lists the keys bundles are verified with.
	Verification VerificationConfig `yaml:"verification" json:"verification"`
	// RequireSignatures rejects any bundle without a valid signature. Default true; only an
	// explicit false (development) turns it off.
	RequireSignatures *bool `yaml:"require_signatures" json:"require_signatures"`
	// AllowRollback accepts a bundle whose revision is older than (or not comparable with)
	// the active one. Off by default: an attacker who can replay an old signed bundle must
	// not be able to bring back an old policy.
	AllowRollback bool `yaml:"allow_rollback" json:"allow_rollback"`

	// PersistDir keeps the last good bundle (tarball sources) so the sidecar starts on it
	// when the bundle server is down. Required with url unless no_persist is true.
	PersistDir string `yaml:"persist_dir" json:"persist_dir"`
	// NoPersist opts out of persistence (tests, read-only file systems).
	NoPersist bool `yaml:"no_persist" json:"no_persist"`
	// MaxSizeBytes bounds a downloaded bundle and every file in it; a bundle may inflate to 4x
	// this and hold at most 10,000 files (checked while streaming, before anything is kept).
	// Default 64 MiB.
	MaxSizeBytes int64 `yaml:"max_size_bytes" json:"max_size_bytes"`
}

// PollingConfig tunes source polling.
type PollingConfig struct {
	// MinDelay and MaxDelay bound the jittered delay between two polls of a server that does
	// not long-poll (and the safety re-check of watched files). Defaults 10s and 20s.
	MinDelay time.Duration `yaml:"min_delay" json:"min_delay"`
	MaxDelay time.Duration `yaml:"max_delay" json:"max_delay"`
	// LongPollTimeout asks the server to hold a request up to this long until a new bundle
	// exists (Prefer: wait=N, whole seconds). 0 disables long polling. Default 0.
	LongPollTimeout time.Duration `yaml:"long_poll_timeout" json:"long_poll_timeout"`
	// MinRetryDelay is the first backoff delay after a failed fetch; it doubles up to
	// MaxDelay. Default 500ms.
	MinRetryDelay time.Duration `yaml:"min_retry_delay" json:"min_retry_delay"`
}

// VerificationConfig names the public keys that may sign bundles.
type VerificationConfig struct {
	// Keys are the trusted public keys, selected by the signature's kid (or by KeyID).
	Keys []KeyConfig `yaml:"keys" json:"keys"`
	// KeyID pins verification to one key, whatever kid the signature names.
	KeyID string `yaml:"keyid" json:"keyid"`
	// Scope must equal the signature's scope claim when set (overrides a key's scope).
	Scope string `yaml:"scope" json:"scope"`
}

// KeyConfig is one trusted public key.
type KeyConfig struct {
	// ID is the key id (the JWT "kid" the signer used, `bundle sign --keyid`).
	ID string `yaml:"id" json:"id"`
	// Algorithm is one of RS256/384/512, PS256/384/512, ES256/384/512. HMAC is refused: a
	// secret shared with every sidecar could sign bundles.
	Algorithm string `yaml:"algorithm" json:"algorithm"`
	// KeyFile is a PEM public key (PKIX "PUBLIC KEY", "RSA PUBLIC KEY" or a certificate).
	KeyFile string `yaml:"key_file" json:"key_file"`
	// Key is the PEM inline (prefer KeyFile).
	Key string `yaml:"key" json:"key"`
	// Scope is the scope this key's signatures must carry (optional).
	Scope string `yaml:"scope" json:"scope"`
}

// Defaults.
const (
	DefaultName          = "consentry"
	DefaultMaxSizeBytes  = 64 << 20
	DefaultTimeout       = 30 * time.Second
	DefaultMinDelay      = 10 * time.Second
	DefaultMaxDelay      = 20 * time.Second
	DefaultMinRetryDelay = 500 * time.Millisecond
)

// WithDefaults returns c with zero values replaced by defaults.
func (c Config) WithDefaults() Config {
	if c.Name == "" {
		c.Name = DefaultName
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.MaxSizeBytes == 0 {
		c.MaxSizeBytes = DefaultMaxSizeBytes
	}
	if c.Polling.MinDelay == 0 {
		c.Polling.MinDelay = DefaultMinDelay
	}
	if c.Polling.MaxDelay == 0 {
		c.Polling.MaxDelay = max(DefaultMaxDelay, c.Polling.MinDelay)
	}
	if c.Polling.MinRetryDelay == 0 {
		c.Polling.MinRetryDelay = DefaultMinRetryDelay
	}
	if c.RequireSignatures == nil {
		t := true
		c.RequireSignatures = &t
	}
	return c
}

// SignaturesRequired reports whether unsigned bundles are rejected (true unless explicitly off).
func (c Config) SignaturesRequired() bool {
	return c.RequireSignatures == nil || *c.RequireSignatures
}

// Validate reports the first invalid key. Call it on WithDefaults().
func (c Config) Validate() error {
	n := 0
	for _, s := range []string{c.Dir, c.File, c.URL} {
		if s != "" {
			n++
		}
	}
	if n != 1 {
		return errors.New("policy: set exactly one of policy.dir, policy.file and policy.url")
	}
	if c.URL != "" {
		u, err := url.Parse(c.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("policy.url: %q is not an http(s) URL", c.URL)
		}
		if c.PersistDir == "" && !c.NoPersist {
			return errors.New("policy.persist_dir: required with policy.url (the sidecar starts on the last good bundle when the server is down); set policy.no_persist: true to opt out")
		}
	}
	if c.Polling.MinDelay < 0 || c.Polling.MaxDelay < c.Polling.MinDelay {
		return fmt.Errorf("policy.polling.max_delay: must be >= min_delay (%s), got %s", c.Polling.MinDelay, c.Polling.MaxDelay)
	}
	if c.Polling.LongPollTimeout < 0 || (c.Polling.LongPollTimeout > 0 && c.Polling.LongPollTimeout < time.Second) {
		return fmt.Errorf("policy.polling.long_poll_timeout: must be 0 or at least 1s, got %s", c.Polling.LongPollTimeout)
	}
	if c.Timeout < 0 {
		return fmt.Errorf("policy.timeout: must not be negative, got %s", c.Timeout)
	}
	if c.MaxSizeBytes < 0 {
		return fmt.Errorf("policy.max_size_bytes: must not be negative, got %d", c.MaxSizeBytes)
	}
	if c.SignaturesRequired() && len(c.Verification.Keys) == 0 {
		return errors.New("policy.verification.keys: signatures are required (policy.require_signatures) but no verification key is configured")
	}
	if _, err := c.Verification.keySet(); err != nil {
		return err
	}
	return nil
}

// allowedAlgorithms are the asymmetric JWS algorithms accepted for bundle signatures.
var allowedAlgorithms = map[string]bool{
	"RS256": true, "RS384": true, "RS512": true,
	"PS256": true, "PS384": true, "PS512": true,
	"ES256": true, "ES384": true, "ES512": true,
}

// keySet loads the keys into OPA's form, validating each.
func (v VerificationConfig) keySet() (map[string]*keys.Config, error) {
	out := make(map[string]*keys.Config, len(v.Keys))
	for i, k := range v.Keys {
		where := fmt.Sprintf("policy.verification.keys[%d]", i)
		if k.ID == "" {
			return nil, fmt.Errorf("%s.id: required (bundles name their signing key by kid)", where)
		}
		if _, dup := out[k.ID]; dup {
			return nil, fmt.Errorf("%s.id: duplicate key id %q", where, k.ID)
		}
		alg := strings.ToUpper(k.Algorithm)
		if !allowedAlgorithms[alg] {
			return nil, fmt.Errorf("%s.algorithm: %q is not one of RS256/384/512, PS256/384/512, ES256/384/512", where, k.Algorithm)
		}
		pem := k.Key
		if k.KeyFile != "" {
			raw, err := os.ReadFile(k.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("%s.key_file: %w", where, err)
			}
			pem = string(raw)
		}
		if !strings.Contains(pem, "-----BEGIN") {
			return nil, fmt.Errorf("%s: key_file or key must hold a PEM public key", where)
		}
		if strings.Contains(pem, "PRIVATE KEY") {
			return nil, fmt.Errorf("%s: a private key was given; sidecars only need the public key", where)
		}
		out[k.ID] = &keys.Config{Key: pem, Algorithm: alg, Scope: k.Scope}
	}
	if v.KeyID != "" {
		if _, ok := out[v.KeyID]; !ok {
			return nil, fmt.Errorf("policy.verification.keyid: %q is not one of the configured keys", v.KeyID)
		}
	}
	return out, nil
}

// opaConfig returns OPA's verification config, or nil when no key is configured.
func (v VerificationConfig) opaConfig() (*opabundle.VerificationConfig, error) {
	ks, err := v.keySet()
	if err != nil || len(ks) == 0 {
		return nil, err
	}
	return opabundle.NewVerificationConfig(ks, v.KeyID, v.Scope, nil), nil
}
