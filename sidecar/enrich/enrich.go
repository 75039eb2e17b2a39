// Package enrich declares how the request pipeline obtains the state policies decide on:
// consent records, the case named by the request, the processor agreement of a processor
// caller, and the customer's retention and erasure state. The consent store (sidecar/consent)
// and the static provider (enrich/static) implement it.
//
// Failure semantics (fail closed): a provider that cannot read a piece of state returns the
// enrichment it has with the failed lookup named in Enrichment.Errors (or an error for the
// whole call); the policy library denies on either (state.unavailable, 503).
package enrich

import (
	"context"

	"github.com/consentry/consentry/sidecar/input"
)

// Query says what to look up for one request.
type Query struct {
	// CustomerID is the customer the request touches ("" for list routes before the response).
	CustomerID string
	// CaseID is the case named by the request (x-case-id), if any.
	CaseID string
	// ProcessorID is the processor subject's id, if the caller is a processor.
	ProcessorID string
	// Purpose is the declared purpose (lets a provider return only relevant consents).
	Purpose string
}

// Provider returns enrichment. Implementations must be safe for concurrent use and fast: they
// sit on the hot path (serve from memory; see sidecar/consent).
type Provider interface {
	// Enrich returns the state for one request.
	Enrich(ctx context.Context, q Query) (input.Enrichment, error)
	// EnrichBatch returns the state for many customers of one list response in one call
	// (not one call per row). The map has an entry for every requested id; a customer the
	// provider does not know has a nil Customer.
	EnrichBatch(ctx context.Context, q Query, customerIDs []string) (map[string]input.Enrichment, error)
}
