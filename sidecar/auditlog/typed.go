package auditlog

import (
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/consentry/consentry/sidecar/decision"
	"github.com/consentry/consentry/sidecar/input"
)

// typedEncoder writes the input and decision documents as canonical JSON straight from their
// Go types: the same bytes as json.Marshal -> generic decode -> canonical encoding (a test
// holds the two paths equal), at a fraction of the cost. It removes credential headers and
// query parameters and replaces customer ids on the way. It is used when no mask rule needs
// the generic tree.
type typedEncoder struct {
	b     []byte
	first []bool
	ids   idSet
	// list, for a list's record, replaces its customers' ids everywhere but in the records,
	// which listDetails pseudonymized record by record.
	list   *listIDs
	m      *masker
	erased []string
}

func (e *typedEncoder) open() {
	e.b = append(e.b, '{')
	e.first = append(e.first, true)
}

func (e *typedEncoder) close() {
	e.b = append(e.b, '}')
	e.first = e.first[:len(e.first)-1]
}

func (e *typedEncoder) key(k string) {
	top := len(e.first) - 1
	if !e.first[top] {
		e.b = append(e.b, ',')
	}
	e.first[top] = false
	e.b = appendString(e.b, k)
	e.b = append(e.b, ':')
}

// keyPair is a map key as written (pseudonymized) and as found in the map.
type keyPair struct{ out, raw string }

// orderedKeys returns m's keys in the order they are written: sorted by their written form,
// which differs from the raw key when the key is a customer id.
func orderedKeys[V any](e *typedEncoder, m map[string]V) []keyPair {
	ks := make([]keyPair, 0, len(m))
	for k := range m {
		ks = append(ks, keyPair{e.id(k), k})
	}
	sort.Slice(ks, func(i, j int) bool { return ks[i].out < ks[j].out })
	return ks
}

// id replaces a raw customer id with its pseudonym.
func (e *typedEncoder) id(s string) string {
	if len(e.ids) == 0 && e.list == nil {
		return s
	}
	if !utf8.ValidString(s) {
		// Match what the JSON text will say, as the generic path does.
		s = sanitizeUTF8(s)
	}
	s = replaceInText(s, e.ids)
	if e.list != nil {
		s = e.list.replace(s)
	}
	return s
}

func (e *typedEncoder) str(k, v string) {
	e.key(k)
	e.b = appendString(e.b, e.id(v))
}

func (e *typedEncoder) strOE(k, v string) {
	if v != "" {
		e.str(k, v)
	}
}

func (e *typedEncoder) boolean(k string, v bool) {
	e.key(k)
	e.b = strconv.AppendBool(e.b, v)
}

func (e *typedEncoder) int(k string, v int64) {
	e.key(k)
	e.b = strconv.AppendInt(e.b, v, 10)
}

func (e *typedEncoder) strs(k string, l []string) {
	e.key(k)
	e.strList(l)
}

func (e *typedEncoder) strList(l []string) {
	if l == nil {
		e.b = append(e.b, "null"...)
		return
	}
	e.b = append(e.b, '[')
	for i, s := range l {
		if i > 0 {
			e.b = append(e.b, ',')
		}
		e.b = appendString(e.b, e.id(s))
	}
	e.b = append(e.b, ']')
}

func (e *typedEncoder) strsOE(k string, l []string) {
	if len(l) > 0 {
		e.strs(k, l)
	}
}

func (e *typedEncoder) tm(k string, t time.Time) {
	e.key(k)
	// RFC 3339 text never needs escaping.
	e.b = append(e.b, '"')
	e.b = t.AppendFormat(e.b, time.RFC3339Nano)
	e.b = append(e.b, '"')
}

func (e *typedEncoder) tmPtr(k string, t *time.Time) {
	if t != nil {
		e.tm(k, *t)
	}
}

// anyMap encodes free-form values (claims, obligation params) through the generic path.
func (e *typedEncoder) anyMap(k string, m map[string]any) error {
	if len(m) == 0 {
		return nil
	}
	g, err := toGeneric(m)
	if err != nil {
		return err
	}
	if len(e.ids) > 0 {
		g = replaceIDs(g, e.ids)
	}
	if e.list != nil {
		g = e.list.replaceTree(g)
	}
	e.key(k)
	e.b, err = appendCanonical(e.b, g)
	return err
}

