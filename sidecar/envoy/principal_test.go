package envoy

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/identity"
)

// envoyPEM encodes a certificate as Envoy's source.certificate does: PEM with newline, space,
// '+', '/' and '=' percent-encoded.
func envoyPEM(der []byte) string {
	return strings.NewReplacer("\n", "%0A", " ", "%20", "+", "%2B", "/", "%2F", "=", "%3D").
		Replace(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
}

func certWithURIs(t *testing.T, uris ...string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "peer"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	for _, u := range uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestPeerPrincipalMatchesTheProxy: the ext_authz door names an mTLS peer as the Fiber proxy
// names its own clients (identity.SPIFFEFromCert), not by Envoy's source.principal, which is
// the first URI SAN of any scheme.
func TestPeerPrincipalMatchesTheProxy(t *testing.T) {
	intruder := "spiffe://demo.test/ns/other/sa/intruder"
	tests := []struct {
		name      string
		uris      []string // the certificate's URI SANs; nil: no certificate sent
		principal string   // Envoy's source.principal
		want      string
		status    int
	}{
		{name: "one SPIFFE id", uris: []string{fx.SpiffeID}, principal: fx.SpiffeID, want: fx.SpiffeID, status: 200},
		{name: "two SPIFFE ids are ambiguous", uris: []string{fx.SpiffeID, intruder}, principal: fx.SpiffeID, want: "", status: 401},
		{name: "an https URI before the SPIFFE id", uris: []string{"https://billing.example", fx.SpiffeID}, principal: "https://billing.example", want: fx.SpiffeID, status: 200},
		{name: "no certificate, a SPIFFE principal", principal: fx.SpiffeID, want: fx.SpiffeID, status: 200},
		{name: "no certificate, a subject principal", principal: "CN=billing", want: "", status: 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := checkRequest("GET", "/api/customers/c-1001", map[string]string{"x-purpose": "essential.service.payment_processing"})
			r.Attributes.Source.Principal = tt.principal
			if tt.uris != nil {
				der := certWithURIs(t, tt.uris...)
				r.Attributes.Source.Certificate = envoyPEM(der)
				cert, _ := x509.ParseCertificate(der)
				if proxy := identity.SPIFFEFromCert(cert); proxy != tt.want {
					t.Fatalf("the proxy names %q, the test expects %q", proxy, tt.want)
				}
			}
			req := RequestFromCheck(r)
			if req.Source.Principal != tt.want {
				t.Fatalf("principal %q, want %q", req.Source.Principal, tt.want)
			}
			req.CanFulfil = []string{"minimize_fields"}
			if out := fx.Pipeline.Check(context.Background(), req); out.Status != tt.status {
				t.Fatalf("status %d, want %d (%v)", out.Status, tt.status, out.Decision.ReasonCodes())
			}
		})
	}
	t.Run("an unreadable certificate names no one", func(t *testing.T) {
		for _, c := range []string{"%ZZ", "not a pem", envoyPEM([]byte("garbage"))} {
			r := checkRequest("GET", "/", nil)
			r.Attributes.Source.Principal = fx.SpiffeID
			r.Attributes.Source.Certificate = c
			if p := RequestFromCheck(r).Source.Principal; p != "" {
				t.Errorf("%q: principal %q", c, p)
			}
		}
	})
}
