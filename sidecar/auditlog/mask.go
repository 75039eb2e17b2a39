package auditlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/consentry/consentry/sidecar/input"
)

// Mask operations, as in OPA's system.log.mask.
const (
	MaskOpRemove = "remove"
	MaskOpUpsert = "upsert"
)

// MaskRule removes or replaces one value of an event before it is written. Path is a JSON
// pointer (RFC 6901) rooted at the event: "/input/..." or "/result/...". A rule may be written
// as a plain string (a pointer to remove) or as {op, path, value}, like OPA's system.log.mask.
type MaskRule struct {
	Op    string `yaml:"op" json:"op"`
	Path  string `yaml:"path" json:"path"`
	Value any    `yaml:"value" json:"value,omitempty"`
}

// UnmarshalJSON accepts "pointer" or {op, path, value}.
func (r *MaskRule) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		*r = MaskRule{Op: MaskOpRemove, Path: s}
		return nil
	}
	type plain MaskRule
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*r = MaskRule(p)
	if r.Op == "" {
		r.Op = MaskOpRemove
	}
	return nil
}

// UnmarshalYAML accepts "pointer" or {op, path, value} (yaml.v3 obsolete-unmarshaler form,
// so this package need not import a YAML library).
func (r *MaskRule) UnmarshalYAML(unmarshal func(any) error) error {
	var s string
	if unmarshal(&s) == nil {
		*r = MaskRule{Op: MaskOpRemove, Path: s}
		return nil
	}
	var m struct {
		Op    string `yaml:"op"`
		Path  string `yaml:"path"`
		Value any    `yaml:"value"`
	}
	if err := unmarshal(&m); err != nil {
		return err
	}
	*r = MaskRule{Op: m.Op, Path: m.Path, Value: m.Value}
	if r.Op == "" {
		r.Op = MaskOpRemove
	}
	return nil
}

// Check reports whether the rule is well formed (a known op, a path under /input or /result
// that does not hide the outcome).
func (r MaskRule) Check() error { return r.validate() }

func (r MaskRule) validate() error {
	if r.Op != MaskOpRemove && r.Op != MaskOpUpsert {
		return fmt.Errorf("op: must be remove or upsert, got %q", r.Op)
	}
	if !strings.HasPrefix(r.Path, "/input") && !strings.HasPrefix(r.Path, "/result") {
		return fmt.Errorf("path: must start with /input or /result, got %q", r.Path)
	}
	if r.Path == "/result" || strings.HasPrefix(r.Path, "/result/allow") {
		return fmt.Errorf("path: %q would hide the outcome", r.Path)
	}
	return nil
}

// MaskSource supplies per-decision mask rules, e.g. from a policy query such as
// data.consentry.log.mask. An error erases the whole input (fail closed, the event is still
// logged).
type MaskSource interface {
	MaskRules(ctx context.Context, in *input.Input) ([]MaskRule, error)
}

// credentialHeaders never reach the log, whatever the front door did.
var credentialHeaders = []string{"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"}

// CredentialPointer reports whether p (a JSON pointer from an event's "erased" list) names
// a credential header or query parameter the log always drops. The policy never reads them,
// so a replay need not skip a decision for them.
func CredentialPointer(p string) bool {
	if name, ok := strings.CutPrefix(p, "/input/request/headers/"); ok {
		return slices.Contains(credentialHeaders, headerKey(name))
	}
	if name, ok := strings.CutPrefix(p, "/input/request/query/"); ok {
		return slices.Contains(credentialQuery, strings.ToLower(name))
	}
	return false
}

// headerKey folds a header name to lower case with '_' read as '-': many CRM stacks (CGI, PHP,
// WSGI, Rack) read Proxy_Authorization as Proxy-Authorization, so the underscore spelling of
// a credential header is dropped from the log too.
func headerKey(name string) string {
	return strings.ReplaceAll(strings.ToLower(name), "_", "-")
}

// credentialQuery are query parameters commonly carrying secrets.
var credentialQuery = []string{"access_token", "id_token", "token", "api_key", "apikey", "password", "secret"}

// masker holds the static part of masking.
type masker struct {
	rules       []MaskRule
	dropHeaders map[string]bool
	dropQuery   map[string]bool
}

func newMasker(cfg Config) *masker {
	m := &masker{rules: cfg.Mask, dropHeaders: map[string]bool{}, dropQuery: map[string]bool{}}
	for _, h := range append(append([]string(nil), credentialHeaders...), cfg.DropHeaders...) {
		m.dropHeaders[headerKey(h)] = true
	}
	for _, q := range append(append([]string(nil), credentialQuery...), cfg.DropQuery...) {
		m.dropQuery[strings.ToLower(q)] = true
	}
	return m
}

// scrub removes credential headers and query parameters from the generic input document,
// returning the erased pointers.
func (m *masker) scrub(in map[string]any) []string {
	req, _ := in["request"].(map[string]any)
	if req == nil {
		return nil
	}
	var erased []string
	if h, ok := req["headers"].(map[string]any); ok {
		for k := range h {
			if m.dropHeaders[headerKey(k)] {
				delete(h, k)
				erased = append(erased, "/input/request/headers/"+escapePointer(k))
			}
		}
	}
	if q, ok := req["query"].(map[string]any); ok {
		for k := range q {
			if m.dropQuery[strings.ToLower(k)] {
				delete(q, k)
				erased = append(erased, "/input/request/query/"+escapePointer(k))
			}
		}
	}
	return erased
}

