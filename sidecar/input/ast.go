package input

import (
	"sort"
	"strconv"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

// ToValue converts the document to an OPA value without a JSON round trip. The result is
// equal to ast.InterfaceToValue of the document's JSON encoding (a test holds it to that).
func (in *Input) ToValue() ast.Value {
	o := newObj(12)
	o.put("request", in.Request.value())
	o.put("subject", in.Subject.value())
	o.put("purpose", str(in.Purpose))
	if in.CaseID != "" {
		o.put("case_id", str(in.CaseID))
	}
	if in.BreakGlass != nil {
		bg := newObj(1)
		bg.put("justification", str(in.BreakGlass.Justification))
		o.put("break_glass", bg.Object)
	}
	o.put("action", str(in.Action))
	o.put("resource", in.Resource.value())
	o.put("enrichment", in.Enrichment.value())
	if in.Phase != "" {
		o.put("phase", str(in.Phase))
	}
	if len(in.Records) > 0 {
		terms := make([]*ast.Term, len(in.Records))
		for i := range in.Records {
			r := newObj(2)
			r.put("customer_id", str(in.Records[i].CustomerID))
			r.put("enrichment", in.Records[i].Enrichment.value())
			terms[i] = ast.NewTerm(r.Object)
		}
		o.put("records", ast.NewArray(terms...))
	}
	t := newObj(2)
	t.put("now", ast.String(in.Time.Now.UTC().Format(time.RFC3339Nano)))
	t.put("now_ns", ast.Number(strconv.FormatInt(in.Time.NowNS, 10)))
	o.put("time", t.Object)
	return o.Object
}

func (r *Request) value() ast.Value {
	o := newObj(10)
	o.optString("id", r.ID)
	o.optString("front_door", r.FrontDoor)
	o.put("method", str(r.Method))
	o.put("path", str(r.Path))
	o.optString("route", r.Route)
	if len(r.Params) > 0 {
		p := newObj(len(r.Params))
		for k, v := range r.Params {
			p.put(k, str(v))
		}
		o.put("params", p.Object)
	}
	if len(r.Headers) > 0 {
		o.put("headers", multiMap(r.Headers))
	}
	if len(r.Query) > 0 {
		o.put("query", multiMap(r.Query))
	}
	o.optString("host", r.Host)
	if r.Source != (Source{}) {
		s := newObj(2)
		s.optString("address", r.Source.Address)
		s.optString("principal", r.Source.Principal)
		o.put("source", s.Object)
	}
	return o.Object
}

func (s *Subject) value() ast.Value {
	o := newObj(8)
	o.optString("id", s.ID)
	o.optString("type", s.Type)
	if len(s.Roles) > 0 {
		o.put("roles", strings(s.Roles))
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

func (r *Resource) value() ast.Value {
	o := newObj(3)
	o.put("type", str(r.Type))
	o.optString("customer_id", r.CustomerID)
	if len(r.Fields) > 0 {
		o.put("fields", strings(r.Fields))
	}
	return o.Object
}

func (e *Enrichment) value() ast.Value {
	o := newObj(5)
	cs := make([]*ast.Term, len(e.Consents))
	for i := range e.Consents {
		cs[i] = ast.NewTerm(e.Consents[i].value())
	}
	o.put("consents", ast.NewArray(cs...))
	if e.Case != nil {
		c := newObj(5)
		c.put("id", str(e.Case.ID))
		c.put("customer_id", str(e.Case.CustomerID))
		c.put("assignees", strings(e.Case.Assignees))
		c.put("status", str(e.Case.Status))
		c.optString("purpose", e.Case.Purpose)
		o.put("case", c.Object)
	}
	if e.Agreement != nil {
		a := newObj(5)
		a.put("processor_id", str(e.Agreement.ProcessorID))
		a.put("purposes", strings(e.Agreement.Purposes))
		a.put("categories", strings(e.Agreement.Categories))
		a.optTime("valid_from", e.Agreement.ValidFrom)
		a.optTime("valid_until", e.Agreement.ValidUntil)
		o.put("agreement", a.Object)
	}
	if e.Customer != nil {
		c := newObj(4)
		c.put("id", str(e.Customer.ID))
		c.optTime("retention_until", e.Customer.RetentionUntil)
		c.put("erased", ast.Boolean(e.Customer.Erased))
		c.optTime("erased_at", e.Customer.ErasedAt)
		o.put("customer", c.Object)
	}
	if len(e.Errors) > 0 {
		o.put("errors", strings(e.Errors))
	}
	return o.Object
}

func (c *Consent) value() ast.Value {
	o := newObj(10)
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

// obj builds an object. Keys are shared, pre-built terms (keyTerm) and value terms come from a
// slab allocated once per object: one allocation per object instead of three per member.
type obj struct {
	ast.Object
	slab []ast.Term
}

func newObj(n int) obj {
	return obj{Object: ast.NewObjectWithCapacity(n), slab: make([]ast.Term, 0, n)}
}

func (o *obj) put(k string, v ast.Value) {
	if len(o.slab) == cap(o.slab) {
		o.slab = make([]ast.Term, 0, 4)
	}
	o.slab = append(o.slab, ast.Term{Value: v})
	o.Insert(keyTerm(k), &o.slab[len(o.slab)-1])
}

func (o *obj) optString(k, v string) {
	if v != "" {
		o.put(k, str(v))
	}
}

func (o *obj) optTime(k string, t *time.Time) {
	if t != nil {
		o.put(k, ast.String(t.UTC().Format(time.RFC3339Nano)))
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

func strings(ss []string) ast.Value {
	terms := make([]*ast.Term, len(ss))
	slab := make([]ast.Term, len(ss))
	for i, s := range ss {
		slab[i].Value = str(s)
		terms[i] = &slab[i]
	}
	return ast.NewArray(terms...)
}

func multiMap(m map[string][]string) ast.Value {
	o := newObj(len(m))
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		o.put(k, strings(m[k]))
	}
	return o.Object
}
