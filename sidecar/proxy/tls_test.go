package proxy_test

import (
	"crypto/tls"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/proxy"
	"github.com/consentry/consentry/sidecar/tlsserver"
	"github.com/consentry/consentry/sidecar/tlsserver/tlstest"
)

// TestMutualTLSNamesTheService: on an mTLS proxy listener, a caller without a bearer token is
// the service its verified client certificate names (SPIFFE id -> identity.services); an
// unknown SPIFFE id is 401, and a caller without a certificate does not get past the handshake.
func TestMutualTLSNamesTheService(t *testing.T) {
	f := newFixture(t)
	up := echo(t)
	pki := tlstest.New(t)
	addr := startProxy(t, proxy.Config{Upstream: up.URL, TLS: tlsserver.Config{CertFile: pki.CertFile, KeyFile: pki.KeyFile, ClientCAFile: pki.CAFile}}, f.fx.Pipeline, f.tr)
	url := strings.Replace(addr, "http://", "https://", 1) + "/api/customers/c-1001"
	client := func(certs ...tls.Certificate) *http.Client {
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.Pool, Certificates: certs}}}
	}
	get := func(c *http.Client) (int, string, error) {
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("X-Purpose", "essential.service.payment_processing")
		resp, err := c.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}

	status, body, err := get(client(pki.Client(t, f.fx.SpiffeID)))
	if err != nil {
		t.Fatal(err)
	}
	if status == 401 {
		t.Fatalf("configured service identity rejected: %s", body)
	}
	entries := f.capture.Entries()
	if len(entries) == 0 {
		t.Fatal("no decision logged")
	}
	if e := entries[len(entries)-1]; e.Input == nil || e.Input.Subject.ID != "billing-batch" || e.Input.Request.Source.Principal != f.fx.SpiffeID {
		t.Fatalf("decision not made for the certificate's service: %+v", e)
	}

	status, body, err = get(client(pki.Client(t, "spiffe://demo.test/ns/other/sa/intruder")))
	if err != nil {
		t.Fatal(err)
	}
	if status != 401 || !strings.Contains(body, "identity.principal_unknown") {
		t.Fatalf("unknown SPIFFE id: want 401 identity.principal_unknown, got %d %s", status, body)
	}

	if _, _, err := get(client()); err == nil {
		t.Fatal("a client without a certificate must fail the mTLS handshake")
	}
}

func TestTLSConfigValidation(t *testing.T) {
	for _, c := range []proxy.Config{
		{Listen: "127.0.0.1:0", Upstream: "http://crm", TLS: tlsserver.Config{CertFile: "a"}},
		{Listen: "127.0.0.1:0", Upstream: "http://crm", TLS: tlsserver.Config{ClientCAFile: "ca"}},
		{Listen: "127.0.0.1:0", Upstream: "http://crm", TLS: tlsserver.Config{CertFile: "a", KeyFile: "b", MinVersion: "1.1"}},
	} {
		if err := c.WithDefaults().Validate(); err == nil || !strings.HasPrefix(err.Error(), "proxy.tls") {
			t.Errorf("%+v: want a proxy.tls error, got %v", c.TLS, err)
		}
	}
}