// multiMap writes headers or query, dropping credential names (as fold spells them).
func (e *typedEncoder) multiMap(k string, m map[string][]string, drop map[string]bool, fold func(string) string, where string) {
	if len(m) == 0 {
		return
	}
	e.key(k)
	e.open()
	for _, kp := range orderedKeys(e, m) {
		if drop[fold(kp.raw)] {
			e.erased = append(e.erased, where+escapePointer(kp.out))
			continue
		}
		e.key(kp.out)
		e.strList(m[kp.raw])
	}
	e.close()
}

func (e *typedEncoder) input(in *input.Input) error {
	e.open()
	e.str("action", in.Action)
	if bg := in.BreakGlass; bg != nil {
		e.key("break_glass")
		e.open()
		e.str("justification", bg.Justification)
		e.close()
	}
	e.strOE("case_id", in.CaseID)
	e.key("enrichment")
	e.enrichment(&in.Enrichment)
	e.strOE("phase", in.Phase)
	e.str("purpose", in.Purpose)
	if len(in.Records) > 0 {
		list := e.list
		e.list = nil
		e.key("records")
		e.b = append(e.b, '[')
		for i := range in.Records {
			if i > 0 {
				e.b = append(e.b, ',')
			}
			e.open()
			e.str("customer_id", in.Records[i].CustomerID)
			e.key("enrichment")
			e.enrichment(&in.Records[i].Enrichment)
			e.close()
		}
		e.b = append(e.b, ']')
		e.list = list
	}
	r := &in.Request
	e.key("request")
	e.open()
	e.strOE("front_door", r.FrontDoor)
	e.multiMap("headers", r.Headers, e.m.dropHeaders, headerKey, "/input/request/headers/")
	e.strOE("host", r.Host)
	e.strOE("id", r.ID)
	e.str("method", r.Method)
	if len(r.Params) > 0 {
		e.key("params")
		e.open()
		for _, kp := range orderedKeys(e, r.Params) {
			e.key(kp.out)
			e.b = appendString(e.b, e.id(r.Params[kp.raw]))
		}
		e.close()
	}
	e.str("path", r.Path)
	e.multiMap("query", r.Query, e.m.dropQuery, strings.ToLower, "/input/request/query/")
	e.strOE("route", r.Route)
	// encoding/json (v2 semantics in this Go) omits the empty source object.
	if r.Source.Address != "" || r.Source.Principal != "" {
		e.key("source")
		e.open()
		e.strOE("address", r.Source.Address)
		e.strOE("principal", r.Source.Principal)
		e.close()
	}
	e.close()
	e.key("resource")
	e.open()
	e.strOE("customer_id", in.Resource.CustomerID)
	e.strsOE("fields", in.Resource.Fields)
	e.str("type", in.Resource.Type)
	e.close()
	s := &in.Subject
	e.key("subject")
	e.open()
	e.strOE("auth_method", s.AuthMethod)
	if err := e.anyMap("claims", s.Claims); err != nil {
		return err
	}
	e.strOE("customer_id", s.CustomerID)
	e.strOE("id", s.ID)
	if s.MFA {
		e.boolean("mfa", true)
	}
	e.strOE("processor_id", s.ProcessorID)
	e.strsOE("roles", s.Roles)
	e.strOE("type", s.Type)
	e.close()
	e.key("time")
	e.open()
	e.tm("now", in.Time.Now)
	e.int("now_ns", in.Time.NowNS)
	e.close()
	e.close()
	return nil
}

