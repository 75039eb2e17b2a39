// Package vaultkeys releases customer field keys from HashiCorp Vault only after, and only as
// far as, a policy decision allows; encrypts sensitive fields on the write path; and
// crypto-shreds a customer by destroying their keys in Vault.
//
// Key model (docs/key-model.md): one exportable transit key per customer and key class
// (contact, identity, financial, health, notes), named from Config.KeyName. A decision's key scopes
// select which of the customer's keys are exported from Vault; the keys are cached in memory
// (bounded, TTL, zeroed on eviction) and decrypt transit ciphertext "vault:vN:..." locally,
// so a CRM that already stores transit ciphertext works unchanged. Erasure deletes the keys
// from Vault and records the destruction in a hash-chained ledger that is replayed after a
// Vault restore.
package vaultkeys

import (
	"context"
	"crypto/cipher"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"github.com/consentry/consentry/sidecar/decision"
)

// Options are the collaborators of a Manager.
type Options struct {
	// Registerer receives the Prometheus metrics (nil: not registered).
	Registerer prometheus.Registerer
	// Logger (nil: slog.Default()).
	Logger *slog.Logger
	// Destructions receives every destruction record for the decision log (nil: ledger only).
	Destructions DestructionSink
	// Pseudonymize names customers in destruction records and the ledger (nil: HMAC-SHA256
	// with Config.PseudonymKey(File)). Pass the decision log's customer pseudonymizer so a
	// reviewer can match the destruction record to the customer's decisions. It must stay the
	// same over the ledger's lifetime: the ledger is checked by pseudonym.
	Pseudonymize func(customerID string) string
	// Now is the clock (tests).
	Now func() time.Time
	// HealthInterval is how often Vault's sys/health is probed, so that readiness follows a
	// sealed or stopped Vault without request traffic (0: DefaultHealthInterval; tests).
	HealthInterval time.Duration
}

// Manager releases, creates and destroys customer keys.
type Manager struct {
	cfg     Config
	client  *api.Client
	auth    *authenticator
	cache   *keyCache
	sf      singleflight.Group
	ledger  *Ledger
	metrics *metrics
	pseudo  func(string) string
	sink    DestructionSink
	logger  *slog.Logger
	now     func() time.Time

	// health: whether Vault answered the last call or sys/health probe; probeClient asks
	// sys/health (token-less, root namespace).
	health      *vaultHealth
	probeClient *api.Client

	// namesByPseudonym: the key_name template names customers by pseudonym, so every key
	// name costs the pseudonym (an HMAC).
	namesByPseudonym bool

	ledgerMu      sync.Mutex
	ledgerChecked time.Time
	ledgerErr     error // last refresh error: the sidecar is not ready while the ledger is unreadable

	cancel context.CancelFunc
	done   chan struct{}
}

