// Package identity authenticates the caller of a request: a JWT bearer token verified against
// a trusted issuer's JWKS (RS256, ES256, EdDSA; file or URL, cached, refreshed on an unknown
// kid at a bounded rate), or, without a token, the mTLS peer identity (a SPIFFE id) mapped to a
// service subject by configuration. The result is the input document's subject; every failure
// is a coded error the pipeline turns into a 401 (or 503 when no key set can be loaded).
package identity

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/consentry/consentry/sidecar/input"
)

// Reason codes.
const (
	ReasonMissing           = "identity.credential_missing"
	ReasonAmbiguous         = "identity.credential_ambiguous"
	ReasonScheme            = "identity.scheme_unsupported"
	ReasonMalformed         = "identity.token_malformed"
	ReasonAlgorithm         = "identity.algorithm_not_allowed"
	ReasonIssuerUnknown     = "identity.issuer_unknown"
	ReasonKeyUnknown        = "identity.key_unknown"
	ReasonSignature         = "identity.signature_invalid"
	ReasonExpired           = "identity.token_expired"
	ReasonNotYetValid       = "identity.token_not_yet_valid"
	ReasonAudience          = "identity.audience_mismatch"
	ReasonClaims            = "identity.claims_invalid"
	ReasonPrincipalUnknown  = "identity.principal_unknown"
	ReasonKeySetUnavailable = "identity.jwks_unavailable"
)

