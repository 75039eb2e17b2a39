package tlsserver_test

import (
	"crypto/tls"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/tlsserver"
	"github.com/consentry/consentry/sidecar/tlsserver/tlstest"
)

// TestClientCARotation: the client CA bundle is re-read when its file changes, as the server
// certificate is. A trust bundle rotated in place (SPIRE, cert-manager) admits clients of the
// new CA without a restart, and no longer admits the old one.
func TestClientCARotation(t *testing.T) {
	server, other := tlstest.New(t), tlstest.New(t)
	caFile := filepath.Join(t.TempDir(), "clients.pem")
	copyFile(t, server.CAFile, caFile)
	tc, err := tlsserver.New(tlsserver.Config{CertFile: server.CertFile, KeyFile: server.KeyFile, ClientCAFile: caFile, ReloadInterval: 10 * time.Millisecond}, "test")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", tc)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.(*tls.Conn).Handshake()
				_, _ = io.WriteString(c, "ok")
			}()
		}
	}()
	handshake := func(cert tls.Certificate) error {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(),
			&tls.Config{RootCAs: server.Pool, Certificates: []tls.Certificate{cert}})
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = io.ReadAll(c) // TLS 1.3: a refused client certificate shows on the first read
		return err
	}
	if err := handshake(server.Client(t, "spiffe://demo.test/a")); err != nil {
		t.Fatalf("client of the configured CA: %v", err)
	}
	if err := handshake(other.Client(t, "spiffe://demo.test/b")); err == nil {
		t.Fatal("client of another CA admitted")
	}
	copyFile(t, other.CAFile, caFile)
	future := time.Now().Add(time.Minute)
	if err := os.Chtimes(caFile, future, future); err != nil {
		t.Fatal(err)
	}
	time.Sleep(30 * time.Millisecond)
	if err := handshake(other.Client(t, "spiffe://demo.test/b")); err != nil {
		t.Fatalf("client of the rotated-in CA: %v", err)
	}
	if err := handshake(server.Client(t, "spiffe://demo.test/a")); err == nil {
		t.Fatal("client of the rotated-out CA still admitted")
	}
	// A file replaced by garbage keeps the last good bundle.
	if err := os.WriteFile(caFile, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	later := future.Add(time.Minute)
	_ = os.Chtimes(caFile, later, later)
	time.Sleep(30 * time.Millisecond)
	if err := handshake(other.Client(t, "spiffe://demo.test/b")); err != nil {
		t.Fatalf("after a bad CA file: %v", err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
