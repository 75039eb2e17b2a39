// Package tlstest makes a throwaway PKI for tests of TLS listeners: a CA, a server
// certificate for 127.0.0.1 written to files (what a listener's tls: block names), and client
// certificates carrying a SPIFFE id, as a service mesh would issue them.
package tlstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// PKI is a CA with a server certificate on disk.
type PKI struct {
	// CAFile, CertFile and KeyFile are PEM files: the CA (a listener's client_ca_file) and the
	// server's certificate and key.
	CAFile, CertFile, KeyFile string
	// Pool trusts the CA (for clients).
	Pool *x509.CertPool

	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	serial atomic.Int64
}

// New creates the CA and the server certificate in a temporary directory.
func New(tb testing.TB) *PKI {
	tb.Helper()
	dir := tb.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	p := &PKI{Pool: x509.NewCertPool(), caKey: key}
	p.serial.Store(1)
	p.ca, _ = x509.ParseCertificate(der)
	p.Pool.AddCert(p.ca)
	p.CAFile = write(tb, dir, "ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	certPEM, keyPEM := p.issue(tb, "consentry", "", true)
	p.CertFile = write(tb, dir, "tls.crt", certPEM)
	p.KeyFile = write(tb, dir, "tls.key", keyPEM)
	return p
}

// RotateServer writes a new server certificate and key over CertFile and KeyFile (with a
// modification time in the future, so a reloader sees the change at once) and returns the new
// certificate's serial number.
func (p *PKI) RotateServer(tb testing.TB) int64 {
	tb.Helper()
	serial := p.serial.Load() + 1
	certPEM, keyPEM := p.issue(tb, "consentry", "", true)
	future := time.Now().Add(time.Minute * time.Duration(serial))
	for path, b := range map[string][]byte{p.CertFile: certPEM, p.KeyFile: keyPEM} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			tb.Fatal(err)
		}
		if err := os.Chtimes(path, future, future); err != nil {
			tb.Fatal(err)
		}
	}
	return serial
}

// Client issues a client certificate with the SPIFFE id as its URI SAN ("" for none).
func (p *PKI) Client(tb testing.TB, spiffeID string) tls.Certificate {
	tb.Helper()
	certPEM, keyPEM := p.issue(tb, "client", spiffeID, false)
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func (p *PKI) issue(tb testing.TB, name, spiffeID string, server bool) (certPEM, keyPEM []byte) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(p.serial.Add(1)), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		if spiffeID != "" {
			u, err := url.Parse(spiffeID)
			if err != nil {
				tb.Fatal(err)
			}
			tmpl.URIs = []*url.URL{u}
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		tb.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func write(tb testing.TB, dir, name string, b []byte) string {
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		tb.Fatal(err)
	}
	return p
}
