package jsonl

import (
	"strconv"

	"github.com/consentry/consentry/sidecar/audit"
	"github.com/consentry/consentry/sidecar/decision"
	"github.com/consentry/consentry/sidecar/input"
)

// appendEntry writes e as one JSON line, byte for byte what encoding/json's Encoder writes for
// the Event built from e (field order, omitempty, null for nil slices and maps, sorted map
// keys, HTML-safe string escaping, RFC 3339 times), without reflection: the line is written
// for every decision and reflection-based encoding was the largest part of a cached check.
// TestEncoderMatchesEncodingJSON holds it to that on randomly filled entries, and fails when
// a field is added to the entry, input or decision types that this encoder does not write.
func appendEntry(b []byte, e *audit.Entry) ([]byte, error) {
	keys := keysPool.Get().(*[]string)
	defer keysPool.Put(keys)
	w := encoder{b: b, keys: keys}
	w.open()
	w.key("decision_id")
	w.str(e.DecisionID)
	if e.Intent {
		// A write-ahead line: the decision's own line, with the CRM's status, follows.
		w.key("intent")
		w.b = append(w.b, "true"...)
	}
	w.key("timestamp")
	w.time(e.Timestamp.UTC())
	w.key("path")
	w.str(e.Path)
	if e.Input != nil {
		w.key("input")
		w.input(e.Input)
	}
	if e.Decision != nil {
		w.key("result")
		w.decision(e.Decision)
	}
	w.optStr("revision", e.Revision)
	if len(e.Bundles) > 0 {
		w.key("bundles")
		w.open()
		for _, k := range sortedFlat(&w, e.Bundles) {
			w.key2(k)
			w.open()
			w.key("revision")
			w.str(e.Bundles[k])
			w.close()
		}
		w.close()
	}
	w.optStr("error", e.Error)
	w.key("enforcement")
	w.enforcement(&e.Enforcement)
	if len(e.Labels) > 0 {
		w.key("labels")
		w.strMap(e.Labels)
	}
	w.optStr("trace_id", e.TraceID)
	w.optStr("requested_by", e.RequestedBy)
	if len(e.Metrics) > 0 {
		w.key("metrics")
		w.open()
		for _, k := range sortedFlat(&w, e.Metrics) {
			w.key2(k)
			w.b = strconv.AppendInt(w.b, e.Metrics[k], 10)
		}
		w.close()
	}
	w.close()
	w.b = append(w.b, '\n')
	return w.b, w.err
}

func (w *encoder) enforcement(e *audit.Enforcement) {
	// audit.Enforcement has no JSON tags: Go field names.
	w.open()
	w.key("Status")
	w.int(e.Status)
	w.key("FieldsReleased")
	w.strs(e.FieldsReleased)
	w.key("FieldsMasked")
	w.strs(e.FieldsMasked)
	w.key("FieldsDropped")
	w.strs(e.FieldsDropped)
	w.key("KeyScopes")
	w.strs(e.KeyScopes)
	w.key("RecordsReturned")
	w.int(e.RecordsReturned)
	w.key("RecordsFiltered")
	w.int(e.RecordsFiltered)
	w.key("Withheld")
	w.strs(e.Withheld)
	w.key("Records")
	if lr := e.Records; lr == nil {
		w.null()
	} else {
		w.open()
		w.key("Input")
		if lr.Input == nil {
			w.null()
		} else {
			w.inputRecords(lr.Input)
		}
		w.key("Decisions")
		if lr.Decisions == nil {
			w.null()
		} else {
			w.records(lr.Decisions)
		}
		w.key("Served")
		w.strs(lr.Served)
		w.key("Filtered")
		w.strs(lr.Filtered)
		w.close()
	}
	w.close()
}

// inputRecords writes an input's records (input.records) as a JSON array.
func (w *encoder) inputRecords(recs []input.Record) {
	w.b = append(w.b, '[')
	for i := range recs {
		w.sep()
		w.inputRecord(&recs[i])
	}
	w.b = append(w.b, ']')
}

func (w *encoder) inputRecord(r *input.Record) {
	w.open()
	w.key("customer_id")
	w.str(r.CustomerID)
	w.key("enrichment")
	w.enrichment(&r.Enrichment)
	w.close()
}

// records writes per-record outcomes by customer id.
func (w *encoder) records(m map[string]decision.Record) {
	w.open()
	for _, k := range sortedKeys(m) {
		r := m[k]
		w.key2(k)
		w.open()
		w.key("allow")
		w.bool(r.Allow)
		w.key("reasons")
		w.reasons(r.Reasons)
		if len(r.Fields) > 0 {
			w.key("fields")
			w.fields(r.Fields)
		}
		w.optStrs("key_scopes", r.KeyScopes)
		w.close()
	}
	w.close()
}

