// Package transform is the response (and write-request) transformer shared by consentry's
// front doors with a response phase: the HTTP reverse proxy (sidecar/proxy) and Envoy
// ext_proc (sidecar/envoy). Driven by the route map's field paths and the decision, it rewrites
// JSON bodies field by field:
//
//   - allowed and encrypted: decrypted with keys released from Vault for this decision only;
//   - allowed and plaintext: served as is;
//   - masked: last four, keyed HMAC, year only, or "[redacted]";
//   - denied: removed;
//   - allowed but its key unavailable (Vault down, erased, ...): withheld, served as null and
//     named in the x-consentry-withheld header. Never plaintext without a decision, never
//     ciphertext passed off as a value.
//
// List routes are filtered per record: each record is decided with its own customer's state
// (pipeline.DecideRecords, one batch lookup) and records that may not be served are removed;
// the decision log is told which customers were served and which removed, with each one's
// outcome (audit.ListRecords). Write requests are checked again field by field and their sensitive
// fields encrypted (vaultkeys ReleaseForWrite) before they reach the CRM. docs/response-transform.md
// describes the rules.
package transform

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"slices"
	"strings"

	"github.com/consentry/consentry/sidecar/audit"
	"github.com/consentry/consentry/sidecar/decision"
	"github.com/consentry/consentry/sidecar/pipeline"
	"github.com/consentry/consentry/sidecar/routes"
	"github.com/consentry/consentry/vaultkeys"
)

// Keys releases decision-gated keys (*vaultkeys.Manager). Declared here so the transformer
// depends on the three calls it makes, and so a nil Keys means "no Vault": every field that
// needs a key is withheld and every write that needs encryption is refused.
type Keys interface {
	Release(ctx context.Context, customerID string, d *decision.Decision) (*vaultkeys.KeySet, error)
	ReleaseRecord(ctx context.Context, d *decision.Decision, customerID string) (*vaultkeys.KeySet, error)
	ReleaseForWrite(ctx context.Context, customerID string, d *decision.Decision) (*vaultkeys.KeySet, error)
}

// RecordDecider decides the records of a list response (*pipeline.Pipeline). DecidePage never
// returns nil and, on error, denies every record.
type RecordDecider interface {
	DecidePage(ctx context.Context, out *pipeline.Outcome, customerIDs []string) (*pipeline.Page, error)
}

var (
	_ Keys          = (*vaultkeys.Manager)(nil)
	_ RecordDecider = (*pipeline.Pipeline)(nil)
)

// Reason codes of responses the transformer replaces (fail closed) and of refused writes.
const (
	ReasonNotJSON          = "response.not_json"
	ReasonInvalidJSON      = "response.invalid_json"
	ReasonTooLarge         = "response.too_large"
	ReasonShape            = "response.shape_unexpected"
	ReasonRecordsUndecided = "response.records_undecided"
	ReasonEncoded          = "response.encoded"
	ReasonPartial          = "response.partial"
	ReasonWriteNotAllowed  = "field.write_not_allowed"
	ReasonWriteCiphertext  = "field.ciphertext_not_accepted"
	ReasonWriteType        = "field.type_unsupported"
	ReasonWriteCustomer    = "write.customer_id_required"
	ReasonWriteKeys        = "write.keys_unavailable"
	// ReasonWriteCustomerKey: the customer id cannot name a key (docs/key-model.md); the
	// write can never succeed, so it is a 422, not a 503 a client would retry forever.
	ReasonWriteCustomerKey = "write.customer_id_invalid"
	// ReasonWriteErased: the customer's keys were destroyed; nothing is stored for them again.
	ReasonWriteErased = "write.customer_erased"
	ReasonWriteBody   = "request.body_invalid"
)

// Reason codes of a CRM that failed to give an answer that is a record (timed out, could not
// be reached, or an error page), one spelling for both doors: the proxy names its own upstream
// failures with them, ext_proc the local replies Envoy sends in the CRM's place.
const (
	ReasonUpstreamTimeout = "upstream.timeout"
	ReasonUpstreamDown    = "upstream.unavailable"
	ReasonUpstreamError   = "upstream.error"
)

// HeaderWithheld names the fields withheld from a response (their keys were unavailable).
const HeaderWithheld = "x-consentry-withheld"

// Transformer is safe for concurrent use.
type Transformer struct {
	cfg     Config
	keys    Keys
	hmacKey []byte
	log     *slog.Logger
	tries   trieCache
}

