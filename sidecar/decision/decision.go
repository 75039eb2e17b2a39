// Package decision defines the decision document returned by the single policy query
// data.consentry.decision, and its strict decoding: a result that does not match the schema
// (policies/schema/decision.json, documented in docs/decision.md) is never treated as an allow.
package decision

import (
	"errors"
	"fmt"
	"net/http"
	"sort"
)

// Query is the one query every front door evaluates.
const Query = "data.consentry.decision"

// Field outcomes.
const (
	OutcomeAllow = "allow"
	OutcomeMask  = "mask"
	OutcomeDeny  = "deny"
)

// Mask kinds.
const (
	MaskLast4  = "last4"
	MaskHMAC   = "hmac"
	MaskYear   = "year"
	MaskRedact = "redact"
)

// Reason codes the engine and the pipeline add themselves (policies add their own).
const (
	ReasonEngineError     = "engine.error"
	ReasonEngineUndefined = "engine.undefined"
	ReasonEngineInvalid   = "engine.invalid_decision"
	ReasonEngineTimeout   = "engine.timeout"
	ReasonEngineNotReady  = "engine.not_ready"
)

// Decision is the decision document.
type Decision struct {
	// ID is the decision id, set by the pipeline (not by policy).
	ID string `json:"decision_id,omitempty"`
	// Allow is true only when no rule denied and the decision is well formed.
	Allow bool `json:"allow"`
	// Status is the HTTP status to answer with when denied (401, 403, 451, 503, ...); 200 on allow.
	Status int `json:"status"`
	// Reasons explain the outcome: deny reasons on a deny, informational ones (e.g.
	// break_glass.used) on an allow. Sorted by code.
	Reasons []Reason `json:"reasons"`
	// Fields is the per-field outcome for every requested field.
	Fields map[string]Field `json:"fields"`
	// KeyScopes are the key classes (contact, financial, health, ...) whose keys may be released
	// for this customer: exactly the classes of fields with outcome allow that need a key.
	KeyScopes []string `json:"key_scopes"`
	// Obligations the front door must fulfil (e.g. record_justification).
	Obligations []Obligation `json:"obligations"`
	// Headers to add to the upstream request on allow.
	Headers map[string]string `json:"headers"`
	// Flags mark decisions for reviewers, e.g. "break_glass".
	Flags []string `json:"flags"`
	// Records is the per-record outcome in the response phase of list routes, by customer id.
	Records map[string]Record `json:"records,omitempty"`
}

// Reason is a coded explanation.
type Reason struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Field is one field's outcome.
type Field struct {
	Outcome  string `json:"outcome"`
	Mask     string `json:"mask,omitempty"`
	Category string `json:"category,omitempty"`
	// KeyScope is the key class needed to decrypt the field ("" when stored in plaintext).
	KeyScope string `json:"key_scope,omitempty"`
}

// Obligation is something the front door must do for the decision to stand.
type Obligation struct {
	Type   string         `json:"type"`
	Params map[string]any `json:"params,omitempty"`
}

// Record is one list record's outcome.
type Record struct {
	Allow     bool             `json:"allow"`
	Reasons   []Reason         `json:"reasons"`
	Fields    map[string]Field `json:"fields,omitempty"`
	KeyScopes []string         `json:"key_scopes,omitempty"`
}

// Deny returns a deny decision with one reason, used when no policy decision can be had.
func Deny(status int, code, message string) *Decision {
	return &Decision{
		Status:      status,
		Reasons:     []Reason{{Code: code, Message: message}},
		Fields:      map[string]Field{},
		KeyScopes:   []string{},
		Obligations: []Obligation{},
		Headers:     map[string]string{},
		Flags:       []string{},
	}
}

// ReasonCodes returns the codes of d's reasons.
func (d *Decision) ReasonCodes() []string {
	out := make([]string, len(d.Reasons))
	for i, r := range d.Reasons {
		out[i] = r.Code
	}
	return out
}

