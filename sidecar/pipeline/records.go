package pipeline

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"runtime"
	"slices"
	"sync"

	"github.com/consentry/consentry/sidecar/decision"
	"github.com/consentry/consentry/sidecar/engine"
	"github.com/consentry/consentry/sidecar/enrich"
	"github.com/consentry/consentry/sidecar/input"
)

// DecideRecords is the response phase of a list route, for doors that see the response (the
// proxy, ext_proc): given the customer ids found in the response, it looks up every
// customer's state in one EnrichBatch call and evaluates one decision with phase "response"
// and input.records, whose Records map says per customer whether the record may be served and
// with which fields. out must be an allowed outcome of Check for a list route.
//
// Fail closed: on any error the returned decision denies every record (and the error says
// why); a customer missing from Records must be dropped by the caller.
func (p *Pipeline) DecideRecords(ctx context.Context, out *Outcome, customerIDs []string) (*decision.Decision, error) {
	pg, err := p.DecidePage(ctx, out, customerIDs)
	return pg.Decision, err
}

// Page is the response phase of a list page: the decision and the records it decided.
type Page struct {
	// Decision is DecideRecords' decision (never nil).
	Decision *decision.Decision
	// Records is input.records as the policy saw it: each customer once, sorted by id, with
	// its enrichment. The decision log keeps it so that replay can decide the records again.
	Records []input.Record
}

// DecidePage is DecideRecords returning the records it decided as well. It never returns nil.
func (p *Pipeline) DecidePage(ctx context.Context, out *Outcome, customerIDs []string) (*Page, error) {
	if out == nil || !out.Allowed() || out.Input == nil {
		return &Page{Decision: denyAll(http.StatusForbidden, ReasonInternal, "records decided without an allowed request")}, errors.New("pipeline: DecideRecords needs an allowed outcome")
	}
	in := *out.Input
	in.Phase = input.PhaseResponse
	in.Records = make([]input.Record, 0, len(customerIDs))
	ids := slices.Clone(customerIDs)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	q := enrich.Query{CaseID: in.CaseID, ProcessorID: in.Subject.ProcessorID, Purpose: in.Purpose}
	batch, err := p.deps.Enrich.EnrichBatch(ctx, q, ids)
	for _, id := range ids {
		e, ok := batch[id]
		if err != nil || !ok {
			e = input.Enrichment{Consents: []input.Consent{}, Errors: []string{"enrichment"}}
		}
		if e.Consents == nil {
			e.Consents = []input.Consent{}
		}
		in.Records = append(in.Records, input.Record{CustomerID: id, Enrichment: e})
	}
	if err != nil {
		p.log.Warn("batch enrichment failed", "decision_id", out.DecisionID, "customers", len(ids), "error", err)
	}
	pg := &Page{Records: in.Records}
	pol := out.policy
	if p.policies != nil && !p.policies.Owns(pol) {
		// An outcome this pipeline's Check did not make (no policy was active, or another
		// pipeline's): decided with the active policy.
		pol = p.policies.Active()
	}
	d, derr := p.decideRecords(ctx, pol, &in)
	if derr != nil || d == nil {
		code := engine.CodeOf(derr)
		pg.Decision = denyAll(http.StatusServiceUnavailable, code, "records could not be decided")
		return pg, fmt.Errorf("pipeline: response phase: %w", derr)
	}
	d.ID = out.DecisionID
	pg.Decision = d
	return pg, nil
}

// EnforcedRecords returns the outcome each of customerIDs gets from d, a response-phase
// decision, as the front doors enforce it: its record in d.Records while d allows the page;
// when d refuses the page, a deny with d's reasons for every customer, whatever its record
// says. A customer d gives no outcome is absent: its records are removed. The transformer
// filters by it, the decision log records it and replay recomputes it, so the three agree.
func EnforcedRecords(d *decision.Decision, customerIDs []string) map[string]decision.Record {
	out := make(map[string]decision.Record, len(customerIDs))
	for _, id := range customerIDs {
		if !d.Allow {
			out[id] = decision.Record{Reasons: append([]decision.Reason{}, d.Reasons...)}
			continue
		}
		if r, ok := d.Records[id]; ok {
			out[id] = r
		}
	}
	return out
}

// decideRecords evaluates the response phase of in with pol, the policy that decided the
// request (see policySource): in one evaluation, or - for a page larger than
// pipeline.records_per_evaluation on a machine with several cores - in up to GOMAXPROCS
// evaluations of consecutive slices of in.Records run in parallel, whose per-record outcomes
// are merged. The request-level decision is the first slice's; slices that disagree on it,
// or that were decided by different policy revisions (an engine that cannot be handed pol,
// where a bundle activated in between), are decided again in one evaluation.
func (p *Pipeline) decideRecords(ctx context.Context, pol *engine.Prepared, in *input.Input) (*decision.Decision, error) {
	parts := 1
	if per := p.cfg.RecordsPerEvaluation; per > 0 && len(in.Records) > per {
		parts = min(runtime.GOMAXPROCS(0), (len(in.Records)+per-1)/per)
	}
	if parts <= 1 {
		return p.decideOnce(ctx, pol, in)
	}
	size := (len(in.Records) + parts - 1) / parts
	results := make([]*engine.Result, parts)
	errs := make([]error, parts)
	var wg sync.WaitGroup
	for i := range parts {
		part := *in
		part.Records = in.Records[i*size : min(len(in.Records), (i+1)*size)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = p.decide(ctx, pol, &part)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	for _, r := range results {
		if r == nil || r.Decision == nil {
			return nil, errors.New("evaluation returned no decision")
		}
	}
	first := results[0]
	merged := *first.Decision
	merged.Records = make(map[string]decision.Record, len(in.Records))
	for _, r := range results {
		if r.Revision != first.Revision || !sameRequestDecision(r.Decision, first.Decision) {
			return p.decideOnce(ctx, pol, in)
		}
		for id, rec := range r.Decision.Records {
			merged.Records[id] = rec
		}
	}
	return &merged, nil
}

func (p *Pipeline) decideOnce(ctx context.Context, pol *engine.Prepared, in *input.Input) (*decision.Decision, error) {
	res, err := p.decide(ctx, pol, in)
	if err != nil {
		return nil, err
	}
	if res == nil || res.Decision == nil {
		return nil, errors.New("evaluation returned no decision")
	}
	return res.Decision, nil
}

// sameRequestDecision reports whether two slices of one page got the same request-level
// decision: everything but the per-record outcomes (a page-dependent policy could differ in
// any of it, a header counting records say).
func sameRequestDecision(a, b *decision.Decision) bool {
	x, y := *a, *b
	x.Records, y.Records = nil, nil
	return reflect.DeepEqual(x, y)
}

func denyAll(status int, code, msg string) *decision.Decision {
	d := decision.Deny(status, code, msg)
	d.Records = map[string]decision.Record{}
	return d
}
