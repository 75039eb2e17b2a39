package transform

import (
	"fmt"
	"os"
	"strings"
)

// Config is the `transform:` section: how response and request bodies are rewritten. Both
// front doors with a response phase (the HTTP proxy and Envoy ext_proc) share it.
type Config struct {
	// HMACKeyFile is a file holding the secret key of "hmac" masks (at least 16 bytes; a
	// trailing newline is ignored). The same value gives the same hash for one field, so
	// analysts can count and join without seeing the value. Without a key, hmac masks are
	// served as "[redacted]": an unkeyed hash of a phone number or id is reversible by
	// enumeration, so consentry never falls back to one.
	HMACKeyFile string `yaml:"hmac_key_file" json:"hmac_key_file"`
	// MaxBodyBytes bounds the bodies the transformer parses (responses and write requests).
	// A larger JSON response is never passed untransformed: it is replaced by a 502
	// response.too_large. Default 8 MiB.
	MaxBodyBytes int `yaml:"max_body_bytes" json:"max_body_bytes"`
	// ReleaseConcurrency bounds the concurrent key releases for one list response (one release
	// per allowed record that holds ciphertext; warm releases are cache hits). Default 16.
	ReleaseConcurrency int `yaml:"release_concurrency" json:"release_concurrency"`
}

// WithDefaults fills defaults.
func (c Config) WithDefaults() Config {
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 8 << 20
	}
	if c.ReleaseConcurrency == 0 {
		c.ReleaseConcurrency = 16
	}
	return c
}

// Validate reports the first invalid key.
func (c Config) Validate() error {
	if c.MaxBodyBytes < 0 {
		return fmt.Errorf("transform.max_body_bytes: must not be negative")
	}
	if c.ReleaseConcurrency < 0 {
		return fmt.Errorf("transform.release_concurrency: must not be negative")
	}
	if c.HMACKeyFile != "" {
		if _, err := readKey(c.HMACKeyFile); err != nil {
			return fmt.Errorf("transform.hmac_key_file: %w", err)
		}
	}
	return nil
}

// minHMACKey is the shortest accepted mask key.
const minHMACKey = 16

func readKey(path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	key := []byte(strings.TrimRight(string(raw), "\r\n"))
	if len(key) < minHMACKey {
		return nil, fmt.Errorf("key is %d bytes, need at least %d", len(key), minHMACKey)
	}
	return key, nil
}