// Error is an authentication failure.
type Error struct {
	Code    string
	Status  int
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

func fail(code, format string, args ...any) *Error {
	return &Error{Code: code, Status: http.StatusUnauthorized, Message: fmt.Sprintf(format, args...)}
}

// Credentials are what a front door extracted from the request.
type Credentials struct {
	// Authorization holds every value of the Authorization header.
	Authorization []string
	// Principal is the mTLS peer identity (Envoy's attributes.source.principal, or the URI SAN
	// of a client certificate our own TLS listener verified).
	Principal string
}

// Authenticator verifies credentials. It is safe for concurrent use.
type Authenticator struct {
	cfg      Config
	issuers  map[string]*issuer
	services map[string]ServiceConfig
	now      func() time.Time
	cache    *tokenCache
	// noFetch: URL key sets are not fetched at start (run --check validates without
	// reaching the network).
	noFetch bool
}

type issuer struct {
	cfg  IssuerConfig
	keys *keySet
	algs []jose.SignatureAlgorithm
}

// Option tunes an Authenticator.
type Option func(*Authenticator)

// WithoutPrefetch skips the start-up fetch of URL key sets (`consentry run --check`, which
// must not reach the network); they are still fetched on first use.
func WithoutPrefetch() Option { return func(a *Authenticator) { a.noFetch = true } }

// WithClock replaces time.Now.
func WithClock(now func() time.Time) Option { return func(a *Authenticator) { a.now = now } }

// WithHTTPClient replaces the client used to fetch JWKS URLs (its transport and timeout; the
// redirect rule stays consentry's).
func WithHTTPClient(c *http.Client) Option {
	return func(a *Authenticator) {
		cp := *c
		cp.CheckRedirect = checkJWKSRedirect
		for _, is := range a.issuers {
			is.keys.client = &cp
		}
	}
}

// WithLogger sets the logger (JWKS keys skipped; default slog.Default()).
func WithLogger(l *slog.Logger) Option {
	return func(a *Authenticator) {
		if l == nil {
			return
		}
		for _, is := range a.issuers {
			is.keys.log = l
		}
	}
}

// New returns an Authenticator. File key sets are loaded now (a missing or invalid file is a
// configuration error); URL key sets are fetched on first use and refreshed in the background.
func New(cfg Config, opts ...Option) (*Authenticator, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &Authenticator{cfg: cfg, issuers: map[string]*issuer{}, services: map[string]ServiceConfig{}, now: time.Now}
	for _, ic := range cfg.Issuers {
		is := &issuer{cfg: ic}
		for _, alg := range ic.Algorithms {
			is.algs = append(is.algs, jose.SignatureAlgorithm(alg))
		}
		client, err := jwksClient(ic)
		if err != nil {
			return nil, fmt.Errorf("identity.issuers[%s].%w", ic.Issuer, err)
		}
		is.keys = newKeySet(ic, client, func() time.Time { return a.now() })
		a.issuers[ic.Issuer] = is
	}
	for _, s := range cfg.Services {
		a.services[s.SPIFFEID] = s
	}
	for _, o := range opts {
		o(a)
	}
	for _, is := range a.issuers {
		if is.cfg.JWKSFile != "" {
			if err := is.keys.refresh(context.Background(), true); err != nil {
				return nil, fmt.Errorf("identity.issuers[%s].jwks_file: %w", is.cfg.Issuer, err)
			}
			continue
		}
		// Fetch URL key sets now, in the background with their own timeout, so the first
		// requests neither wait for nor (with their short deadlines) abort the fetch.
		if !a.noFetch {
			_, _ = is.keys.start(false)
		}
	}
	if cfg.TokenCacheSize > 0 {
		a.cache = newTokenCache(cfg.TokenCacheSize)
	}
	return a, nil
}

// Ready reports whether every issuer has a key set loaded (for readiness checks).
func (a *Authenticator) Ready() error {
	for name, is := range a.issuers {
		if !is.keys.ready() {
			return fmt.Errorf("issuer %s: no key set loaded", name)
		}
	}
	return nil
}

// Authenticate returns the subject for creds. A bearer token wins over the mTLS principal (a
// workload forwarding a user's request acts for that user); without a token the principal must
// be a configured service. The error is always an *Error.
func (a *Authenticator) Authenticate(ctx context.Context, creds Credentials) (input.Subject, error) {
	switch {
	case len(creds.Authorization) > 1:
		return input.Subject{}, fail(ReasonAmbiguous, "%d Authorization headers", len(creds.Authorization))
	case len(creds.Authorization) == 1:
		return a.bearer(ctx, creds.Authorization[0])
	case creds.Principal != "":
		s, ok := a.services[creds.Principal]
		if !ok {
			return input.Subject{}, fail(ReasonPrincipalUnknown, "peer identity %q is not a configured service", creds.Principal)
		}
		return input.Subject{ID: s.ID, Type: s.Type, Roles: slices.Clone(s.Roles), ProcessorID: s.ProcessorID, AuthMethod: "mtls"}, nil
	default:
		return input.Subject{}, fail(ReasonMissing, "no bearer token and no client certificate")
	}
}

func (a *Authenticator) bearer(ctx context.Context, header string) (input.Subject, error) {
	scheme, token, ok := strings.Cut(strings.TrimSpace(header), " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return input.Subject{}, fail(ReasonScheme, "Authorization scheme is not Bearer")
	}
	token = strings.TrimSpace(token)
	if token == "" || strings.ContainsAny(token, " ,") {
		return input.Subject{}, fail(ReasonMalformed, "bearer token is empty or holds several values")
	}
	now := a.now()
	var key [32]byte
	if a.cache != nil {
		// A view of the token's bytes, not a copy: Sum256 only reads them.
		key = sha256.Sum256(unsafe.Slice(unsafe.StringData(token), len(token)))
		if e, ok := a.cache.get(key); ok {
			if err := a.checkTimes(e.exp, e.nbf, now); err != nil {
				return input.Subject{}, err
			}
			if now.Before(e.until) {
				return e.subject, nil
			}
		}
	}
	subject, exp, nbf, err := a.verify(ctx, token, now)
	if err != nil {
		return input.Subject{}, err
	}
	if a.cache != nil {
		until := now.Add(a.cfg.TokenCacheTTL)
		if exp.Before(until) {
			until = exp.Add(a.cfg.ClockSkew)
		}
		a.cache.put(key, cacheEntry{subject: subject, exp: exp, nbf: nbf, until: until})
	}
	return subject, nil
}

func (a *Authenticator) verify(ctx context.Context, token string, now time.Time) (input.Subject, time.Time, time.Time, error) {
	var zero time.Time
	tok, err := jwt.ParseSigned(token, allAlgorithms)
	if err != nil {
		if strings.Contains(err.Error(), "unexpected signature algorithm") {
			return input.Subject{}, zero, zero, fail(ReasonAlgorithm, "token algorithm is not allowed")
		}
		return input.Subject{}, zero, zero, fail(ReasonMalformed, "token is not a compact JWS: %v", err)
	}
	if len(tok.Headers) != 1 {
		return input.Subject{}, zero, zero, fail(ReasonMalformed, "token has %d signatures", len(tok.Headers))
	}
	hdr := tok.Headers[0]
	var unverified jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&unverified); err != nil {
		return input.Subject{}, zero, zero, fail(ReasonMalformed, "token claims: %v", err)
	}
	is, ok := a.issuers[unverified.Issuer]
	if !ok {
		return input.Subject{}, zero, zero, fail(ReasonIssuerUnknown, "issuer %q is not trusted", truncate(unverified.Issuer))
	}
	if !slices.Contains(is.algs, jose.SignatureAlgorithm(hdr.Algorithm)) {
		return input.Subject{}, zero, zero, fail(ReasonAlgorithm, "algorithm %s is not allowed for issuer %s", hdr.Algorithm, is.cfg.Issuer)
	}
	keys, err := is.keys.lookup(ctx, hdr.KeyID, hdr.Algorithm)
	if err != nil {
		e := fail(ReasonKeySetUnavailable, "issuer %s: %v", is.cfg.Issuer, err)
		e.Status = http.StatusServiceUnavailable
		return input.Subject{}, zero, zero, e
	}
	if len(keys) == 0 {
		return input.Subject{}, zero, zero, fail(ReasonKeyUnknown, "no key %q for %s in the issuer's key set", truncate(hdr.KeyID), hdr.Algorithm)
	}
	var std jwt.Claims
	raw := map[string]any{}
	verified := false
	for _, k := range keys {
		if err := tok.Claims(k.Key, &std, &raw); err == nil {
			verified = true
			break
		}
	}
	if !verified {
		return input.Subject{}, zero, zero, fail(ReasonSignature, "signature does not verify with the issuer's keys")
	}
	if std.Expiry == nil {
		return input.Subject{}, zero, zero, fail(ReasonClaims, "token has no exp")
	}
	exp := std.Expiry.Time()
	var nbf time.Time
	if std.NotBefore != nil {
		nbf = std.NotBefore.Time()
	}
	if err := a.checkTimes(exp, nbf, now); err != nil {
		return input.Subject{}, zero, zero, err
	}
	if !slices.ContainsFunc(is.cfg.Audiences, func(aud string) bool { return slices.Contains([]string(std.Audience), aud) }) {
		return input.Subject{}, zero, zero, fail(ReasonAudience, "token audience %v is not one of %v", std.Audience, is.cfg.Audiences)
	}
	s, err := mapClaims(is.cfg.Claims, raw)
	if err != nil {
		return input.Subject{}, zero, zero, err
	}
	return s, exp, nbf, nil
}

