// Package input defines the input document that every consentry front door builds and every
// policy reads as `input`. It is the contract between the request pipeline (ext_authz, ext_proc,
// the HTTP proxy, the CLI, replay) and the Rego policy library; its JSON Schema lives in
// policies/schema/input.json and is documented in docs/policy-input.md.
//
// The document is converted straight to an OPA ast.Value (see ast.go) instead of a JSON round
// trip: on the hot path that conversion is a measurable share of a decision.
package input

import "time"

// Subject types.
const (
	SubjectEmployee  = "employee"
	SubjectCustomer  = "customer"
	SubjectProcessor = "processor"
	SubjectService   = "service"
)

// Actions a route can map to.
const (
	ActionRead   = "read"
	ActionList   = "list"
	ActionCreate = "create"
	ActionUpdate = "update"
	ActionDelete = "delete"
	ActionExport = "export"
	ActionErase  = "erase"
	// ActionAccessReport is the customer's "who accessed my data and why" request (GDPR Art. 15).
	ActionAccessReport = "access_report"
)

// Actions lists every action the policy library knows; anything else is denied (action.unknown).
var Actions = []string{ActionRead, ActionList, ActionCreate, ActionUpdate, ActionDelete, ActionExport, ActionErase, ActionAccessReport}

// Phases of a decision.
const (
	// PhaseRequest is the decision taken before the request reaches the CRM.
	PhaseRequest = "request"
	// PhaseResponse is the per-record decision taken on a list response, with each record's state.
	PhaseResponse = "response"
)

// Input is the whole input document.
type Input struct {
	// Request is the normalized HTTP request. Policies should prefer Action/Resource, which the
	// route map derived from it; Request is there for rules that need headers or the query.
	Request Request `json:"request"`
	// Subject is the authenticated caller. Subject.Type is "" when no credential was verified.
	Subject Subject `json:"subject"`
	// Purpose is the declared purpose of processing, a fideslang data-use key such as
	// "essential.service.operations.support". Empty when the caller declared none.
	Purpose string `json:"purpose"`
	// CaseID is the case the caller works on (need-to-know), from the x-case-id header.
	CaseID string `json:"case_id,omitempty"`
	// BreakGlass is set when the caller invoked emergency access (x-break-glass header).
	BreakGlass *BreakGlass `json:"break_glass,omitempty"`
	// Action is what the route does: one of Actions.
	Action string `json:"action"`
	// Resource is what the request touches.
	Resource Resource `json:"resource"`
	// Enrichment is the state consentry looked up for Resource.CustomerID: consent records,
	// case, processor agreement, customer retention and erasure state.
	Enrichment Enrichment `json:"enrichment"`
	// Phase is "request" (default) or "response" (per-record filtering of a list).
	Phase string `json:"phase,omitempty"`
	// Records holds, in the response phase of list routes, one entry per customer in the
	// response, each with its own enrichment. The decision answers per record.
	Records []Record `json:"records,omitempty"`
	// Time is the decision time. Policies use it instead of time.now_ns() so that a replay of a
	// logged decision sees the time of the original decision.
	Time Time `json:"time"`
}

// Request is the normalized HTTP request.
type Request struct {
	// ID is the request id (Envoy's x-request-id or one consentry generated).
	ID string `json:"id,omitempty"`
	// FrontDoor says which door built the input: ext_authz, ext_proc, proxy, cli, replay.
	FrontDoor string `json:"front_door,omitempty"`
	Method    string `json:"method"`
	// Path is the normalized path (merged slashes, dot segments resolved, decoded once).
	Path string `json:"path"`
	// Route is the matched route template, e.g. "GET /api/customers/{customer_id}".
	Route string `json:"route,omitempty"`
	// Params are the route template parameters.
	Params map[string]string `json:"params,omitempty"`
	// Headers are lowercased; every value of a multi-value header is kept. Credentials
	// (authorization, cookie) are removed before the input is built.
	Headers map[string][]string `json:"headers,omitempty"`
	// Query holds every value of every query parameter.
	Query map[string][]string `json:"query,omitempty"`
	Host  string              `json:"host,omitempty"`
	// Source is the network peer as the front door saw it.
	Source Source `json:"source,omitzero"`
}

// Source is the network peer.
type Source struct {
	Address string `json:"address,omitempty"`
	// Principal is the peer's mTLS identity (SPIFFE id) when Envoy or our TLS listener verified one.
	Principal string `json:"principal,omitempty"`
}

