package replay

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/consentry/consentry/sidecar/decision"
)

// Outcome is the comparable part of a decision. Lists (reasons, key scopes, obligations,
// flags) are sorted: their order carries no meaning.
type Outcome struct {
	Allow     bool              `json:"allow"`
	Status    int               `json:"status"`
	Reasons   []string          `json:"reasons"`
	Fields    map[string]string `json:"fields,omitempty"`
	KeyScopes []string          `json:"key_scopes,omitempty"`
	// Obligations are the obligations' types, each followed by its params as JSON when it
	// has any (record_justification{"justification":"..."}).
	Obligations []string          `json:"obligations,omitempty"`
	Flags       []string          `json:"flags,omitempty"`
	Headers     map[string]string `json:"headers,omitempty"`
	// Records is the outcome of each customer of a list response (response phase, as
	// enforced: pipeline.EnforcedRecords), by customer pseudonym.
	Records map[string]RecordOutcome `json:"records,omitempty"`
}

// RecordOutcome is the comparable part of one list record's outcome.
type RecordOutcome struct {
	Allow     bool              `json:"allow"`
	Reasons   []string          `json:"reasons,omitempty"`
	Fields    map[string]string `json:"fields,omitempty"`
	KeyScopes []string          `json:"key_scopes,omitempty"`
}

// Change kinds, in the order a change lists them.
const (
	KindOutcome     = "outcome"
	KindStatus      = "status"
	KindReasons     = "reasons"
	KindFields      = "fields"
	KindKeyScopes   = "key_scopes"
	KindObligations = "obligations"
	KindFlags       = "flags"
	KindHeaders     = "headers"
	KindRecords     = "records"
)

// summarize is the request-level outcome of d (its Records are compared apart: see
// summarizeRecords).
func summarize(d *decision.Decision) Outcome {
	o := Outcome{Allow: d.Allow, Status: d.Status, Reasons: sortedCodes(d.Reasons), KeyScopes: sorted(d.KeyScopes),
		Fields: fieldOutcomes(d.Fields), Flags: sorted(d.Flags)}
	for _, ob := range d.Obligations {
		s := ob.Type
		if len(ob.Params) > 0 {
			p, err := json.Marshal(ob.Params) // map keys sorted: the same params give the same text
			if err != nil {
				p = []byte(fmt.Sprintf("%v", ob.Params))
			}
			s += string(p)
		}
		o.Obligations = append(o.Obligations, s)
	}
	sort.Strings(o.Obligations)
	if len(d.Headers) > 0 {
		o.Headers = maps.Clone(d.Headers)
	}
	return o
}

// summarizeRecords summarizes per-record outcomes (nil when there are none).
func summarizeRecords(recs map[string]decision.Record) map[string]RecordOutcome {
	if len(recs) == 0 {
		return nil
	}
	out := make(map[string]RecordOutcome, len(recs))
	for id, r := range recs {
		out[id] = RecordOutcome{Allow: r.Allow, Reasons: sortedCodes(r.Reasons), Fields: fieldOutcomes(r.Fields), KeyScopes: sorted(r.KeyScopes)}
	}
	return out
}

func sortedCodes(rs []decision.Reason) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.Code
	}
	sort.Strings(out)
	return out
}

func sorted(l []string) []string {
	if len(l) == 0 {
		return nil
	}
	out := slices.Clone(l)
	sort.Strings(out)
	return out
}

func fieldOutcomes(fs map[string]decision.Field) map[string]string {
	if len(fs) == 0 {
		return nil
	}
	out := make(map[string]string, len(fs))
	for name, f := range fs {
		v := f.Outcome
		if f.Mask != "" {
			v += ":" + f.Mask
		}
		out[name] = v
	}
	return out
}

func diff(a, b Outcome) []string {
	var k []string
	add := func(changed bool, kind string) {
		if changed {
			k = append(k, kind)
		}
	}
	add(a.Allow != b.Allow, KindOutcome)
	add(a.Status != b.Status, KindStatus)
	add(!slices.Equal(a.Reasons, b.Reasons), KindReasons)
	add(!maps.Equal(a.Fields, b.Fields), KindFields)
	add(!slices.Equal(a.KeyScopes, b.KeyScopes), KindKeyScopes)
	add(!slices.Equal(a.Obligations, b.Obligations), KindObligations)
	add(!slices.Equal(a.Flags, b.Flags), KindFlags)
	add(!maps.Equal(a.Headers, b.Headers), KindHeaders)
	add(len(changedRecords(a.Records, b.Records)) > 0, KindRecords)
	return k
}

