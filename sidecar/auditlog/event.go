package auditlog

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/consentry/consentry/sidecar/audit"
	"github.com/consentry/consentry/sidecar/decision"
	"github.com/consentry/consentry/sidecar/input"
)

// Record types.
const (
	TypeDecision   = "decision"
	TypeCheckpoint = "checkpoint"
	TypeRetention  = "retention"
	TypeErasure    = "erasure"
	// TypeIntent is a write-ahead record: a state-changing request (a write, a delete, any
	// method but GET, HEAD, OPTIONS and TRACE) is about to be forwarded to the CRM. It carries
	// the members its decision record would carry at that moment (no CRM status yet) and is
	// followed by the decision record with the same decision_id once the CRM has answered. An
	// intent with no such decision record after it is a request the CRM may have executed
	// while its outcome was never recorded (the sidecar stopped in between): query, report and
	// verify show it.
	TypeIntent = "intent"
)

// Event is one record of the log as read back (policies/schema/decision_log_event.json).
// Decision records carry the OPA decision-log fields plus consentry's; checkpoint and
// retention records carry only the chain fields and their own member.
type Event struct {
	Type     string `json:"type"`
	Seq      uint64 `json:"seq"`
	PrevHash string `json:"prev_hash"`
	Hash     string `json:"hash"`
	// Timestamp is RFC 3339 with nanoseconds, UTC.
	Timestamp time.Time `json:"timestamp"`

	// OPA decision-log fields.
	DecisionID  string                `json:"decision_id,omitempty"`
	Path        string                `json:"path,omitempty"`
	Input       json.RawMessage       `json:"input,omitempty"`
	Result      json.RawMessage       `json:"result,omitempty"`
	Bundles     map[string]BundleInfo `json:"bundles,omitempty"`
	Labels      map[string]string     `json:"labels,omitempty"`
	Metrics     map[string]int64      `json:"metrics,omitempty"`
	Erased      []string              `json:"erased,omitempty"`
	Masked      []string              `json:"masked,omitempty"`
	RequestedBy string                `json:"requested_by,omitempty"`
	TraceID     string                `json:"trace_id,omitempty"`

	// consentry fields.
	Purpose      string   `json:"purpose,omitempty"`
	CaseID       string   `json:"case_id,omitempty"`
	Action       string   `json:"action,omitempty"`
	ResourceType string   `json:"resource_type,omitempty"`
	Subject      *Subject `json:"subject,omitempty"`
	Customer     string   `json:"customer,omitempty"`
	Customers    []string `json:"customers,omitempty"`
	// CustomersFiltered names the customers a list response filtered out (not served).
	CustomersFiltered []string     `json:"customers_filtered,omitempty"`
	Outcome           string       `json:"outcome,omitempty"`
	Status            int          `json:"status,omitempty"`
	Reasons           []string     `json:"reasons,omitempty"`
	Fields            *FieldsInfo  `json:"fields,omitempty"`
	KeyScopes         []string     `json:"key_scopes,omitempty"`
	Flags             []string     `json:"flags,omitempty"`
	PolicyRevision    string       `json:"policy_revision,omitempty"`
	Error             string       `json:"error,omitempty"`
	Records           *RecordsInfo `json:"records,omitempty"`

	Checkpoint *CheckpointBody  `json:"checkpoint,omitempty"`
	Removed    []RemovedSegment `json:"removed,omitempty"`
	Erasure    *Erasure         `json:"erasure,omitempty"`
}

// BundleInfo is OPA's bundles{name:{revision}}.
type BundleInfo struct {
	Revision string `json:"revision"`
}

// Subject is the caller as logged (never credentials).
type Subject struct {
	ID    string   `json:"id,omitempty"`
	Type  string   `json:"type,omitempty"`
	Roles []string `json:"roles,omitempty"`
}

// FieldsInfo names the fields in the response by what happened to them. Names only, never values.
type FieldsInfo struct {
	Released []string `json:"released,omitempty"`
	Masked   []string `json:"masked,omitempty"`
	Dropped  []string `json:"dropped,omitempty"`
	Withheld []string `json:"withheld,omitempty"`
}

// RecordsInfo counts list records kept and filtered.
type RecordsInfo struct {
	Returned int `json:"returned"`
	Filtered int `json:"filtered"`
	// DetailsOmitted counts the customers whose response-phase input and outcome are not in
	// input.records / result.records (beyond MaxRecordDetails).
	DetailsOmitted int `json:"details_omitted,omitempty"`
}

