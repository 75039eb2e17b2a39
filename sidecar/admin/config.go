package admin

import (
	"errors"
	"fmt"
	"net"
	"time"
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
	// ShutdownDelay is how long consentry keeps serving after the first SIGTERM or SIGINT before
	// its listeners drain. Meanwhile /ready answers 503 "shutting down" and the gRPC health
	// service NOT_SERVING, so load balancers (and Kubernetes, which removes a terminating pod's
	// endpoints while the signal is already on its way) stop sending new connections before
	// the listeners would refuse them. Default 0, drain at once: outside a load-balanced
	// deployment nobody needs telling, and a terminal's Ctrl-C, the demo and tests should stop
	// without waiting. Behind a load balancer set it to the time the balancer needs to notice
	// (5s suits Kubernetes) and cover it in the pod's terminationGracePeriodSeconds
	// (docs/operations.md, Shutdown). A second signal exits at once.
	ShutdownDelay time.Duration `yaml:"shutdown_delay" json:"shutdown_delay"`
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
	if c.ShutdownDelay < 0 {
		return errors.New("admin.shutdown_delay: must not be negative")
	}
	return nil
}
