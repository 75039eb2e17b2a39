// Package bundle gets consentry's policy into the engine safely. It reads OPA bundles
// (.manifest, data.json, .rego, .signatures.json) with OPA's own bundle package, verifies
// their signatures (RS256/ES256/..., keyid, scope), refuses unsigned, tampered, incomplete,
// padded and older bundles, and activates good ones atomically through engine.Load, so
// in-flight requests finish on the old policy and new ones use the new policy. A Manager
// watches one source (a development directory, a tarball, or a bundle server polled with
// ETag and long polling), persists the last good bundle, and reports readiness, /status
// and Prometheus metrics. Building, signing and inspecting bundles is in bundle/build.
package bundle

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/consentry/consentry/sidecar/admin"
	"github.com/consentry/consentry/sidecar/engine"
)

// Activator compiles and atomically activates a policy set (*engine.Engine).
type Activator interface {
	Load(ctx context.Context, ps *engine.PolicySet) error
}

var _ Activator = (*engine.Engine)(nil)

// Manager keeps the engine on the newest trusted bundle from one source.
type Manager struct {
	cfg   Config
	eng   Activator
	ver   *Verifier
	log   *slog.Logger
	met   *metrics
	store *persistStore
	now   func() time.Time

	actMu sync.Mutex // one activation at a time

	mu         sync.RWMutex
	active     *ActiveBundle
	lastReject *Rejection
	// rejectedDigest is the digest of the last rejected candidate: a watched file or
	// directory that still holds the same rejected bundle is not re-rejected on every poll.
	rejectedDigest string
	rejectedErr    error
	// rejectedRetryAt, when set, is when the remembered rejection may be tried once more: an
	// activation_timeout may have met a machine busy for a moment rather than a policy that can
	// never activate. retriedDigest is the candidate that had that one retry.
	rejectedRetryAt time.Time
	retriedDigest   string

	lastErr   string
	lastCheck time.Time
	readyCh   chan struct{}
}

// ActiveBundle describes the bundle the engine runs.
type ActiveBundle struct {
	Name        string    `json:"name"`
	Revision    string    `json:"revision"`
	Source      string    `json:"source"`
	Signed      bool      `json:"signed"`
	KeyID       string    `json:"keyid,omitempty"`
	Scope       string    `json:"scope,omitempty"`
	ETag        string    `json:"etag,omitempty"`
	Digest      string    `json:"digest"`
	ActivatedAt time.Time `json:"activated_at"`
}

// Rejection is the last bundle that was refused, for /status.
type Rejection struct {
	Reason   string    `json:"reason"`
	Revision string    `json:"revision,omitempty"`
	Source   string    `json:"source"`
	Error    string    `json:"error"`
	At       time.Time `json:"at"`
	// RetryAt is when the same bundle is compiled once more if it is still offered (only
	// after a first activation_timeout; zero: it is not tried again until it changes).
	RetryAt time.Time `json:"retry_at,omitzero"`
}

// Status is the /status "policy" section.
type Status struct {
	Name           string        `json:"name"`
	Ready          bool          `json:"ready"`
	Source         string        `json:"source"`
	Active         *ActiveBundle `json:"active,omitempty"`
	LastRejection  *Rejection    `json:"last_rejection,omitempty"`
	LastFetchError string        `json:"last_fetch_error,omitempty"`
	LastCheck      time.Time     `json:"last_check,omitzero"`
}

// NewManager validates cfg and prepares a manager; Run starts it.
func NewManager(cfg Config, eng Activator, reg prometheus.Registerer, log *slog.Logger) (*Manager, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ver, err := NewVerifier(cfg.Verification, cfg.SignaturesRequired(), cfg.MaxSizeBytes)
	if err != nil {
		return nil, fmt.Errorf("policy.verification: %w", err)
	}
	met, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	m := &Manager{cfg: cfg, eng: eng, ver: ver, log: log.With("bundle", cfg.Name), met: met, now: time.Now, readyCh: make(chan struct{})}
	if !cfg.NoPersist && cfg.PersistDir != "" && cfg.Dir == "" {
		if m.store, err = newPersistStore(cfg.PersistDir, cfg.Name); err != nil {
			return nil, err
		}
	}
	if !cfg.SignaturesRequired() {
		m.log.Warn("policy bundle signatures are NOT required (policy.require_signatures: false) - development only")
	}
	return m, nil
}

