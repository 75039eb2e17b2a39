// Package audit declares what the request pipeline hands to the decision log for every
// decision, and the sink interface the decision log (sidecar/auditlog) implements. It is the
// contract between front doors and the audit trail: front doors fill an Entry, the log masks,
// pseudonymizes, hash-chains and stores it (docs/decision-log.md).
package audit

import (
	"context"
	"slices"
	"time"

	"github.com/consentry/consentry/sidecar/decision"
	"github.com/consentry/consentry/sidecar/input"
)

// Entry is one decision as the pipeline saw it, before masking. It may hold the raw input
// (with credentials already removed by the front door) but never decrypted field values.
type Entry struct {
	DecisionID string
	Timestamp  time.Time
	// Path is the policy query, "consentry/decision" (OPA decision log style, no "data." prefix).
	Path     string
	Input    *input.Input
	Decision *decision.Decision
	// Revision and Bundles identify the policy that decided.
	Revision string
	Bundles  map[string]string
	// Error is the engine or pipeline error that caused a fail-closed deny, if any.
	Error string
	// Enforcement is what the front door actually did with the decision.
	Enforcement Enforcement
	// Labels are static labels (instance id, version, front door) as in OPA's decision log.
	// The map is shared between entries: a sink must not modify it.
	Labels      map[string]string
	TraceID     string
	RequestedBy string
	// Metrics are timings in nanoseconds: timer_rego_query_eval_ns, timer_server_handler_ns, ...
	Metrics map[string]int64
	// Intent marks a write-ahead entry: the request may change the CRM's state and is about
	// to be forwarded to it; the entry with the same DecisionID and Intent false follows once
	// the CRM has answered. A sink that cannot tell the two apart may skip intents (they are
	// only a guarantee for a durable log: a crash between the CRM's answer and the decision's
	// entry must not leave a change with no trace).
	Intent bool
}

// Enforcement records what happened after the decision. Never field values: names, counts,
// and for a list filtered per record the customers and the state the policy saw.
type Enforcement struct {
	// Status is the HTTP status the caller received (0 when the front door does not know it).
	Status int
	// FieldsReleased / FieldsMasked / FieldsDropped name the fields in the response.
	FieldsReleased []string
	FieldsMasked   []string
	FieldsDropped  []string
	// KeyScopes are the key classes actually released from Vault for this request.
	KeyScopes []string
	// RecordsReturned and RecordsFiltered count list records kept and removed.
	RecordsReturned int
	RecordsFiltered int
	// Withheld names fields withheld because their keys were unavailable (fail closed).
	Withheld []string
	// Records is the response phase of a list response filtered per record
	// (pipeline.DecideRecords); nil when no record was decided per record. The log names the
	// customers a list served from it: the request's own input and decision name none.
	Records *ListRecords
}

// AddWrite adds what a create/update's request body used (the key classes that encrypted its
// sensitive fields, the fields written) to e, the enforcement of its response: both doors
// record one entry per request, and the write's key use must be in it whatever the CRM answered.
func (e *Enforcement) AddWrite(w Enforcement) {
	e.KeyScopes = sortedUnion(e.KeyScopes, w.KeyScopes)
	e.FieldsReleased = sortedUnion(e.FieldsReleased, w.FieldsReleased)
}

// sortedUnion is a and b without repeats, sorted; a itself when b is empty.
func sortedUnion(a, b []string) []string {
	if len(b) == 0 {
		return a
	}
	out := append(append(make([]string, 0, len(a)+len(b)), a...), b...)
	slices.Sort(out)
	return slices.Compact(out)
}

// ListRecords is what the response phase of a list decided and what the front door did with
// each customer's records. Customer ids are raw: the log pseudonymizes them.
type ListRecords struct {
	// Input is input.records of the response phase: each customer of the response once, with
	// the enrichment the policy saw (so a replay can decide the records again).
	Input []input.Record
	// Decisions is the outcome each customer's records got, as enforced
	// (pipeline.EnforcedRecords): the policy's, or a deny with the page's reasons for every
	// customer when the response phase refused the page. A customer the policy gave no
	// outcome is absent (its records were removed).
	Decisions map[string]decision.Record
	// Served and Filtered are the customers whose records the caller received / whose
	// records were removed, each once, sorted. A customer with records both served and
	// removed (a record that is not an object is removed whatever its outcome) is in both.
	Served, Filtered []string
}

// Sink stores decision log entries.
//
// In strict mode Append returns nil only once the entry is durable; an error means the caller
// must not release its response (deny with 503, audit.unavailable). Implementations must be
// safe for concurrent use and must not keep references to slices in the entry after returning.
type Sink interface {
	Append(ctx context.Context, e *Entry) error
}
