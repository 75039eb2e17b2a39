package input

import (
	"sort"
	"strconv"
	"time"
	"unsafe"

	"github.com/open-policy-agent/opa/v1/ast"
)

// ToValue converts the document to an OPA value without a JSON round trip. The result is
// equal to ast.InterfaceToValue of the document's JSON encoding (a test holds it to that).
func (in *Input) ToValue() ast.Value {
	cv := &conv{
		terms: make([]ast.Term, 0, 96+12*len(in.Enrichment.Consents)+len(in.Resource.Fields)),
		text:  make([]byte, 0, 64+96*len(in.Enrichment.Consents)),
	}
	o := cv.newObj(12)
	o.put("request", in.Request.value(cv))
	o.put("subject", in.Subject.value(cv))
	o.put("purpose", str(in.Purpose))
	if in.CaseID != "" {
		o.put("case_id", str(in.CaseID))
	}
	if in.BreakGlass != nil {
		bg := cv.newObj(1)
		bg.put("justification", str(in.BreakGlass.Justification))
		o.put("break_glass", bg.Object)
	}
	o.put("action", str(in.Action))
	o.put("resource", in.Resource.value(cv))
	o.put("enrichment", in.Enrichment.value(cv))
	if in.Phase != "" {
		o.put("phase", str(in.Phase))
	}
	if len(in.Records) > 0 {
		terms := cv.ptrs(len(in.Records))
		for i := range in.Records {
			r := cv.newObj(2)
			r.put("customer_id", str(in.Records[i].CustomerID))
			r.put("enrichment", in.Records[i].Enrichment.value(cv))
			terms[i] = cv.term(r.Object)
		}
		o.put("records", ast.NewArray(terms...))
	}
	t := cv.newObj(2)
	t.put("now", cv.time(in.Time.Now))
	cv.text = strconv.AppendInt(cv.text, in.Time.NowNS, 10)
	t.put("now_ns", ast.Number(cv.cut()))
	o.put("time", t.Object)
	return o.Object
}

func (r *Request) value(cv *conv) ast.Value {
	o := cv.newObj(10)
	o.optString("id", r.ID)
	o.optString("front_door", r.FrontDoor)
	o.put("method", str(r.Method))
	o.put("path", str(r.Path))
	o.optString("route", r.Route)
	if len(r.Params) > 0 {
		p := cv.newObj(len(r.Params))
		for k, v := range r.Params {
			p.put(k, str(v))
		}
		o.put("params", p.Object)
	}
	if len(r.Headers) > 0 {
		o.put("headers", cv.multiMap(r.Headers))
	}
	if len(r.Query) > 0 {
		o.put("query", cv.multiMap(r.Query))
	}
	o.optString("host", r.Host)
	if r.Source != (Source{}) {
		s := cv.newObj(2)
		s.optString("address", r.Source.Address)
		s.optString("principal", r.Source.Principal)
		o.put("source", s.Object)
	}
	return o.Object
}

func (s *Subject) value(cv *conv) ast.Value {
	o := cv.newObj(8)
	o.optString("id", s.ID)
	o.optString("type", s.Type)
	if len(s.Roles) > 0 {
		o.put("roles", cv.strings(s.Roles))
	}
	o.optString("processor_id", s.ProcessorID)
	o.optString("customer_id", s.CustomerID)
	if s.MFA {
		o.put("mfa", ast.Boolean(true))
	}
	o.optString("auth_method", s.AuthMethod)
	if len(s.Claims) > 0 {
		if v, err := ast.InterfaceToValue(s.Claims); err == nil {
			o.put("claims", v)
		}
	}
	return o.Object
}

func (r *Resource) value(cv *conv) ast.Value {
	o := cv.newObj(3)
	o.put("type", str(r.Type))
	o.optString("customer_id", r.CustomerID)
	if len(r.Fields) > 0 {
		o.put("fields", cv.strings(r.Fields))
	}
	return o.Object
}

func (e *Enrichment) value(cv *conv) ast.Value {
	o := cv.newObj(5)
	cs := cv.ptrs(len(e.Consents))
	for i := range e.Consents {
		cs[i] = cv.term(e.Consents[i].value(cv))
	}
	o.put("consents", ast.NewArray(cs...))
	if e.Case != nil {
		c := cv.newObj(5)
		c.put("id", str(e.Case.ID))
		c.put("customer_id", str(e.Case.CustomerID))
		c.put("assignees", cv.strings(e.Case.Assignees))
		c.put("status", str(e.Case.Status))
		c.optString("purpose", e.Case.Purpose)
		o.put("case", c.Object)
	}
	if e.Agreement != nil {
		a := cv.newObj(5)
		a.put("processor_id", str(e.Agreement.ProcessorID))
		a.put("purposes", cv.strings(e.Agreement.Purposes))
		a.put("categories", cv.strings(e.Agreement.Categories))
		a.optTime("valid_from", e.Agreement.ValidFrom)
		a.optTime("valid_until", e.Agreement.ValidUntil)
		o.put("agreement", a.Object)
	}
	if e.Customer != nil {
		c := cv.newObj(4)
		c.put("id", str(e.Customer.ID))
		c.optTime("retention_until", e.Customer.RetentionUntil)
		c.put("erased", ast.Boolean(e.Customer.Erased))
		c.optTime("erased_at", e.Customer.ErasedAt)
		o.put("customer", c.Object)
	}
	if len(e.Errors) > 0 {
		o.put("errors", cv.strings(e.Errors))
	}
	return o.Object
}