// apply runs rules on root ({"input": ..., "result": ...}).
func applyRules(root map[string]any, rules []MaskRule) (erased, masked []string, err error) {
	for _, r := range rules {
		toks, err := parsePointer(r.Path)
		if err != nil {
			return erased, masked, err
		}
		switch r.Op {
		case MaskOpRemove:
			if removeAt(root, toks) {
				erased = append(erased, r.Path)
			}
		case MaskOpUpsert:
			v := r.Value
			if v != nil {
				// Normalize the rule value to the generic JSON shape.
				b, err := json.Marshal(v)
				if err != nil {
					return erased, masked, fmt.Errorf("mask %s: %w", r.Path, err)
				}
				if v, err = decodeGeneric(b); err != nil {
					return erased, masked, err
				}
			}
			if upsertAt(root, toks, v) {
				masked = append(masked, r.Path)
			}
		default:
			return erased, masked, fmt.Errorf("mask %s: unknown op %q", r.Path, r.Op)
		}
	}
	return erased, masked, nil
}

func escapePointer(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

var errPointer = errors.New("invalid json pointer")

func parsePointer(p string) ([]string, error) {
	if p == "" || p[0] != '/' {
		return nil, fmt.Errorf("%w: %q", errPointer, p)
	}
	toks := strings.Split(p[1:], "/")
	for i, t := range toks {
		toks[i] = strings.ReplaceAll(strings.ReplaceAll(t, "~1", "/"), "~0", "~")
	}
	return toks, nil
}

// removeAt removes the value at toks; it reports whether something was removed.
func removeAt(root map[string]any, toks []string) bool {
	var cur any = root
	for i, t := range toks {
		last := i == len(toks)-1
		switch c := cur.(type) {
		case map[string]any:
			if last {
				_, ok := c[t]
				delete(c, t)
				return ok
			}
			cur = c[t]
		case []any:
			n, err := strconv.Atoi(t)
			if err != nil || n < 0 || n >= len(c) {
				return false
			}
			if last {
				// Replace instead of splicing so the parent slice header stays valid.
				c[n] = nil
				return true
			}
			cur = c[n]
		default:
			return false
		}
	}
	return false
}

// upsertAt sets the value at toks, creating intermediate objects.
func upsertAt(root map[string]any, toks []string, v any) bool {
	cur := root
	for i, t := range toks {
		if i == len(toks)-1 {
			cur[t] = v
			return true
		}
		next, ok := cur[t].(map[string]any)
		if !ok {
			if cur[t] != nil {
				if arr, isArr := cur[t].([]any); isArr {
					n, err := strconv.Atoi(toks[i+1])
					if err != nil || n < 0 || n >= len(arr) {
						return false
					}
					if i+1 == len(toks)-1 {
						arr[n] = v
						return true
					}
					m, ok := arr[n].(map[string]any)
					if !ok {
						return false
					}
					return upsertAt(m, toks[i+2:], v)
				}
				return false
			}
			next = map[string]any{}
			cur[t] = next
		}
		cur = next
	}
	return false
}

// replaceIDs replaces every occurrence of a raw customer id in v with its pseudonym: in string
// values (whole, or as a word inside text such as request.path or a reason message) and map keys. Equality between ids is kept, so a
// replayed policy still sees case.customer_id == resource.customer_id.
func replaceIDs(v any, ids idSet) any {
	return rewriteStrings(v, func(s string) string { return replaceInText(s, ids) })
}

// rewriteStrings applies f to every string and map key of a generic JSON value, in place.
func rewriteStrings(v any, f func(string) string) any {
	switch x := v.(type) {
	case string:
		return f(x)
	case []any:
		for i, e := range x {
			x[i] = rewriteStrings(e, f)
		}
		return x
	case map[string]any:
		// Collect first: keys are rewritten, and the map must not change under iteration.
		type kv struct {
			k string
			v any
		}
		all := make([]kv, 0, len(x))
		for k, e := range x {
			all = append(all, kv{k, rewriteStrings(e, f)})
		}
		for _, p := range all {
			nk := f(p.k)
			if nk != p.k {
				delete(x, p.k)
			}
			x[nk] = p.v
		}
		return x
	}
	return v
}

// replaceInText replaces each raw id that appears in s as a whole word (neighbours are not
// letters, digits, '-' or '_'), so "c-1" never rewrites part of "c-10".
func replaceInText(s string, ids idSet) string {
	for _, pair := range ids {
		id, p := pair.id, pair.pseudonym
		if s == id {
			return p
		}
		if !strings.Contains(s, id) {
			continue
		}
		var b strings.Builder
		last := 0
		for from := 0; ; {
			i := strings.Index(s[from:], id)
			if i < 0 {
				break
			}
			i += from
			j := i + len(id)
			b.WriteString(s[last:i])
			if (i == 0 || !isIDChar(s[i-1])) && (j == len(s) || !isIDChar(s[j])) {
				b.WriteString(p)
			} else {
				b.WriteString(id)
			}
			last, from = j, j
		}
		b.WriteString(s[last:])
		s = b.String()
	}
	return s
}

func isIDChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

// idSet maps raw customer ids to pseudonyms. A decision names one to a few customers, so a
// slice beats a map (no hashing or iterator per string written).
type idSet []idPair

type idPair struct{ id, pseudonym string }

func (s idSet) lookup(id string) (string, bool) {
	for _, p := range s {
		if p.id == id {
			return p.pseudonym, true
		}
	}
	return "", false
}