// New builds a transformer. keys may be nil (no Vault configured): fields that need a key are
// withheld and writes that need encryption are refused.
func New(cfg Config, keys Keys, log *slog.Logger) (*Transformer, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	t := &Transformer{cfg: cfg, keys: keys, log: log}
	if m, ok := keys.(*vaultkeys.Manager); ok && m == nil {
		t.keys = nil // a typed nil is still "no keys"
	}
	if t.log == nil {
		t.log = slog.Default()
	}
	if cfg.HMACKeyFile != "" {
		k, err := readKey(cfg.HMACKeyFile)
		if err != nil {
			return nil, fmt.Errorf("transform.hmac_key_file: %w", err)
		}
		t.hmacKey = k
	}
	return t, nil
}

// Config returns the effective configuration.
func (t *Transformer) Config() Config { return t.cfg }

// Response is an upstream response as the door received it.
type Response struct {
	Status      int
	ContentType string
	// ContentEncoding is the upstream's Content-Encoding ("" or "identity" when plain).
	ContentEncoding string
	// ContentRange is the upstream's Content-Range ("" when none): with it, or with a 206,
	// the body is a slice of a representation, never a whole record.
	ContentRange string
	Body         []byte
}

// Result is what the door sends instead.
type Result struct {
	// Status is the upstream's status, or 502 when the body was replaced (fail closed).
	Status int
	// Body is the body to send (the upstream's when nothing changed).
	Body []byte
	// ContentType is set when the body was replaced by a deny document.
	ContentType string
	// Headers are added to the response (x-consentry-withheld).
	Headers map[string]string
	// Changed says Body differs from the upstream's.
	Changed bool
	// Replaced says Body is consentry's deny document, not (a transformation of) the
	// upstream's: the upstream's headers describe a body that is not sent.
	Replaced bool
	// Enforcement is what was done, for the decision log.
	Enforcement audit.Enforcement
	// Err explains a replaced body (for the door's log; never sent).
	Err error
}

// NeedsBody reports whether the door must buffer the response body of out's route (false for
// public routes and denied requests, whose responses are passed or replaced as they are).
func NeedsBody(out *pipeline.Outcome) bool {
	return out != nil && out.Allowed() && out.Match != nil && !out.Match.Route.Public
}

// Response rewrites an upstream response for an allowed outcome. It never returns nil.
func (t *Transformer) Response(ctx context.Context, rd RecordDecider, out *pipeline.Outcome, r Response) *Result {
	res := &Result{Status: r.Status, Body: r.Body}
	if !NeedsBody(out) {
		return res
	}
	route := out.Match.Route
	if r.Status == http.StatusPartialContent || r.ContentRange != "" {
		// A byte range of a record is not a record: a slice that is itself valid JSON (the
		// bare value of a denied field, an inner object) would be minimized as if it were
		// the whole document, and pass. Only a non-JSON body on a body: any route, which
		// passes unchanged anyway, may be partial.
		if _, isJSON := jsonKind(r.ContentType); isJSON || route.Body != routes.BodyAny {
			return t.fail(res, out, ReasonPartial, fmt.Errorf("partial response: status %d, content range %q", r.Status, r.ContentRange))
		}
	}
	if len(bytes.TrimSpace(r.Body)) == 0 {
		return res // 204, HEAD, empty error bodies: nothing to minimize
	}
	ndjson, isJSON := jsonKind(r.ContentType)
	if !isJSON {
		if route.Body == routes.BodyAny {
			return res
		}
		return t.fail(res, out, ReasonNotJSON, fmt.Errorf("content type %q on a route that only passes JSON", r.ContentType))
	}
	if enc := strings.ToLower(strings.TrimSpace(r.ContentEncoding)); enc != "" && enc != "identity" {
		return t.fail(res, out, ReasonEncoded, fmt.Errorf("content encoding %q", enc))
	}
	if len(r.Body) > t.cfg.MaxBodyBytes {
		return t.fail(res, out, ReasonTooLarge, fmt.Errorf("%d bytes over transform.max_body_bytes %d", len(r.Body), t.cfg.MaxBodyBytes))
	}
	rep := newReport()
	var body []byte
	var err error
	var code string
	perRecord := out.Decision != nil && slices.ContainsFunc(out.Decision.Obligations, func(o decision.Obligation) bool {
		return o.Type == pipeline.ObligationFilterRecords
	})
	success := r.Status >= 200 && r.Status < 300
	switch {
	case ndjson && route.RecordPath != "" && !route.List:
		// Each line would be an envelope, not a record: its records would escape the rules.
		code, err = ReasonShape, fmt.Errorf("JSON lines on a route whose records are at %q", route.RecordPath)
	case ndjson:
		body, code, err = t.lines(ctx, rd, out, r.Body, perRecord, rep, &res.Enforcement)
	case route.RecordPath != "" || perRecord:
		body, code, err = t.list(ctx, rd, out, r.Body, perRecord, perRecord && !success, rep, &res.Enforcement)
		switch {
		case success || !errors.Is(err, errNoRecords): // a list, filtered (or refused)
		case perRecord: // no decision is that of a customer in it: its message only (errdoc.go)
			body, code, err = t.errorDocument(r.Body, route, rep)
		default: // one customer's records (notes): the request's decision is that customer's
			body, code, err = t.single(ctx, out, r.Body, !success, rep)
		}
	default:
		// One record, or an error document: the request's decision applies to the document.
		body, code, err = t.single(ctx, out, r.Body, !success, rep)
	}
	if err != nil {
		return t.fail(res, out, code, err)
	}
	res.Enforcement.FieldsReleased = sortedKeys(rep.released)
	res.Enforcement.FieldsMasked = sortedKeys(rep.masked)
	res.Enforcement.FieldsDropped = sortedKeys(rep.dropped)
	res.Enforcement.Withheld = sortedKeys(rep.withheld)
	res.Enforcement.KeyScopes = sortedKeys(rep.scopes)
	if len(rep.withheld) > 0 {
		res.Headers = map[string]string{HeaderWithheld: strings.Join(res.Enforcement.Withheld, ",")}
	}
	res.Changed = !bytes.Equal(body, r.Body)
	res.Body = body
	return res
}