// RemovedSegment is one segment removed by retention, as read from the segment's own first
// and last record.
type RemovedSegment struct {
	Segment  string `json:"segment"`
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
	LastHash string `json:"last_hash"`
	// LastTimestamp is the timestamp of the segment's last record, by which retain_age judged
	// it (absent in records written before it was recorded).
	LastTimestamp time.Time `json:"last_timestamp,omitzero"`
}

// kv is one top-level member with its canonical value.
type kv struct {
	key string
	val []byte
}

// record is an event prepared by the caller's goroutine: every member but seq and prev_hash,
// sorted by key and already canonical, so the single writer only splices and hashes.
type record struct {
	kvs        []kv
	decisionID string
	// arena holds the small values; a value's slice stays valid when the arena grows (the old
	// backing array is never written again).
	arena []byte
}

func (r *record) add(key string, v any) error {
	start := len(r.arena)
	b, err := appendCanonical(r.arena, v)
	if err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	r.arena = b
	r.kvs = append(r.kvs, kv{key, b[start:len(b):len(b)]})
	return nil
}

func (r *record) addRaw(key string, b []byte) { r.kvs = append(r.kvs, kv{key, b}) }

// bufPool recycles record arenas: the writer releases a record once it is sealed into the
// batch buffer, which keeps allocation (and GC work) per event low at tens of thousands/s.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 8192); return &b }}

func getBuf() []byte { return (*bufPool.Get().(*[]byte))[:0] }

// release returns the arena; the record must not be used afterwards.
func (r *record) release() {
	if cap(r.arena) <= 64<<10 {
		b := r.arena[:0]
		bufPool.Put(&b)
	}
	r.arena, r.kvs = nil, nil
}

func (r *record) addString(key, v string) {
	start := len(r.arena)
	r.arena = appendString(r.arena, v)
	r.kvs = append(r.kvs, kv{key, r.arena[start:len(r.arena):len(r.arena)]})
}

func (r *record) sort() {
	slices.SortFunc(r.kvs, func(a, b kv) int { return strings.Compare(a.key, b.key) })
}

// builder turns entries into records: masking, pseudonymization, canonical encoding.
type builder struct {
	masker *masker
	pseudo *Pseudonymizer
	source MaskSource
	// forceGeneric makes tests take the reference (generic tree) path.
	forceGeneric bool
}

func newDecisionID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func toGeneric(v any) (any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return decodeGeneric(b)
}

