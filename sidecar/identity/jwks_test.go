package identity

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/consentry/consentry/sidecar/internal/syncbuf"
)

// unusableKeys are keys identity providers publish beside their signing keys that consentry
// cannot (or must not) verify signatures with.
var unusableKeys = []string{
	`{"kty":"OKP","crv":"X25519","use":"enc","kid":"x25519-enc","x":"hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo"}`,
	`{"kty":"EC","crv":"secp256k1","kid":"k1","x":"gZbYd3sxzR9sY1s9O5Kp2e0Z1u9xF1QmVQp0kJtYq1E","y":"5n3Q9Zy0bq8Wb2f2E3Hk3r8wQm3j9tq2Hh8q2x2y9aI"}`,
	`{"kty":"XYZ","kid":"future"}`,
	`{"kty":"oct","kid":"hmac","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQ"}`,
}

// jwksWith is is's key set with extra raw keys before its own.
func jwksWith(t *testing.T, keys jose.JSONWebKeySet, extra ...string) []byte {
	t.Helper()
	var doc struct{ Keys []json.RawMessage }
	for _, e := range extra {
		doc.Keys = append(doc.Keys, json.RawMessage(e))
	}
	for _, k := range keys.Keys {
		raw, err := k.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		doc.Keys = append(doc.Keys, raw)
	}
	raw, err := json.Marshal(map[string]any{"keys": doc.Keys})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestJWKSSkipsUnusableKeys: one key consentry cannot use (an X25519 encryption key, a
// secp256k1 key, a kty it does not know, a symmetric key) must not make the whole key set
// unreadable: New would fail on a file, and a URL set would never refresh. They are skipped
// and logged once; only a set without any usable signing key is an error.
func TestJWKSSkipsUnusableKeys(t *testing.T) {
	is := newIssuer(t)
	tok := bearer(sign(t, is, jose.ES256, is.Claims("e")))
	for i, bad := range unusableKeys {
		p := filepath.Join(t.TempDir(), "jwks.json")
		if err := os.WriteFile(p, jwksWith(t, is.JWKS(), bad), 0o600); err != nil {
			t.Fatal(err)
		}
		a, err := New(Config{Issuers: []IssuerConfig{{Issuer: is.Name, Audiences: []string{is.Audience}, JWKSFile: p}}})
		if err != nil {
			t.Fatalf("key %d: %v", i, err)
		}
		if _, err := a.Authenticate(context.Background(), tok); err != nil {
			t.Fatalf("key %d: %v", i, err)
		}
		if keys := a.issuers[is.Name].keys.keys.Load().Keys; len(keys) != 3 {
			t.Fatalf("key %d: %d keys kept", i, len(keys))
		}
	}

	// Over a URL: every refresh still loads, and the skipped keys are logged once.
	var log syncbuf.Buffer
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write(jwksWith(t, is.JWKS(), unusableKeys...))
	}))
	defer srv.Close()
	a, err := New(Config{Issuers: []IssuerConfig{{Issuer: is.Name, Audiences: []string{is.Audience}, JWKSURL: srv.URL, MinRefreshInterval: time.Millisecond}}},
		WithLogger(slog.New(slog.NewTextHandler(&log, nil))))
	if err != nil {
		t.Fatal(err)
	}
	ks := a.issuers[is.Name].keys
	for i := 0; i < 3; i++ {
		time.Sleep(5 * time.Millisecond)
		if err := ks.refresh(context.Background(), false); err != nil && !errors.Is(err, errRateLimited) {
			t.Fatalf("refresh %d: %v", i, err)
		}
	}
	if _, err := a.Authenticate(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(log.String(), "JWKS keys skipped"); n != 1 || !strings.Contains(log.String(), "count=4") {
		t.Fatalf("logged %d times:\n%s", n, log.String())
	}

	// Nothing usable at all is still an error.
	if _, _, err := parseKeySet([]byte(`{"keys":[` + strings.Join(unusableKeys, ",") + `]}`)); err == nil || !strings.Contains(err.Error(), "no usable signing key") {
		t.Fatalf("a set of unusable keys: %v", err)
	}
}

