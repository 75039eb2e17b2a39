package pipeline

import (
	"encoding/json"
	"strings"
	"sync"
	"time"

	"github.com/consentry/consentry/sidecar/decision"
	"github.com/consentry/consentry/sidecar/input"
)

// CacheConfig is the `pipeline.decision_cache:` section.
//
// The cache reuses a decision for a request whose whole input document is identical - same
// subject and claims, purpose, case, route, parameters, fields, headers, query, enrichment
// (consents, case, agreement, customer state) and policy revision - except for what differs on
// every request: the request id, the decision time, the source port and the headers listed in
// VolatileHeaders. Anything a policy can decide on is therefore part of the key: a withdrawn
// consent, a new token, a new policy revision or a changed header is a different key, not a
// stale hit. Time is handled explicitly: an entry never outlives TTL nor the first timestamp in
// its enrichment still in the future (a consent expiry, a retention end, an agreement start or
// end), so a decision that would flip at that instant is evaluated again.
//
// A policy that reads a header listed in VolatileHeaders, the request id or the source port
// must not be used with the cache (set size: -1).
type CacheConfig struct {
	// Size is the maximum number of entries. 0 means the default 10000; negative disables.
	Size int `yaml:"size" json:"size"`
	// TTL bounds how long a decision is reused. Default 2s.
	TTL time.Duration `yaml:"ttl" json:"ttl"`
	// VolatileHeaders are left out of the key (lowercase). Default: tracing and request-id
	// headers and the ones Envoy adds per request.
	VolatileHeaders []string `yaml:"volatile_headers" json:"volatile_headers"`
}

var defaultVolatile = []string{
	"x-request-id", "traceparent", "tracestate", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid",
	"x-b3-sampled", "x-b3-flags", "b3", "x-cloud-trace-context", "x-amzn-trace-id",
	"x-envoy-expected-rq-timeout-ms", "x-envoy-attempt-count", "x-envoy-auth-partial-body", "content-length",
}

func (c CacheConfig) withDefaults() CacheConfig {
	if c.Size == 0 {
		c.Size = 10000
	}
	if c.TTL == 0 {
		c.TTL = 2 * time.Second
	}
	if c.VolatileHeaders == nil {
		c.VolatileHeaders = defaultVolatile
	}
	return c
}

// decisionCache maps input keys to decisions.
type decisionCache struct {
	ttl      time.Duration
	volatile map[string]bool
	max      int
	mu       sync.RWMutex
	m        map[[32]byte]cached
	// inflight holds evaluations in progress: identical inputs arriving together (a burst,
	// or the moment an entry expires) wait for one evaluation instead of each running one.
	fmu      sync.Mutex
	inflight map[[32]byte]*flight
}

type flight struct {
	done chan struct{}
	e    cached
	ok   bool
}

// join returns the flight for k and whether the caller leads it (must call land).
func (c *decisionCache) join(k [32]byte) (*flight, bool) {
	c.fmu.Lock()
	defer c.fmu.Unlock()
	if f, ok := c.inflight[k]; ok {
		return f, false
	}
	f := &flight{done: make(chan struct{})}
	c.inflight[k] = f
	return f, true
}

// land publishes the leader's result (ok=false: followers evaluate themselves).
func (c *decisionCache) land(k [32]byte, f *flight, e cached, ok bool) {
	c.fmu.Lock()
	delete(c.inflight, k)
	c.fmu.Unlock()
	f.e, f.ok = e, ok
	close(f.done)
}

type cached struct {
	d        *decision.Decision
	revision string
	bundles  map[string]string
	expires  time.Time
}

func newDecisionCache(c CacheConfig) *decisionCache {
	if c.Size < 0 {
		return nil
	}
	v := map[string]bool{}
	for _, h := range c.VolatileHeaders {
		v[strings.ToLower(h)] = true
	}
	return &decisionCache{ttl: c.TTL, volatile: v, max: c.Size, m: map[[32]byte]cached{}, inflight: map[[32]byte]*flight{}}
}

func (c *decisionCache) get(k [32]byte, now time.Time) (cached, bool) {
	c.mu.RLock()
	e, ok := c.m[k]
	c.mu.RUnlock()
	if !ok || !now.Before(e.expires) {
		return cached{}, false
	}
	return e, true
}

func (c *decisionCache) put(k [32]byte, e cached, in *input.Input, now time.Time) {
	e.expires = now.Add(c.ttl)
	if b := nextBoundary(in, now); !b.IsZero() && b.Before(e.expires) {
		e.expires = b
	}
	if !now.Before(e.expires) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		n := c.max/10 + 1
		for old := range c.m {
			delete(c.m, old)
			if n--; n == 0 {
				break
			}
		}
	}
	c.m[k] = e
}

// nextBoundary is the earliest timestamp in the input's enrichment after now: the first
// instant at which a time-dependent rule could change its answer.
func nextBoundary(in *input.Input, now time.Time) time.Time {
	var b time.Time
	consider := func(t *time.Time) {
		if t != nil && t.After(now) && (b.IsZero() || t.Before(b)) {
			b = *t
		}
	}
	visit := func(e *input.Enrichment) {
		for i := range e.Consents {
			c := &e.Consents[i]
			consider(c.GrantedAt)
			consider(c.ExpiresAt)
			consider(c.WithdrawnAt)
		}
		if e.Agreement != nil {
			consider(e.Agreement.ValidFrom)
			consider(e.Agreement.ValidUntil)
		}
		if e.Customer != nil {
			consider(e.Customer.RetentionUntil)
			consider(e.Customer.ErasedAt)
		}
	}
	visit(&in.Enrichment)
	for i := range in.Records {
		visit(&in.Records[i].Enrichment)
	}
	return b
}

// cloneDecision deep-copies d: cached decisions are never shared with callers, who may
// annotate theirs.
func cloneDecision(d *decision.Decision) *decision.Decision {
	c := *d
	c.Reasons = append([]decision.Reason(nil), d.Reasons...)
	c.KeyScopes = append([]string(nil), d.KeyScopes...)
	c.Flags = append([]string(nil), d.Flags...)
	c.Fields = cloneFields(d.Fields)
	if d.Headers != nil {
		c.Headers = make(map[string]string, len(d.Headers))
		for k, v := range d.Headers {
			c.Headers[k] = v
		}
	}
	if d.Obligations != nil {
		c.Obligations = make([]decision.Obligation, len(d.Obligations))
		for i, o := range d.Obligations {
			c.Obligations[i] = decision.Obligation{Type: o.Type, Params: cloneAny(o.Params)}
		}
	}
	if d.Records != nil {
		c.Records = make(map[string]decision.Record, len(d.Records))
		for k, r := range d.Records {
			r.Reasons = append([]decision.Reason(nil), r.Reasons...)
			r.KeyScopes = append([]string(nil), r.KeyScopes...)
			r.Fields = cloneFields(r.Fields)
			c.Records[k] = r
		}
	}
	return &c
}

func cloneFields(f map[string]decision.Field) map[string]decision.Field {
	if f == nil {
		return nil
	}
	out := make(map[string]decision.Field, len(f))
	for k, v := range f {
		out[k] = v
	}
	return out
}

func cloneAny(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return nil
	}
	var out map[string]any
	if json.Unmarshal(raw, &out) != nil {
		return nil
	}
	return out
}