// FieldsWith returns the sorted names of fields with the given outcome.
func (d *Decision) FieldsWith(outcome string) []string {
	var out []string
	for name, f := range d.Fields {
		if f.Outcome == outcome {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// HasKeyScope reports whether scope may be released.
func (d *Decision) HasKeyScope(scope string) bool {
	for _, s := range d.KeyScopes {
		if s == scope {
			return true
		}
	}
	return false
}

// The members policies/schema/decision.json requires of a decision and of a record. A
// document without one is not a decision the library could have made: a custom rule that
// dropped obligations (and with it filter_records) or reasons must not decode as if it had
// said "none".
var (
	requiredMembers       = []string{"allow", "status", "reasons", "fields", "key_scopes", "obligations", "headers", "flags"}
	requiredRecordMembers = []string{"allow", "reasons"}
)

// requireMembers fails unless m has every key of keys, none of them null (the schema types
// each as an array, object, boolean or integer).
func requireMembers(m map[string]any, keys []string, where string) error {
	for _, k := range keys {
		if v, ok := m[k]; !ok || v == nil {
			return fmt.Errorf("%w: %s%s missing", ErrInvalid, where, k)
		}
	}
	return nil
}

// ErrInvalid is wrapped by every decoding error.
var ErrInvalid = errors.New("decision does not match schema")

// FromResult decodes a policy result (the JSON-shaped value OPA returns) strictly.
func FromResult(v any) (*Decision, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%w: result is %T, not an object", ErrInvalid, v)
	}
	if err := requireMembers(m, requiredMembers, ""); err != nil {
		return nil, err
	}
	d := &Decision{}
	var err error
	if d.Allow, err = boolField(m, "allow", true); err != nil {
		return nil, err
	}
	status, err := intField(m, "status")
	if err != nil {
		return nil, err
	}
	if status < 100 || status > 599 {
		return nil, fmt.Errorf("%w: status %d out of range", ErrInvalid, status)
	}
	d.Status = status
	if d.Allow && status != http.StatusOK {
		return nil, fmt.Errorf("%w: allow with status %d", ErrInvalid, status)
	}
	if !d.Allow && status < 400 {
		return nil, fmt.Errorf("%w: deny with status %d", ErrInvalid, status)
	}
	if d.Reasons, err = reasons(m["reasons"], "reasons"); err != nil {
		return nil, err
	}
	if !d.Allow && len(d.Reasons) == 0 {
		return nil, fmt.Errorf("%w: deny without a reason", ErrInvalid)
	}
	if d.Fields, err = fields(m["fields"], "fields"); err != nil {
		return nil, err
	}
	if d.KeyScopes, err = stringList(m["key_scopes"], "key_scopes"); err != nil {
		return nil, err
	}
	if err := checkScopes(d.KeyScopes, d.Fields, "key_scopes"); err != nil {
		return nil, err
	}
	if d.Obligations, err = obligations(m["obligations"]); err != nil {
		return nil, err
	}
	if d.Headers, err = stringMap(m["headers"], "headers"); err != nil {
		return nil, err
	}
	if d.Flags, err = stringList(m["flags"], "flags"); err != nil {
		return nil, err
	}
	if rv, ok := m["records"]; ok {
		if d.Records, err = records(rv); err != nil {
			return nil, err
		}
	}
	if !d.Allow {
		// A denied decision releases nothing, whatever the policy said about fields. Empty,
		// not absent: the document's key_scopes is always an array.
		d.KeyScopes = []string{}
		for name, f := range d.Fields {
			d.Fields[name] = Field{Outcome: OutcomeDeny, Category: f.Category, KeyScope: f.KeyScope}
		}
	}
	return d, nil
}

// NeedsKey reports whether serving the field needs its plaintext: allowed fields, and masked
// fields whose mask is computed from the value (last4, year, hmac). A redacted or denied field
// never needs a key.
func (f Field) NeedsKey() bool {
	if f.KeyScope == "" {
		return false
	}
	return f.Outcome == OutcomeAllow || (f.Outcome == OutcomeMask && f.Mask != MaskRedact)
}

// checkScopes enforces that a key scope is only released for a field that needs it: a policy
// bug cannot hand out a key that no served field needs.
func checkScopes(scopes []string, fields map[string]Field, where string) error {
	for _, s := range scopes {
		needed := false
		for _, f := range fields {
			if f.KeyScope == s && f.NeedsKey() {
				needed = true
				break
			}
		}
		if !needed {
			return fmt.Errorf("%w: %s: scope %q released but no allowed field needs it", ErrInvalid, where, s)
		}
	}
	return nil
}