// Subject is the caller.
type Subject struct {
	ID string `json:"id,omitempty"`
	// Type is employee, customer, processor or service; "" when unauthenticated.
	Type  string   `json:"type,omitempty"`
	Roles []string `json:"roles,omitempty"`
	// ProcessorID identifies the third party for processor subjects.
	ProcessorID string `json:"processor_id,omitempty"`
	// CustomerID is the customer the subject is, for customer subjects.
	CustomerID string `json:"customer_id,omitempty"`
	// MFA is true when the credential proves a second factor (e.g. amr contains "mfa").
	MFA bool `json:"mfa,omitempty"`
	// AuthMethod is how the subject was authenticated: jwt, mtls, token, none.
	AuthMethod string `json:"auth_method,omitempty"`
	// Claims are the verified token claims (after mapping), for rules that need more.
	Claims map[string]any `json:"claims,omitempty"`
}

// BreakGlass is an emergency access request.
type BreakGlass struct {
	Justification string `json:"justification"`
}

// Resource is what the request touches.
type Resource struct {
	// Type is the route map's resource type: customer, note, case, export, ...
	Type string `json:"type"`
	// CustomerID is the customer whose data the request touches; "" for list routes.
	CustomerID string `json:"customer_id,omitempty"`
	// Fields are the field paths the route returns (reads) or the body carries (writes), as
	// named in the catalogue (data.consentry.catalog.fields), e.g. "contact.email".
	Fields []string `json:"fields,omitempty"`
}

// Record is one customer in a list response.
type Record struct {
	CustomerID string     `json:"customer_id"`
	Enrichment Enrichment `json:"enrichment"`
}

// Enrichment is the state consentry looked up for one customer.
type Enrichment struct {
	// Consents are the customer's current consent records, one per purpose.
	Consents []Consent `json:"consents"`
	// Case is the case named by CaseID, when it exists.
	Case *Case `json:"case,omitempty"`
	// Agreement is the processor agreement of a processor subject, when one exists.
	Agreement *Agreement `json:"agreement,omitempty"`
	// Customer is the customer's lifecycle state; nil when the store does not know the customer.
	Customer *CustomerState `json:"customer,omitempty"`
	// Errors names lookups that failed (e.g. "consent"): policies deny on them (fail closed).
	Errors []string `json:"errors,omitempty"`
}

// Consent statuses.
const (
	ConsentGranted   = "granted"
	ConsentWithdrawn = "withdrawn"
	ConsentExpired   = "expired"
)

// Consent is the current state of a customer's consent for one purpose, with its proof.
type Consent struct {
	Purpose       string     `json:"purpose"`
	Status        string     `json:"status"`
	NoticeVersion string     `json:"notice_version,omitempty"`
	NoticeHash    string     `json:"notice_hash,omitempty"`
	Channel       string     `json:"channel,omitempty"`
	CapturedBy    string     `json:"captured_by,omitempty"`
	GrantedAt     *time.Time `json:"granted_at,omitempty"`
	ExpiresAt     *time.Time `json:"expires_at,omitempty"`
	WithdrawnAt   *time.Time `json:"withdrawn_at,omitempty"`
	// EventID is the ledger event that established this state (proof reference).
	EventID string `json:"event_id,omitempty"`
}

// Case is a support/complaint case (need-to-know).
type Case struct {
	ID         string   `json:"id"`
	CustomerID string   `json:"customer_id"`
	Assignees  []string `json:"assignees"`
	// Status is open or closed.
	Status  string `json:"status"`
	Purpose string `json:"purpose,omitempty"`
}

// Agreement is a processor (third party) agreement.
type Agreement struct {
	ProcessorID string     `json:"processor_id"`
	Purposes    []string   `json:"purposes"`
	Categories  []string   `json:"categories"`
	ValidFrom   *time.Time `json:"valid_from,omitempty"`
	ValidUntil  *time.Time `json:"valid_until,omitempty"`
}

// CustomerState is a customer's lifecycle state.
type CustomerState struct {
	ID             string     `json:"id"`
	RetentionUntil *time.Time `json:"retention_until,omitempty"`
	Erased         bool       `json:"erased"`
	ErasedAt       *time.Time `json:"erased_at,omitempty"`
}

// Time is the decision time, in both forms policies find handy.
type Time struct {
	Now   time.Time `json:"now"`
	NowNS int64     `json:"now_ns"`
}

// NewTime returns the Time for t.
func NewTime(t time.Time) Time { return Time{Now: t.UTC(), NowNS: t.UnixNano()} }
