package vaultkeys

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"
)

// authenticator keeps the shared client logged in: it logs in with the configured method,
// renews the token with the API's lifetime watcher, and logs in again (with exponential
// backoff) when renewal fails, the token reaches its max TTL, or a request finds the token
// revoked. While it holds no valid token, every key release fails with ErrUnauthenticated
// without calling Vault.
type authenticator struct {
	cfg     AuthConfig
	client  *api.Client
	logger  *slog.Logger
	metrics *metrics
	health  *vaultHealth // login outcomes say whether Vault answers, too
	kick    chan struct{}

	mu      sync.RWMutex
	ok      bool
	lastErr error
	loginAt time.Time
}

func newAuthenticator(cfg AuthConfig, client *api.Client, logger *slog.Logger, m *metrics, h *vaultHealth) *authenticator {
	return &authenticator{cfg: cfg, client: client, logger: logger, metrics: m, health: h, kick: make(chan struct{}, 1),
		lastErr: errors.New("not logged in yet")}
}

// authenticated reports whether a valid token is held, and the last login error otherwise.
func (a *authenticator) authenticated() (bool, error) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.ok, a.lastErr
}

func (a *authenticator) set(ok bool, err error) {
	a.mu.Lock()
	a.ok, a.lastErr = ok, err
	if ok {
		a.loginAt = time.Now()
	}
	a.mu.Unlock()
	if ok {
		a.metrics.authenticated.Set(1)
	} else {
		a.metrics.authenticated.Set(0)
	}
}

// invalidate is called when Vault answered 403 with the current token: stop using it at once
// and wake the loop to log in again. err is reported as the reason: it must be sanitized.
func (a *authenticator) invalidate(err error) {
	a.set(false, fmt.Errorf("token rejected: %w", err))
	a.wake()
}

// retry cuts a failed login's backoff short (Vault answers again after being sealed or down).
// A held token is left alone.
func (a *authenticator) retry() {
	if ok, _ := a.authenticated(); !ok {
		a.wake()
	}
}

func (a *authenticator) wake() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// run is the login/renew loop; it returns when ctx is done. first receives the result of the
// first login attempt.
func (a *authenticator) run(ctx context.Context, first chan<- error) {
	backoff := a.cfg.BackoffMin
	for {
		secret, err := a.login(ctx)
		// Reported (readiness, /status, the log) without the Vault client's text, which
		// quotes URLs (sanitizeVaultErr).
		safe := sanitizeVaultErr(a.cfg.Method+" login", err, "", nil)
		if ctx.Err() == nil {
			a.health.observe(err, safe)
		}
		if err != nil {
			a.metrics.logins.WithLabelValues("error").Inc()
			a.set(false, safe)
			if first != nil {
				first <- err
				first = nil
			}
			a.logger.Warn("vault login failed", "method", a.cfg.Method, "retry_in", backoff, "err", safe)
			select {
			case <-ctx.Done():
				return
			case <-a.kick:
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, a.cfg.BackoffMax)
			continue
		}
		a.metrics.logins.WithLabelValues("ok").Inc()
		backoff = a.cfg.BackoffMin
		// A wake-up asked for while this login ran (Vault back, an old token rejected) is
		// answered by it; left pending it would make watch log in again at once.
		select {
		case <-a.kick:
		default:
		}
		a.set(true, nil)
		if first != nil {
			first <- nil
			first = nil
		}
		if !a.watch(ctx, secret) {
			return
		}
	}
}