// New builds a Manager and starts its Vault login loop. It waits for the first login attempt
// (bounded by ctx) while Vault is not known to be unavailable: a Vault that refuses
// connections, or accepts them and does not answer the health probe within vault.timeout,
// ends the wait. It does not fail when Vault is unreachable: until a login succeeds, key
// releases fail closed with ErrUnauthenticated and Ready reports the cause.
func New(ctx context.Context, cfg Config, opts Options) (*Manager, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	pseudo := opts.Pseudonymize
	if pseudo == nil {
		pkey, err := cfg.pseudonymKey()
		if err != nil {
			return nil, err
		}
		pseudo = hmacPseudonymizer(pkey)
	}
	vc := api.DefaultConfig()
	vc.Address = cfg.Address
	// No client-level retries: a slow or failing Vault must withhold fields within the request
	// deadline, not retry past it.
	vc.MaxRetries = 0
	vc.Timeout = max(cfg.Timeout, 10*time.Second)
	if cfg.CACert != "" {
		if err := vc.ConfigureTLS(&api.TLSConfig{CACert: cfg.CACert}); err != nil {
			return nil, fmt.Errorf("vault.ca_cert: %w", err)
		}
	}
	if t, ok := vc.HttpClient.Transport.(*http.Transport); ok {
		// Allow one connection per concurrent class fetch without re-dialing.
		t.MaxIdleConnsPerHost = 64
		if t.TLSClientConfig == nil {
			t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		// api.DefaultConfig honours $VAULT_SKIP_VERIFY; consentry never talks to an
		// unverified Vault (use vault.ca_cert for a private CA).
		t.TLSClientConfig.InsecureSkipVerify = false
	}
	client, err := api.NewClient(vc)
	if err != nil {
		return nil, fmt.Errorf("vault client: %w", err)
	}
	client.ClearToken() // never pick up $VAULT_TOKEN implicitly; the authenticator decides
	if cfg.Namespace != "" {
		client.SetNamespace(cfg.Namespace)
	}
	probeClient, err := newProbeClient(client)
	if err != nil {
		return nil, fmt.Errorf("vault client: %w", err)
	}
	cache := newKeyCache(cfg.Cache, nil)
	// Every record the ledger reads, at open and later by whichever call (the decision log's
	// checkpoint reads it through Head, Erase through RecordOf and Append), blocks its key
	// names here at once: an erasure another process recorded must not wait for this
	// manager's own refresh, which would no longer see the record.
	ledger, err := openLedger(cfg.LedgerPath, func(rec DestructionRecord) { cache.block(keyNames(rec)) })
	if err != nil {
		return nil, err
	}
	m := &Manager{cfg: cfg, client: client, ledger: ledger, cache: cache, pseudo: pseudo, sink: opts.Destructions,
		logger: opts.Logger, now: opts.Now, done: make(chan struct{}),
		namesByPseudonym: strings.Contains(cfg.KeyName, "{pseudonym}")}
	if m.logger == nil {
		m.logger = slog.Default()
	}
	if m.now == nil {
		m.now = time.Now
	}
	if m.metrics, err = newMetrics(opts.Registerer, m.cache); err != nil {
		return nil, fmt.Errorf("vaultkeys metrics: %w", err)
	}
	m.cache.onEvict = func(n int) { m.metrics.evictions.Add(float64(n)) }
	m.probeClient = probeClient
	m.health = newVaultHealth(m.metrics, m.logger)
	m.auth = newAuthenticator(cfg.Auth, client, m.logger, m.metrics, m.health)
	// A login failing while Vault was sealed or down backs off (up to backoff_max): retry it as
	// soon as Vault answers again instead.
	m.health.onRecover = m.auth.retry
	interval := opts.HealthInterval
	if interval <= 0 {
		interval = DefaultHealthInterval
	}
	runCtx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	first := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		m.auth.run(runCtx, first)
	}()
	go func() {
		defer wg.Done()
		m.sweepCache(runCtx)
	}()
	go func() {
		defer wg.Done()
		m.probeVault(runCtx, interval)
	}()
	go func() {
		wg.Wait()
		close(m.done)
	}()
	// Not for the whole login attempt once Vault is known to be down: it may take up to
	// loginTimeout, and a Vault that accepts connections but never answers would hold up the
	// sidecar's start-up that long. The sidecar starts unready instead, the login goes on in
	// the background. A Vault that answers is waited for, so that the sidecar (and the CLI)
	// starts logged in even when the login is slower than vault.timeout.
	select {
	case <-first:
	case <-ctx.Done():
	case <-m.health.down:
	}
	return m, nil
}

// Close stops the login loop, the health probe and the cache sweep, and zeroes every cached key.
func (m *Manager) Close() {
	m.cancel()
	<-m.done
	m.cache.purge()
}

// Config returns the effective configuration.
func (m *Manager) Config() Config { return m.cfg }

// Ledger returns the shredded-keys ledger.
func (m *Manager) Ledger() *Ledger { return m.ledger }

