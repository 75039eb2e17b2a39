package static

import "errors"

// Config is the `enrichment:` section (the static provider).
type Config struct {
	// File is the YAML or JSON file of customers, consents, cases and agreements. It is read
	// once, at start: restart consentry to apply a change.
	File string `yaml:"file" json:"file"`
}

// WithDefaults returns c unchanged (no defaults).
func (c Config) WithDefaults() Config { return c }

// Validate reports the first invalid key.
func (c Config) Validate() error {
	if c.File == "" {
		return errors.New("enrichment.file: required")
	}
	return nil
}
