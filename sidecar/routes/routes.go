// Package routes maps a CRM's HTTP API onto what policies reason about: a method and path
// template such as "GET /api/customers/{customer_id}" becomes an action (read), a resource type
// (customer), the parameter that names the customer, and the catalogue fields the route
// returns or accepts. The map is YAML or JSON, from a file or from bundle data
// (data.consentry.routes); docs/route-map.md explains how to write one.
//
// Matching runs on the normalized path (sidecar/normalize). Literal segments win over
// parameters, so "/api/customers/export" beats "/api/customers/{customer_id}". A request that
// matches no route is denied by the pipeline (route.unknown) unless a public route matches.
package routes

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync/atomic"

	"gopkg.in/yaml.v3"

	"github.com/consentry/consentry/sidecar/input"
)

// Body kinds a route accepts.
const (
	BodyNone = "none"
	BodyJSON = "json"
	BodyAny  = "any"
)

// What response-side enforcement does with a response member the route map does not list.
const (
	// UnlistedPass serves it as it is (ciphertext in it is still withheld). The default, so
	// that a route map listing only the sensitive fields keeps working.
	UnlistedPass = "pass"
	// UnlistedDrop removes it: a record serves only its listed fields and passthrough
	// members, a list response only its records and envelope members. The data-minimization
	// setting: a member the CRM adds later is withheld until someone lists it.
	UnlistedDrop = "drop"
)

// Route is one entry of the route map.
type Route struct {
	// Method is the HTTP method (GET, POST, ...). HEAD requests match GET routes.
	Method string `yaml:"method" json:"method"`
	// Path is the template: literal segments and whole-segment parameters, "/api/customers/{customer_id}".
	Path string `yaml:"path" json:"path"`
	// Action is one of the input actions (read, list, create, update, delete, export, erase,
	// access_report). Required unless Public.
	Action string `yaml:"action" json:"action"`
	// Resource is the resource type policies see (customer, note, case, export, ...).
	Resource string `yaml:"resource" json:"resource"`
	// CustomerParam names the template parameter that holds the customer id, if any.
	CustomerParam string `yaml:"customer_param" json:"customer_param"`
	// CaseParam names the template parameter that holds a case id (e.g. GET /api/cases/{case_id}).
	CaseParam string `yaml:"case_param" json:"case_param"`
	// Fields are the catalogue field paths (data.consentry.catalog.fields) the route returns
	// (reads) or may accept (writes).
	Fields []string `yaml:"fields" json:"fields"`
	// List marks list/search/export routes whose responses hold many customers' records.
	List bool `yaml:"list" json:"list"`
	// RecordPath is the JSON path of the record array in a list response ("items"; "" = the
	// response is the array). Used by response-side enforcement.
	RecordPath string `yaml:"record_path" json:"record_path"`
	// CustomerIDField is the field of each record that holds its customer id (default "id").
	CustomerIDField string `yaml:"customer_id_field" json:"customer_id_field"`
	// FieldPrefix is prepended to a JSON body's field paths to get catalogue names
	// (e.g. "note." maps a note body {"body": ...} to note.body).
	FieldPrefix string `yaml:"field_prefix" json:"field_prefix"`
	// Public routes are allowed without credentials or policy evaluation (health checks, API
	// docs). They are still logged.
	Public bool `yaml:"public" json:"public"`
	// Body is what the route accepts: none, json or any. Default json for POST/PUT/PATCH and
	// for create/update routes, none otherwise. A create/update route must be json (its
	// body's sensitive fields are encrypted before the CRM; any other body would pass as it
	// came): the map is refused otherwise. Response-side enforcement passes non-JSON
	// responses only with "any".
	Body string `yaml:"body" json:"body"`
	// Unlisted says what the response phase does with a member of the response the route
	// does not list (neither a field nor a passthrough or envelope member): "pass" serves it
	// as it is (ciphertext in it is still withheld), "drop" removes it. Default: the map's
	// top-level unlisted, else "pass". On a door without a response phase (Envoy ext_authz
	// alone) a drop route's requests are refused: nothing there could remove a member.
	Unlisted string `yaml:"unlisted" json:"unlisted"`
	// Passthrough lists members of a record (dotted JSON paths inside the record, without
	// field_prefix: "id", "created_at", "meta.version") that are not personal data and are
	// served without a decision on a drop route. Ciphertext in them is still withheld. A
	// passthrough path may not be, hold or lie inside one of the route's fields.
	Passthrough []string `yaml:"passthrough" json:"passthrough"`
	// Envelope lists the members beside the records of a record_path route (dotted JSON paths
	// from the document's root: "page", "total", "meta.cursor") that are served on a drop
	// route. The objects leading to the records are always kept.
	Envelope []string `yaml:"envelope" json:"envelope"`
	// Description is free text for humans.
	Description string `yaml:"description" json:"description"`

	segments []segment
}

