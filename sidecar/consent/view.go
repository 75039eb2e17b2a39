package consent

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/consentry/consentry/sidecar/input"
)

// The view is the in-memory copy of the state the hot path reads. A snapshot is sharded by
// key so that writers (admin API, other replicas' notifications) block few readers; entries
// are immutable and replaced whole, so a reader holds a shard lock only for a map lookup.
// A full reload builds a new snapshot aside and swaps it in atomically.

const nShards = 256

type view struct {
	snap atomic.Pointer[snapshot]

	// reloadMu serializes full reloads; mu guards the reload bookkeeping: entities changed
	// while a reload runs are refreshed again after the swap (the reload may have read them
	// before the change). swapMu makes each update atomic with respect to the swap: an
	// update holds it shared from loading the snapshot to noting the change, the swap holds
	// it exclusively. Without it an update could land in the outgoing snapshot and be noted
	// only after the reload stopped collecting changes: lost until the next resync.
	reloadMu  sync.Mutex
	swapMu    sync.RWMutex
	mu        sync.Mutex
	reloading bool
	pending   map[Change]struct{}

	// hook, when set (tests), is called at named points of updates and reloads so that a
	// test can interleave them: "put" (an update has written its snapshot, not yet noted
	// the change), "loaded" (a reload has read the database, not yet swapped), "swapped".
	hook func(point string)
}

func (v *view) at(point string) {
	if v.hook != nil {
		v.hook(point)
	}
}

type snapshot struct {
	shards [nShards]shard
	agMu   sync.RWMutex
	ags    map[string]agEntry
	// consents counts consent records (status, not exact under concurrent updates).
	consents atomic.Int64
}

type shard struct {
	mu        sync.RWMutex
	customers map[string]*custEntry
	cases     map[string]caseEntry
}

// custEntry is immutable once published.
type custEntry struct {
	rev      int64
	known    bool // a customers row exists
	state    input.CustomerState
	consents []consentRec
}

// consentRec is the compact form of a current consent (times as Unix ns, 0 = none); the
// loader interns its repetitive strings, which keeps a million records well under budget.
type consentRec struct {
	purpose, status, noticeVersion, noticeHash, channel, capturedBy, eventID string
	granted, expires, withdrawn                                              int64
	seq                                                                      int64
}

type caseEntry struct {
	rev int64
	c   *input.Case
}

type agEntry struct {
	rev int64
	a   *input.Agreement
}

func newSnapshot() *snapshot {
	s := &snapshot{ags: map[string]agEntry{}}
	for i := range s.shards {
		s.shards[i].customers = map[string]*custEntry{}
		s.shards[i].cases = map[string]caseEntry{}
	}
	return s
}

// shardOf is FNV-1a over the key (inline, no allocation).
func (s *snapshot) shardOf(key string) *shard {
	h := uint32(2166136261)
	for i := 0; i < len(key); i++ {
		h ^= uint32(key[i])
		h *= 16777619
	}
	return &s.shards[h%nShards]
}

func (v *view) loaded() bool { return v.snap.Load() != nil }

// note records a change for re-refresh when a reload is running.
func (v *view) note(ch Change) {
	v.mu.Lock()
	if v.reloading {
		v.pending[ch] = struct{}{}
	}
	v.mu.Unlock()
}

// nsOf is a time in the view's form; viewNS (timerange.go) never wraps.
func nsOf(t *time.Time) int64 { return viewNS(t) }

func recOf(c Current, seq int64, in *interner) consentRec {
	return consentRec{
		purpose: in.get(c.Purpose), status: in.get(c.Status), noticeVersion: in.get(c.NoticeVersion),
		noticeHash: in.get(c.NoticeHash), channel: in.get(c.Channel), capturedBy: in.get(c.CapturedBy),
		eventID: c.EventID, granted: nsOf(c.GrantedAt), expires: nsOf(c.ExpiresAt), withdrawn: nsOf(c.WithdrawnAt), seq: seq,
	}
}

func stateOf(c Customer) input.CustomerState {
	return input.CustomerState{ID: c.ID, RetentionUntil: c.RetentionUntil, Erased: c.Erased, ErasedAt: c.ErasedAt}
}

