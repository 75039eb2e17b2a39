package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/consentry/consentry/sidecar/identity/identitytest"
)

func newIssuer(t *testing.T) *identitytest.Issuer {
	t.Helper()
	is, err := identitytest.New("https://idp.test", "consentry")
	if err != nil {
		t.Fatal(err)
	}
	return is
}

func fileAuth(t *testing.T, is *identitytest.Issuer, mod func(*Config)) *Authenticator {
	t.Helper()
	p, err := is.WriteJWKS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Issuers: []IssuerConfig{{Issuer: is.Name, Audiences: []string{is.Audience}, JWKSFile: p,
			Claims: ClaimsConfig{DefaultType: "employee"}}},
		Services: []ServiceConfig{{SPIFFEID: "spiffe://demo/ns/billing/sa/batch", ID: "billing-batch", Roles: []string{"billing_agent"}}},
	}
	if mod != nil {
		mod(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func sign(t *testing.T, is *identitytest.Issuer, alg jose.SignatureAlgorithm, claims map[string]any) string {
	t.Helper()
	tok, err := is.Sign(alg, claims)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestAlgorithmsAndClaimMapping(t *testing.T) {
	is := newIssuer(t)
	a := fileAuth(t, is, nil)
	for _, alg := range []jose.SignatureAlgorithm{jose.RS256, jose.ES256, jose.EdDSA} {
		c := is.Claims("emp-17")
		c["roles"] = []any{"support_agent", "support_lead"}
		c["amr"] = []any{"pwd", "mfa"}
		c["email"] = "ann@example.com"
		s, err := a.Authenticate(context.Background(), Credentials{Authorization: []string{"Bearer " + sign(t, is, alg, c)}})
		if err != nil {
			t.Fatalf("%s: %v", alg, err)
		}
		if s.ID != "emp-17" || s.Type != "employee" || len(s.Roles) != 2 || !s.MFA || s.AuthMethod != "jwt" {
			t.Fatalf("%s: subject %+v", alg, s)
		}
		if _, leaked := s.Claims["email"]; leaked {
			t.Fatalf("%s: unexposed claim copied: %v", alg, s.Claims)
		}
		if s.Claims["iss"] != is.Name {
			t.Fatalf("%s: claims %v", alg, s.Claims)
		}
	}
}

func TestCustomerAndProcessorClaims(t *testing.T) {
	is := newIssuer(t)
	a := fileAuth(t, is, func(c *Config) { c.Issuers[0].Claims.MFA = "mfa_verified" })
	c := is.Claims("u-1")
	c["subject_type"] = "customer"
	c["customer_id"] = "c-1001"
	c["roles"] = "a b"
	c["mfa_verified"] = true
	s, err := a.Authenticate(context.Background(), Credentials{Authorization: []string{"bearer " + sign(t, is, jose.ES256, c)}})
	if err != nil {
		t.Fatal(err)
	}
	if s.Type != "customer" || s.CustomerID != "c-1001" || !s.MFA || len(s.Roles) != 2 {
		t.Fatalf("subject %+v", s)
	}
}

func TestReasons(t *testing.T) {
	is := newIssuer(t)
	other, err := identitytest.New("https://other.test", "consentry")
	if err != nil {
		t.Fatal(err)
	}
	a := fileAuth(t, is, nil)
	now := time.Now()
	with := func(mod func(map[string]any)) map[string]any {
		c := is.Claims("emp-1")
		mod(c)
		return c
	}
	ecOther, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	forged, _ := identitytest.SignWith(ecOther, jose.ES256, "ec-1", is.Claims("emp-1"))
	noKid, _ := identitytest.SignWith(is.Keys[jose.ES256].Private, jose.ES256, "-", is.Claims("emp-1"))
	ps256, _ := identitytest.SignWith(is.Keys[jose.RS256].Private, jose.PS256, "rsa-1", is.Claims("emp-1"))
	tests := []struct {
		name   string
		creds  Credentials
		code   string
		status int
	}{
		{"missing", Credentials{}, ReasonMissing, 401},
		{"two headers", Credentials{Authorization: []string{"Bearer a", "Bearer b"}}, ReasonAmbiguous, 401},
		{"basic", Credentials{Authorization: []string{"Basic dXNlcjpwdw=="}}, ReasonScheme, 401},
		{"joined values", Credentials{Authorization: []string{"Bearer a, Bearer b"}}, ReasonMalformed, 401},
		{"garbage", Credentials{Authorization: []string{"Bearer not.a.jwt"}}, ReasonMalformed, 401},
		{"expired", bearer(sign(t, is, jose.RS256, with(func(c map[string]any) { c["exp"] = now.Add(-time.Hour).Unix() }))), ReasonExpired, 401},
		{"not yet valid", bearer(sign(t, is, jose.RS256, with(func(c map[string]any) { c["nbf"] = now.Add(time.Hour).Unix() }))), ReasonNotYetValid, 401},
		{"no exp", bearer(sign(t, is, jose.RS256, with(func(c map[string]any) { delete(c, "exp") }))), ReasonClaims, 401},
		{"wrong audience", bearer(sign(t, is, jose.RS256, with(func(c map[string]any) { c["aud"] = "crm" }))), ReasonAudience, 401},
		{"unknown issuer", bearer(sign(t, other, jose.RS256, other.Claims("emp-1"))), ReasonIssuerUnknown, 401},
		{"forged signature", bearer(forged), ReasonSignature, 401},
		{"unknown kid", bearer(sign(t, is, jose.ES256, with(func(c map[string]any) {}))[:0] + mustSignKid(t, is, "nope")), ReasonKeyUnknown, 401},
		{"alg not allowed for issuer", bearer(ps256), ReasonAlgorithm, 401},
		{"no subject", bearer(sign(t, is, jose.RS256, with(func(c map[string]any) { delete(c, "sub") }))), ReasonClaims, 401},
		{"roles not strings", bearer(sign(t, is, jose.RS256, with(func(c map[string]any) { c["roles"] = []any{1} }))), ReasonClaims, 401},
		{"unknown principal", Credentials{Principal: "spiffe://demo/ns/x/sa/y"}, ReasonPrincipalUnknown, 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := a.Authenticate(context.Background(), tt.creds)
			var ie *Error
			if !errors.As(err, &ie) || ie.Code != tt.code || ie.Status != tt.status {
				t.Fatalf("err = %v, want %s/%d", err, tt.code, tt.status)
			}
		})
	}
	// A token without kid is tried against the keys of its algorithm.
	if _, err := a.Authenticate(context.Background(), bearer(noKid)); err != nil {
		t.Fatalf("no kid: %v", err)
	}
}

func mustSignKid(t *testing.T, is *identitytest.Issuer, kid string) string {
	t.Helper()
	tok, err := identitytest.SignWith(is.Keys[jose.ES256].Private, jose.ES256, kid, is.Claims("emp-1"))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func bearer(tok string) Credentials { return Credentials{Authorization: []string{"Bearer " + tok}} }

func TestMTLSService(t *testing.T) {
	a := fileAuth(t, newIssuer(t), nil)
	s, err := a.Authenticate(context.Background(), Credentials{Principal: "spiffe://demo/ns/billing/sa/batch"})
	if err != nil {
		t.Fatal(err)
	}
	if s.ID != "billing-batch" || s.Type != "service" || s.AuthMethod != "mtls" || s.Roles[0] != "billing_agent" {
		t.Fatalf("subject %+v", s)
	}
	u, _ := url.Parse("spiffe://demo/ns/a/sa/b")
	if got := SPIFFEFromCert(&x509.Certificate{URIs: []*url.URL{u}}); got != u.String() {
		t.Fatalf("SPIFFEFromCert = %q", got)
	}
	if got := SPIFFEFromCert(&x509.Certificate{URIs: []*url.URL{u, u}}); got != "" {
		t.Fatalf("two URIs: %q", got)
	}
}

func TestTokenCacheStillChecksExpiry(t *testing.T) {
	is := newIssuer(t)
	now := time.Now()
	clock := func() time.Time { return now }
	p, _ := is.WriteJWKS(t.TempDir())
	a, err := New(Config{ClockSkew: time.Second, TokenCacheTTL: time.Hour, Issuers: []IssuerConfig{{Issuer: is.Name, Audiences: []string{is.Audience}, JWKSFile: p}}}, WithClock(func() time.Time { return clock() }))
	if err != nil {
		t.Fatal(err)
	}
	c := is.Claims("e")
	c["exp"] = now.Add(10 * time.Second).Unix()
	creds := bearer(sign(t, is, jose.EdDSA, c))
	if _, err := a.Authenticate(context.Background(), creds); err != nil {
		t.Fatal(err)
	}
	later := now.Add(time.Minute)
	clock = func() time.Time { return later }
	_, err = a.Authenticate(context.Background(), creds)
	var ie *Error
	if !errors.As(err, &ie) || ie.Code != ReasonExpired {
		t.Fatalf("cached expired token: %v", err)
	}
}

func TestJWKSURLRotationAndRateLimit(t *testing.T) {
	old, next := rotatedIssuers(t) // next signs with other key ids
	var serveNext atomic.Bool
	var fetches atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		set := old.JWKS()
		if serveNext.Load() {
			set.Keys = append(set.Keys, next.JWKS().Keys...)
		}
		_ = json.NewEncoder(w).Encode(set)
	}))
	defer srv.Close()
	now := time.Now()
	var clock atomic.Int64
	clock.Store(now.UnixNano())
	a := urlAuthenticator(t, old, srv.URL, 10*time.Second, &clock) // fetched in the background at construction
	claims := old.Claims("e")
	claims["exp"] = now.Add(time.Hour).Unix()
	if _, err := a.Authenticate(context.Background(), bearer(sign(t, old, jose.RS256, claims))); err != nil {
		t.Fatal(err)
	}
	if fetches.Load() != 1 || a.Ready() != nil {
		t.Fatalf("fetches = %d, ready %v", fetches.Load(), a.Ready())
	}
	// The issuer rotates: a token with a new kid arrives before the refresh interval. Within
	// MinRefreshInterval of the last fetch, no new fetch happens.
	serveNext.Store(true)
	newTok := sign(t, next, jose.ES256, claims)
	_, err := a.Authenticate(context.Background(), bearer(newTok))
	var ie *Error
	if !errors.As(err, &ie) || ie.Code != ReasonKeyUnknown || fetches.Load() != 1 {
		t.Fatalf("rate-limited refresh: err %v fetches %d", err, fetches.Load())
	}
	clock.Add(int64(11 * time.Second))
	if _, err := a.Authenticate(context.Background(), bearer(newTok)); err != nil {
		t.Fatalf("after rotation: %v", err)
	}
	if fetches.Load() != 2 {
		t.Fatalf("fetches = %d, want 2", fetches.Load())
	}
	// Random kids cannot force more fetches.
	for i := 0; i < 20; i++ {
		_, _ = a.Authenticate(context.Background(), bearer(mustSignKid(t, old, "random")))
	}
	if fetches.Load() != 2 {
		t.Fatalf("fetches after kid flood = %d", fetches.Load())
	}
}