type segment struct {
	literal string
	param   string
}

// Name is the route's identity in the input document, "GET /api/customers/{customer_id}".
func (r *Route) Name() string { return r.Method + " " + r.Path }

// Params returns the template's parameter names in order.
func (r *Route) Params() []string {
	var out []string
	for _, s := range r.segments {
		if s.param != "" {
			out = append(out, s.param)
		}
	}
	return out
}

// Map is a compiled route map. It is immutable and safe for concurrent use.
type Map struct {
	routes   []*Route
	byMethod map[string][]*Route
}

// File is the on-disk form.
type File struct {
	// Unlisted is the default of every route's unlisted ("pass" or "drop"; default "pass").
	Unlisted string `yaml:"unlisted" json:"unlisted"`
	// Routes are the routes.
	Routes []*Route `yaml:"routes" json:"routes"`
}

// Load reads a route map file (YAML or JSON).
func Load(path string) (*Map, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("route map: %w", err)
	}
	m, err := Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("route map %s: %w", path, err)
	}
	return m, nil
}

// Parse reads a route map from YAML or JSON bytes. Unknown keys are errors (a typo in
// "customer_param" must not silently drop the customer binding).
func Parse(raw []byte) (*Map, error) {
	var f File
	dec := yaml.NewDecoder(strings.NewReader(string(raw)))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	switch f.Unlisted {
	case "", UnlistedPass, UnlistedDrop:
	default:
		return nil, fmt.Errorf("unlisted: %q is not pass or drop", f.Unlisted)
	}
	for _, r := range f.Routes {
		if r != nil && r.Unlisted == "" {
			r.Unlisted = f.Unlisted
		}
	}
	return New(f.Routes)
}

// FromValue builds a map from bundle data: the value of data.consentry.routes, either
// the file's form ({"unlisted": "drop", "routes": [...]}) or the list of routes itself, as
// decoded JSON.
func FromValue(v any) (*Map, error) {
	doc := map[string]any{"routes": v}
	if m, ok := v.(map[string]any); ok {
		if _, has := m["routes"]; has {
			doc = m
		}
	}
	raw, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("route map from data: %w", err)
	}
	return Parse(raw)
}

// FromData builds the route map bundle data carries at data.consentry.routes (ok false when
// the data has none). The sidecar with routes.from_bundle, `bundle build` and `bundle verify`
// all read it here, so a map one of them refuses, all refuse.
func FromData(data map[string]any) (m *Map, ok bool, err error) {
	c, _ := data["consentry"].(map[string]any)
	raw, ok := c["routes"]
	if !ok {
		return nil, false, nil
	}
	if m, err = FromValue(raw); err != nil {
		return nil, true, fmt.Errorf("bundle data.consentry.routes: %w", err)
	}
	return m, true, nil
}

// New validates and compiles routes.
func New(rs []*Route) (*Map, error) {
	if len(rs) == 0 {
		return nil, errors.New("routes: no routes")
	}
	m := &Map{byMethod: map[string][]*Route{}}
	seen := map[string]int{}
	for i, r := range rs {
		if r == nil {
			return nil, fmt.Errorf("routes[%d]: empty entry", i)
		}
		c := *r
		if err := c.compile(); err != nil {
			return nil, fmt.Errorf("routes[%d] (%s %s): %w", i, r.Method, r.Path, err)
		}
		shape := c.Method + " " + c.shape()
		if j, dup := seen[shape]; dup {
			return nil, fmt.Errorf("routes[%d] (%s): same shape as routes[%d] (%s): matching would be ambiguous", i, c.Name(), j, rs[j].Method+" "+rs[j].Path)
		}
		seen[shape] = i
		m.routes = append(m.routes, &c)
		m.byMethod[c.Method] = append(m.byMethod[c.Method], &c)
	}
	return m, nil
}