// Name identifies the manager as a sidecar component (app.Component: Name + Run).
func (m *Manager) Name() string { return "policy-bundle" }

// Register adds the readiness check and /status section ("policy") to the admin server.
func (m *Manager) Register(srv *admin.Server) {
	srv.AddReadiness("policy", m.Ready)
	srv.AddStatus("policy", m.Status)
}

// Ready is an admin.ReadinessCheck: nil once a bundle is active.
func (m *Manager) Ready(context.Context) error {
	if m.Active() == nil {
		return errors.New("no policy bundle is active yet")
	}
	return nil
}

// Status is an admin.StatusFunc.
func (m *Manager) Status() any {
	m.mu.RLock()
	defer m.mu.RUnlock()
	st := Status{Name: m.cfg.Name, Source: m.sourceName(), LastFetchError: m.lastErr, LastCheck: m.lastCheck}
	if m.active != nil {
		a := *m.active
		st.Active, st.Ready = &a, true
	}
	if m.lastReject != nil {
		r := *m.lastReject
		st.LastRejection = &r
	}
	return st
}

// Active returns a copy of the active bundle's description, nil before the first activation.
func (m *Manager) Active() *ActiveBundle {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.active == nil {
		return nil
	}
	a := *m.active
	return &a
}

// WaitActive blocks until a bundle is active or ctx ends.
func (m *Manager) WaitActive(ctx context.Context) error {
	select {
	case <-m.readyCh:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// displayURL is a bundle URL for logs and /status (which needs no token): without a password
// or a query, which may carry credentials (user:pw@, a signed URL's token).
func displayURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	if u.RawQuery != "" {
		u.RawQuery = "redacted"
	}
	return u.Redacted()
}

func (m *Manager) sourceName() string {
	switch {
	case m.cfg.URL != "":
		return "url:" + displayURL(m.cfg.URL)
	case m.cfg.File != "":
		return "file:" + m.cfg.File
	}
	return "dir:" + m.cfg.Dir
}

// Run loads the persisted bundle (if any), then follows the configured source until ctx
// ends. Until a bundle activates the engine denies with engine.not_ready (503).
func (m *Manager) Run(ctx context.Context) error {
	if m.store != nil {
		m.loadPersisted(ctx)
	}
	switch {
	case m.cfg.URL != "":
		return newHTTPSource(m).run(ctx)
	case m.cfg.File != "":
		return m.watchFile(ctx)
	default:
		return m.watchDir(ctx)
	}
}

// loadPersisted activates the last good bundle saved by a previous run.
func (m *Manager) loadPersisted(ctx context.Context) {
	raw, meta, err := m.store.load()
	if err != nil {
		if !isNotExist(err) {
			m.log.Warn("cannot read the persisted bundle", "error", err)
		}
		return
	}
	if err := m.activate(ctx, candidate{source: "persisted:" + m.store.bundlePath(), raw: raw, etag: meta.ETag}); err != nil {
		return // logged and counted by activate
	}
	m.log.Info("started on the persisted bundle", "revision", meta.Revision, "saved_at", meta.SavedAt)
}

// ActivateTarball verifies raw and activates it (used by sources and tests).
func (m *Manager) ActivateTarball(ctx context.Context, raw []byte, source string) error {
	return m.activate(ctx, candidate{source: source, raw: raw})
}

// candidate is one bundle offered by a source.
type candidate struct {
	source    string
	raw       []byte // a tarball, or
	bundleDir string // an OPA bundle directory, or
	policyDir string // a consentry policy directory (development)
	etag      string
	persist   bool
}

// errUnchanged means the candidate is the active bundle; nothing to do.
var errUnchanged = errors.New("bundle unchanged")

// activate verifies c, checks it against the active bundle and activates it. Every
// rejection is logged, counted and kept for /status; the active bundle stays.
func (m *Manager) activate(ctx context.Context, c candidate) error {
	m.actMu.Lock()
	defer m.actMu.Unlock()
	start := m.now()
	next, err := m.prepareQuietly(ctx, c)
	var ar *alreadyRejected
	switch {
	case errors.Is(err, errUnchanged):
		return nil
	case errors.As(err, &ar):
		return err // logged and counted when it was first rejected
	case ReasonOf(err) == "" && ctx.Err() != nil:
		return err // shutting down mid-activation: nothing is wrong with the bundle
	case err != nil:
		m.rejected(c, err)
		return err
	}
	m.met.activationSecs.WithLabelValues(m.cfg.Name).Observe(m.now().Sub(start).Seconds())
	m.met.activations.WithLabelValues(m.cfg.Name).Inc()
	m.met.lastActivation.WithLabelValues(m.cfg.Name).Set(float64(next.ActivatedAt.Unix()))
	m.mu.Lock()
	prev := m.active
	m.active = next
	m.mu.Unlock()
	if prev != nil {
		m.met.active.DeleteLabelValues(m.cfg.Name, prev.Revision)
	} else {
		close(m.readyCh)
	}
	m.met.active.WithLabelValues(m.cfg.Name, next.Revision).Set(1)
	m.log.Info("policy bundle activated", "revision", next.Revision, "source", c.source, "signed", next.Signed, "keyid", next.KeyID,
		"took", m.now().Sub(start).String())
	if c.persist && m.store != nil && c.raw != nil {
		meta := persistMeta{Name: m.cfg.Name, Revision: next.Revision, ETag: c.etag, Source: c.source}
		if err := m.store.save(c.raw, meta); err != nil {
			m.log.Error("cannot persist the active bundle; a restart without the bundle server would start with no policy", "error", err)
		}
	}
	return nil
}

// prepareQuietly runs prepare with the garbage collector held back: verifying and compiling a
// bundle allocates tens of MB in ~100 ms, and every GC cycle it triggers makes the goroutines
// serving decisions pay mark assists - the activation's main effect on decision latency. The
// garbage is collected in one cycle afterwards. The extra heap is bounded by the inflated
// bundle limit (InflateFactor x policy.max_size_bytes) times the compiler's expansion.
func (m *Manager) prepareQuietly(ctx context.Context, c candidate) (*ActiveBundle, error) {
	release := engine.HoldGC(quietHeadroom)
	defer release()
	return m.prepare(ctx, c)
}

// quietHeadroom is how much the heap may grow during an activation before the GC runs anyway.
const quietHeadroom = 1 << 30

func (m *Manager) prepare(ctx context.Context, c candidate) (*ActiveBundle, error) {
	cur := m.Active()
	var (
		v *Verified
		// digest identifies the candidate as the active bundle; rejectDigest (default:
		// digest) is what a rejection is remembered by.
		digest, rejectDigest string
		err                  error
	)
	switch {
	case c.raw != nil:
		sum := sha256.Sum256(c.raw)
		digest = "sha256:" + hex.EncodeToString(sum[:])
		if cur != nil && cur.Digest == digest {
			return nil, errUnchanged
		}
		if err := m.wasRejected(digest); err != nil {
			return nil, err
		}
		if int64(len(c.raw)) > m.cfg.MaxSizeBytes {
			return nil, reject(ReasonTooLarge, "", fmt.Errorf("bundle is %d bytes, policy.max_size_bytes is %d", len(c.raw), m.cfg.MaxSizeBytes))
		}
		v, err = m.ver.ReadTarball(c.raw)
	case c.bundleDir != "":
		// Digest the directory's bytes before verifying it, so an unchanged directory that
		// was rejected is not re-read, re-rejected and re-counted on every poll.
		var sum string
		sum, err = dirDigest(c.bundleDir, m.cfg.MaxSizeBytes, nil)
		if sum != "" {
			digest = "dir:" + sum
			if cur != nil && cur.Digest == digest {
				return nil, errUnchanged
			}
			if err := m.wasRejected(digest); err != nil {
				return nil, err
			}
		}
		if err == nil {
			v, err = m.ver.ReadDir(c.bundleDir)
		}
	default:
		v, digest, rejectDigest, err = m.readPolicyDir(c.policyDir, cur)
	}
	if rejectDigest == "" {
		rejectDigest = digest
	}
	if err != nil {
		return nil, m.noteRejected(rejectDigest, err)
	}
	if err := m.check(ctx, v, cur); err != nil {
		if ReasonOf(err) == "" {
			return nil, err // interrupted (see check): tried again, not remembered
		}
		return nil, m.noteRejected(rejectDigest, err)
	}
	return &ActiveBundle{
		Name: m.cfg.Name, Revision: v.Revision, Source: c.source, Signed: v.Signed, KeyID: v.KeyID, Scope: v.Scope,
		ETag: c.etag, Digest: digest, ActivatedAt: m.now().UTC(),
	}, nil
}

// check runs the policy-level checks and activates v in the engine.
func (m *Manager) check(ctx context.Context, v *Verified, cur *ActiveBundle) error {
	if err := v.RequireDecision(); err != nil {
		return err
	}
	if cur != nil && !m.cfg.AllowRollback {
		cmp, err := CompareRevisions(v.Revision, cur.Revision)
		if err != nil {
			return reject(ReasonRollback, v.Revision, fmt.Errorf("cannot order it after the active revision %q: %w (set policy.allow_rollback to override)", cur.Revision, err))
		}
		if cmp < 0 {
			return reject(ReasonRollback, v.Revision, fmt.Errorf("older than the active revision %q (set policy.allow_rollback to override)", cur.Revision))
		}
	}
	if err := m.eng.Load(ctx, v.PolicySet(m.cfg.Name)); err != nil {
		switch {
		case errors.Is(err, engine.ErrActivationTimeout):
			// Remembered like any rejection, so the same bundle is not compiled (for
			// engine.activation_timeout) again on every poll, but tried once more after
			// ActivationRetryDelay (noteRejected); a new one is tried at once.
			return reject(ReasonActivationTimeout, v.Revision, err)
		case ctx.Err() != nil:
			return err // the manager is stopping
		}
		return reject(ReasonCompile, v.Revision, err)
	}
	return nil
}

// alreadyRejected wraps the earlier rejection of a candidate offered again.
type alreadyRejected struct{ err error }

func (a *alreadyRejected) Error() string { return a.err.Error() + " (already rejected)" }
func (a *alreadyRejected) Unwrap() error { return a.err }

// ActivationRetryDelay is how long after its first activation_timeout a bundle that is still
// offered is compiled once more. A second timeout is final for that bundle.
const ActivationRetryDelay = time.Minute

// wasRejected returns the earlier rejection when digest was the last rejected candidate,
// unless that rejection's one retry is due (then it takes the retry and returns nil).
func (m *Manager) wasRejected(digest string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if digest == "" || m.rejectedDigest != digest {
		return nil
	}
	if !m.rejectedRetryAt.IsZero() && !m.now().Before(m.rejectedRetryAt) {
		m.rejectedRetryAt, m.retriedDigest = time.Time{}, digest
		return nil
	}
	return &alreadyRejected{err: m.rejectedErr}
}

func (m *Manager) noteRejected(digest string, err error) error {
	var ar *alreadyRejected
	if digest != "" && !errors.Is(err, errUnchanged) && !errors.As(err, &ar) {
		m.mu.Lock()
		m.rejectedDigest, m.rejectedErr, m.rejectedRetryAt = digest, err, time.Time{}
		if ReasonOf(err) == ReasonActivationTimeout && m.retriedDigest != digest {
			m.rejectedRetryAt = m.now().Add(ActivationRetryDelay)
		}
		m.mu.Unlock()
	}
	return err
}

// retryAt is when the last rejected candidate may be tried once more (zero: not again).
func (m *Manager) retryAt() time.Time {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.rejectedRetryAt
}

// readPolicyDir turns a development policy directory into an unsigned bundle whose
// revision is a timestamp (so hot reloads order after one another) plus a content hash.
//
// A directory is remembered as rejected by what LoadDir loaded from it (the active digest,
// over the loaded policy set), so any edit that reaches the policy, through a symlinked file
// too, is tried again. Only a directory LoadDir cannot load at all is remembered by its bytes
// (read before and after the attempt, and only when they did not change in between: a file
// caught half-written is tried again), so it is not re-rejected on every poll either.
func (m *Manager) readPolicyDir(dir string, cur *ActiveBundle) (v *Verified, active, rejectDigest string, err error) {
	sum, err := dirDigest(dir, m.cfg.MaxSizeBytes, skipPolicyDirExtras)
	bytesDigest := ""
	if sum != "" {
		bytesDigest = "policydirbytes:" + sum
	}
	if err != nil {
		if err := m.wasRejected(bytesDigest); err != nil {
			return nil, "", "", err
		}
		if ReasonOf(err) == "" {
			err = reject(ReasonCompile, "", err) // as when LoadDir cannot read the directory
		}
		return nil, "", bytesDigest, err
	}
	ps, err := engine.LoadDir(dir, engine.LoadOptions{})
	if err != nil {
		if err := m.wasRejected(bytesDigest); err != nil {
			return nil, "", "", err
		}
		if again, _ := dirDigest(dir, m.cfg.MaxSizeBytes, skipPolicyDirExtras); again != sum {
			bytesDigest = "" // changed while it was read: not remembered, tried again
		}
		return nil, "", bytesDigest, reject(ReasonCompile, "", err)
	}
	hash := ContentHash(ps)
	active = "policydir:" + hash
	if cur != nil && cur.Digest == active {
		return nil, "", "", errUnchanged
	}
	if err := m.wasRejected(active); err != nil {
		return nil, "", "", err
	}
	if m.ver.required {
		return nil, active, "", reject(ReasonSignatureMissing, "", fmt.Errorf("%s is a policy directory, which is unsigned; build and sign a bundle or set policy.require_signatures: false for development", dir))
	}
	rev := NewRevision(m.now(), hash)
	b, err := FromPolicySet(dir, ps, rev)
	if err != nil {
		reason := ReasonCompile
		if errors.Is(err, ErrDuplicateModule) {
			reason = ReasonMalformed
		}
		return nil, active, "", reject(reason, rev, err)
	}
	return &Verified{Bundle: *b, Revision: rev, Schemas: ps.Schemas}, active, "", nil
}

func (m *Manager) rejected(c candidate, err error) {
	reason := ReasonOf(err)
	if reason == "" {
		reason = ReasonMalformed
	}
	var rev string
	var re *RejectError
	if errors.As(err, &re) {
		rev = re.Revision
	}
	m.met.rejections.WithLabelValues(m.cfg.Name, reason).Inc()
	m.log.Warn("policy bundle rejected", "reason", reason, "revision", rev, "source", c.source, "error", err)
	m.mu.Lock()
	m.lastReject = &Rejection{Reason: reason, Revision: rev, Source: c.source, Error: err.Error(), At: m.now().UTC()}
	if reason == ReasonActivationTimeout && !m.rejectedRetryAt.IsZero() {
		m.lastReject.RetryAt = m.rejectedRetryAt.UTC()
	}
	m.mu.Unlock()
}

// fetchFailed records a source error (not a rejection: nothing was offered).
func (m *Manager) fetchFailed(err error) {
	m.met.fetchErrors.WithLabelValues(m.cfg.Name).Inc()
	m.log.Warn("policy bundle fetch failed", "source", m.sourceName(), "error", err)
	m.mu.Lock()
	m.lastErr = err.Error()
	m.lastCheck = m.now().UTC()
	m.mu.Unlock()
}

func (m *Manager) fetchOK() {
	m.mu.Lock()
	m.lastErr = ""
	m.lastCheck = m.now().UTC()
	m.mu.Unlock()
}
