package transform

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"

	"github.com/consentry/consentry/sidecar/audit"
	"github.com/consentry/consentry/sidecar/decision"
	"github.com/consentry/consentry/sidecar/input"
	"github.com/consentry/consentry/sidecar/pipeline"
	"github.com/consentry/consentry/sidecar/routes"
	"github.com/consentry/consentry/vaultkeys"
)

// Write is the outcome of checking and encrypting a create/update body.
type Write struct {
	// Body is the body to forward to the CRM (sensitive fields encrypted).
	Body []byte
	// Status is 0 when the body may be forwarded; otherwise the request is refused with
	// Status (422 for fields, 503 for keys) and DenyBody.
	Status   int
	DenyBody []byte
	// Codes are the reason codes of a refusal.
	Codes []string
	// Enforcement names the written fields (FieldsReleased) and the key scopes used.
	Enforcement audit.Enforcement
	// Err explains a refusal (log only).
	Err error
}

// IsWrite reports whether out is an allowed create/update whose JSON body the door must pass
// through Request before forwarding it.
func IsWrite(out *pipeline.Outcome) bool {
	if !NeedsBody(out) || out.Input == nil {
		return false
	}
	a := out.Input.Action
	return (a == input.ActionCreate || a == input.ActionUpdate) && out.Match.Route.Body == routes.BodyJSON
}

// writeField is one field a write body carries.
type writeField struct {
	name string
	v    span
}

// Request checks a create/update body against the decision again, field by field (defence in
// depth: the policy already denies with field.write_not_allowed), and encrypts every field
// that has a key scope with keys released for the write, so plaintext of sensitive fields
// never reaches the CRM. A customer correcting their own record is a policy decision
// (rights): an update of another customer never gets here allowed.
func (t *Transformer) Request(ctx context.Context, out *pipeline.Outcome, body []byte) *Write {
	w := &Write{Body: body}
	if !IsWrite(out) {
		return w
	}
	if len(body) > t.cfg.MaxBodyBytes {
		return t.refuse(w, out, http.StatusRequestEntityTooLarge, ReasonWriteBody, fmt.Errorf("%d bytes over transform.max_body_bytes", len(body)))
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return w
	}
	doc, err := document(body)
	if err != nil || kind(body, doc) != '{' {
		return t.refuse(w, out, http.StatusBadRequest, ReasonWriteBody, fmt.Errorf("write body is not a JSON object: %v", err))
	}
	route := out.Match.Route
	known := make(map[string]bool, len(route.Fields))
	for _, f := range route.Fields {
		known[f] = true
	}
	var fields []writeField
	if err := collectWrite(body, doc, route.FieldPrefix, known, &fields, 0); err != nil {
		return t.refuse(w, out, http.StatusBadRequest, ReasonWriteBody, err)
	}
	var refused []string
	var enc []writeField
	names := map[string]bool{}
	for _, f := range fields {
		names[f.name] = true
		df, ok := out.Decision.Fields[f.name]
		if !ok || df.Outcome != decision.OutcomeAllow {
			refused = append(refused, f.name)
			continue
		}
		if df.KeyScope == "" {
			continue
		}
		switch kind(body, f.v) {
		case 'n':
			continue // clearing a field needs no key
		case '{', '[':
			return t.refuse(w, out, http.StatusUnprocessableEntity, ReasonWriteType, fmt.Errorf("field %s: an object or array cannot be encrypted as one value", f.name))
		case '"':
			s, _ := decodeString(body[f.v.start:f.v.end])
			if s == "" {
				continue
			}
			if vaultkeys.IsCiphertext(s) {
				// Accepting ciphertext would let a caller plant a value under another key
				// (or replay another customer's ciphertext); clients send plaintext.
				return t.refuse(w, out, http.StatusUnprocessableEntity, ReasonWriteCiphertext, fmt.Errorf("field %s holds ciphertext", f.name))
			}
		}
		enc = append(enc, f)
	}
	if len(refused) > 0 {
		sort.Strings(refused)
		return t.refuse(w, out, http.StatusUnprocessableEntity, ReasonWriteNotAllowed, fmt.Errorf("fields %v may not be written", refused))
	}
	w.Enforcement.FieldsReleased = sortedKeys(names)
	if len(enc) == 0 {
		return w
	}
	customer := out.Input.Resource.CustomerID
	if customer == "" {
		customer = customerIDOf(body, doc, route.CustomerIDField)
	}
	if customer == "" {
		return t.refuse(w, out, http.StatusUnprocessableEntity, ReasonWriteCustomer,
			fmt.Errorf("the body must carry %q to encrypt sensitive fields under the customer's keys", route.CustomerIDField))
	}
	if t.keys == nil {
		return t.refuse(w, out, http.StatusServiceUnavailable, ReasonWriteKeys, fmt.Errorf("no key manager configured"))
	}
	ks, err := t.keys.ReleaseForWrite(ctx, customer, out.Decision)
	if ks == nil {
		return t.refuse(w, out, http.StatusServiceUnavailable, ReasonWriteKeys, fmt.Errorf("release for write: %w", err))
	}
	defer ks.Close()
	edits := make([]edit, 0, len(enc))
	scopes := map[string]bool{}
	for _, f := range enc {
		df := out.Decision.Fields[f.name]
		plain := body[f.v.start:f.v.end] // numbers and booleans: their JSON text
		if kind(body, f.v) == '"' {
			s, _ := decodeString(plain)
			plain = []byte(s)
		}
		ct, err := ks.Encrypt(df.KeyScope, plain)
		if err != nil {
			// Never forward the plaintext of a field that must be stored encrypted. Failures
			// that retrying cannot cure are not a 503.
			err = fmt.Errorf("encrypt %s: %w (%s)", f.name, err, vaultkeys.Reason(err))
			switch {
			case errors.Is(err, vaultkeys.ErrInvalidCustomer):
				return t.refuse(w, out, http.StatusUnprocessableEntity, ReasonWriteCustomerKey, err)
			case errors.Is(err, vaultkeys.ErrErased):
				return t.refuse(w, out, http.StatusGone, ReasonWriteErased, err)
			}
			return t.refuse(w, out, http.StatusServiceUnavailable, ReasonWriteKeys, err)
		}
		scopes[df.KeyScope] = true
		edits = append(edits, edit{span: f.v, repl: appendString(nil, ct)})
	}
	slices.SortFunc(edits, func(a, b edit) int { return a.start - b.start })
	w.Body = apply(body, edits)
	w.Enforcement.KeyScopes = sortedKeys(scopes)
	return w
}

