package vaultkeys

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
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
	// down is closed when Vault is first found unavailable: New stops waiting for the first
	// login then, instead of for the whole login attempt.
	down     chan struct{}
	downOnce sync.Once

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
	h := &vaultHealth{metrics: m, logger: logger, err: errors.New("vault not contacted yet"), since: time.Now(),
		down: make(chan struct{})}
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

// failed records that Vault is unavailable (err says why). err is shown on the
// unauthenticated /ready and /status and logged: it must be sanitized (sanitizeVaultErr).
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
	h.downOnce.Do(func() { close(h.down) })
	if wasUp {
		h.logger.Warn("vault unavailable: readiness check vault fails until it answers again", "err", err)
	}
}

// observe records the outcome of a Vault call from its error; safe is how the error is
// reported (sanitizeVaultErr): err itself may quote a URL that names a customer.
func (h *vaultHealth) observe(err, safe error) {
	switch vaultOutcome(err) {
	case outcomeAnswered:
		h.succeeded()
	case outcomeUnavailable:
		h.failed(safe)
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
	if err == nil {
		m.health.observe(nil, nil)
		return s, nil
	}
	// The errors returned here reach readiness, /status, logs and the front doors' logs: they
	// carry the sanitized text only (the 400 one still unwraps to the *api.ResponseError).
	safe := m.safeErr(op, err)
	m.health.observe(err, safe)
	m.metrics.vaultErrors.WithLabelValues(op).Inc()
	var re *api.ResponseError
	if errors.As(err, &re) {
		switch re.StatusCode {
		case http.StatusForbidden:
			m.auth.invalidate(safe)
			return nil, fmt.Errorf("%w: %v", ErrUnauthenticated, safe)
		case http.StatusBadRequest:
			return nil, safe
		}
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrUnavailable, op, ctx.Err())
	}
	return nil, fmt.Errorf("%w: %v", ErrUnavailable, safe)
}

// vaultError is a Vault call's error as consentry reports it: msg (sanitizeVaultErr) in place
// of the Vault client's text, the original kept for errors.Is/As.
type vaultError struct {
	msg   string
	cause error
}

func (e *vaultError) Error() string { return e.msg }
func (e *vaultError) Unwrap() error { return e.cause }

// urlPattern finds URLs in error text that no structured field accounted for.
var urlPattern = regexp.MustCompile(`[a-zA-Z][a-zA-Z0-9+.-]*://[^\s"']+`)

// sanitizeVaultErr describes the failed Vault call op: its HTTP status and Vault's messages,
// or the network failure, and the transit key it was about as keyRef names it. Never the
// Vault client's own text: it quotes the request URL, and with the default key_name template
// ("consentry-{customer}-{class}") a transit key's path holds the CRM customer id, which the
// unauthenticated /ready and /status and the logs must not show (the decision log itself only
// holds pseudonyms). keyRef may be nil (no transit paths: login, health).
func sanitizeVaultErr(op string, err error, transitMount string, keyRef func(name string) string) error {
	if err == nil {
		return nil
	}
	var (
		re  *api.ResponseError
		ue  *url.Error
		b   strings.Builder
		raw string
	)
	b.WriteString(op)
	switch {
	case errors.As(err, &re):
		raw = re.URL
	case errors.As(err, &ue):
		raw = ue.URL
	}
	name := ""
	if keyRef != nil && raw != "" {
		if name = transitKeyName(raw, transitMount); name != "" {
			b.WriteString(" of key ")
			b.WriteString(keyRef(name))
		}
	}
	b.WriteString(": ")
	switch {
	case re != nil:
		fmt.Fprintf(&b, "HTTP %d", re.StatusCode)
		if len(re.Errors) > 0 {
			msg := strings.Join(re.Errors, "; ")
			if name != "" {
				// Before truncating: a cut name would escape the replacement below.
				msg = strings.ReplaceAll(msg, name, keyRef(name))
			}
			if len(msg) > 300 {
				msg = msg[:300] + "..."
			}
			b.WriteString(": ")
			b.WriteString(msg)
		}
	case ue != nil:
		// url.Error's own text quotes the URL; what it wraps (refused, reset, TLS, DNS,
		// timeout) names the Vault address at most.
		if errors.Is(ue.Err, io.EOF) || errors.Is(ue.Err, io.ErrUnexpectedEOF) {
			b.WriteString("connection closed without an answer: ")
		}
		b.WriteString(ue.Err.Error())
	default:
		b.WriteString(err.Error())
	}
	msg := urlPattern.ReplaceAllString(b.String(), "<url>")
	if name != "" {
		// Vault's messages, or a network error, may still name the key.
		msg = strings.ReplaceAll(msg, name, keyRef(name))
	}
	return &vaultError{msg: msg, cause: err}
}

// transitKeyName is the transit key a Vault request URL is about ("" if none): the manager
// only asks <mount>/keys/<name>[/...] and <mount>/export/<type>/<name>.
func transitKeyName(raw, mount string) string {
	u, err := url.Parse(raw)
	if err != nil || mount == "" {
		return ""
	}
	rest, ok := strings.CutPrefix(strings.TrimPrefix(u.Path, "/v1/"), mount+"/")
	if !ok {
		return ""
	}
	segs := strings.Split(rest, "/")
	switch {
	case segs[0] == "keys" && len(segs) >= 2:
		return segs[1]
	case segs[0] == "export" && len(segs) >= 3:
		return segs[2]
	}
	return ""
}

// safeErr is sanitizeVaultErr for this manager's transit keys.
func (m *Manager) safeErr(op string, err error) error {
	return sanitizeVaultErr(op, err, m.cfg.TransitMount, m.keyRef)
}

// keyRef names transit key name in errors and logs without a customer id: the name with the
// customer id replaced by the customer's pseudonym (the decision log's name for them), or the
// name itself when the key_name template already uses the pseudonym. A name the template
// does not produce (a ledger written under another template) is named by its own pseudonym.
func (m *Manager) keyRef(name string) string {
	if m.namesByPseudonym {
		return name
	}
	for _, c := range m.cfg.Classes {
		pre, post, ok := strings.Cut(strings.Replace(m.cfg.KeyName, "{class}", c, 1), "{customer}")
		if ok && len(name) > len(pre)+len(post) && strings.HasPrefix(name, pre) && strings.HasSuffix(name, post) {
			return pre + m.Pseudonym(name[len(pre):len(name)-len(post)]) + post
		}
	}
	return "named " + m.Pseudonym(name)
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
		m.health.observe(nil, nil)
		return
	}
	m.metrics.vaultErrors.WithLabelValues("health").Inc()
	m.health.observe(err, fmt.Errorf("%w: %v", ErrUnavailable, sanitizeVaultErr("health", err, "", nil)))
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
