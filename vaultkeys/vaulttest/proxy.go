package vaulttest

import (
	"fmt"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

// FaultProxy is a reverse proxy in front of a real Vault that can be made slow or failing,
// for fault tests of clients. It listens on a free loopback port.
type FaultProxy struct {
	// Addr is the proxy URL to give the client instead of Server.Addr.
	Addr string

	mu     sync.Mutex
	delay  time.Duration
	status int
	srv    *http.Server
}

// StartFaultProxy proxies to target until the test ends.
func StartFaultProxy(tb testing.TB, target string) *FaultProxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("vaulttest: proxy listen: %v", err)
	}
	p := &FaultProxy{Addr: "http://" + ln.Addr().String()}
	rp := newReverseProxy(target)
	p.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		delay, status := p.delay, p.status
		p.mu.Unlock()
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return
			}
		}
		if status != 0 {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			fmt.Fprintf(w, `{"errors":["injected fault %d"]}`, status)
			return
		}
		rp.ServeHTTP(w, r)
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = p.srv.Serve(ln) }()
	tb.Cleanup(func() { _ = p.srv.Close() })
	return p
}

// SetDelay delays every request by d (0: no delay).
func (p *FaultProxy) SetDelay(d time.Duration) { p.mu.Lock(); p.delay = d; p.mu.Unlock() }

// SetStatus answers every request with status (0: pass through).
func (p *FaultProxy) SetStatus(status int) { p.mu.Lock(); p.status = status; p.mu.Unlock() }
