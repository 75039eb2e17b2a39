package tlsserver

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"os"
	"sync"
	"time"
)

// New builds a listener's tls.Config: TLS 1.2+ (or 1.3), the certificate re-read when its
// files change, and with a client CA file, client certificates required and verified (mTLS).
// prefix names the config block in errors; protos is the ALPN list (h2 for gRPC, http/1.1
// for the proxy).
func New(c Config, prefix string, protos ...string) (*tls.Config, error) {
	c = c.WithDefaults()
	certs, err := newReloader(c.ReloadInterval, prefix+".cert_file/key_file", func(b [][]byte) (*tls.Certificate, error) {
		cert, err := tls.X509KeyPair(b[0], b[1])
		if err != nil {
			return nil, fmt.Errorf("%s.cert_file/key_file: %w", prefix, err)
		}
		return &cert, nil
	}, c.CertFile, c.KeyFile)
	if err != nil {
		return nil, err
	}
	tc := &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return certs.get(), nil },
		MinVersion: tls.VersionTLS12, NextProtos: protos}
	if c.MinVersion == "1.3" {
		tc.MinVersion = tls.VersionTLS13
	}
	if c.ClientCAFile != "" {
		cas, err := newReloader(c.ReloadInterval, prefix+".client_ca_file", func(b [][]byte) (*x509.CertPool, error) {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(b[0]) {
				return nil, fmt.Errorf("%s.client_ca_file: %s holds no PEM certificate", prefix, c.ClientCAFile)
			}
			return pool, nil
		}, c.ClientCAFile)
		if err != nil {
			return nil, err
		}
		tc.ClientCAs = cas.get()
		tc.ClientAuth = tls.RequireAndVerifyClientCert
		// Each handshake verifies against the CA bundle as it is now: SPIRE or cert-manager
		// rotate trust bundles in place, and clients with certificates from a new CA must
		// not be refused until a restart.
		base := tc.Clone()
		tc.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
			pool := cas.get()
			if pool == base.ClientCAs {
				return nil, nil // unchanged: the listener's own config
			}
			cfg := base.Clone()
			cfg.ClientCAs = pool
			return cfg, nil
		}
	}
	return tc, nil
}

// reloader serves what load makes of files (the certificate and key, the client CA bundle)
// and loads it again when their content changes, checking at most once per interval.
//
// A check compares the files' content (a SHA-256 over all of them), not their modification
// times: a bundle rotated in by mv, cp -p, rsync -t, install -p or tar keeps its source's
// older mtime, and a rewrite can land within one mtime tick; either would leave a rotated-out
// (perhaps compromised) CA trusted until a restart. Reading a few kilobytes once per interval
// (default 30s) costs nothing next to a handshake.
//
// A failed reload (a file being replaced, half written, a certificate without its new key yet)
// keeps the previous value and is retried at the next check, since the stored digest stays
// that of the last good content: rotation must never take the door down. Content that loads
// but is incomplete (a CA bundle cut after its first certificate) is served until the file
// is complete, and then replaced because the content changed again. load parses the very
// bytes that were hashed, so what is served always matches the digest.
type reloader[T any] struct {
	files    []string
	interval time.Duration
	load     func(contents [][]byte) (T, error)

	mu      sync.Mutex
	value   T
	sum     [sha256.Size]byte
	checked time.Time
}

func newReloader[T any](interval time.Duration, what string, load func([][]byte) (T, error), files ...string) (*reloader[T], error) {
	r := &reloader[T]{files: files, interval: interval, load: load}
	contents, sum, err := readFiles(files)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	v, err := load(contents)
	if err != nil {
		return nil, err
	}
	r.value, r.sum, r.checked = v, sum, time.Now()
	return r, nil
}

// get returns the current value, reloading it first when a file's content changed.
func (r *reloader[T]) get() T {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if now.Sub(r.checked) < r.interval {
		return r.value
	}
	r.checked = now
	contents, sum, err := readFiles(r.files)
	if err != nil || sum == r.sum {
		return r.value // unchanged, or unreadable while being replaced: keep the last good value
	}
	if v, err := r.load(contents); err == nil {
		r.value, r.sum = v, sum
	}
	return r.value
}

// readFiles returns the files' contents and a digest of all of them (each length-prefixed,
// so moving bytes from one file to the next changes it).
func readFiles(paths []string) ([][]byte, [sha256.Size]byte, error) {
	h := sha256.New()
	contents := make([][]byte, len(paths))
	for i, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, [sha256.Size]byte{}, err
		}
		contents[i] = b
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return contents, sum, nil
}