func (r RecordOutcome) equal(o RecordOutcome) bool {
	return r.Allow == o.Allow && slices.Equal(r.Reasons, o.Reasons) && maps.Equal(r.Fields, o.Fields) && slices.Equal(r.KeyScopes, o.KeyScopes)
}

// changedRecords returns the sorted customers whose record outcome differs (or that only one
// side decided).
func changedRecords(a, b map[string]RecordOutcome) []string {
	var out []string
	for id, ra := range a {
		if rb, ok := b[id]; !ok || !ra.equal(rb) {
			out = append(out, id)
		}
	}
	for id := range b {
		if _, ok := a[id]; !ok {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// describeRecords names at most this many changed customers per example.
const describeRecords = 3

func describe(c Change) string {
	var parts []string
	has := func(kind string) bool { return slices.Contains(c.Kinds, kind) }
	list := func(l []string) string { return "[" + strings.Join(l, ",") + "]" }
	if has(KindOutcome) || has(KindStatus) {
		parts = append(parts, fmt.Sprintf("%s(%d) -> %s(%d)", allowWord(c.Old.Allow), c.Old.Status, allowWord(c.New.Allow), c.New.Status))
	}
	if has(KindReasons) {
		parts = append(parts, fmt.Sprintf("reasons %s -> %s", list(c.Old.Reasons), list(c.New.Reasons)))
	}
	if has(KindFields) {
		parts = append(parts, "fields "+strings.Join(mapChanges(c.Old.Fields, c.New.Fields), ", "))
	}
	if has(KindKeyScopes) {
		parts = append(parts, fmt.Sprintf("key scopes %s -> %s", list(c.Old.KeyScopes), list(c.New.KeyScopes)))
	}
	if has(KindObligations) {
		parts = append(parts, fmt.Sprintf("obligations %s -> %s", list(c.Old.Obligations), list(c.New.Obligations)))
	}
	if has(KindFlags) {
		parts = append(parts, fmt.Sprintf("flags %s -> %s", list(c.Old.Flags), list(c.New.Flags)))
	}
	if has(KindHeaders) {
		parts = append(parts, "headers "+strings.Join(mapChanges(c.Old.Headers, c.New.Headers), ", "))
	}
	if has(KindRecords) {
		ids := changedRecords(c.Old.Records, c.New.Records)
		var rs []string
		for _, id := range ids[:min(len(ids), describeRecords)] {
			rs = append(rs, id+" "+recordChange(c.Old.Records, c.New.Records, id))
		}
		s := fmt.Sprintf("records of %d customers: %s", len(ids), strings.Join(rs, ", "))
		if len(ids) > describeRecords {
			s += fmt.Sprintf(", and %d more", len(ids)-describeRecords)
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

// mapChanges lists the keys whose value differs, as "key old->new" ("" for absent).
func mapChanges(a, b map[string]string) []string {
	var out []string
	for n, v := range b {
		if old, ok := a[n]; !ok || old != v {
			out = append(out, fmt.Sprintf("%s %s->%s", n, a[n], v))
		}
	}
	for n, v := range a {
		if _, ok := b[n]; !ok {
			out = append(out, fmt.Sprintf("%s %s->", n, v))
		}
	}
	sort.Strings(out)
	return out
}

// recordChange says how one customer's record outcome changed.
func recordChange(a, b map[string]RecordOutcome, id string) string {
	from, to := recordWord(a, id), recordWord(b, id)
	if from != to {
		return from + "->" + to
	}
	ra, rb := a[id], b[id]
	var what []string
	if !maps.Equal(ra.Fields, rb.Fields) {
		what = append(what, "fields "+strings.Join(mapChanges(ra.Fields, rb.Fields), " "))
	}
	if !slices.Equal(ra.KeyScopes, rb.KeyScopes) {
		what = append(what, "key scopes ["+strings.Join(ra.KeyScopes, ",")+"]->["+strings.Join(rb.KeyScopes, ",")+"]")
	}
	return from + " (" + strings.Join(what, "; ") + ")"
}

// recordWord is a record's outcome in an example: allow or deny, with its reasons, or "none"
// when that side did not decide the customer.
func recordWord(m map[string]RecordOutcome, id string) string {
	r, ok := m[id]
	switch {
	case !ok:
		return "none"
	case len(r.Reasons) == 0:
		return allowWord(r.Allow)
	}
	return allowWord(r.Allow) + "(" + strings.Join(r.Reasons, ",") + ")"
}

func allowWord(b bool) string {
	if b {
		return "allow"
	}
	return "deny"
}
