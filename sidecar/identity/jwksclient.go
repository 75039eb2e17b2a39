package identity

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"
)

// maxJWKSRedirects bounds the redirects a JWKS fetch follows.
const maxJWKSRedirects = 5

// jwksClient is the HTTP client of one issuer's jwks_url: the issuer's CA bundle (when set)
// instead of the system roots, and the redirect rule of checkJWKSRedirect.
func jwksClient(ic IssuerConfig) (*http.Client, error) {
	tr := &http.Transport{Proxy: http.ProxyFromEnvironment}
	if dt, ok := http.DefaultTransport.(*http.Transport); ok {
		tr = dt.Clone()
	}
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	if ic.JWKSCAFile != "" {
		pem, err := os.ReadFile(ic.JWKSCAFile)
		if err != nil {
			return nil, fmt.Errorf("jwks_ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("jwks_ca_file: %s holds no PEM certificate", ic.JWKSCAFile)
		}
		tr.TLSClientConfig.RootCAs = pool
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: tr, CheckRedirect: checkJWKSRedirect}, nil
}

// checkJWKSRedirect refuses a redirect to another host or from https to http: the key set
// decides who may call, and a redirect must not move its source to where the configuration
// did not put it (an open redirect on the identity provider, a downgrade anyone on the path
// could answer).
func checkJWKSRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= maxJWKSRedirects {
		return fmt.Errorf("jwks: more than %d redirects", maxJWKSRedirects)
	}
	first := via[0].URL
	if !strings.EqualFold(req.URL.Hostname(), first.Hostname()) {
		return fmt.Errorf("jwks: redirect from %s to another host (%s) refused", first.Hostname(), req.URL.Hostname())
	}
	if first.Scheme == "https" && req.URL.Scheme != "https" {
		return errors.New("jwks: redirect from https to plain http refused")
	}
	return nil
}

// loopbackHost reports whether host (no port, no brackets) is this machine: plain http to it
// crosses no network.
func loopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}
