package tlsserver

import (
	"crypto/tls"
	"crypto/x509"
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
	certs, err := newReloader(c.ReloadInterval, func() (*tls.Certificate, error) {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
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
		cas, err := newReloader(c.ReloadInterval, func() (*x509.CertPool, error) {
			pem, err := os.ReadFile(c.ClientCAFile)
			if err != nil {
				return nil, fmt.Errorf("%s.client_ca_file: %w", prefix, err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
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
// and loads it again when one of them changes, checking at most once per interval. A failed
// reload (a file being replaced, half written) keeps the previous value: rotation must never
// take the door down.
type reloader[T any] struct {
	files    []string
	interval time.Duration
	load     func() (T, error)

	mu      sync.Mutex
	value   T
	modTime time.Time
	checked time.Time
}

func newReloader[T any](interval time.Duration, load func() (T, error), files ...string) (*reloader[T], error) {
	r := &reloader[T]{files: files, interval: interval, load: load}
	v, err := load()
	if err != nil {
		return nil, err
	}
	r.value, r.modTime = v, latestModTime(files...)
	return r, nil
}

// get returns the current value, reloading it first when a file changed.
func (r *reloader[T]) get() T {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if now.Sub(r.checked) >= r.interval {
		r.checked = now
		if m := latestModTime(r.files...); m.After(r.modTime) {
			if v, err := r.load(); err == nil {
				r.value, r.modTime = v, m
			}
		}
	}
	return r.value
}

func latestModTime(paths ...string) time.Time {
	var t time.Time
	for _, p := range paths {
		if st, err := os.Stat(p); err == nil && st.ModTime().After(t) {
			t = st.ModTime()
		}
	}
	return t
}
