package vaultkeys

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/api"
)

// DefaultHealthInterval is how often an idle manager probes Vault's sys/health.
const DefaultHealthInterval = 2 * time.Second

// vaultHealth records whether Vault answers: the outcome of the last Vault call (a release's
// export, a key creation, an erasure, a login) or of the background health probe, whichever
// came last. A sealed, stopped, unreachable or slow Vault leaves the token valid, so without
// this the readiness check "vault" and the authenticated gauge would keep saying all is well
// while every keyed field is withheld.
type vaultHealth struct {
	// up is read without the lock: a successful Vault call costs one atomic load when nothing
	// changes, and Ready never blocks on a call in flight.
	up        atomic.Bool
	metrics   *metrics
	logger    *slog.Logger
	onRecover func() // called (without the lock) when Vault answers again after being unavailable

	mu        sync.Mutex
	heard     bool      // Vault has answered once: the first answer is no recovery to log
	err       error     // why Vault is unavailable now (nil while up)
	since     time.Time // when it became unavailable
	lastErr   error     // the last unavailability, kept after recovery for /status
	lastErrAt time.Time
}

func newVaultHealth(m *metrics, logger *slog.Logger) *vaultHealth {
	// Unknown until the first login or probe answers: not available, so a replica is never
	// ready before Vault has been heard from.
	h := &vaultHealth{metrics: m, logger: logger, err: errors.New("vault not contacted yet"), since: time.Now()}
	m.available.Set(0)
	return h
}

// available reports whether Vault answered last time, and why not otherwise.
func (h *vaultHealth) available() (bool, error) {
	if h.up.Load() {
		return true, nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.up.Load() {
		return true, nil
	}
	return false, h.err
}

// succeeded records that Vault answered.
func (h *vaultHealth) succeeded() {
	if h.up.Load() {
		return
	}
	h.mu.Lock()
	if h.up.Load() {
		h.mu.Unlock()
		return
	}
	down, err, heard := time.Since(h.since), h.err, h.heard
	h.err, h.heard = nil, true
	h.up.Store(true)
	h.metrics.available.Set(1)
	h.mu.Unlock()
	if heard {
		h.logger.Info("vault available again", "after", down.Round(time.Millisecond), "was", err)
	}
	if h.onRecover != nil {
		h.onRecover()
	}
}

// failed records that Vault is unavailable (err says why).
func (h *vaultHealth) failed(err error) {
	h.mu.Lock()
	wasUp := h.up.Load()
	now := time.Now()
	if wasUp {
		h.since = now
	}
	h.err, h.lastErr, h.lastErrAt = err, err, now
	h.up.Store(false)
	h.metrics.available.Set(0)
	h.mu.Unlock()
	if wasUp {
		h.logger.Warn("vault unavailable: readiness check vault fails until it answers again", "err", err)
	}
}

// observe records the outcome of a Vault call from its error.
func (h *vaultHealth) observe(err error) {
	switch vaultOutcome(err) {
	case outcomeAnswered:
		h.succeeded()
	case outcomeUnavailable:
		h.failed(err)
	}
}

// status is the availability part of /status.
func (h *vaultHealth) status(st map[string]any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	st["vault_available"] = h.up.Load()
	if !h.up.Load() {
		st["vault_unavailable_since"] = h.since.UTC().Format(time.RFC3339Nano)
		st["vault_error"] = h.err.Error()
	}
	if h.lastErr != nil {
		st["vault_last_error"] = h.lastErr.Error()
		st["vault_last_error_at"] = h.lastErrAt.UTC().Format(time.RFC3339Nano)
	}
}

type outcome int

const (
	outcomeUnknown     outcome = iota // says nothing about Vault (a local error, the caller gave up)
	outcomeAnswered                   // Vault answered: success, or a 4xx about this request
	outcomeUnavailable                // 5xx (sealed: 503), refused or broken connection, timeout
)

// call runs one Vault request with metrics, mapping failures to ErrUnavailable and a rejected
// token to ErrUnauthenticated (waking the login loop), and records whether Vault answered.
func (m *Manager) call(ctx context.Context, op string, f func() (*api.Secret, error)) (*api.Secret, error) {
	start := time.Now()
	s, err := f()
	m.metrics.vaultLatency.WithLabelValues(op).Observe(time.Since(start).Seconds())
	m.health.observe(err)
	if err == nil {
		return s, nil
	}
	m.metrics.vaultErrors.WithLabelValues(op).Inc()
	var re *api.ResponseError
	if errors.As(err, &re) {
		switch re.StatusCode {
		case http.StatusForbidden:
			m.auth.invalidate(err)
			return nil, fmt.Errorf("%w: %s: %v", ErrUnauthenticated, op, err)
		case http.StatusBadRequest:
			return nil, fmt.Errorf("%s: %w", op, err)
		}
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrUnavailable, op, ctx.Err())
	}
	return nil, fmt.Errorf("%w: %s: %v", ErrUnavailable, op, err)
}

