package envoy

import (
	"context"
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
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
)

// pki is a throwaway CA with a server and a client certificate.
type pki struct {
	dir                  string
	caPool               *x509.CertPool
	serverCert, client   tls.Certificate
	caFile, certFile, kf string
	issue                func(name string, serial int64, server bool) (tls.Certificate, []byte, []byte)
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test ca"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	p := &pki{dir: dir, caPool: x509.NewCertPool()}
	p.caPool.AddCert(ca)
	issue := func(name string, serial int64, server bool) (tls.Certificate, []byte, []byte) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature}
		if server {
			tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
			tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		} else {
			tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
			u, _ := url.Parse("spiffe://demo.test/ns/mesh/sa/envoy")
			tmpl.URIs = []*url.URL{u}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, _ := x509.MarshalECPrivateKey(key)
		certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
		c, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return c, certPEM, keyPEM
	}
	p.issue = issue
	var certPEM, keyPEM []byte
	p.serverCert, certPEM, keyPEM = issue("consentry", 2, true)
	p.client, _, _ = issue("envoy", 3, false)
	p.caFile, p.certFile, p.kf = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	must(t, os.WriteFile(p.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600))
	must(t, os.WriteFile(p.certFile, certPEM, 0o600))
	must(t, os.WriteFile(p.kf, keyPEM, 0o600))
	return p
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func start(t *testing.T, cfg Config) string {
	t.Helper()
	s, err := New(cfg, fx.Pipeline, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ServeListener(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return ln.Addr().String()
}

func tryCheck(addr string, opt grpc.DialOption) error {
	cc, err := grpc.NewClient(addr, opt)
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, err = authv3.NewAuthorizationClient(cc).Check(ctx, checkRequest("GET", "/api/customers", nil))
	return err
}

func TestTLSAndMTLS(t *testing.T) {
	p := newPKI(t)
	tlsAddr := start(t, Config{TLS: TLSConfig{CertFile: p.certFile, KeyFile: p.kf}})
	mtlsAddr := start(t, Config{TLS: TLSConfig{CertFile: p.certFile, KeyFile: p.kf, ClientCAFile: p.caFile, MinVersion: "1.3"}})
	withCA := grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: p.caPool}))
	withClient := grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: p.caPool, Certificates: []tls.Certificate{p.client}}))
	plain := grpc.WithTransportCredentials(insecure.NewCredentials())
	untrusted := grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{}))

	if err := tryCheck(tlsAddr, withCA); err != nil {
		t.Fatalf("TLS: %v", err)
	}
	if err := tryCheck(tlsAddr, plain); err == nil {
		t.Fatal("plaintext client accepted by a TLS listener")
	}
	if err := tryCheck(tlsAddr, untrusted); err == nil {
		t.Fatal("client trusted an unknown CA")
	}
	if err := tryCheck(mtlsAddr, withClient); err != nil {
		t.Fatalf("mTLS with a client certificate: %v", err)
	}
	if err := tryCheck(mtlsAddr, withCA); err == nil {
		t.Fatal("mTLS listener accepted a client without a certificate")
	}
}

func TestHealthAndReflection(t *testing.T) {
	plain := grpc.WithTransportCredentials(insecure.NewCredentials())
	for _, refl := range []bool{false, true} {
		addr := start(t, Config{Reflection: refl})
		cc, err := grpc.NewClient(addr, plain)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		hr, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: authv3.Authorization_ServiceDesc.ServiceName})
		if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health: %v %v", hr, err)
		}
		stream, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
		if err == nil {
			err = stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
		}
		if err == nil {
			_, err = stream.Recv()
		}
		if refl && err != nil {
			t.Fatalf("reflection on: %v", err)
		}
		if !refl && err == nil {
			t.Fatal("reflection answered while switched off")
		}
		cancel()
		cc.Close()
	}
}

func TestConfigValidate(t *testing.T) {
	bad := []Config{
		{Listen: "nope"},
		{TLS: TLSConfig{CertFile: "a"}},
		{TLS: TLSConfig{ClientCAFile: "ca"}},
		{TLS: TLSConfig{CertFile: "a", KeyFile: "b", MinVersion: "1.0"}},
	}
	for i, c := range bad {
		if err := c.WithDefaults().Validate(); err == nil {
			t.Errorf("config %d accepted", i)
		}
	}
	if _, err := New(Config{TLS: TLSConfig{CertFile: "/nonexistent", KeyFile: "/nonexistent"}}, fx.Pipeline, nil); err == nil {
		t.Error("missing certificate accepted")
	}
}

func TestCertificateRotation(t *testing.T) {
	p := newPKI(t)
	addr := start(t, Config{TLS: TLSConfig{CertFile: p.certFile, KeyFile: p.kf, ReloadInterval: time.Nanosecond}})
	serial := func() int64 {
		t.Helper()
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: p.caPool, NextProtos: []string{"h2"}})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}
	if got := serial(); got != 2 {
		t.Fatalf("serial %d, want 2", got)
	}
	_, certPEM, keyPEM := p.issue("consentry", 7, true)
	must(t, os.WriteFile(p.certFile, certPEM, 0o600))
	must(t, os.WriteFile(p.kf, keyPEM, 0o600))
	future := time.Now().Add(time.Minute)
	must(t, os.Chtimes(p.certFile, future, future))
	must(t, os.Chtimes(p.kf, future, future))
	if got := serial(); got != 7 {
		t.Fatalf("rotated certificate not served: serial %d", got)
	}
	// A broken rotation keeps the last good certificate.
	must(t, os.WriteFile(p.certFile, []byte("garbage"), 0o600))
	later := future.Add(time.Minute)
	must(t, os.Chtimes(p.certFile, later, later))
	if got := serial(); got != 7 {
		t.Fatalf("broken rotation: serial %d", got)
	}
}
