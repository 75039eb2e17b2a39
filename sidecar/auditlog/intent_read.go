package auditlog

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"
)

// Reading intent records (TypeIntent): the write-ahead record of a state-changing request,
// resolved by the decision record of the same decision_id that follows it once the CRM has
// answered. Verify lists the unresolved ones, QueryLog passes them last, the report shows
// them as accesses whose result was not recorded.

// UnresolvedIntent is an intent record that no decision record of the same decision_id
// follows: a state-changing request was forwarded to the CRM and its outcome was never
// recorded (the sidecar stopped before the CRM's answer was logged). The CRM may have made
// the change.
type UnresolvedIntent struct {
	DecisionID string    `json:"decision_id"`
	Seq        uint64    `json:"seq"`
	Segment    string    `json:"segment"`
	Timestamp  time.Time `json:"timestamp"`
	// Pending: no open or close checkpoint follows it, so the log shows no stop of its writer
	// after it. On a live log the CRM's answer may still be on its way; on a stopped log (a
	// killed sidecar, a copy) it never came.
	Pending bool `json:"pending,omitempty"`
}

// openIntents tracks, for Verify, the intent records not yet resolved by a decision record.
// It holds only those: a resolved intent is forgotten at its decision.
type openIntents struct {
	byID map[string]UnresolvedIntent
	// settled is the seq of the last open or close checkpoint (settledAny: one was seen): an
	// intent before it outlived its writer's run.
	settled    uint64
	settledAny bool
}

func (o *openIntents) open(seg string, h lineHeader) {
	ts, _ := time.Parse(time.RFC3339Nano, h.timestamp) // a bad one is the record's problem
	o.add(UnresolvedIntent{DecisionID: h.decisionID, Seq: h.seq, Segment: seg, Timestamp: ts})
}

func (o *openIntents) add(u UnresolvedIntent) {
	if o.byID == nil {
		o.byID = map[string]UnresolvedIntent{}
	}
	o.byID[u.DecisionID] = u
}

func (o *openIntents) resolve(decisionID string) {
	if len(o.byID) > 0 {
		delete(o.byID, decisionID)
	}
}

// settle notes an open or close checkpoint at seq: the writer stopped (or restarted) there.
func (o *openIntents) settle(seq uint64) { o.settled, o.settledAny = seq, true }

// unresolved returns the intents still open, in log order.
func (o *openIntents) unresolved() []UnresolvedIntent {
	out := make([]UnresolvedIntent, 0, len(o.byID))
	for _, u := range o.byID {
		u.Pending = !o.settledAny || u.Seq > o.settled
		out = append(out, u)
	}
	slices.SortFunc(out, func(a, b UnresolvedIntent) int { return cmp.Compare(a.Seq, b.Seq) })
	return out
}

// matchIntent reports whether the intent record ev would match f if it were the decision
// record it announces. Match itself rejects intents: replay and other callers of Match and
// Prefilter select decisions only.
func (f *Filter) matchIntent(ev *Event) bool {
	ev.Type = TypeDecision
	ok := f.Match(ev)
	ev.Type = TypeIntent
	return ok
}

// heldIntents are the intent records a query matched, by decision id, each with a copy of its
// line, until a decision record with that id resolves them.
type heldIntents struct {
	byID map[string]heldIntent
}

type heldIntent struct {
	seq  uint64
	line []byte
}

func (h *heldIntents) hold(decisionID string, seq uint64, line []byte) {
	if h.byID == nil {
		h.byID = map[string]heldIntent{}
	}
	h.byID[decisionID] = heldIntent{seq: seq, line: bytes.Clone(line)}
}

func (h *heldIntents) resolve(decisionID string) {
	if len(h.byID) > 0 {
		delete(h.byID, decisionID)
	}
}

func (h *heldIntents) len() int { return len(h.byID) }

// decisionIDMember opens a record's top-level decision_id.
var decisionIDMember = []byte(`"decision_id":"`)

// resolvedBy reports, without decoding line, whether it may be the decision record of a held
// intent: a decision whose decision_id is held. The first `"decision_id":"` of a line is the
// top-level member: members are sorted, and the only ones before it that are objects
// (bundles) hold none, while a string value holds no unescaped quote. The caller decodes
// the line, which decides.
func (h *heldIntents) resolvedBy(line []byte) bool {
	if len(h.byID) == 0 || lineType(line) != TypeDecision {
		return false
	}
	i := bytes.Index(line, decisionIDMember)
	if i < 0 {
		return false
	}
	v := line[i+len(decisionIDMember):]
	j := bytes.IndexByte(v, '"')
	if j < 0 {
		return false
	}
	_, ok := h.byID[string(v[:j])]
	return ok
}

// emit passes the intents still held to fn in log order and forgets them.
func (h *heldIntents) emit(ctx context.Context, fn func(ev *Event, line []byte) error) error {
	held := slices.SortedFunc(maps.Values(h.byID), func(a, b heldIntent) int { return cmp.Compare(a.seq, b.seq) })
	h.byID = nil
	for _, hi := range held {
		if err := ctx.Err(); err != nil {
			return err
		}
		var ev Event
		if err := json.Unmarshal(hi.line, &ev); err != nil {
			return fmt.Errorf("intent record %d: %w", hi.seq, err)
		}
		if err := fn(&ev, hi.line); err != nil {
			return err
		}
	}
	return nil
}