// putResult applies a recorded event's outcome (nothing when it changed no state).
func (v *view) putResult(r AppendResult) {
	if r.NoEffect {
		return
	}
	v.putConsent(r.Current, r.Seq, r.Customer, r.CustRev)
}

// putConsent applies one new current consent (from a local write) if it is newer.
func (v *view) putConsent(c Current, seq int64, cust Customer, custRev int64) {
	v.swapMu.RLock()
	defer v.swapMu.RUnlock()
	snap := v.snap.Load()
	if snap == nil {
		return
	}
	sh := snap.shardOf(c.CustomerID)
	sh.mu.Lock()
	old := sh.customers[c.CustomerID]
	next := &custEntry{}
	if old != nil {
		*next = *old
	}
	if custRev >= next.rev {
		next.rev, next.known, next.state = custRev, true, stateOf(cust)
	}
	rec := recOf(c, seq, nil)
	recs := make([]consentRec, 0, len(next.consents)+1)
	replaced := false
	for _, r := range next.consents {
		if r.purpose == c.Purpose {
			replaced = true
			if r.seq > seq {
				rec = r // a newer event already arrived (refresh raced ahead)
			}
			continue
		}
		recs = append(recs, r)
	}
	if !replaced {
		snap.consents.Add(1)
	}
	next.consents = append(recs, rec)
	sh.customers[c.CustomerID] = next
	sh.mu.Unlock()
	v.at("put")
	v.note(Change{Kind: ChangeCustomer, Key: c.CustomerID})
}

// putCustomer replaces a customer's whole entry (refresh from the database) unless the
// entry holds newer data; cur may be nil (customer without consents), cust nil (unknown).
func (v *view) putCustomer(id string, cust *Customer, cur []Current, rev int64) {
	v.swapMu.RLock()
	defer v.swapMu.RUnlock()
	snap := v.snap.Load()
	if snap == nil {
		return
	}
	next := &custEntry{rev: rev}
	if cust != nil {
		next.known, next.state = true, stateOf(*cust)
	}
	var maxSeq int64
	for _, c := range cur {
		next.consents = append(next.consents, recOf(c, c.Seq, nil))
		maxSeq = max(maxSeq, c.Seq)
	}
	sh := snap.shardOf(id)
	sh.mu.Lock()
	if old := sh.customers[id]; old != nil {
		var oldMax int64
		for _, r := range old.consents {
			oldMax = max(oldMax, r.seq)
		}
		if old.rev > rev || oldMax > maxSeq {
			sh.mu.Unlock()
			return
		}
		snap.consents.Add(int64(len(next.consents) - len(old.consents)))
	} else {
		snap.consents.Add(int64(len(next.consents)))
	}
	if cust == nil && len(cur) == 0 {
		delete(sh.customers, id)
	} else {
		sh.customers[id] = next
	}
	sh.mu.Unlock()
	v.note(Change{Kind: ChangeCustomer, Key: id})
}

func (v *view) putCase(id string, c *Case, rev int64) {
	v.swapMu.RLock()
	defer v.swapMu.RUnlock()
	snap := v.snap.Load()
	if snap == nil {
		return
	}
	sh := snap.shardOf(id)
	sh.mu.Lock()
	if old, ok := sh.cases[id]; !ok || old.rev <= rev {
		if c == nil {
			delete(sh.cases, id)
		} else {
			sh.cases[id] = caseEntry{rev: rev, c: caseOf(*c)}
		}
	}
	sh.mu.Unlock()
	v.note(Change{Kind: ChangeCase, Key: id})
}

func (v *view) putAgreement(id string, a *Agreement, rev int64) {
	v.swapMu.RLock()
	defer v.swapMu.RUnlock()
	snap := v.snap.Load()
	if snap == nil {
		return
	}
	snap.agMu.Lock()
	if old, ok := snap.ags[id]; !ok || old.rev <= rev {
		if a == nil {
			delete(snap.ags, id)
		} else {
			snap.ags[id] = agEntry{rev: rev, a: agreementOf(*a)}
		}
	}
	snap.agMu.Unlock()
	v.note(Change{Kind: ChangeAgreement, Key: id})
}

