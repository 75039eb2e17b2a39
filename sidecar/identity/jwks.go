package identity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// maxJWKSBytes bounds a fetched key set.
const maxJWKSBytes = 1 << 20

// keySet is one issuer's cached JWKS. Lookups are lock-free. Refreshes are single-flight,
// rate-limited and detached from the request that asked for one: a fetch runs with its own
// FetchTimeout, and a request waits for it only as long as its own deadline allows. A
// request's deadline (150 ms by default) must not abort the fetch - a slow identity provider
// would then never deliver rotated keys - nor spend the rate-limit slot: an attacker who
// cancels requests carrying unknown kids could otherwise keep a removed key trusted.
type keySet struct {
	cfg    IssuerConfig
	client *http.Client
	now    func() time.Time
	log    *slog.Logger
	// skipped is the last logged list of keys the issuer's set holds but consentry cannot use
	// (logged when it changes, not on every refresh).
	skipped atomic.Pointer[string]

	keys        atomic.Pointer[jose.JSONWebKeySet]
	fetchedAt   atomic.Int64 // unix nanos of the last successful load
	mu          sync.Mutex   // guards lastAttempt and cur
	lastAttempt time.Time
	cur         *flight // the fetch in progress, nil when none
	lastErr     atomic.Pointer[string]
}

// flight is one fetch in progress; err is set before done is closed.
type flight struct {
	done chan struct{}
	err  error
}

func newKeySet(cfg IssuerConfig, client *http.Client, now func() time.Time) *keySet {
	return &keySet{cfg: cfg, client: client, now: now, log: slog.Default()}
}

var errNoKeys = errors.New("no key set could be loaded")

// lookup returns candidate verification keys for a token header. An unknown kid triggers a
// refresh, at most once per MinRefreshInterval.
func (k *keySet) lookup(ctx context.Context, kid, alg string) ([]jose.JSONWebKey, error) {
	set := k.keys.Load()
	if set == nil {
		if err := k.refresh(ctx, true); err != nil {
			return nil, err
		}
		set = k.keys.Load()
	} else if k.stale() {
		_, _ = k.start(false)
	}
	if found := candidates(set, kid, alg); len(found) > 0 {
		return found, nil
	}
	if kid == "" {
		return nil, nil
	}
	// Unknown kid: the issuer may have rotated keys. Refresh once (rate-limited) and retry.
	if err := k.refresh(ctx, false); err != nil && !errors.Is(err, errRateLimited) {
		return nil, err
	}
	return candidates(k.keys.Load(), kid, alg), nil
}

func (k *keySet) stale() bool {
	return k.now().Sub(time.Unix(0, k.fetchedAt.Load())) > k.cfg.RefreshInterval
}

var errRateLimited = errors.New("key set refresh rate-limited")

// refresh makes sure a fetch runs (starting one unless one is in progress or the rate limit
// forbids it) and waits for it up to ctx's deadline. Unless force (no keys at all yet) it
// honours MinRefreshInterval.
func (k *keySet) refresh(ctx context.Context, force bool) error {
	f, err := k.start(force)
	if f == nil {
		return err
	}
	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
		// The fetch goes on; its keys serve the next request.
		if k.keys.Load() == nil {
			return fmt.Errorf("%w: waiting for the key set: %v", errNoKeys, ctx.Err())
		}
		return fmt.Errorf("waiting for the key set: %w", ctx.Err())
	}
}

// start returns the fetch in progress, or starts one. It returns nil and the reason when no
// fetch may run now (rate limit), and nil, nil when force finds keys already loaded.
func (k *keySet) start(force bool) (*flight, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cur != nil {
		return k.cur, nil
	}
	if force && k.keys.Load() != nil {
		return nil, nil // loaded by another caller meanwhile
	}
	now := k.now()
	// Without any key set, retry sooner: the first fetch may have failed on a transient error
	// and every request fails until one succeeds.
	minGap := k.cfg.MinRefreshInterval
	if k.keys.Load() == nil && minGap > time.Second {
		minGap = time.Second
	}
	if !k.lastAttempt.IsZero() && now.Sub(k.lastAttempt) < minGap {
		if force && k.keys.Load() == nil {
			if p := k.lastErr.Load(); p != nil {
				return nil, fmt.Errorf("%w: %s", errNoKeys, *p)
			}
			return nil, errNoKeys
		}
		return nil, errRateLimited
	}
	k.lastAttempt = now
	f := &flight{done: make(chan struct{})}
	k.cur = f
	go k.fetch(f, now)
	return f, nil
}

// fetch loads the key set with its own timeout and completes f.
func (k *keySet) fetch(f *flight, started time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), k.cfg.FetchTimeout)
	set, skipped, err := k.load(ctx)
	cancel()
	if err == nil || skipped != nil { // the document was read (a failed fetch says nothing about its keys)
		k.noteSkipped(skipped)
	}
	if err != nil {
		msg := err.Error()
		k.lastErr.Store(&msg)
		if k.keys.Load() == nil {
			f.err = fmt.Errorf("%w: %v", errNoKeys, err)
		} else {
			f.err = err // keep serving the previous keys
		}
	} else {
		k.keys.Store(set)
		k.fetchedAt.Store(started.UnixNano())
		k.lastErr.Store(nil)
	}
	k.mu.Lock()
	k.cur = nil
	k.mu.Unlock()
	close(f.done)
}