func (w *encoder) input(in *input.Input) {
	w.open()
	r := &in.Request
	w.key("request")
	w.open()
	w.optStr("id", r.ID)
	w.optStr("front_door", r.FrontDoor)
	w.key("method")
	w.str(r.Method)
	w.key("path")
	w.str(r.Path)
	w.optStr("route", r.Route)
	if len(r.Params) > 0 {
		w.key("params")
		w.strMap(r.Params)
	}
	if len(r.Headers) > 0 {
		w.key("headers")
		w.listMap(r.Headers)
	}
	if len(r.Query) > 0 {
		w.key("query")
		w.listMap(r.Query)
	}
	w.optStr("host", r.Host)
	if r.Source != (input.Source{}) {
		w.key("source")
		w.open()
		w.optStr("address", r.Source.Address)
		w.optStr("principal", r.Source.Principal)
		w.close()
	}
	w.close()

	s := &in.Subject
	w.key("subject")
	w.open()
	w.optStr("id", s.ID)
	w.optStr("type", s.Type)
	w.optStrs("roles", s.Roles)
	w.optStr("processor_id", s.ProcessorID)
	w.optStr("customer_id", s.CustomerID)
	if s.MFA {
		w.key("mfa")
		w.bool(true)
	}
	w.optStr("auth_method", s.AuthMethod)
	if len(s.Claims) > 0 {
		w.key("claims")
		w.anyMap(s.Claims)
	}
	w.close()

	w.key("purpose")
	w.str(in.Purpose)
	w.optStr("case_id", in.CaseID)
	if in.BreakGlass != nil {
		w.key("break_glass")
		w.open()
		w.key("justification")
		w.str(in.BreakGlass.Justification)
		w.close()
	}
	w.key("action")
	w.str(in.Action)
	w.key("resource")
	w.open()
	w.key("type")
	w.str(in.Resource.Type)
	w.optStr("customer_id", in.Resource.CustomerID)
	w.optStrs("fields", in.Resource.Fields)
	w.close()
	w.key("enrichment")
	w.enrichment(&in.Enrichment)
	w.optStr("phase", in.Phase)
	if len(in.Records) > 0 {
		w.key("records")
		w.inputRecords(in.Records)
	}
	w.key("time")
	w.open()
	w.key("now")
	w.time(in.Time.Now)
	w.key("now_ns")
	w.b = strconv.AppendInt(w.b, in.Time.NowNS, 10)
	w.close()
	w.close()
}

func (w *encoder) enrichment(e *input.Enrichment) {
	w.open()
	w.key("consents")
	if e.Consents == nil {
		w.null()
	} else {
		w.b = append(w.b, '[')
		for i := range e.Consents {
			c := &e.Consents[i]
			w.sep()
			w.open()
			w.key("purpose")
			w.str(c.Purpose)
			w.key("status")
			w.str(c.Status)
			w.optStr("notice_version", c.NoticeVersion)
			w.optStr("notice_hash", c.NoticeHash)
			w.optStr("channel", c.Channel)
			w.optStr("captured_by", c.CapturedBy)
			w.optTime("granted_at", c.GrantedAt)
			w.optTime("expires_at", c.ExpiresAt)
			w.optTime("withdrawn_at", c.WithdrawnAt)
			w.optStr("event_id", c.EventID)
			w.close()
		}
		w.b = append(w.b, ']')
	}
	if c := e.Case; c != nil {
		w.key("case")
		w.open()
		w.key("id")
		w.str(c.ID)
		w.key("customer_id")
		w.str(c.CustomerID)
		w.key("assignees")
		w.strs(c.Assignees)
		w.key("status")
		w.str(c.Status)
		w.optStr("purpose", c.Purpose)
		w.close()
	}
	if a := e.Agreement; a != nil {
		w.key("agreement")
		w.open()
		w.key("processor_id")
		w.str(a.ProcessorID)
		w.key("purposes")
		w.strs(a.Purposes)
		w.key("categories")
		w.strs(a.Categories)
		w.optTime("valid_from", a.ValidFrom)
		w.optTime("valid_until", a.ValidUntil)
		w.close()
	}
	if c := e.Customer; c != nil {
		w.key("customer")
		w.open()
		w.key("id")
		w.str(c.ID)
		w.optTime("retention_until", c.RetentionUntil)
		w.key("erased")
		w.bool(c.Erased)
		w.optTime("erased_at", c.ErasedAt)
		w.close()
	}
	w.optStrs("errors", e.Errors)
	w.close()
}

func (w *encoder) reasons(rs []decision.Reason) {
	if rs == nil {
		w.null()
		return
	}
	w.b = append(w.b, '[')
	for _, r := range rs {
		w.sep()
		w.open()
		w.key("code")
		w.str(r.Code)
		w.key("message")
		w.str(r.Message)
		w.close()
	}
	w.b = append(w.b, ']')
}

func (w *encoder) fields(m map[string]decision.Field) {
	if m == nil {
		w.null()
		return
	}
	w.open()
	for _, k := range sortedFlat(w, m) {
		f := m[k]
		w.key2(k)
		w.open()
		w.key("outcome")
		w.str(f.Outcome)
		w.optStr("mask", f.Mask)
		w.optStr("category", f.Category)
		w.optStr("key_scope", f.KeyScope)
		w.close()
	}
	w.close()
}

func (w *encoder) decision(d *decision.Decision) {
	w.open()
	w.optStr("decision_id", d.ID)
	w.key("allow")
	w.bool(d.Allow)
	w.key("status")
	w.int(d.Status)
	w.key("reasons")
	w.reasons(d.Reasons)
	w.key("fields")
	w.fields(d.Fields)
	w.key("key_scopes")
	w.strs(d.KeyScopes)
	w.key("obligations")
	if d.Obligations == nil {
		w.null()
	} else {
		w.b = append(w.b, '[')
		for _, o := range d.Obligations {
			w.sep()
			w.open()
			w.key("type")
			w.str(o.Type)
			if len(o.Params) > 0 {
				w.key("params")
				w.anyMap(o.Params)
			}
			w.close()
		}
		w.b = append(w.b, ']')
	}
	w.key("headers")
	w.strMap(d.Headers)
	w.key("flags")
	w.strs(d.Flags)
	if len(d.Records) > 0 {
		w.key("records")
		w.records(d.Records)
	}
	w.close()
}