// Ready reports nil while a valid Vault token is held, Vault answered the last call or health
// probe (not sealed, down, unreachable or slower than vault.timeout), and the shredded-keys
// ledger reads (admin readiness check "vault"). It never calls Vault itself.
func (m *Manager) Ready(context.Context) error {
	if ok, err := m.auth.authenticated(); !ok {
		return fmt.Errorf("%w: %v", ErrUnauthenticated, err)
	}
	if ok, err := m.health.available(); !ok {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	m.ledgerMu.Lock()
	lerr := m.ledgerErr
	m.ledgerMu.Unlock()
	if lerr != nil {
		return fmt.Errorf("shredded-keys ledger: %w", lerr)
	}
	return nil
}

// Status is the /status section "vault".
func (m *Manager) Status() any {
	ok, err := m.auth.authenticated()
	entries, bytes := m.cache.stats()
	st := map[string]any{"address": m.cfg.Address, "auth_method": m.cfg.Auth.Method, "authenticated": ok,
		"cache_entries": entries, "cache_bytes": bytes, "erasures": len(m.ledger.Records())}
	if err != nil {
		st["error"] = err.Error()
	}
	m.health.status(st)
	return st
}

// Release returns the keys the decision allows for customerID: only the scopes in
// d.KeyScopes, and nothing at all (without any Vault request) when d does not allow. Warm
// scopes come from the cache; cold scopes are exported from Vault concurrently, one request
// per scope, so a request costs one Vault round trip whatever its field count. Scopes that
// cannot be released (Vault down, erased, no key) are recorded in the KeySet and in the
// returned error; the other scopes stay usable.
func (m *Manager) Release(ctx context.Context, customerID string, d *decision.Decision) (*KeySet, error) {
	if d == nil || !d.Allow || len(d.KeyScopes) == 0 {
		if d != nil && len(d.KeyScopes) > 0 {
			m.metrics.releases.WithLabelValues("denied").Add(float64(len(d.KeyScopes)))
		}
		return emptyKeySet(customerID), nil
	}
	return m.release(ctx, customerID, d.KeyScopes, false)
}

// ReleaseRecord is Release for one record of a list response: the scopes of d.Records[id].
func (m *Manager) ReleaseRecord(ctx context.Context, d *decision.Decision, customerID string) (*KeySet, error) {
	if d == nil || !d.Allow {
		return emptyKeySet(customerID), nil
	}
	rec, ok := d.Records[customerID]
	if !ok || !rec.Allow || len(rec.KeyScopes) == 0 {
		return emptyKeySet(customerID), nil
	}
	return m.release(ctx, customerID, rec.KeyScopes, false)
}

// ReleaseForWrite is Release for a create/update: it also creates the customer's missing keys
// of the allowed scopes (refused for an erased customer), so the front door can encrypt the
// new values with KeySet.Encrypt before they reach the CRM.
func (m *Manager) ReleaseForWrite(ctx context.Context, customerID string, d *decision.Decision) (*KeySet, error) {
	if d == nil || !d.Allow || len(d.KeyScopes) == 0 {
		return emptyKeySet(customerID), nil
	}
	return m.release(ctx, customerID, d.KeyScopes, true)
}

// KeysForMigration releases (creating when missing) the given classes of a customer without a
// decision. Only the offline migration (`consentry keys encrypt`) uses it.
func (m *Manager) KeysForMigration(ctx context.Context, customerID string, classes []string) (*KeySet, error) {
	return m.release(ctx, customerID, classes, true)
}

func (m *Manager) release(ctx context.Context, customerID string, scopes []string, create bool) (*KeySet, error) {
	ks := emptyKeySet(customerID)
	ks.refresh = func(_ string, old *classKey) (*classKey, error) { return m.refreshKey(customerID, old) }
	m.refreshLedger(false)
	// The customer's pseudonym (an HMAC) is computed at most once: up front when key names
	// need it, else taken from a cached key (the cache stores it with the key), else computed
	// before anything is released.
	var pseudonym string
	if customerID != "" && m.namesByPseudonym {
		pseudonym = m.Pseudonym(customerID)
	}
	now := m.now()
	type miss struct{ scope, name string }
	var misses []miss
	for _, s := range scopes {
		if !m.knownClass(s) {
			ks.scopeErr(s, fmt.Errorf("%w: %q", ErrUnknownScope, s))
			continue
		}
		name, err := m.keyName(customerID, pseudonym, s)
		if err != nil {
			ks.scopeErr(s, err)
			continue
		}
		// Keys named in the ledger are never in the cache (blocked); the customer's own
		// erasure is checked below, before the hit is handed out.
		if k := m.cache.get(name, now); k != nil {
			m.metrics.hits.Inc()
			ks.keys[s] = k
			if pseudonym == "" {
				pseudonym = k.pseudonym
			}
			continue
		}
		m.metrics.misses.Inc()
		if m.cache.isBlocked(name) {
			ks.scopeErr(s, fmt.Errorf("%w: key %s", ErrErased, m.keyRef(name)))
			continue
		}
		misses = append(misses, miss{s, name})
	}
	if len(ks.keys) > 0 || len(misses) > 0 {
		if pseudonym == "" {
			pseudonym = m.Pseudonym(customerID)
		}
		if pseudonym != "" && m.ledger.Erased(pseudonym) {
			// Checked by pseudonym, not only by blocked key names: an eraser configured with
			// another key_name template recorded (and blocked) other names than this
			// manager's, so this customer's keys may still be cached here, or in Vault.
			m.blockCustomer(customerID, pseudonym)
			clear(ks.keys)
			for _, s := range scopes {
				ks.scopeErr(s, fmt.Errorf("%w: customer %s", ErrErased, pseudonym))
			}
			return m.released(ks, scopes)
		}
	}
	if len(misses) > 0 {
		if ok, aerr := m.auth.authenticated(); !ok {
			for _, ms := range misses {
				ks.scopeErr(ms.scope, fmt.Errorf("%w: %v", ErrUnauthenticated, aerr))
			}
		} else {
			ctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
			defer cancel()
			type result struct {
				scope string
				key   *classKey
				err   error
			}
			results := make(chan result, len(misses))
			pseudonym := pseudonym // a copy: the goroutines must not move the outer one to the heap
			for _, ms := range misses {
				go func() {
					k, err := m.fetch(ctx, customerID, pseudonym, ms.name, create)
					results <- result{ms.scope, k, err}
				}()
			}
			for range misses {
				r := <-results
				if r.err != nil {
					ks.scopeErr(r.scope, r.err)
				} else {
					ks.keys[r.scope] = r.key
				}
			}
		}
	}
	return m.released(ks, scopes)
}

// released counts the outcome of each scope and joins the errors of those not released.
func (m *Manager) released(ks *KeySet, scopes []string) (*KeySet, error) {
	var errs []error
	for _, s := range scopes {
		if ks.Has(s) {
			m.metrics.released.Inc()
			continue
		}
		err := ks.Err(s)
		m.metrics.releases.WithLabelValues(Reason(err)).Inc()
		errs = append(errs, fmt.Errorf("scope %s: %w", s, err))
	}
	return ks, errors.Join(errs...)
}

// blockCustomer zeroes and blocks this manager's names for every class of an erased customer:
// their cached copies go at once, and an export in flight cannot put them back.
func (m *Manager) blockCustomer(customerID, pseudonym string) {
	names := make([]string, 0, len(m.cfg.Classes))
	for _, c := range m.cfg.Classes {
		if name, err := m.keyName(customerID, pseudonym, c); err == nil {
			names = append(names, name)
		}
	}
	m.cache.block(names)
}

// refreshKey re-exports a released key whose cached copy is older than a ciphertext's version.
// Only keys the decision already released reach here, but the customer may have been erased
// since the release (by name, or by pseudonym under another key_name template): then nothing
// is fetched, and a key fetched while the erasure was recorded is not handed out.
func (m *Manager) refreshKey(customerID string, old *classKey) (*classKey, error) {
	m.cache.remove(old.name)
	m.refreshLedger(false)
	if err := m.erasedErr(customerID, old.name); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.Timeout)
	defer cancel()
	k, err := m.fetch(ctx, customerID, old.pseudonym, old.name, false)
	if err != nil {
		return nil, err
	}
	if err := m.erasedErr(customerID, old.name); err != nil {
		m.cache.remove(old.name)
		return nil, err
	}
	return k, nil
}