// watch renews secret until renewal stops or a request finds the token rejected. It returns
// false when ctx is done.
func (a *authenticator) watch(ctx context.Context, secret *api.Secret) bool {
	if secret.Auth == nil || !secret.Auth.Renewable {
		// Non-renewable token (e.g. a root or periodic-less static token): nothing to renew;
		// log in again when it expires or is rejected.
		var expire <-chan time.Time
		if secret.Auth != nil && secret.Auth.LeaseDuration > 0 {
			t := time.NewTimer(time.Duration(secret.Auth.LeaseDuration) * time.Second * 9 / 10)
			defer t.Stop()
			expire = t.C
		}
		select {
		case <-ctx.Done():
			return false
		case <-a.kick:
		case <-expire:
		}
		return true
	}
	w, err := a.client.NewLifetimeWatcher(&api.LifetimeWatcherInput{Secret: secret})
	if err != nil {
		a.logger.Warn("vault lifetime watcher", "err", err)
		return true
	}
	go w.Start()
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-a.kick:
			return true
		case err := <-w.DoneCh():
			// Renewal failed, or the token reached its max TTL: log in again now, while the
			// current token may still be valid for its grace period.
			if err != nil {
				a.logger.Warn("vault token renewal failed", "err", sanitizeVaultErr("token renewal", err, "", nil))
			}
			return true
		case <-w.RenewCh():
		}
	}
}

// loginTimeout bounds one login attempt: longer than vault.timeout, since a login may be slow
// (a Kubernetes login makes Vault call the TokenReview API), and nothing waits for it.
const loginTimeout = 10 * time.Second

// login authenticates with the configured method and installs the token on the client.
func (a *authenticator) login(ctx context.Context) (*api.Secret, error) {
	ctx, cancel := context.WithTimeout(ctx, loginTimeout)
	defer cancel()
	switch a.cfg.Method {
	case AuthToken:
		return a.loginToken(ctx)
	case AuthAppRole:
		secretID := a.cfg.SecretID
		if a.cfg.SecretIDFile != "" {
			b, err := os.ReadFile(a.cfg.SecretIDFile)
			if err != nil {
				return nil, fmt.Errorf("approle secret id: %w", err)
			}
			secretID = strings.TrimSpace(string(b))
		}
		return a.loginWith(ctx, map[string]any{"role_id": a.cfg.RoleID, "secret_id": secretID})
	case AuthKubernetes:
		b, err := os.ReadFile(a.cfg.JWTFile)
		if err != nil {
			return nil, fmt.Errorf("kubernetes service account token: %w", err)
		}
		return a.loginWith(ctx, map[string]any{"role": a.cfg.Role, "jwt": strings.TrimSpace(string(b))})
	}
	return nil, fmt.Errorf("unknown auth method %q", a.cfg.Method)
}

// loginWith posts credentials to auth/<mount>/login with a token-less clone of the client.
func (a *authenticator) loginWith(ctx context.Context, data map[string]any) (*api.Secret, error) {
	c, err := a.client.Clone()
	if err != nil {
		return nil, err
	}
	c.ClearToken()
	s, err := c.Logical().WriteWithContext(ctx, "auth/"+a.cfg.Mount+"/login", data)
	if err != nil {
		return nil, fmt.Errorf("%s login: %w", a.cfg.Method, err)
	}
	if s == nil || s.Auth == nil || s.Auth.ClientToken == "" {
		return nil, fmt.Errorf("%s login: no token in response", a.cfg.Method)
	}
	a.client.SetToken(s.Auth.ClientToken)
	return s, nil
}

// loginToken checks the static token with lookup-self and builds the auth secret the lifetime
// watcher needs.
func (a *authenticator) loginToken(ctx context.Context) (*api.Secret, error) {
	tok := a.cfg.Token
	if a.cfg.TokenFile != "" {
		b, err := os.ReadFile(a.cfg.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("token file: %w", err)
		}
		tok = strings.TrimSpace(string(b))
	}
	if tok == "" {
		tok = os.Getenv("VAULT_TOKEN")
	}
	if tok == "" {
		return nil, errors.New("no vault token configured (vault.auth.token_file or VAULT_TOKEN)")
	}
	c, err := a.client.Clone()
	if err != nil {
		return nil, err
	}
	c.SetToken(tok)
	s, err := c.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("token lookup: %w", err)
	}
	renewable, _ := s.TokenIsRenewable()
	ttl, _ := s.TokenTTL()
	a.client.SetToken(tok)
	return &api.Secret{Auth: &api.SecretAuth{ClientToken: tok, Renewable: renewable, LeaseDuration: int(ttl.Seconds())}}, nil
}
