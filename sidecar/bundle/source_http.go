package bundle

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// Long polling follows OPA's bundle protocol: the client sends
// "Prefer: modes=snapshot;wait=N"; a server that supports it holds the request until a
// new bundle exists or N seconds pass (then 304), and marks its responses with this
// Content-Type. Without that mark the client falls back to jittered polling.
const longPollContentType = "application/vnd.openpolicyagent.bundles"

// httpSource polls a bundle server.
type httpSource struct {
	m        *Manager
	client   *http.Client
	token    string
	etag     string
	longPoll bool // the server advertised long-poll support (or we have not asked yet)
	// retryAt is when the bundle behind etag, rejected for activation_timeout, is fetched
	// once more (the manager then compiles it again): If-None-Match would otherwise never
	// let it through again (zero: no retry pending).
	retryAt time.Time
}

func newHTTPSource(m *Manager) *httpSource {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if m.cfg.CAFile != "" {
		if pem, err := os.ReadFile(m.cfg.CAFile); err == nil {
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(pem)
			tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		} else {
			m.log.Error("policy.ca_file unreadable; the bundle server cannot be verified", "error", err)
			tr.TLSClientConfig = &tls.Config{RootCAs: x509.NewCertPool(), MinVersion: tls.VersionTLS12}
		}
	}
	s := &httpSource{m: m, client: &http.Client{Transport: tr}, longPoll: m.cfg.Polling.LongPollTimeout > 0}
	if m.cfg.BearerTokenFile != "" {
		if tok, err := os.ReadFile(m.cfg.BearerTokenFile); err == nil {
			s.token = strings.TrimSpace(string(tok))
		} else {
			m.log.Error("policy.bearer_token_file unreadable", "error", err)
		}
	}
	// Starting on a persisted bundle: ask only for something newer.
	if a := m.Active(); a != nil {
		s.etag = a.ETag
	}
	return s
}

type fetchResult struct {
	notModified bool
	raw         []byte
	etag        string
	longPoll    bool
	tooLarge    bool
}

func (s *httpSource) run(ctx context.Context) error {
	retry := 0
	for {
		if !s.retryAt.IsZero() && !s.m.now().Before(s.retryAt) {
			s.retryAt = time.Time{}
			s.etag = "" // the active bundle's ETag, if it has one: a 304 would hide the retry
			if a := s.m.Active(); a != nil {
				s.etag = a.ETag
			}
		}
		start := time.Now()
		res, err := s.fetch(ctx)
		if ctx.Err() != nil {
			return nil
		}
		var delay time.Duration
		switch {
		case err != nil:
			s.m.fetchFailed(err)
			s.etag = ""
			delay = s.backoff(retry)
			retry++
		default:
			retry = 0
			s.m.fetchOK()
			s.longPoll = res.longPoll && s.m.cfg.Polling.LongPollTimeout > 0
			sent := s.etag
			if !res.notModified {
				if res.tooLarge {
					s.m.rejected(candidate{source: s.m.sourceName()}, reject(ReasonTooLarge, "", fmt.Errorf("bundle exceeds policy.max_size_bytes (%d)", s.m.cfg.MaxSizeBytes)))
				} else {
					err := s.m.activate(ctx, candidate{source: s.m.sourceName(), raw: res.raw, etag: res.etag, persist: true})
					// An already rejected bundle (fetched again after a fetch error dropped the
					// ETag) leaves a pending retry as it was.
					if ar := (*alreadyRejected)(nil); !errors.As(err, &ar) {
						s.retryAt = time.Time{}
						if ReasonOf(err) == ReasonActivationTimeout {
							s.retryAt = s.m.retryAt()
						}
					}
				}
				// Accepted or rejected, remember the ETag: a rejected bundle is not fetched and
				// rejected again until the server has a different one.
				s.etag = res.etag
			} else if res.etag != "" {
				s.etag = res.etag
			}
			quick := time.Since(start) < time.Second
			// Ask again at once only when the server long-polls and can hold the next request:
			// a quick 304, a 200 without an ETag, or the same ETag again means it cannot, and
			// plain jittered polling avoids a tight loop.
			if !s.longPoll || (quick && (res.notModified || res.etag == "" || res.etag == sent)) {
				delay = s.m.pollDelay()
			}
		}
		if delay > 0 {
			t := time.NewTimer(delay)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
		}
	}
}

func (s *httpSource) fetch(ctx context.Context) (*fetchResult, error) {
	timeout := s.m.cfg.Timeout
	wait := s.m.cfg.Polling.LongPollTimeout
	if s.longPoll {
		timeout += wait
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.m.cfg.URL, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", longPollContentType+", application/gzip, application/octet-stream")
	if s.etag != "" {
		req.Header.Set("If-None-Match", s.etag)
	}
	if s.longPoll {
		req.Header.Set("Prefer", fmt.Sprintf("modes=snapshot;wait=%d", int(wait/time.Second)))
	} else {
		req.Header.Set("Prefer", "modes=snapshot")
	}
	if s.token != "" {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // its message repeats the URL as configured
		}
		return nil, fmt.Errorf("GET %s: %w", displayURL(s.m.cfg.URL), err)
	}
	defer resp.Body.Close()
	res := &fetchResult{etag: resp.Header.Get("ETag"), longPoll: resp.Header.Get("Content-Type") == longPollContentType}
	switch resp.StatusCode {
	case http.StatusNotModified:
		res.notModified = true
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return res, nil
	case http.StatusOK:
		raw, err := io.ReadAll(io.LimitReader(resp.Body, s.m.cfg.MaxSizeBytes+1))
		if err != nil {
			return nil, fmt.Errorf("GET %s: reading body: %w", displayURL(s.m.cfg.URL), err)
		}
		if int64(len(raw)) > s.m.cfg.MaxSizeBytes {
			res.tooLarge = true
			return res, nil
		}
		if len(raw) == 0 {
			return nil, errors.New("bundle server returned an empty body")
		}
		res.raw = raw
		return res, nil
	default:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("GET %s: HTTP %d", displayURL(s.m.cfg.URL), resp.StatusCode)
	}
}

// backoff is exponential from min_retry_delay up to max_delay, with +-20% jitter.
func (s *httpSource) backoff(retry int) time.Duration {
	d := s.m.cfg.Polling.MinRetryDelay
	for i := 0; i < retry && d < s.m.cfg.Polling.MaxDelay; i++ {
		d *= 2
	}
	d = min(d, s.m.cfg.Polling.MaxDelay)
	j := float64(d) * (0.8 + 0.4*rand.Float64())
	return time.Duration(j)
}