// TestJWKSURLTransport: a key set decides who may call, so its URL is https unless it stays
// on this machine or an operator opts in; a private CA can be configured; a redirect may not
// move the key set to another host or down to http.
func TestJWKSURLTransport(t *testing.T) {
	iss := func(mod func(*IssuerConfig)) Config {
		ic := IssuerConfig{Issuer: "x", Audiences: []string{"a"}}
		mod(&ic)
		return Config{Issuers: []IssuerConfig{ic}}
	}
	for name, c := range map[string]struct {
		cfg Config
		ok  bool
	}{
		"https":                         {iss(func(ic *IssuerConfig) { ic.JWKSURL = "https://idp.example/jwks" }), true},
		"http to another host":          {iss(func(ic *IssuerConfig) { ic.JWKSURL = "http://idp.example/jwks" }), false},
		"http to 127.0.0.1":             {iss(func(ic *IssuerConfig) { ic.JWKSURL = "http://127.0.0.1:8080/jwks" }), true},
		"http to localhost":             {iss(func(ic *IssuerConfig) { ic.JWKSURL = "http://localhost/jwks" }), true},
		"http to ::1":                   {iss(func(ic *IssuerConfig) { ic.JWKSURL = "http://[::1]:8080/jwks" }), true},
		"http with the opt-in":          {iss(func(ic *IssuerConfig) { ic.JWKSURL, ic.JWKSInsecureHTTP = "http://idp.example/jwks", true }), true},
		"a CA file with http":           {iss(func(ic *IssuerConfig) { ic.JWKSURL, ic.JWKSCAFile = "http://127.0.0.1/jwks", "ca.pem" }), false},
		"a CA file with a jwks file":    {iss(func(ic *IssuerConfig) { ic.JWKSFile, ic.JWKSCAFile = "jwks.json", "ca.pem" }), false},
		"the opt-in with a jwks file":   {iss(func(ic *IssuerConfig) { ic.JWKSFile, ic.JWKSInsecureHTTP = "jwks.json", true }), false},
		"localhost lookalike over http": {iss(func(ic *IssuerConfig) { ic.JWKSURL = "http://localhost.evil.example/jwks" }), false},
	} {
		if err := c.cfg.WithDefaults().Validate(); (err == nil) != c.ok {
			t.Errorf("%s: %v", name, err)
		}
	}

	is := newIssuer(t)
	tok := bearer(sign(t, is, jose.ES256, is.Claims("e")))
	jwks := jwksWith(t, is.JWKS())
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/moved" {
			http.Redirect(w, r, "/jwks", http.StatusFound) // same host: followed
			return
		}
		_, _ = w.Write(jwks)
	}))
	defer plain.Close()
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/downgrade":
			http.Redirect(w, r, plain.URL+"/jwks", http.StatusFound)
		case "/elsewhere":
			http.Redirect(w, r, strings.Replace(plain.URL, "127.0.0.1", "localhost", 1)+"/jwks", http.StatusFound)
		default:
			_, _ = w.Write(jwks)
		}
	}))
	defer tlsSrv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tlsSrv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	authn := func(t *testing.T, url, caFile string) error {
		t.Helper()
		a, err := New(Config{Issuers: []IssuerConfig{{Issuer: is.Name, Audiences: []string{is.Audience}, JWKSURL: url, JWKSCAFile: caFile}}}, WithoutPrefetch())
		if err != nil {
			t.Fatal(err)
		}
		_, err = a.Authenticate(context.Background(), tok)
		return err
	}
	for name, c := range map[string]struct {
		url, ca string
		ok      bool
	}{
		"private CA configured":       {tlsSrv.URL + "/jwks", ca, true},
		"private CA not configured":   {tlsSrv.URL + "/jwks", "", false},
		"redirect on the same host":   {plain.URL + "/moved", "", true},
		"redirect from https to http": {tlsSrv.URL + "/downgrade", ca, false},
		"redirect to another host":    {tlsSrv.URL + "/elsewhere", ca, false},
	} {
		t.Run(name, func(t *testing.T) {
			err := authn(t, c.url, c.ca)
			var ie *Error
			if c.ok && err != nil || !c.ok && (!errors.As(err, &ie) || ie.Code != ReasonKeySetUnavailable) {
				t.Fatalf("%v", err)
			}
		})
	}
	if _, err := New(Config{Issuers: []IssuerConfig{{Issuer: is.Name, Audiences: []string{is.Audience}, JWKSURL: tlsSrv.URL, JWKSCAFile: filepath.Join(t.TempDir(), "missing.pem")}}}); err == nil || !strings.Contains(err.Error(), "jwks_ca_file") {
		t.Fatalf("missing CA file: %v", err)
	}
}

// TestProcessorNeedsProcessorID: a processor subject is restricted by its agreement, looked up
// by its processor id; one without an id is refused, whether a token or the configuration
// makes it.
func TestProcessorNeedsProcessorID(t *testing.T) {
	is := newIssuer(t)
	a := fileAuth(t, is, nil)
	c := is.Claims("proc-1")
	c["subject_type"] = "processor"
	_, err := a.Authenticate(context.Background(), bearer(sign(t, is, jose.ES256, c)))
	var ie *Error
	if !errors.As(err, &ie) || ie.Code != ReasonClaims || ie.Status != http.StatusUnauthorized {
		t.Fatalf("processor token without processor_id: %v", err)
	}
	c["processor_id"] = "acme"
	if s, err := a.Authenticate(context.Background(), bearer(sign(t, is, jose.ES256, c))); err != nil || s.ProcessorID != "acme" {
		t.Fatalf("processor token with processor_id: %+v %v", s, err)
	}
	cfg := Config{Services: []ServiceConfig{{SPIFFEID: "spiffe://demo/ns/acme/sa/sync", ID: "acme-sync", Type: "processor"}}}
	if err := cfg.WithDefaults().Validate(); err == nil || !strings.Contains(err.Error(), "processor_id") {
		t.Fatalf("processor service without processor_id: %v", err)
	}
	cfg.Services[0].ProcessorID = "acme"
	if err := cfg.WithDefaults().Validate(); err != nil {
		t.Fatal(err)
	}
}