// erasedErr is ErrErased when key name is blocked or the customer's pseudonym is in the ledger.
func (m *Manager) erasedErr(customerID, name string) error {
	if m.cache.isBlocked(name) {
		return fmt.Errorf("%w: key %s", ErrErased, m.keyRef(name))
	}
	if m.ledger.Erased(m.Pseudonym(customerID)) {
		return fmt.Errorf("%w: customer %s", ErrErased, m.Pseudonym(customerID))
	}
	return nil
}

// refreshLedger picks up erasures other processes (the CLI) appended, at most once a second
// unless forced. The ledger's hook blocks their keys in the cache (so does any other read of
// the ledger); this records whether the ledger still reads.
func (m *Manager) refreshLedger(force bool) {
	m.ledgerMu.Lock()
	now := m.now()
	if !force && now.Sub(m.ledgerChecked) < time.Second {
		m.ledgerMu.Unlock()
		return
	}
	m.ledgerChecked = now
	m.ledgerMu.Unlock()
	_, err := m.ledger.Refresh()
	m.ledgerMu.Lock()
	m.ledgerErr = err
	m.ledgerMu.Unlock()
	if err != nil {
		m.logger.Error("shredded-keys ledger refresh failed", "err", err)
	}
}

// fetch exports one key from Vault (creating it first when create is set and it is missing)
// and caches it. Concurrent misses for the same key share one Vault request; each caller
// still gives up at its own deadline.
func (m *Manager) fetch(ctx context.Context, customerID, pseudonym, name string, create bool) (*classKey, error) {
	sfKey := name
	if create {
		sfKey = "create:" + name
	}
	ch := m.sf.DoChan(sfKey, func() (any, error) {
		// Detached from the first caller's cancellation but bounded by the same timeout.
		// A flight that finished between the caller's cache miss and this one filled the cache.
		if k := m.cache.get(name, m.now()); k != nil {
			return k, nil
		}
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.Timeout)
		defer cancel()
		k, err := m.export(fctx, name, pseudonym)
		if errors.Is(err, ErrNoKey) && create {
			if err = m.createKey(fctx, customerID, name); err != nil {
				return nil, err
			}
			k, err = m.export(fctx, name, pseudonym)
		}
		return k, err
	})
	select {
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %s: %v", ErrUnavailable, m.keyRef(name), ctx.Err())
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*classKey), nil
	}
}