// fail replaces the body with a deny document: a response consentry cannot enforce is never
// passed on.
func (t *Transformer) fail(res *Result, out *pipeline.Outcome, code string, err error) *Result {
	t.log.Warn("response replaced", "decision_id", out.DecisionID, "code", code, "error", err)
	res.Status = http.StatusBadGateway
	res.Body = DenyBody(out.DecisionID, code, publicMessage(code))
	res.ContentType = "application/json"
	res.Changed = true
	res.Replaced = true
	res.Err = err
	res.Enforcement = audit.Enforcement{Status: res.Status}
	return res
}

func publicMessage(code string) string {
	switch code {
	case ReasonNotJSON:
		return "the CRM answered with a body this route does not pass"
	case ReasonTooLarge:
		return "the CRM's response is too large to enforce"
	case ReasonEncoded:
		return "the CRM's response is compressed and cannot be enforced"
	case ReasonPartial:
		return "the CRM answered with part of a response, which cannot be enforced"
	case ReasonRecordsUndecided:
		return "the records of this response could not be decided"
	default:
		return "the CRM's response could not be enforced"
	}
}

// DenyBody is the JSON body of a deny, in the pipeline's format {decision_id, reasons}.
func DenyBody(decisionID string, reasons ...string) []byte {
	type why struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	body := struct {
		DecisionID string `json:"decision_id"`
		Reasons    []why  `json:"reasons"`
	}{DecisionID: decisionID}
	for i := 0; i+1 < len(reasons); i += 2 {
		body.Reasons = append(body.Reasons, why{Code: reasons[i], Message: reasons[i+1]})
	}
	raw, _ := json.Marshal(body)
	return raw
}

// jsonKind classifies a content type: JSON lines (ndjson) or one JSON document.
func jsonKind(ct string) (ndjson, isJSON bool) {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false, false
	}
	switch {
	case mt == "application/x-ndjson" || mt == "application/jsonl" || mt == "application/x-jsonlines" || mt == "application/jsonlines":
		return true, true
	case mt == "application/json" || strings.HasSuffix(mt, "+json"):
		return false, true
	}
	return false, false
}

// single applies the request's decision to the whole document (records at record_path, or the
// document itself). A non-2xx document (message) keeps its unlisted scalars on a drop route:
// "error", "title", "detail" are its message, not the record's members.
func (t *Transformer) single(ctx context.Context, out *pipeline.Outcome, b []byte, message bool, rep *report) ([]byte, string, error) {
	doc, err := document(b)
	if err != nil {
		return nil, ReasonInvalidJSON, err
	}
	w := &walker{t: t, b: b, rep: rep, message: message}
	rec := &record{fields: out.Decision.Fields}
	if err := w.descend(rec, doc, t.tries.get(out.Match.Route), 0); err != nil {
		return nil, ReasonInvalidJSON, err
	}
	if rec.needsKeys() {
		ks := t.release(ctx, out.Input.Resource.CustomerID, out.Decision)
		w.finish(rec, ks)
		if ks != nil {
			ks.Close()
		}
	}
	slices.SortFunc(rec.edits, func(a, b edit) int { return a.start - b.start })
	return apply(b, rec.edits), "", nil
}

// release returns the keys of a single-customer decision (nil when none could be had).
func (t *Transformer) release(ctx context.Context, customerID string, d *decision.Decision) *vaultkeys.KeySet {
	if t.keys == nil || customerID == "" || len(d.KeyScopes) == 0 {
		return nil
	}
	ks, err := t.keys.Release(ctx, customerID, d)
	if err != nil {
		t.log.Warn("key release incomplete: fields withheld", "decision_id", d.ID, "reason", vaultkeys.Reason(err), "error", err)
	}
	return ks
}
