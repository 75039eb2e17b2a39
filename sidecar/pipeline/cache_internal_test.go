package pipeline

import (
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/decision"
	"github.com/consentry/consentry/sidecar/input"
)

func TestCacheKeyIgnoresOnlyVolatileParts(t *testing.T) {
	c := newDecisionCache(CacheConfig{}.withDefaults())
	base := func() *input.Input {
		return &input.Input{
			Request: input.Request{ID: "r1", Method: "GET", Path: "/a", Headers: map[string][]string{"x-request-id": {"1"}, "accept": {"json"}},
				Source: input.Source{Address: "10.0.0.1:1111"}},
			Subject: input.Subject{ID: "e", Type: "employee"}, Purpose: "p", Time: input.NewTime(time.Now()),
		}
	}
	k0, _ := c.key("rev", base())
	same := base()
	same.Request.ID, same.Time = "r2", input.NewTime(time.Now().Add(time.Second))
	same.Request.Headers["x-request-id"] = []string{"2"}
	same.Request.Source.Address = "10.0.0.1:2222"
	if k, _ := c.key("rev", same); k != k0 {
		t.Fatal("volatile parts changed the key")
	}
	for name, mod := range map[string]func(*input.Input){
		"header":   func(in *input.Input) { in.Request.Headers["accept"] = []string{"xml"} },
		"subject":  func(in *input.Input) { in.Subject.Roles = []string{"x"} },
		"purpose":  func(in *input.Input) { in.Purpose = "q" },
		"source":   func(in *input.Input) { in.Request.Source.Address = "10.0.0.2:1111" },
		"consents": func(in *input.Input) { in.Enrichment.Consents = []input.Consent{{Purpose: "p", Status: "withdrawn"}} },
	} {
		in := base()
		mod(in)
		if k, _ := c.key("rev", in); k == k0 {
			t.Errorf("%s change kept the key", name)
		}
	}
	if k, _ := c.key("rev2", base()); k == k0 {
		t.Error("revision change kept the key")
	}
}

func TestCacheExpiresAtTimeBoundary(t *testing.T) {
	c := newDecisionCache(CacheConfig{TTL: time.Hour}.withDefaults())
	now := time.Now()
	soon := now.Add(100 * time.Millisecond)
	in := &input.Input{Enrichment: input.Enrichment{Consents: []input.Consent{{Purpose: "p", Status: "granted", ExpiresAt: &soon}}}}
	k, _ := c.key("rev", in)
	c.put(k, cached{d: decision.Deny(403, "x", "y")}, in, now)
	if _, ok := c.get(k, now.Add(50*time.Millisecond)); !ok {
		t.Fatal("miss before the boundary")
	}
	if _, ok := c.get(k, soon); ok {
		t.Fatal("hit at the consent expiry: the decision could have changed")
	}
	if _, ok := c.get(k, now.Add(2*time.Hour)); ok {
		t.Fatal("hit after the ttl")
	}
}

func TestCloneDecisionIsDeep(t *testing.T) {
	d := &decision.Decision{Allow: true, Status: 200, Fields: map[string]decision.Field{"a": {Outcome: "allow"}}, Headers: map[string]string{"x": "1"},
		Obligations: []decision.Obligation{{Type: "t", Params: map[string]any{"k": "v"}}}, Reasons: []decision.Reason{{Code: "c"}}}
	c := cloneDecision(d)
	c.Fields["a"] = decision.Field{Outcome: "deny"}
	c.Headers["x"] = "2"
	c.Obligations[0].Params["k"] = "w"
	c.Reasons[0].Code = "z"
	if d.Fields["a"].Outcome != "allow" || d.Headers["x"] != "1" || d.Obligations[0].Params["k"] != "v" || d.Reasons[0].Code != "c" {
		t.Fatal("clone shares state with the original")
	}
}
