package envoy

import (
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"time"
)

// certReloader serves the listener's certificate and re-reads the files when they change
// (cert-manager and SPIRE rotate certificates in place), checking at most once per interval.
// A failed reload keeps the previous certificate: rotation must never take the door down.
type certReloader struct {
	certFile, keyFile string
	interval          time.Duration

	mu      sync.Mutex
	cert    *tls.Certificate
	modTime time.Time
	checked time.Time
}

func newCertReloader(certFile, keyFile string, interval time.Duration) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, interval: interval}
	if err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *certReloader) load() error {
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("envoy.tls.cert_file/key_file: %w", err)
	}
	r.cert = &cert
	r.modTime = latestModTime(r.certFile, r.keyFile)
	return nil
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

// get is tls.Config.GetCertificate.
func (r *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if now.Sub(r.checked) >= r.interval {
		r.checked = now
		if m := latestModTime(r.certFile, r.keyFile); m.After(r.modTime) {
			old := r.cert
			if err := r.load(); err != nil {
				r.cert = old
			}
		}
	}
	return r.cert, nil
}
