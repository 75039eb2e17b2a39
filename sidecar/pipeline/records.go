package pipeline

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"

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
	if out == nil || !out.Allowed() || out.Input == nil {
		return denyAll(http.StatusForbidden, ReasonInternal, "records decided without an allowed request"), errors.New("pipeline: DecideRecords needs an allowed outcome")
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
	res, derr := p.deps.Engine.Decide(ctx, &in)
	if derr != nil || res == nil || res.Decision == nil {
		code := engine.CodeOf(derr)
		return denyAll(http.StatusServiceUnavailable, code, "records could not be decided"), fmt.Errorf("pipeline: response phase: %w", derr)
	}
	res.Decision.ID = out.DecisionID
	return res.Decision, nil
}

func denyAll(status int, code, msg string) *decision.Decision {
	d := decision.Deny(status, code, msg)
	d.Records = map[string]decision.Record{}
	return d
}