func (t *Transformer) refuse(w *Write, out *pipeline.Outcome, status int, code string, err error) *Write {
	t.log.Info("write refused", "decision_id", out.DecisionID, "code", code, "error", err)
	w.Status, w.Codes, w.Err = status, []string{code}, err
	msg := err.Error()
	switch code {
	case ReasonWriteKeys:
		msg = "sensitive fields cannot be encrypted right now"
	case ReasonWriteCustomerKey:
		msg = "the customer id cannot name an encryption key (docs/key-model.md)"
	case ReasonWriteErased:
		msg = "the customer's keys were erased: nothing is stored for this customer again"
	}
	w.DenyBody = DenyBody(out.DecisionID, code, msg)
	w.Enforcement = audit.Enforcement{Status: status}
	return w
}

// collectWrite lists the fields of a write body the way the pipeline does (so the decision
// covers exactly these names): a route field is a leaf whatever its value; a non-empty object
// that is not a route field is descended; anything else is a field under its own path.
func collectWrite(b []byte, v span, prefix string, known map[string]bool, out *[]writeField, depth int) error {
	if depth > 16 {
		return fmt.Errorf("write body is nested too deeply")
	}
	_, err := scanObject(b, v.start, depth, func(m member) error {
		path := prefix + m.key
		if known[path] {
			*out = append(*out, writeField{name: path, v: m.val})
			return nil
		}
		if kind(b, m.val) == '{' && !emptyObject(b, m.val) {
			return collectWrite(b, m.val, path+".", known, out, depth+1)
		}
		*out = append(*out, writeField{name: path, v: m.val})
		return nil
	})
	return err
}

func emptyObject(b []byte, v span) bool {
	return skipWS(b, v.start+1) == v.end-1
}