func (a *Authenticator) checkTimes(exp, nbf, now time.Time) error {
	if !now.Before(exp.Add(a.cfg.ClockSkew)) {
		return fail(ReasonExpired, "token expired at %s", exp.UTC().Format(time.RFC3339))
	}
	if !nbf.IsZero() && now.Add(a.cfg.ClockSkew).Before(nbf) {
		return fail(ReasonNotYetValid, "token is not valid before %s", nbf.UTC().Format(time.RFC3339))
	}
	return nil
}

// allAlgorithms is what the parser accepts; each issuer then narrows it. HMAC and "none" are
// absent, so a token can never pick a symmetric algorithm with a public key as the secret.
var allAlgorithms = func() []jose.SignatureAlgorithm {
	var out []jose.SignatureAlgorithm
	for a := range allowedAlgorithms {
		out = append(out, jose.SignatureAlgorithm(a))
	}
	slices.Sort(out)
	return out
}()

func truncate(s string) string {
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	return strings.ToValidUTF8(s, "?")
}

// tokenCache holds verified tokens by hash. Eviction is random when full: cheap, and an
// attacker cannot pin entries.
type tokenCache struct {
	mu  sync.RWMutex
	max int
	m   map[[32]byte]cacheEntry
}

type cacheEntry struct {
	subject  input.Subject
	exp, nbf time.Time
	until    time.Time
}

func newTokenCache(max int) *tokenCache {
	return &tokenCache{max: max, m: make(map[[32]byte]cacheEntry)}
}

func (c *tokenCache) get(k [32]byte) (cacheEntry, bool) {
	c.mu.RLock()
	e, ok := c.m[k]
	c.mu.RUnlock()
	return e, ok
}

func (c *tokenCache) put(k [32]byte, e cacheEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		n := c.max/10 + 1
		for old := range c.m {
			delete(c.m, old)
			if n--; n == 0 {
				break
			}
		}
	}
	c.m[k] = e
}

var errNotString = errors.New("not a string")
