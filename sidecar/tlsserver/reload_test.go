package tlsserver_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/tlsserver"
	"github.com/consentry/consentry/sidecar/tlsserver/tlstest"
)

// reloadInterval is the tests' tls.reload_interval; settle waits past it so the next
// handshake checks the files.
const reloadInterval = 10 * time.Millisecond

func settle() { time.Sleep(3 * reloadInterval) }

// TestReloadFilesRotatedInWithOlderMtime: rotation tools that rename a file prepared earlier
// (mv, cp -p, rsync -t, install -p, tar) keep its older modification time. The new client CA
// bundle and the new server certificate must still be picked up, and the rotated-out CA must
// stop being trusted, without a restart. The certificate and its key are renamed one at a
// time: in between, the pair does not match and the previous certificate stays served.
func TestReloadFilesRotatedInWithOlderMtime(t *testing.T) {
	past := time.Now().Add(-time.Hour)
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, server, other *tlstest.PKI, dir string)
	}{
		{"client CA", func(t *testing.T, server, other *tlstest.PKI, dir string) {
			caFile := filepath.Join(dir, "clients.pem")
			copyFile(t, server.CAFile, caFile)
			next := staged(t, other.CAFile, filepath.Join(dir, "clients.pem.new"), past)
			addr := listen(t, tlsserver.Config{CertFile: server.CertFile, KeyFile: server.KeyFile, ClientCAFile: caFile, ReloadInterval: reloadInterval})
			if _, err := handshake(addr, server.Pool, server.Client(t, "spiffe://demo.test/a")); err != nil {
				t.Fatalf("client of the configured CA: %v", err)
			}
			if err := os.Rename(next, caFile); err != nil {
				t.Fatal(err)
			}
			settle()
			if _, err := handshake(addr, server.Pool, other.Client(t, "spiffe://demo.test/b")); err != nil {
				t.Errorf("client of the rotated-in CA refused: %v", err)
			}
			if _, err := handshake(addr, server.Pool, server.Client(t, "spiffe://demo.test/a")); err == nil {
				t.Error("client of the rotated-out CA still admitted")
			}
		}},
		{"server certificate", func(t *testing.T, server, other *tlstest.PKI, dir string) {
			certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
			copyFile(t, server.CertFile, certFile)
			copyFile(t, server.KeyFile, keyFile)
			nextCert := staged(t, other.CertFile, certFile+".new", past)
			nextKey := staged(t, other.KeyFile, keyFile+".new", past)
			addr := listen(t, tlsserver.Config{CertFile: certFile, KeyFile: keyFile, ReloadInterval: reloadInterval})
			roots := x509.NewCertPool()
			for _, f := range []string{server.CAFile, other.CAFile} {
				roots.AppendCertsFromPEM(readFile(t, f))
			}
			served := func() []byte {
				t.Helper()
				leaf, err := handshake(addr, roots, tls.Certificate{})
				if err != nil {
					t.Fatalf("handshake: %v", err)
				}
				return leaf.Raw
			}
			oldDER, newDER := firstDER(t, server.CertFile), firstDER(t, other.CertFile)
			if string(served()) != string(oldDER) {
				t.Fatal("not serving the configured certificate")
			}
			if err := os.Rename(nextCert, certFile); err != nil {
				t.Fatal(err)
			}
			settle()
			if string(served()) != string(oldDER) {
				t.Error("certificate without its key: the previous pair must stay served")
			}
			if err := os.Rename(nextKey, keyFile); err != nil {
				t.Fatal(err)
			}
			settle()
			if string(served()) != string(newDER) {
				t.Error("rotated-in certificate (older mtime) not served")
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, tlstest.New(t), tlstest.New(t), t.TempDir()) })
	}
}

// TestClientCABundleRewrittenWithinOneMtimeTick: a bundle rewritten in place in stages whose
// writes all land within one modification-time tick (coarse file system clocks, a fast
// writer). A stage that does not parse keeps the previous bundle; one that parses but is cut
// short (the first of two CAs) is served; the complete bundle then replaces it.
func TestClientCABundleRewrittenWithinOneMtimeTick(t *testing.T) {
	server, ca2, ca3 := tlstest.New(t), tlstest.New(t), tlstest.New(t)
	caFile := filepath.Join(t.TempDir(), "clients.pem")
	copyFile(t, server.CAFile, caFile)
	st, err := os.Stat(caFile)
	if err != nil {
		t.Fatal(err)
	}
	tick := st.ModTime()
	addr := listen(t, tlsserver.Config{CertFile: server.CertFile, KeyFile: server.KeyFile, ClientCAFile: caFile, ReloadInterval: reloadInterval})
	pem2, pem3 := readFile(t, ca2.CAFile), readFile(t, ca3.CAFile)
	full := append(append([]byte(nil), pem2...), pem3...)

	admits := func(p *tlstest.PKI) bool {
		_, err := handshake(addr, server.Pool, p.Client(t, "spiffe://demo.test/x"))
		return err == nil
	}
	for _, stage := range []struct {
		name                string
		content             []byte
		want1, want2, want3 bool // which CAs' clients are admitted afterwards
	}{
		{"initial", readFile(t, server.CAFile), true, false, false},
		{"half of the first CA (does not parse)", pem2[:len(pem2)/2], true, false, false},
		{"first CA complete, second missing", pem2, false, true, false},
		{"second CA half written", full[:len(pem2)+len(pem3)/2], false, true, false},
		{"complete bundle", full, false, true, true},
	} {
		if err := os.WriteFile(caFile, stage.content, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(caFile, tick, tick); err != nil { // the same mtime throughout
			t.Fatal(err)
		}
		settle()
		for i, c := range []struct {
			p    *tlstest.PKI
			want bool
		}{{server, stage.want1}, {ca2, stage.want2}, {ca3, stage.want3}} {
			if got := admits(c.p); got != c.want {
				t.Errorf("%s: client of CA %d admitted = %v, want %v", stage.name, i+1, got, c.want)
			}
		}
	}
}

// listen serves cfg on a loopback port; every connection gets "ok" after its handshake.
func listen(t *testing.T, cfg tlsserver.Config) string {
	t.Helper()
	tc, err := tlsserver.New(cfg, "test")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", tc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
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
	return ln.Addr().String()
}

// handshake connects with the client certificate (none when empty) and returns the server's
// leaf certificate; a refused client certificate is an error (under TLS 1.3 it shows on the
// first read).
func handshake(addr string, roots *x509.CertPool, cert tls.Certificate) (*x509.Certificate, error) {
	cfg := &tls.Config{RootCAs: roots}
	if cert.Certificate != nil {
		cfg.Certificates = []tls.Certificate{cert}
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if _, err := io.ReadAll(c); err != nil {
		return nil, err
	}
	return c.ConnectionState().PeerCertificates[0], nil
}

// staged copies from to a file with modification time at, as a file prepared earlier.
func staged(t *testing.T, from, to string, at time.Time) string {
	t.Helper()
	copyFile(t, from, to)
	if err := os.Chtimes(to, at, at); err != nil {
		t.Fatal(err)
	}
	return to
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func firstDER(t *testing.T, path string) []byte {
	t.Helper()
	b, _ := pem.Decode(readFile(t, path))
	if b == nil {
		t.Fatalf("%s: no PEM block", path)
	}
	return b.Bytes
}