func (r *Route) compile() error {
	r.Method = strings.ToUpper(strings.TrimSpace(r.Method))
	if r.Method == "" || strings.ContainsAny(r.Method, " /{}") {
		return fmt.Errorf("method: %q is not an HTTP method", r.Method)
	}
	if !strings.HasPrefix(r.Path, "/") {
		return fmt.Errorf("path: %q does not start with /", r.Path)
	}
	r.segments = nil
	params := map[string]bool{}
	for _, s := range strings.Split(strings.Trim(r.Path, "/"), "/") {
		if s == "" {
			if r.Path == "/" {
				break
			}
			return errors.New("path: empty segment")
		}
		if strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}") {
			name := s[1 : len(s)-1]
			if name == "" || strings.ContainsAny(name, "{}") {
				return fmt.Errorf("path: bad parameter %q", s)
			}
			if params[name] {
				return fmt.Errorf("path: parameter %q twice", name)
			}
			params[name] = true
			r.segments = append(r.segments, segment{param: name})
			continue
		}
		if strings.ContainsAny(s, "{}") || s == "." || s == ".." {
			return fmt.Errorf("path: segment %q is neither a literal nor a whole-segment {parameter}", s)
		}
		r.segments = append(r.segments, segment{literal: s})
	}
	if r.CustomerParam != "" && !params[r.CustomerParam] {
		return fmt.Errorf("customer_param: %q is not a parameter of the path", r.CustomerParam)
	}
	if r.CaseParam != "" && !params[r.CaseParam] {
		return fmt.Errorf("case_param: %q is not a parameter of the path", r.CaseParam)
	}
	write := !r.Public && (r.Action == input.ActionCreate || r.Action == input.ActionUpdate)
	switch r.Body {
	case "":
		r.Body = BodyNone
		if write || r.Method == "POST" || r.Method == "PUT" || r.Method == "PATCH" {
			// A write on another method (OData's MERGE) is a JSON write too: its body is
			// checked and its sensitive fields encrypted.
			r.Body = BodyJSON
		}
	case BodyNone, BodyJSON, BodyAny:
	default:
		return fmt.Errorf("body: %q is not none, json or any", r.Body)
	}
	if write && r.Body != BodyJSON {
		// Only a JSON body is checked field by field and has its sensitive fields encrypted
		// before the CRM: any other body would be forwarded as it came, plaintext card
		// numbers included.
		return fmt.Errorf("body: %q on a route with action %s: a create/update body is checked and its sensitive fields encrypted only as JSON, "+
			"so any other body would reach the CRM unencrypted; use body: json (a write that sends no body passes as json too)", r.Body, r.Action)
	}
	if r.CustomerIDField == "" {
		r.CustomerIDField = "id"
	}
	if err := r.compileUnlisted(); err != nil {
		return err
	}
	if r.Public {
		return nil
	}
	if r.Unlisted == UnlistedDrop && r.Body == BodyAny {
		// A non-JSON response passes a body: any route unchanged, so nothing in it would be
		// dropped: say unlisted: pass for this route (the map's default may be drop).
		return errors.New("unlisted: drop cannot hold on a body: any route (non-JSON responses pass unchanged); set unlisted: pass on it")
	}
	if !slices.Contains(input.Actions, r.Action) {
		return fmt.Errorf("action: %q is not one of %v", r.Action, input.Actions)
	}
	if r.List && (r.CustomerParam != "" || r.CaseParam != "") {
		// Bound to one customer, the request would carry that customer's decision only, and
		// every record of the page would be served under it.
		return errors.New("list: a route holding many customers' records cannot be bound to one customer (customer_param or case_param); use record_path without list for one customer's records")
	}
	if r.List && r.Action != input.ActionList && r.Action != input.ActionExport {
		// Records are decided one by one (filter_records) for lists and exports; a list
		// route with another action would be served under one request-level decision.
		return fmt.Errorf("list: a route holding many customers' records must have action list or export, not %q", r.Action)
	}
	if r.Resource == "" {
		return errors.New("resource: required unless public")
	}
	return nil
}

// compileUnlisted checks unlisted, passthrough and envelope. A passthrough path that were, held
// or lay inside a field would serve that field without its decision.
func (r *Route) compileUnlisted() error {
	switch r.Unlisted {
	case "":
		r.Unlisted = UnlistedPass
	case UnlistedPass, UnlistedDrop:
	default:
		return fmt.Errorf("unlisted: %q is not pass or drop", r.Unlisted)
	}
	for _, p := range r.Passthrough {
		if !validMemberPath(p) {
			return fmt.Errorf("passthrough: %q is not a dotted member path", p)
		}
		for _, f := range r.Fields {
			fp := strings.TrimPrefix(f, r.FieldPrefix)
			if p == fp || strings.HasPrefix(fp, p+".") || strings.HasPrefix(p, fp+".") {
				return fmt.Errorf("passthrough: %q overlaps the field %q, which is served only as its decision says", p, f)
			}
		}
	}
	if len(r.Envelope) > 0 && r.RecordPath == "" {
		return errors.New("envelope: only a route with record_path has members beside its records")
	}
	for _, p := range r.Envelope {
		if !validMemberPath(p) {
			return fmt.Errorf("envelope: %q is not a dotted member path", p)
		}
		if p == r.RecordPath || strings.HasPrefix(r.RecordPath, p+".") || strings.HasPrefix(p, r.RecordPath+".") {
			return fmt.Errorf("envelope: %q overlaps record_path %q: the records are served only as their decisions say", p, r.RecordPath)
		}
	}
	return nil
}

