package pipeline

import (
	"context"

	"github.com/consentry/consentry/sidecar/engine"
	"github.com/consentry/consentry/sidecar/input"
)

// policySource is implemented by engines that hand out their active policy (*engine.Engine).
// The pipeline takes it once per request, before routing, and routes the request with the
// route map published with it (routes.from_bundle) and decides it, and the response phase
// of a list, with it: a bundle activated meanwhile never decides a request routed by the
// previous bundle's map, nor the records of a page whose request the previous policy allowed.
type policySource interface {
	Active() *engine.Prepared
	Owns(pol *engine.Prepared) bool
	DecideWith(ctx context.Context, pol *engine.Prepared, in *input.Input) (*engine.Result, error)
}

var _ policySource = (*engine.Engine)(nil)

// snapshot takes the active policy (nil when the engine is no policySource or has none) and
// the route map to route with: the one published with that policy, or deps.Routes when the
// policy carries none (routes.file).
func (p *Pipeline) snapshot() (*engine.Prepared, Routes) {
	if p.policies == nil {
		return nil, p.deps.Routes
	}
	pol := p.policies.Active()
	if m := pol.Routes(); m != nil {
		return pol, m
	}
	return pol, p.deps.Routes
}

// decide evaluates in with pol (see snapshot), or with the active policy when the engine
// cannot be handed one.
func (p *Pipeline) decide(ctx context.Context, pol *engine.Prepared, in *input.Input) (*engine.Result, error) {
	if p.policies != nil {
		return p.policies.DecideWith(ctx, pol, in)
	}
	return p.deps.Engine.Decide(ctx, in)
}
