package vaulttest

import (
	"io"
	"net/http/httputil"
	"net/url"
	"sync"
)

// outMu guards every server output buffer: the child writes from two pipes while tests read.
var outMu sync.Mutex

type locked struct{ w io.Writer }

func (l locked) Write(p []byte) (int, error) {
	outMu.Lock()
	defer outMu.Unlock()
	return l.w.Write(p)
}

func lockedWriter(w io.Writer) io.Writer { return locked{w} }

func newReverseProxy(target string) *httputil.ReverseProxy {
	u, err := url.Parse(target)
	if err != nil {
		panic(err)
	}
	return httputil.NewSingleHostReverseProxy(u)
}