// export reads all versions of the key and caches them with the pseudonym of their customer.
func (m *Manager) export(ctx context.Context, name, pseudonym string) (*classKey, error) {
	if m.cache.isBlocked(name) {
		return nil, fmt.Errorf("%w: key %s", ErrErased, m.keyRef(name))
	}
	s, err := m.call(ctx, "export", func() (*api.Secret, error) {
		return m.client.Logical().ReadWithContext(ctx, m.cfg.TransitMount+"/export/encryption-key/"+name)
	})
	if err != nil {
		var re *api.ResponseError
		if errors.As(err, &re) && re.StatusCode == http.StatusBadRequest && strings.Contains(strings.Join(re.Errors, " "), "not exportable") {
			return nil, fmt.Errorf("%w: %s", ErrNotExportable, m.keyRef(name))
		}
		return nil, err
	}
	if s == nil || s.Data == nil {
		return nil, fmt.Errorf("%w: %s", ErrNoKey, m.keyRef(name))
	}
	typ, _ := s.Data["type"].(string)
	newAEAD, ok := aeadTypes[typ]
	if !ok {
		return nil, fmt.Errorf("%w: key %s has type %q; consentry reads aes256-gcm96, aes128-gcm96, chacha20-poly1305", ErrDecrypt, m.keyRef(name), typ)
	}
	raw, versions, err := decodeExport(s.Data["keys"])
	if err != nil {
		return nil, fmt.Errorf("%w: export of %s: %v", ErrUnavailable, m.keyRef(name), err)
	}
	k := &classKey{name: name, pseudonym: pseudonym, aeads: make(map[int]cipher.AEAD, len(versions))}
	for i, v := range versions {
		a, err := newAEAD(raw[i])
		if err != nil {
			zeroAll(raw)
			return nil, fmt.Errorf("%w: key %s version %d: %v", ErrDecrypt, m.keyRef(name), v, err)
		}
		k.aeads[v] = a
		k.latest = max(k.latest, v)
	}
	m.cache.put(name, k, raw, m.now())
	// An erasure may have run while the export was in flight: put refused it, and so do we.
	if m.cache.isBlocked(name) {
		return nil, fmt.Errorf("%w: key %s", ErrErased, m.keyRef(name))
	}
	return k, nil
}

// createKey creates customerID's exportable transit key name, refusing for an erased customer.
func (m *Manager) createKey(ctx context.Context, customerID, name string) error {
	m.refreshLedger(true)
	m.ledgerMu.Lock()
	lerr := m.ledgerErr
	m.ledgerMu.Unlock()
	if lerr != nil {
		// Erasures another process recorded may be unknown here: creating a key could revive
		// an erased customer's.
		return fmt.Errorf("%w: shredded-keys ledger unreadable, not creating key %s: %v", ErrUnavailable, m.keyRef(name), lerr)
	}
	if err := m.erasedErr(customerID, name); err != nil {
		return fmt.Errorf("refusing to create key %s: %w", m.keyRef(name), err)
	}
	_, err := m.call(ctx, "create", func() (*api.Secret, error) {
		return m.client.Logical().WriteWithContext(ctx, m.cfg.TransitMount+"/keys/"+name,
			map[string]any{"type": m.cfg.KeyType, "exportable": true})
	})
	if err != nil {
		return err
	}
	// An erasure (here or by another process) may have been recorded while the key was being
	// created: it must not survive it. The refresh may find nothing new because another call
	// read the record meanwhile; the block and the pseudonym say so either way.
	m.refreshLedger(true)
	if m.erasedErr(customerID, name) != nil {
		if derr := m.destroyKey(context.WithoutCancel(ctx), name); derr != nil {
			m.logger.Error("a key created during an erasure could not be destroyed; run consentry keys replay-erasures", "key", m.keyRef(name), "err", strings.ReplaceAll(derr.Error(), name, m.keyRef(name)))
		}
		return fmt.Errorf("%w: customer erased while key %s was created", ErrErased, m.keyRef(name))
	}
	return nil
}

// keyNames lists the key names of a destruction record.
func keyNames(rec DestructionRecord) []string {
	out := make([]string, len(rec.Keys))
	for i, k := range rec.Keys {
		out[i] = k.Name
	}
	return out
}

// Client is the Vault client the manager authenticates (token renewed and re-acquired by its
// login loop), for collaborators that need other Vault APIs with the same identity, such as
// the decision log's transit checkpoint signer.
func (m *Manager) Client() *api.Client { return m.client }