// validMemberPath reports whether p is a dotted path of non-empty member names.
func validMemberPath(p string) bool {
	for seg := range strings.SplitSeq(p, ".") {
		if seg == "" {
			return false
		}
	}
	return p != ""
}

// shape is the path with parameter names erased: two routes with one shape are ambiguous.
func (r *Route) shape() string {
	var b strings.Builder
	for _, s := range r.segments {
		b.WriteByte('/')
		if s.param != "" {
			b.WriteString("{}")
		} else {
			b.WriteString(s.literal)
		}
	}
	return b.String()
}

// Routes returns the compiled routes in file order.
func (m *Map) Routes() []*Route { return m.routes }

// Match is a matched route with its parameter values.
type Match struct {
	Route  *Route
	Params map[string]string
}

// CustomerID is the value of the route's customer parameter ("" when it has none).
func (mt *Match) CustomerID() string {
	if mt == nil || mt.Route.CustomerParam == "" {
		return ""
	}
	return mt.Params[mt.Route.CustomerParam]
}

// CaseID is the value of the route's case parameter ("" when it has none).
func (mt *Match) CaseID() string {
	if mt == nil || mt.Route.CaseParam == "" {
		return ""
	}
	return mt.Params[mt.Route.CaseParam]
}

// Redact returns path with every segment that no route has as a literal at that position
// replaced by "*": "/api/customers/c-1001%00" becomes "/api/customers/*". A path that matched
// no route (or did not normalize) carries no customer binding the decision log could
// pseudonymize, yet its other segments may be a customer's id; the literals still say which
// part of the API was aimed at.
func (m *Map) Redact(path string) string {
	segs := strings.Split(strings.TrimPrefix(path, "/"), "/")
	for i, seg := range segs {
		if seg != "" && (m == nil || !m.hasLiteral(i, seg)) {
			segs[i] = "*"
		}
	}
	return "/" + strings.Join(segs, "/")
}

func (m *Map) hasLiteral(i int, seg string) bool {
	for _, r := range m.routes {
		if i < len(r.segments) && r.segments[i].literal == seg {
			return true
		}
	}
	return false
}

// Match finds the route for a method and a normalized path. Among matching templates the
// one whose first differing segment is a literal wins.
func (m *Map) Match(method, path string) (*Match, bool) {
	if mt, ok := m.match(method, path); ok {
		return mt, true
	}
	if method == "HEAD" {
		return m.match("GET", path)
	}
	return nil, false
}

func (m *Map) match(method, path string) (*Match, bool) {
	cands := m.byMethod[method]
	if len(cands) == 0 {
		return nil, false
	}
	var segs []string
	if p := strings.Trim(path, "/"); p != "" {
		segs = strings.Split(p, "/")
	}
	var best *Route
	for _, r := range cands {
		if len(r.segments) != len(segs) || !r.matches(segs) {
			continue
		}
		if best == nil || moreSpecific(r, best) {
			best = r
		}
	}
	if best == nil {
		return nil, false
	}
	mt := &Match{Route: best}
	for i, s := range best.segments {
		if s.param != "" {
			if mt.Params == nil {
				mt.Params = map[string]string{}
			}
			mt.Params[s.param] = segs[i]
		}
	}
	return mt, true
}

func (r *Route) matches(segs []string) bool {
	for i, s := range r.segments {
		if s.param == "" && s.literal != segs[i] {
			return false
		}
		if s.param != "" && segs[i] == "" {
			return false
		}
	}
	return true
}

func moreSpecific(a, b *Route) bool {
	for i := range a.segments {
		al, bl := a.segments[i].param == "", b.segments[i].param == ""
		if al != bl {
			return al
		}
	}
	return false
}

// Holder holds the active route map and swaps it atomically (for route maps that come with a
// bundle). Until Store is called, nothing matches (every request is route.unknown).
type Holder struct{ p atomic.Pointer[Map] }

// Store activates m.
func (h *Holder) Store(m *Map) { h.p.Store(m) }

// Load returns the active map (nil before Store).
func (h *Holder) Load() *Map { return h.p.Load() }

// Redact redacts path with the active map (every non-empty segment before one is stored).
func (h *Holder) Redact(path string) string { return h.p.Load().Redact(path) }

// Match matches against the active map.
func (h *Holder) Match(method, path string) (*Match, bool) {
	m := h.p.Load()
	if m == nil {
		return nil, false
	}
	return m.Match(method, path)
}