func (b *builder) build(ctx context.Context, e *audit.Entry) (*record, error) {
	r := &record{kvs: make([]kv, 0, 32), arena: getBuf()}
	id := e.DecisionID
	if id == "" {
		id = newDecisionID()
	}
	r.decisionID = id
	ts := e.Timestamp
	if ts.IsZero() {
		ts = time.Now()
	}
	in := e.Input
	if in == nil {
		in = &input.Input{}
	}
	d := e.Decision
	if d == nil {
		d = decision.Deny(503, decision.ReasonEngineError, "no decision")
	}

	// Raw customer ids -> pseudonyms, everywhere in input and result.
	var ids idSet
	addID := func(s string) {
		if _, ok := ids.lookup(s); s != "" && !ok {
			p := b.pseudo.Customer(s)
			ids = append(ids, idPair{s, p})
			if !utf8.ValidString(s) {
				// JSON encoding turns invalid bytes into U+FFFD: match that form too.
				ids = append(ids, idPair{sanitizeUTF8(s), p})
			}
		}
	}
	addID(in.Resource.CustomerID)
	if in.Subject.Type == input.SubjectCustomer {
		addID(in.Subject.CustomerID)
		// A customer's login (the token's sub, often an email) is the customer too: it takes
		// the pseudonym of the customer id it maps to, everywhere, so the log never holds a
		// customer's raw identifier (erasure must not need a rewrite) and the report can tell
		// the customer's own accesses from another customer's.
		if sid := in.Subject.ID; sid != "" {
			if _, ok := ids.lookup(sid); !ok {
				p, ok := ids.lookup(in.Subject.CustomerID)
				if !ok {
					p = b.pseudo.Customer(sid)
				}
				ids = append(ids, idPair{sid, p})
				if !utf8.ValidString(sid) {
					ids = append(ids, idPair{sanitizeUTF8(sid), p})
				}
			}
		}
	}
	var customers []string
	for _, rec := range in.Records {
		addID(rec.CustomerID)
		p, _ := ids.lookup(rec.CustomerID)
		customers = append(customers, p)
	}
	for cid := range d.Records {
		addID(cid)
	}
	if c := in.Enrichment.Customer; c != nil {
		addID(c.ID)
	}
	if c := in.Enrichment.Case; c != nil {
		addID(c.CustomerID)
	}
	customer, _ := ids.lookup(in.Resource.CustomerID)
	if customer == "" && in.Subject.Type == input.SubjectCustomer {
		customer, _ = ids.lookup(in.Subject.CustomerID)
	}
	// A list filtered per record: the customers served (and removed) are named, and the
	// response phase - each customer's input record and outcome - is logged as input.records
	// and result.records, already pseudonymized (listrecords.go), so a replay decides them
	// again.
	var list *listDetails
	if lr := e.Enforcement.Records; lr != nil {
		list = b.listDetails(lr)
		for _, id := range list.caseCustomers {
			addID(id)
		}
		customers = list.served
		lin := *in
		lin.Records = list.records
		in = &lin
		ld := *d
		ld.Records = list.decisions
		d = &ld
	}

	// Mask rules: configured ones plus the source's for this decision. A failing source erases
	// the input (fail closed on content, never on the event).
	rules := b.masker.rules
	sourceFailed := false
	if b.source != nil && e.Input != nil {
		extra, err := b.source.MaskRules(ctx, e.Input)
		if err != nil {
			sourceFailed = true
		} else if len(extra) > 0 {
			rules = append(rules[:len(rules):len(rules)], extra...)
		}
	}
	var erased, masked []string
	var c copies
	var lids *listIDs
	if list != nil {
		lids = list.ids
	}
	if len(rules) == 0 && !sourceFailed && !b.forceGeneric {
		// Both documents go into the record's arena: slices stay valid if it grows.
		te := &typedEncoder{ids: ids, list: lids, m: b.masker, b: r.arena}
		if err := te.input(in); err != nil {
			return nil, fmt.Errorf("encode input: %w", err)
		}
		n := len(te.b)
		if err := te.result(d); err != nil {
			return nil, fmt.Errorf("encode result: %w", err)
		}
		r.addRaw("input", te.b[len(r.arena):n:n])
		r.addRaw("result", te.b[n:len(te.b):len(te.b)])
		r.arena = te.b
		erased = te.erased
		c = b.inputCopies(e, in)
	} else {
		var err error
		if erased, masked, err = b.generic(r, e, in, d, ids, lids, rules, sourceFailed, &c); err != nil {
			return nil, err
		}
	}
	// The copies were read before ids were replaced in the input: replace them there too.
	c.pseudonymize(ids, in.Subject.Type == input.SubjectCustomer)
	c.pseudonymizeList(lids, in.Subject.Type == input.SubjectCustomer)
	typ := TypeDecision
	if e.Intent {
		typ = TypeIntent
	}
	r.addString("type", typ)
	r.addString("decision_id", id)
	r.addString("timestamp", ts.UTC().Format(time.RFC3339Nano))
	path := e.Path
	if path == "" {
		path = "consentry/decision"
	}
	r.addString("path", path)
	if len(e.Bundles) > 0 {
		bm := make(map[string]any, len(e.Bundles))
		for n, rev := range e.Bundles {
			bm[n] = map[string]any{"revision": rev}
		}
		if err := r.add("bundles", bm); err != nil {
			return nil, err
		}
	}
	if len(e.Labels) > 0 {
		_ = r.add("labels", e.Labels)
	}
	if len(e.Metrics) > 0 {
		mm := make(map[string]any, len(e.Metrics))
		for k, v := range e.Metrics {
			mm[k] = v
		}
		_ = r.add("metrics", mm)
	}
	sort.Strings(erased)
	sort.Strings(masked)
	addList := func(key string, l []string) {
		if len(l) > 0 {
			_ = r.add(key, l)
		}
	}
	addStr := func(key, v string) {
		if v != "" {
			r.addString(key, v)
		}
	}
	addList("erased", erased)
	addList("masked", masked)
	addStr("requested_by", c.requestedBy)
	addStr("trace_id", c.traceID)
	addStr("purpose", c.purpose)
	addStr("case_id", c.caseID)
	addStr("action", c.action)
	addStr("resource_type", c.resourceType)
	if s := c.subject; s.ID != "" || s.Type != "" {
		subj := map[string]any{}
		sid := s.ID
		if in.Subject.Type == input.SubjectCustomer {
			// A customer subject's id is the customer (see above): its pseudonym. The type
			// before masking decides, so a rule on /input/subject/type cannot expose the id.
			sid, _ = ids.lookup(sid)
		}
		if sid != "" {
			subj["id"] = sid
		}
		if s.Type != "" {
			subj["type"] = s.Type
		}
		if len(s.Roles) > 0 {
			subj["roles"] = s.Roles
		}
		_ = r.add("subject", subj)
	}
	addStr("customer", customer)
	addList("customers", customers)
	if list != nil {
		addList("customers_filtered", list.filtered)
	}
	outcome := decision.OutcomeDeny
	if d.Allow {
		outcome = decision.OutcomeAllow
	}
	addStr("outcome", outcome)
	status := e.Enforcement.Status
	if status == 0 && !e.Intent { // an intent's request has no answer yet
		status = d.Status
	}
	if status != 0 {
		r.addRaw("status", strconv.AppendInt(nil, int64(status), 10))
	}
	addList("reasons", d.ReasonCodes())
	en := e.Enforcement
	fields := map[string]any{}
	for k, l := range map[string][]string{"released": en.FieldsReleased, "masked": en.FieldsMasked, "dropped": en.FieldsDropped, "withheld": en.Withheld} {
		if len(l) > 0 {
			s := append([]string(nil), l...)
			sort.Strings(s)
			fields[k] = s
		}
	}
	if len(fields) > 0 {
		_ = r.add("fields", fields)
	}
	scopes := append([]string(nil), en.KeyScopes...)
	sort.Strings(scopes)
	addList("key_scopes", scopes)
	addList("flags", d.Flags)
	if en.RecordsReturned != 0 || en.RecordsFiltered != 0 {
		ri := map[string]any{"returned": en.RecordsReturned, "filtered": en.RecordsFiltered}
		if list != nil && list.omitted > 0 {
			ri["details_omitted"] = list.omitted
		}
		_ = r.add("records", ri)
	}
	addStr("policy_revision", e.Revision)
	addStr("error", e.Error)
	r.sort()
	return r, nil
}