func TestJWKSUnavailable(t *testing.T) {
	is := newIssuer(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) }))
	defer srv.Close()
	a, err := New(Config{Issuers: []IssuerConfig{{Issuer: is.Name, Audiences: []string{is.Audience}, JWKSURL: srv.URL}}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.Authenticate(context.Background(), bearer(sign(t, is, jose.RS256, is.Claims("e"))))
	var ie *Error
	if !errors.As(err, &ie) || ie.Code != ReasonKeySetUnavailable || ie.Status != 503 {
		t.Fatalf("err = %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	bad := []Config{
		{Issuers: []IssuerConfig{{Issuer: "x", JWKSFile: "f"}}},
		{Issuers: []IssuerConfig{{Issuer: "x", Audiences: []string{"a"}}}},
		{Issuers: []IssuerConfig{{Issuer: "x", Audiences: []string{"a"}, JWKSFile: "f", JWKSURL: "http://x"}}},
		{Issuers: []IssuerConfig{{Issuer: "x", Audiences: []string{"a"}, JWKSFile: "f", Algorithms: []string{"HS256"}}}},
		{Issuers: []IssuerConfig{{Issuer: "x", Audiences: []string{"a"}, JWKSURL: "ftp://x"}}},
		{Services: []ServiceConfig{{SPIFFEID: "demo/x", ID: "a"}}},
		{Services: []ServiceConfig{{SPIFFEID: "spiffe://d/x"}}},
	}
	for i, c := range bad {
		if err := c.WithDefaults().Validate(); err == nil {
			t.Errorf("config %d accepted", i)
		}
	}
}

func TestJWKSRecoversQuicklyFromAFailedFirstFetch(t *testing.T) {
	is := newIssuer(t)
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		_ = json.NewEncoder(w).Encode(is.JWKS())
	}))
	defer srv.Close()
	a, err := New(Config{Issuers: []IssuerConfig{{Issuer: is.Name, Audiences: []string{is.Audience}, JWKSURL: srv.URL}}})
	if err != nil {
		t.Fatal(err)
	}
	// Polled against a generous deadline: a loaded CI machine may be slow to run the fetch.
	for deadline := time.Now().Add(20 * time.Second); calls.Load() == 0; {
		if time.Now().After(deadline) {
			t.Fatal("no background fetch")
		}
		time.Sleep(5 * time.Millisecond)
	}
	tok := bearer(sign(t, is, jose.RS256, is.Claims("e")))
	// Not 30s (the min refresh interval) of failures: a key set that never loaded is retried
	// after at most a second. The deadline leaves a loaded machine room for its stalls while
	// staying well below the 30s a rate-limited retry would take.
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := a.Authenticate(context.Background(), tok)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still failing after the first fetch failed: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestJWKSRefreshOutlivesTheRequest: a refresh for an unknown kid runs with its own fetch
// timeout, not the request's deadline. A provider slower than requests' deadlines still
// delivers rotated keys (the request that asked times out; a later one finds the keys), and
// requests cancelled at once - as an attacker who resets connections would - neither abort
// the fetch nor keep a removed key trusted.
func TestJWKSRefreshOutlivesTheRequest(t *testing.T) {
	old, next := rotatedIssuers(t)
	var rotated atomic.Bool
	var fetches atomic.Int32
	// The rotated key set is held until the test releases it, not for a fixed 300ms: on a
	// loaded machine signing the 20 tokens below can take longer than that, and the fetch
	// would be over before the request that must find it still running.
	release := make(chan struct{})
	var releaseOnce sync.Once
	releaseFetch := func() { releaseOnce.Do(func() { close(release) }) }
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		if !rotated.Load() {
			_ = json.NewEncoder(w).Encode(old.JWKS())
			return
		}
		select { // slower than a request's deadline
		case <-release:
		case <-r.Context().Done():
			return
		}
		_ = json.NewEncoder(w).Encode(next.JWKS())
	}))
	defer srv.Close()
	defer releaseFetch()
	now := time.Now()
	var clock atomic.Int64
	clock.Store(now.UnixNano())
	a := urlAuthenticator(t, old, srv.URL, 30*time.Second, &clock)
	claims := old.Claims("e")
	claims["exp"] = now.Add(time.Hour).Unix()
	oldTok := bearer(sign(t, old, jose.RS256, claims))
	if _, err := a.Authenticate(context.Background(), oldTok); err != nil {
		t.Fatal(err)
	}
	// The provider removes the old key and rotates. Requests with an unknown kid, cancelled
	// after 5 ms, start the (one) fetch; none of them aborts it.
	rotated.Store(true)
	clock.Add(int64(31 * time.Second))
	for i := 0; i < 20; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
		_, _ = a.Authenticate(ctx, bearer(mustSignKid(t, old, fmt.Sprint("random-", i))))
		cancel()
	}
	// A request with a 150 ms deadline for the new key: the fetch is still running.
	newTok := bearer(sign(t, next, jose.ES256, claims))
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	_, err := a.Authenticate(ctx, newTok)
	cancel()
	var ie *Error
	if !errors.As(err, &ie) || ie.Code != ReasonKeySetUnavailable {
		t.Fatalf("request while the slow fetch runs: %v", err)
	}
	releaseFetch()
	// Once the fetch completes: the new key is served and the removed one is not. A generous
	// deadline: a loaded machine may take a while to finish the fetch.
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := a.Authenticate(context.Background(), newTok)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rotated key never loaded (%d fetches): %v", fetches.Load(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	claims["jti"] = "another" // a token not in the verified-token cache
	if _, err := a.Authenticate(context.Background(), bearer(sign(t, old, jose.RS256, claims))); !errors.As(err, &ie) || ie.Code != ReasonKeyUnknown {
		t.Fatalf("token signed with the removed key: %v", err)
	}
	if n := fetches.Load(); n != 2 {
		t.Fatalf("fetches = %d, want 2 (one at start, one for the rotation)", n)
	}
}

// rotatedIssuers returns an issuer and its successor: the same name, other key ids.
func rotatedIssuers(t *testing.T) (old, next *identitytest.Issuer) {
	old, next = newIssuer(t), newIssuer(t)
	for alg, k := range next.Keys {
		k.ID += "-v2"
		next.Keys[alg] = k
	}
	next.Name = old.Name
	return old, next
}

// urlAuthenticator trusts is through the JWKS at url, on a settable clock, once its first
// background fetch has loaded the key set.
func urlAuthenticator(t *testing.T, is *identitytest.Issuer, url string, minRefresh time.Duration, clock *atomic.Int64) *Authenticator {
	t.Helper()
	a, err := New(Config{Issuers: []IssuerConfig{{Issuer: is.Name, Audiences: []string{is.Audience}, JWKSURL: url, MinRefreshInterval: minRefresh}}},
		WithClock(func() time.Time { return time.Unix(0, clock.Load()) }))
	if err != nil {
		t.Fatal(err)
	}
	// Polled against a generous deadline: a loaded CI machine may be slow to run the fetch.
	for deadline := time.Now().Add(20 * time.Second); a.Ready() != nil; {
		if time.Now().After(deadline) {
			t.Fatal("key set never loaded")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return a
}
