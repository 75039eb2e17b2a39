package envoy

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/tlsserver/tlstest"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
)

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
	p := tlstest.New(t)
	tlsAddr := start(t, Config{TLS: TLSConfig{CertFile: p.CertFile, KeyFile: p.KeyFile}})
	mtlsAddr := start(t, Config{TLS: TLSConfig{CertFile: p.CertFile, KeyFile: p.KeyFile, ClientCAFile: p.CAFile, MinVersion: "1.3"}})
	withCA := grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: p.Pool}))
	withClient := grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: p.Pool, Certificates: []tls.Certificate{p.Client(t, "spiffe://demo.test/ns/mesh/sa/envoy")}}))
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
	p := tlstest.New(t)
	addr := start(t, Config{TLS: TLSConfig{CertFile: p.CertFile, KeyFile: p.KeyFile, ReloadInterval: time.Nanosecond}})
	serial := func() int64 {
		t.Helper()
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: p.Pool, NextProtos: []string{"h2"}})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}
	first := serial()
	rotated := p.RotateServer(t)
	if got := serial(); got != rotated || got == first {
		t.Fatalf("rotated certificate not served: serial %d (first %d, rotated %d)", got, first, rotated)
	}
	// A broken rotation keeps the last good certificate.
	must(t, os.WriteFile(p.CertFile, []byte("garbage"), 0o600))
	later := time.Now().Add(time.Hour)
	must(t, os.Chtimes(p.CertFile, later, later))
	if got := serial(); got != rotated {
		t.Fatalf("broken rotation: serial %d", got)
	}
}