// generic encodes input and result through a generic JSON tree, which mask rules (JSON
// pointers) operate on.
// It also fills c from the masked input, before ids are replaced in it.
func (b *builder) generic(r *record, e *audit.Entry, in *input.Input, d *decision.Decision, ids idSet, list *listIDs, rules []MaskRule,
	sourceFailed bool, c *copies) (erased, masked []string, err error) {
	gin, err := toGeneric(in)
	if err != nil {
		return nil, nil, fmt.Errorf("encode input: %w", err)
	}
	gres, err := toGeneric(d)
	if err != nil {
		return nil, nil, fmt.Errorf("encode result: %w", err)
	}
	root := map[string]any{"input": gin, "result": gres}
	if m, ok := gin.(map[string]any); ok {
		erased = b.masker.scrub(m)
	}
	if sourceFailed {
		root["input"] = nil
		erased = append(erased, "/input")
	}
	if len(rules) > 0 {
		er, ma, err := applyRules(root, rules)
		if err != nil {
			root["input"] = nil
			er = append(er, "/input")
		}
		erased = append(erased, er...)
		masked = append(masked, ma...)
	}
	*c = maskedCopies(root["input"], e, in)
	if len(ids) > 0 {
		root["input"] = replaceIDs(root["input"], ids)
		root["result"] = replaceIDs(root["result"], ids)
	}
	if list != nil {
		list.replaceMembers(root["input"])
		list.replaceMembers(root["result"])
	}
	if err := r.add("input", root["input"]); err != nil {
		return nil, nil, err
	}
	if err := r.add("result", root["result"]); err != nil {
		return nil, nil, err
	}
	return erased, masked, nil
}

// sanitizeUTF8 replaces each invalid byte with U+FFFD, as encoding/json and appendString do.
func sanitizeUTF8(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b.WriteString("\ufffd")
		} else {
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}
