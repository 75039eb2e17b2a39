package routes

import "errors"

// Config is the `routes:` section: where the route map comes from.
type Config struct {
	// File is a route map file (YAML or JSON), e.g. deploy/routes/democrm.yaml.
	File string `yaml:"file" json:"file"`
	// FromBundle takes the route map from bundle data at data.consentry.routes instead, so that
	// a policy revision and the routes it was written for travel together. File is then ignored.
	FromBundle bool `yaml:"from_bundle" json:"from_bundle"`
}

// WithDefaults returns c unchanged (there are no defaults: a route map must be named).
func (c Config) WithDefaults() Config { return c }

// Validate reports the first invalid key.
func (c Config) Validate() error {
	if c.File == "" && !c.FromBundle {
		return errors.New("routes.file: required unless routes.from_bundle is true")
	}
	return nil
}

// LoadConfig loads the map a file-based Config names. For FromBundle, call FromValue with
// the bundle's data.consentry.routes when the bundle activates.
func LoadConfig(c Config) (*Map, error) {
	if c.FromBundle {
		return nil, errors.New("routes.from_bundle: the route map comes with the bundle; use FromValue")
	}
	return Load(c.File)
}