// vaultOutcome classifies the error of a Vault call.
func vaultOutcome(err error) outcome {
	if err == nil {
		return outcomeAnswered
	}
	var re *api.ResponseError
	if errors.As(err, &re) {
		if re.StatusCode >= 500 {
			return outcomeUnavailable
		}
		// 403 (token rejected), 400, 404, 429: an unsealed Vault answered; the token is the
		// authenticator's concern.
		return outcomeAnswered
	}
	// The caller gave up (a client went away): that says nothing about Vault. A deadline does:
	// Vault was slower than vault.timeout.
	if errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		return outcomeUnknown
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return outcomeUnavailable
	}
	// The HTTP client reports every transport failure (refused, reset, TLS, DNS) as a
	// *url.Error. Not net.Error: a syscall.Errno is one, and a local file error would pass.
	var ue *url.Error
	if errors.As(err, &ue) {
		return outcomeUnavailable
	}
	return outcomeUnknown
}

// probeVault asks Vault's sys/health every interval, so an idle replica (no request reaching
// Vault) also notices a sealed or stopped Vault, and notices its recovery. sys/health needs no
// token, is not written to Vault's audit log and costs Vault next to nothing; requests never
// wait for it.
func (m *Manager) probeVault(ctx context.Context, interval time.Duration) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m.probeOnce(ctx)
		t.Reset(interval)
	}
}

// probeOnce runs one health probe and records its outcome.
func (m *Manager) probeOnce(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
	defer cancel()
	start := time.Now()
	h, err := m.probeClient.Sys().HealthWithContext(pctx)
	m.metrics.vaultLatency.WithLabelValues("health").Observe(time.Since(start).Seconds())
	if ctx.Err() != nil {
		return // shutting down
	}
	if err == nil {
		switch {
		case !h.Initialized:
			err = errors.New("vault is not initialized")
		case h.Sealed:
			err = errors.New("vault is sealed")
		case h.RemovedFromCluster != nil && *h.RemovedFromCluster:
			err = errors.New("vault node was removed from its cluster")
		}
		if err != nil {
			m.metrics.vaultErrors.WithLabelValues("health").Inc()
			m.health.failed(fmt.Errorf("%w: health: %v", ErrUnavailable, err))
			return
		}
	} else {
		m.metrics.vaultErrors.WithLabelValues("health").Inc()
		err = fmt.Errorf("%w: health: %w", ErrUnavailable, err)
	}
	m.health.observe(err)
}

// newProbeClient is a token-less clone of client without a namespace: sys/health lives in the
// root namespace and needs no token.
func newProbeClient(client *api.Client) (*api.Client, error) {
	c, err := client.Clone()
	if err != nil {
		return nil, err
	}
	c.ClearToken()
	c.ClearNamespace()
	return c, nil
}