func (e *typedEncoder) enrichment(en *input.Enrichment) {
	e.open()
	if a := en.Agreement; a != nil {
		e.key("agreement")
		e.open()
		e.strs("categories", a.Categories)
		e.str("processor_id", a.ProcessorID)
		e.strs("purposes", a.Purposes)
		e.tmPtr("valid_from", a.ValidFrom)
		e.tmPtr("valid_until", a.ValidUntil)
		e.close()
	}
	if c := en.Case; c != nil {
		e.key("case")
		e.open()
		e.strs("assignees", c.Assignees)
		e.str("customer_id", c.CustomerID)
		e.str("id", c.ID)
		e.strOE("purpose", c.Purpose)
		e.str("status", c.Status)
		e.close()
	}
	e.key("consents")
	if en.Consents == nil {
		e.b = append(e.b, "null"...)
	} else {
		e.b = append(e.b, '[')
		for i := range en.Consents {
			c := &en.Consents[i]
			if i > 0 {
				e.b = append(e.b, ',')
			}
			e.open()
			e.strOE("captured_by", c.CapturedBy)
			e.strOE("channel", c.Channel)
			e.strOE("event_id", c.EventID)
			e.tmPtr("expires_at", c.ExpiresAt)
			e.tmPtr("granted_at", c.GrantedAt)
			e.strOE("notice_hash", c.NoticeHash)
			e.strOE("notice_version", c.NoticeVersion)
			e.str("purpose", c.Purpose)
			e.str("status", c.Status)
			e.tmPtr("withdrawn_at", c.WithdrawnAt)
			e.close()
		}
		e.b = append(e.b, ']')
	}
	if c := en.Customer; c != nil {
		e.key("customer")
		e.open()
		e.boolean("erased", c.Erased)
		e.tmPtr("erased_at", c.ErasedAt)
		e.str("id", c.ID)
		e.tmPtr("retention_until", c.RetentionUntil)
		e.close()
	}
	e.strsOE("errors", en.Errors)
	e.close()
}

func (e *typedEncoder) reasons(k string, rs []decision.Reason) {
	e.key(k)
	if rs == nil {
		e.b = append(e.b, "null"...)
		return
	}
	e.b = append(e.b, '[')
	for i, r := range rs {
		if i > 0 {
			e.b = append(e.b, ',')
		}
		e.open()
		e.str("code", r.Code)
		e.str("message", r.Message)
		e.close()
	}
	e.b = append(e.b, ']')
}

func (e *typedEncoder) fields(k string, fs map[string]decision.Field, omitEmpty bool) {
	if fs == nil && omitEmpty || len(fs) == 0 && omitEmpty {
		return
	}
	e.key(k)
	if fs == nil {
		e.b = append(e.b, "null"...)
		return
	}
	e.open()
	for _, kp := range orderedKeys(e, fs) {
		f := fs[kp.raw]
		e.key(kp.out)
		e.open()
		e.strOE("category", f.Category)
		e.strOE("key_scope", f.KeyScope)
		e.strOE("mask", f.Mask)
		e.str("outcome", f.Outcome)
		e.close()
	}
	e.close()
}

func (e *typedEncoder) result(d *decision.Decision) error {
	e.open()
	e.boolean("allow", d.Allow)
	e.strOE("decision_id", d.ID)
	e.fields("fields", d.Fields, false)
	e.strs("flags", d.Flags)
	e.key("headers")
	if d.Headers == nil {
		e.b = append(e.b, "null"...)
	} else {
		e.open()
		for _, kp := range orderedKeys(e, d.Headers) {
			e.key(kp.out)
			e.b = appendString(e.b, e.id(d.Headers[kp.raw]))
		}
		e.close()
	}
	e.strs("key_scopes", d.KeyScopes)
	e.key("obligations")
	if d.Obligations == nil {
		e.b = append(e.b, "null"...)
	} else {
		e.b = append(e.b, '[')
		for i, o := range d.Obligations {
			if i > 0 {
				e.b = append(e.b, ',')
			}
			e.open()
			if err := e.anyMap("params", o.Params); err != nil {
				return err
			}
			e.str("type", o.Type)
			e.close()
		}
		e.b = append(e.b, ']')
	}
	e.reasons("reasons", d.Reasons)
	if len(d.Records) > 0 {
		list := e.list
		e.list = nil
		e.key("records")
		e.open()
		for _, kp := range orderedKeys(e, d.Records) {
			r := d.Records[kp.raw]
			e.key(kp.out)
			e.open()
			e.boolean("allow", r.Allow)
			e.fields("fields", r.Fields, true)
			e.strsOE("key_scopes", r.KeyScopes)
			e.reasons("reasons", r.Reasons)
			e.close()
		}
		e.close()
		e.list = list
	}
	e.int("status", int64(d.Status))
	e.close()
	return nil
}