func caseOf(c Case) *input.Case {
	return &input.Case{ID: c.ID, CustomerID: c.CustomerID, Assignees: append([]string{}, c.Assignees...), Status: c.Status, Purpose: c.Purpose}
}

func agreementOf(a Agreement) *input.Agreement {
	return &input.Agreement{ProcessorID: a.ProcessorID, Purposes: append([]string{}, a.Purposes...),
		Categories: append([]string{}, a.Categories...), ValidFrom: a.ValidFrom, ValidUntil: a.ValidUntil}
}

// covers mirrors util.purpose_covers in the policy library: a consent for p covers the
// declared purpose q when p == q or q is a sub-purpose of p.
func covers(p, q string) bool {
	return p == q || (len(q) > len(p) && q[len(p)] == '.' && q[:len(p)] == p)
}

// arena batches the allocations of lookups: one list response allocates a few large
// slices instead of three small objects per customer (less GC work on the hot path).
type arena struct {
	consents []input.Consent
	times    []time.Time
	states   []input.CustomerState
}

func newArena(customers int) *arena {
	return &arena{consents: make([]input.Consent, 0, 2*customers), times: make([]time.Time, 0, 4*customers), states: make([]input.CustomerState, 0, customers)}
}

func (a *arena) time(ns int64) *time.Time {
	if ns == 0 {
		return nil
	}
	if len(a.times) == cap(a.times) {
		// Earlier pointers keep the old array alive; never append into it again.
		a.times = make([]time.Time, 0, max(16, 2*cap(a.times)))
	}
	a.times = append(a.times, time.Unix(0, ns).UTC())
	return &a.times[len(a.times)-1]
}

// customer returns the customer's consents (those covering purpose, all when purpose is
// "") and state; a granted consent past its expiry is reported as expired.
func (v *view) customer(snap *snapshot, id, purpose string, now int64, a *arena) ([]input.Consent, *input.CustomerState) {
	sh := snap.shardOf(id)
	sh.mu.RLock()
	e := sh.customers[id]
	sh.mu.RUnlock()
	if e == nil {
		return []input.Consent{}, nil
	}
	n := 0
	for i := range e.consents {
		if purpose == "" || covers(e.consents[i].purpose, purpose) {
			n++
		}
	}
	if len(a.consents)+n > cap(a.consents) {
		a.consents = make([]input.Consent, 0, max(16, 2*cap(a.consents), n))
	}
	start := len(a.consents)
	for i := range e.consents {
		r := &e.consents[i]
		if purpose != "" && !covers(r.purpose, purpose) {
			continue
		}
		status := r.status
		if status == KindGranted && r.expires != 0 && r.expires <= now {
			status = KindExpired
		}
		a.consents = append(a.consents, input.Consent{Purpose: r.purpose, Status: status, NoticeVersion: r.noticeVersion, NoticeHash: r.noticeHash,
			Channel: r.channel, CapturedBy: r.capturedBy, GrantedAt: a.time(r.granted), ExpiresAt: a.time(r.expires), WithdrawnAt: a.time(r.withdrawn), EventID: r.eventID})
	}
	out := a.consents[start:len(a.consents):len(a.consents)]
	var st *input.CustomerState
	if e.known {
		if len(a.states) == cap(a.states) {
			a.states = make([]input.CustomerState, 0, max(4, 2*cap(a.states)))
		}
		a.states = append(a.states, e.state)
		st = &a.states[len(a.states)-1]
	}
	return out, st
}

func (v *view) caseByID(snap *snapshot, id string) *input.Case {
	sh := snap.shardOf(id)
	sh.mu.RLock()
	e, ok := sh.cases[id]
	sh.mu.RUnlock()
	if !ok {
		return nil
	}
	cp := *e.c
	return &cp
}

func (v *view) agreement(snap *snapshot, id string) *input.Agreement {
	snap.agMu.RLock()
	e, ok := snap.ags[id]
	snap.agMu.RUnlock()
	if !ok {
		return nil
	}
	cp := *e.a
	return &cp
}