// load reads the key set and returns its usable signing keys, and a description of each key
// it skipped.
func (k *keySet) load(ctx context.Context) (*jose.JSONWebKeySet, []string, error) {
	var raw []byte
	if k.cfg.JWKSFile != "" {
		b, err := os.ReadFile(k.cfg.JWKSFile)
		if err != nil {
			return nil, nil, fmt.Errorf("read jwks: %w", err)
		}
		raw = b
	} else {
		ctx, cancel := context.WithTimeout(ctx, k.cfg.FetchTimeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.cfg.JWKSURL, nil)
		if err != nil {
			return nil, nil, fmt.Errorf("jwks request: %w", err)
		}
		req.Header.Set("Accept", "application/json")
		resp, err := k.client.Do(req)
		if err != nil {
			return nil, nil, fmt.Errorf("fetch jwks: %w", err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, nil, fmt.Errorf("fetch jwks: %s answered %d", k.cfg.JWKSURL, resp.StatusCode)
		}
		raw, err = io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
		if err != nil {
			return nil, nil, fmt.Errorf("read jwks: %w", err)
		}
		if len(raw) > maxJWKSBytes {
			return nil, nil, fmt.Errorf("jwks larger than %d bytes", maxJWKSBytes)
		}
	}
	return parseKeySet(raw)
}

// parseKeySet keeps the public signing keys of a JWKS document. Keys are parsed one by one:
// identity providers publish keys consentry has no use for beside their signing keys (an
// X25519 or RSA-OAEP encryption key, a secp256k1 key, a kty a later RFC defines), and one of
// them must not make the whole set unreadable - New would fail, and a URL set would never
// refresh again, keeping rotated-out keys. Such keys are skipped and described; only a set
// without any usable signing key is an error. Private material is reduced to its public half
// (a set that carries it by accident must not make us hold it); encryption keys (use: enc) and
// symmetric keys never verify a signature here.
func parseKeySet(raw []byte) (*jose.JSONWebKeySet, []string, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, nil, fmt.Errorf("parse jwks: %w", err)
	}
	out := &jose.JSONWebKeySet{}
	var skipped []string
	for i, rk := range doc.Keys {
		var key jose.JSONWebKey
		why := ""
		if err := key.UnmarshalJSON(rk); err != nil {
			why = err.Error()
		} else if _, symmetric := key.Key.([]byte); symmetric {
			why = "symmetric key"
		} else if key.Use == "enc" {
			why = "encryption key (use: enc)"
		} else if !key.Valid() {
			why = "incomplete key"
		}
		if why != "" {
			skipped = append(skipped, describeKey(i, rk)+": "+why)
			continue
		}
		if !key.IsPublic() {
			key = key.Public()
		}
		out.Keys = append(out.Keys, key)
	}
	if len(out.Keys) == 0 {
		if len(skipped) > 0 {
			return nil, skipped, fmt.Errorf("jwks holds no usable signing key (skipped %s)", strings.Join(skipped, "; "))
		}
		return nil, nil, errors.New("jwks holds no usable signing key")
	}
	return out, skipped, nil
}

// describeKey names a raw JWK by position, kid, kty and crv, for the log.
func describeKey(i int, rk json.RawMessage) string {
	var h struct{ Kid, Kty, Crv string }
	_ = json.Unmarshal(rk, &h)
	d := fmt.Sprintf("key %d kid=%q kty=%q", i, truncate(h.Kid), truncate(h.Kty))
	if h.Crv != "" {
		d += fmt.Sprintf(" crv=%q", truncate(h.Crv))
	}
	return d
}

// noteSkipped logs the keys a load skipped, once for each different list: a set refreshed
// every few minutes with the same unusable key must not fill the log.
func (k *keySet) noteSkipped(skipped []string) {
	note := strings.Join(skipped, "; ")
	if prev := k.skipped.Load(); prev != nil && *prev == note || prev == nil && note == "" {
		return
	}
	k.skipped.Store(&note)
	if note != "" {
		k.log.Warn("identity: JWKS keys skipped (not usable to verify signatures)", "issuer", k.cfg.Issuer, "count", len(skipped), "keys", note)
	}
}

// candidates returns the keys a token with this kid and alg may be verified with.
func candidates(set *jose.JSONWebKeySet, kid, alg string) []jose.JSONWebKey {
	if set == nil {
		return nil
	}
	var out []jose.JSONWebKey
	for _, key := range set.Keys {
		if kid != "" && key.KeyID != kid {
			continue
		}
		if key.Algorithm != "" && key.Algorithm != alg {
			continue
		}
		out = append(out, key)
	}
	return out
}

// ready reports whether keys are loaded.
func (k *keySet) ready() bool { return k.keys.Load() != nil }
