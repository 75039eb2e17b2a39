package normalize

import "fmt"

// Config is the `normalize:` section of the pipeline configuration.
type Config struct {
	// MaxPathLength bounds the request target (path and query each). Default 8192 bytes.
	MaxPathLength int `yaml:"max_path_length" json:"max_path_length"`
	// MaxHeaderBytes bounds the sum of header name and value sizes. Default 65536.
	MaxHeaderBytes int `yaml:"max_header_bytes" json:"max_header_bytes"`
	// AllowSemicolon accepts ";" in decoded paths. Off by default: servers disagree on whether
	// ";" starts path parameters, so a path with one can match different routes here and upstream.
	AllowSemicolon bool `yaml:"allow_semicolon" json:"allow_semicolon"`
}

// WithDefaults fills zero values.
func (c Config) WithDefaults() Config {
	if c.MaxPathLength == 0 {
		c.MaxPathLength = 8192
	}
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = 65536
	}
	return c
}

// Validate reports the first invalid key.
func (c Config) Validate() error {
	if c.MaxPathLength < 0 {
		return fmt.Errorf("normalize.max_path_length: must not be negative")
	}
	if c.MaxHeaderBytes < 0 {
		return fmt.Errorf("normalize.max_header_bytes: must not be negative")
	}
	return nil
}