// stats reports the view's size for /status.
func (snap *snapshot) stats() map[string]int64 {
	var customers, cases int64
	for i := range snap.shards {
		sh := &snap.shards[i]
		sh.mu.RLock()
		customers += int64(len(sh.customers))
		cases += int64(len(sh.cases))
		sh.mu.RUnlock()
	}
	snap.agMu.RLock()
	ags := int64(len(snap.ags))
	snap.agMu.RUnlock()
	return map[string]int64{"customers": customers, "consents": snap.consents.Load(), "cases": cases, "agreements": ags}
}

// loader fills a fresh snapshot (single goroutine, no locks needed).
type loader struct {
	snap   *snapshot
	intern *interner
	// cur is the entry whose rows are being collected in buf; curKey aliases the row
	// buffer of the first row (only compared, never stored).
	cur    *custEntry
	curKey string
	buf    []consentRec
}

var _ Loader = (*loader)(nil)

func (l *loader) entry(id string) *custEntry {
	sh := l.snap.shardOf(id)
	e := sh.customers[id]
	if e == nil {
		e = &custEntry{}
		sh.customers[id] = e
	}
	return e
}

func (l *loader) LoadCustomer(c Customer, rev int64) {
	e := l.entry(c.ID)
	e.rev, e.known, e.state = rev, true, stateOf(c)
}

func (l *loader) LoadConsent(r ConsentRow) {
	// Rows arrive ordered by customer: collect one customer's records in a reused buffer
	// and give the entry an exactly-sized slice (no append growth on a million rows).
	if l.cur == nil || r.CustomerID != l.curKey {
		l.flush()
		sh := l.snap.shardOf(r.CustomerID)
		e := sh.customers[r.CustomerID] // lookup only: no key allocation
		if e == nil {
			e = &custEntry{}
			sh.customers[strings.Clone(r.CustomerID)] = e
		}
		l.cur, l.curKey = e, r.CustomerID
	}
	in := l.intern
	l.buf = append(l.buf, consentRec{
		purpose: in.get(r.Purpose), status: in.get(r.Status), noticeVersion: in.get(r.NoticeVersion), noticeHash: in.get(r.NoticeHash),
		channel: in.get(r.Channel), capturedBy: in.get(r.CapturedBy), eventID: strings.Clone(r.EventID),
		granted: r.GrantedAt, expires: r.ExpiresAt, withdrawn: r.WithdrawnAt, seq: r.Seq,
	})
	l.snap.consents.Add(1)
}

// flush moves the buffered records to the current entry (appending, should a backend
// not deliver a customer's rows together).
func (l *loader) flush() {
	if l.cur == nil || len(l.buf) == 0 {
		return
	}
	e := l.cur
	recs := make([]consentRec, 0, len(e.consents)+len(l.buf))
	recs = append(append(recs, e.consents...), l.buf...)
	e.consents = recs
	l.buf = l.buf[:0]
}

func (l *loader) LoadCase(c Case, rev int64) {
	l.snap.shardOf(c.ID).cases[c.ID] = caseEntry{rev: rev, c: caseOf(c)}
}

func (l *loader) LoadAgreement(a Agreement, rev int64) {
	l.snap.ags[a.ProcessorID] = agEntry{rev: rev, a: agreementOf(a)}
}

// finish flushes the last customer and sorts each customer's records by purpose (a
// no-op for backends that deliver them sorted).
func (l *loader) finish() {
	l.flush()
	l.cur, l.curKey, l.buf = nil, "", nil
	for i := range l.snap.shards {
		for _, e := range l.snap.shards[i].customers {
			if !slices.IsSortedFunc(e.consents, cmpPurpose) {
				slices.SortFunc(e.consents, cmpPurpose)
			}
		}
	}
}

func cmpPurpose(a, b consentRec) int { return strings.Compare(a.purpose, b.purpose) }

// interner deduplicates repetitive strings (purposes, notice versions and hashes,
// channels) while loading, and copies s out of the row buffer it may share; a nil
// interner returns s unchanged.
type interner struct{ m map[string]string }

func newInterner() *interner { return &interner{m: map[string]string{}} }

func (in *interner) get(s string) string {
	if in == nil || s == "" {
		return s
	}
	if v, ok := in.m[s]; ok {
		return v
	}
	s = strings.Clone(s)
	// Bound the table: high-cardinality values (captured_by emails) gain nothing.
	if len(in.m) < 1<<16 {
		in.m[s] = s
	}
	return s
}
