package admin

import (
	"fmt"
	"net"
)

// Config is the `admin:` section: the admin listener (health, readiness, metrics, status and
// the authenticated admin API). It is never the proxy port.
type Config struct {
	// Listen is the admin address, e.g. "127.0.0.1:9400". Default 127.0.0.1:9400.
	Listen string `yaml:"listen" json:"listen"`
	// TokenFile holds the admin bearer token (one line). The admin API (everything under
	// /v1/) requires it, or a JWT with one of AdminRoles when identity is configured.
	// Health, readiness and metrics need no token. The file is read at start: after rotating
	// it, restart consentry (or prefer short-lived JWTs with an admin role).
	TokenFile string `yaml:"token_file" json:"token_file"`
	// Token is the admin token inline (prefer TokenFile; for tests and the demo).
	Token string `yaml:"token" json:"token"`
	// AdminRoles are JWT roles that may use the admin API. Default ["consentry-admin"].
	AdminRoles []string `yaml:"admin_roles" json:"admin_roles"`
}

// WithDefaults fills defaults.
func (c Config) WithDefaults() Config {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:9400"
	}
	if len(c.AdminRoles) == 0 {
		c.AdminRoles = []string{"consentry-admin"}
	}
	return c
}

// Validate reports the first invalid key.
func (c Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("admin.listen: %q is not host:port: %w", c.Listen, err)
	}
	return nil
}