func (c *Consent) value(cv *conv) ast.Value {
	// Sized exactly: OPA backs an object with a Go map, and a map hinted at no more than 8
	// entries is one group instead of a table (most consents have 6-8 members).
	n := 2 + nonEmpty(c.NoticeVersion) + nonEmpty(c.NoticeHash) + nonEmpty(c.Channel) + nonEmpty(c.CapturedBy) + nonEmpty(c.EventID) +
		nonNil(c.GrantedAt) + nonNil(c.ExpiresAt) + nonNil(c.WithdrawnAt)
	o := cv.newObj(n)
	o.put("purpose", str(c.Purpose))
	o.put("status", str(c.Status))
	o.optString("notice_version", c.NoticeVersion)
	o.optString("notice_hash", c.NoticeHash)
	o.optString("channel", c.Channel)
	o.optString("captured_by", c.CapturedBy)
	o.optTime("granted_at", c.GrantedAt)
	o.optTime("expires_at", c.ExpiresAt)
	o.optTime("withdrawn_at", c.WithdrawnAt)
	o.optString("event_id", c.EventID)
	return o.Object
}

func nonEmpty(s string) int {
	if s == "" {
		return 0
	}
	return 1
}

func nonNil(t *time.Time) int {
	if t == nil {
		return 0
	}
	return 1
}

// conv holds the terms of one conversion: value terms and array element slices are cut from
// shared arenas (a few allocations per input instead of one or two per object and array).
// Terms are never mutated once built (OPA treats the values of its input as immutable).
type conv struct {
	terms []ast.Term
	elems []*ast.Term
	text  []byte // formatted timestamps and numbers; bytes once cut are never written again
	mark  int    // start of the text not yet cut
}

// time formats t (UTC, RFC 3339 with nanoseconds, as encoding/json would) into the text
// buffer.
func (cv *conv) time(t time.Time) ast.Value {
	cv.text = t.UTC().AppendFormat(cv.text, time.RFC3339Nano)
	return ast.String(cv.cut())
}

// cut returns the text appended since the last cut as a string sharing the buffer's memory.
// Appending later never changes those bytes (a full buffer is copied, and the string keeps
// the old array alive).
func (cv *conv) cut() string {
	b := cv.text[cv.mark:]
	cv.mark = len(cv.text)
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// term returns a term for v from the arena.
func (cv *conv) term(v ast.Value) *ast.Term {
	if len(cv.terms) == cap(cv.terms) {
		cv.terms = make([]ast.Term, 0, 64)
	}
	cv.terms = append(cv.terms, ast.Term{Value: v})
	return &cv.terms[len(cv.terms)-1]
}

// ptrs returns a slice of n element pointers from the arena, capped at n so that appending to
// it (ast.Array.Append) copies instead of overwriting the next slice.
func (cv *conv) ptrs(n int) []*ast.Term {
	if cap(cv.elems)-len(cv.elems) < n {
		cv.elems = make([]*ast.Term, 0, max(64, n))
	}
	i := len(cv.elems)
	cv.elems = cv.elems[:i+n]
	return cv.elems[i : i+n : i+n]
}

// obj builds an object whose member keys are shared, pre-built terms (keyTerm) and whose value
// terms come from the conversion's arena.
type obj struct {
	ast.Object
	cv *conv
}

func (cv *conv) newObj(n int) obj {
	return obj{Object: ast.NewObjectWithCapacity(n), cv: cv}
}

func (o *obj) put(k string, v ast.Value) {
	o.Insert(keyTerm(k), o.cv.term(v))
}

func (o *obj) optString(k, v string) {
	if v != "" {
		o.put(k, str(v))
	}
}

func (o *obj) optTime(k string, t *time.Time) {
	if t != nil {
		o.put(k, o.cv.time(*t))
	}
}

// keyTerms are the input document's member names as shared terms (never mutated: OPA treats
// terms of a value as immutable, as it does its own interned terms).
var keyTerms = func() map[string]*ast.Term {
	m := map[string]*ast.Term{}
	for _, k := range []string{
		"request", "subject", "purpose", "case_id", "break_glass", "justification", "action", "resource",
		"enrichment", "phase", "records", "customer_id", "time", "now", "now_ns",
		"id", "front_door", "method", "path", "route", "params", "headers", "query", "host", "source",
		"address", "principal", "type", "roles", "processor_id", "mfa", "auth_method", "claims", "fields",
		"consents", "case", "assignees", "status", "agreement", "purposes", "categories", "valid_from",
		"valid_until", "customer", "retention_until", "erased", "erased_at", "errors",
		"notice_version", "notice_hash", "channel", "captured_by", "granted_at", "expires_at",
		"withdrawn_at", "event_id",
		// common request header names
		"x-purpose", "x-case-id", "authorization", "content-type", "accept", "user-agent", "x-request-id",
		"x-forwarded-for", "x-consentry-purpose", "x-consentry-case-id",
	} {
		m[k] = ast.StringTerm(k)
	}
	return m
}()

func keyTerm(k string) *ast.Term {
	if t, ok := keyTerms[k]; ok {
		return t
	}
	return ast.StringTerm(k)
}

func (cv *conv) strings(ss []string) ast.Value {
	terms := cv.ptrs(len(ss))
	for i, s := range ss {
		terms[i] = cv.term(str(s))
	}
	return ast.NewArray(terms...)
}

func (cv *conv) multiMap(m map[string][]string) ast.Value {
	o := cv.newObj(len(m))
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		o.put(k, cv.strings(m[k]))
	}
	return o.Object
}
