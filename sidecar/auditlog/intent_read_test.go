package auditlog

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/rego"

	"github.com/consentry/consentry/sidecar/audit"
	"github.com/consentry/consentry/sidecar/decision"
)

// intentStep is one append: the intent of request id, or its decision record.
type intentStep struct {
	id     int
	intent bool
	edit   func(*audit.Entry)
}

func intentOf(id int) intentStep   { return intentStep{id: id, intent: true} }
func decisionOf(id int) intentStep { return intentStep{id: id} }

// intentEntry is entry(i) as the pipeline appends it before forwarding a write (intent) or
// once the CRM answered: both with the same decision id and timestamp.
func intentEntry(t testing.TB, s intentStep) *audit.Entry {
	e := entry(t, s.id)
	if s.intent {
		e.Intent = true
		e.Enforcement = audit.Enforcement{KeyScopes: []string{"contact"}} // no CRM status yet
	}
	if s.edit != nil {
		s.edit(e)
	}
	return e
}

func appendSteps(t *testing.T, l *Log, steps []intentStep) {
	t.Helper()
	for _, s := range steps {
		if err := l.Append(context.Background(), intentEntry(t, s)); err != nil {
			t.Fatal(err)
		}
	}
}

// intentLog writes steps to a closed log.
func intentLog(t *testing.T, steps []intentStep) *fixture {
	t.Helper()
	f := newFixture(t)
	l := f.open(t)
	appendSteps(t, l, steps)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return f
}

func decID(i int) string { return fmt.Sprintf("dec-%06d", i) }

// withReason gives the step's decision the reason code only it carries.
func withReason(s intentStep, code string) intentStep {
	s.edit = func(e *audit.Entry) {
		d := *e.Decision
		d.Reasons = []decision.Reason{{Code: code, Message: code}}
		e.Decision = &d
	}
	return s
}

// TestIntentVerifyAndQuery: verify counts intents toward the checkpoints' events and lists
// the unresolved ones without failing; a query shows a resolved intent only as its decision
// and the unresolved ones after everything else, in log order - also when the decision that
// resolves an intent does not match the filter, by its members or by its bytes.
func TestIntentVerifyAndQuery(t *testing.T) {
	deny := func(s intentStep) intentStep {
		s.edit = func(e *audit.Entry) {
			e.Decision = decision.Deny(502, "upstream.error", "the CRM failed")
			e.Enforcement = audit.Enforcement{Status: 502}
		}
		return s
	}
	var many []intentStep
	for i := range 12 {
		many = append(many, intentOf(i))
		if i != 4 && i != 9 {
			many = append(many, decisionOf(i))
		}
	}
	cases := []struct {
		name       string
		steps      []intentStep
		filter     Filter
		unresolved []int
		query      []string // type and decision id, in the order passed
	}{
		{name: "resolved", steps: []intentStep{intentOf(0), decisionOf(0)},
			query: []string{"decision " + decID(0)}},
		{name: "unresolved among decisions", steps: []intentStep{decisionOf(0), intentOf(1), intentOf(2), decisionOf(2), decisionOf(3)},
			unresolved: []int{1}, query: []string{"decision " + decID(0), "decision " + decID(2), "decision " + decID(3), "intent " + decID(1)}},
		{name: "unresolved in log order, not id order", steps: []intentStep{intentOf(5), intentOf(1), intentOf(3), decisionOf(3)},
			unresolved: []int{5, 1}, query: []string{"decision " + decID(3), "intent " + decID(5), "intent " + decID(1)}},
		{name: "a decision of another outcome resolves", steps: []intentStep{intentOf(1), deny(decisionOf(1))}, filter: Filter{Outcome: "allow"}},
		{name: "a decision the byte prefilter rejects resolves",
			steps:  []intentStep{withReason(intentOf(1), "write.pending"), withReason(intentOf(2), "write.pending"), decisionOf(1)},
			filter: Filter{Reason: "write.pending"}, unresolved: []int{2}, query: []string{"intent " + decID(2)}},
		{name: "a decision before the intent does not resolve it", steps: []intentStep{decisionOf(1), intentOf(1)},
			unresolved: []int{1}, query: []string{"decision " + decID(1), "intent " + decID(1)}},
		{name: "across count checkpoints", steps: many, unresolved: []int{4, 9},
			query: []string{"decision " + decID(0), "decision " + decID(1), "decision " + decID(2), "decision " + decID(3), "decision " + decID(5),
				"decision " + decID(6), "decision " + decID(7), "decision " + decID(8), "decision " + decID(10), "decision " + decID(11), "intent " + decID(4), "intent " + decID(9)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := intentLog(t, tc.steps)
			intents, decisions := 0, 0
			for _, s := range tc.steps {
				if s.intent {
					intents++
				} else {
					decisions++
				}
			}

			rep := f.verify(t)
			if !rep.OK() {
				t.Fatalf("verify: %+v", rep.Problems)
			}
			if len(tc.steps) > 20 && rep.Checkpoints < 4 {
				t.Errorf("%d checkpoints: want count checkpoints among the intents", rep.Checkpoints)
			}
			if rep.Intents != intents || rep.Decisions != decisions {
				t.Errorf("verify counted %d intents, %d decisions; want %d, %d", rep.Intents, rep.Decisions, intents, decisions)
			}
			var got []string
			for _, u := range rep.UnresolvedIntents {
				got = append(got, u.DecisionID)
				if u.Pending || u.Timestamp.IsZero() || !strings.HasPrefix(u.Segment, "segment-") {
					t.Errorf("unresolved intent %+v: a closed log's intent is not pending, and has its time and segment", u)
				}
			}
			var want []string
			for _, i := range tc.unresolved {
				want = append(want, decID(i))
			}
			if !slices.Equal(got, want) {
				t.Errorf("unresolved intents %v, want %v", got, want)
			}
			if !slices.IsSortedFunc(rep.UnresolvedIntents, func(a, b UnresolvedIntent) int { return int(a.Seq) - int(b.Seq) }) {
				t.Errorf("unresolved intents not in log order: %+v", rep.UnresolvedIntents)
			}

			var seen []string
			var table bytes.Buffer
			tw := NewTableWriter(&table)
			st, err := QueryLog(context.Background(), f.dir, tc.filter, func(ev *Event, line []byte) error {
				seen = append(seen, ev.Type+" "+ev.DecisionID)
				if !bytes.Contains(line, []byte(`"type":"`+ev.Type+`"`)) {
					t.Errorf("line of %s is not its record", ev.DecisionID)
				}
				tw.Write(ev)
				return nil
			}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(seen, tc.query) {
				t.Errorf("query passed %q, want %q", seen, tc.query)
			}
			if st.Unresolved != len(tc.unresolved) || st.Intents != intents || st.Decisions != decisions || st.Matched != len(tc.query) {
				t.Errorf("stats %+v: want %d unresolved, %d intents, %d decisions, %d matched", st, len(tc.unresolved), intents, decisions, len(tc.query))
			}
			tw.Flush()
			if n := strings.Count(table.String(), OutcomeForwarded); n != len(tc.unresolved) {
				t.Errorf("table shows %d rows %q, want %d:\n%s", n, OutcomeForwarded, len(tc.unresolved), table.String())
			}
			for _, line := range strings.Split(table.String(), "\n") {
				if strings.Contains(line, OutcomeForwarded) && (strings.Contains(line, " allow ") || !strings.Contains(line, "emp-17")) {
					t.Errorf("intent row %q: want the request's columns, not the policy's outcome", line)
				}
			}
		})
	}
}

// TestIntentPendingOnLiveLog: an intent with no open or close checkpoint after it is pending
// (its CRM answer may still come on a live log); once the log is closed it is not.
func TestIntentPendingOnLiveLog(t *testing.T) {
	f := newFixture(t)
	l := f.open(t)
	appendSteps(t, l, []intentStep{intentOf(1), decisionOf(1), intentOf(2)})
	live := f.verify(t)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	closed := f.verify(t)
	for _, tc := range []struct {
		name    string
		rep     *VerifyReport
		pending bool
	}{{"live", live, true}, {"closed", closed, false}} {
		if !tc.rep.OK() || len(tc.rep.UnresolvedIntents) != 1 || tc.rep.UnresolvedIntents[0].DecisionID != decID(2) || tc.rep.UnresolvedIntents[0].Pending != tc.pending {
			t.Errorf("%s: %+v %+v, want %s pending=%v", tc.name, tc.rep.Problems, tc.rep.UnresolvedIntents, decID(2), tc.pending)
		}
	}
	// The JSON report always carries the list.
	b, _ := json.Marshal(closed)
	if !bytes.Contains(b, []byte(`"unresolved_intents":[{"decision_id":"dec-000002"`)) || !bytes.Contains(b, []byte(`"intents":2`)) {
		t.Errorf("verify JSON: %s", b)
	}
	b, _ = json.Marshal(intentLog(t, []intentStep{decisionOf(1)}).verify(t))
	if !bytes.Contains(b, []byte(`"unresolved_intents":[]`)) {
		t.Errorf("verify JSON without intents: %s", b)
	}
}

// TestIntentReport: the customer's report shows an unresolved intent as an access whose
// result was not recorded, in log order among the others (the erasure after it keeps its
// place), counted apart from allowed and refused; a resolved intent is its decision's row.
func TestIntentReport(t *testing.T) {
	f := newFixture(t)
	l := f.open(t)
	ctx := context.Background()
	appendSteps(t, l, []intentStep{decisionOf(0), intentOf(1)})
	ps, _ := NewPseudonymizer(testKey)
	if err := l.AppendErasure(ctx, time.Date(2026, 11, 22, 9, 0, 1, 0, time.UTC), Erasure{Customer: ps.Customer("c-1001"), Classes: []string{"contact"},
		Actor: "dpo", Reason: "consent withdrawn", LedgerSeq: 1, LedgerHash: strings.Repeat("0", 64), Complete: true}); err != nil {
		t.Fatal(err)
	}
	appendSteps(t, l, []intentStep{intentOf(2), decisionOf(2), decisionOf(3)})
	l.Close()

	rep, err := BuildReport(ctx, f.dir, ReportOptions{CustomerID: "c-1001", Pseudonymizer: ps})
	if err != nil {
		t.Fatal(err)
	}
	var rows []string
	for _, a := range rep.Accesses {
		rows = append(rows, a.DecisionID+" "+a.Outcome)
	}
	if want := []string{decID(0) + " allow", decID(1) + " " + OutcomeUnrecorded, decID(2) + " allow", decID(3) + " allow"}; !slices.Equal(rows, want) {
		t.Fatalf("accesses %q, want %q", rows, want)
	}
	if a := rep.Accesses[1]; a.Note != unrecordedNote || a.Who == "" || a.Purpose == "" {
		t.Errorf("unrecorded row %+v", a)
	}
	if rep.Unrecorded != 1 || len(rep.ByPurpose) != 1 || rep.ByPurpose[0] != (PurposeCount{Purpose: "essential.service.operations.support", Allowed: 3, Unrecorded: 1}) {
		t.Errorf("summary: unrecorded %d, by purpose %+v", rep.Unrecorded, rep.ByPurpose)
	}
	// Intents are neither searched decisions nor checked for the key: their decisions are.
	if rep.RecordsSearched != 3 || rep.Stats.KeyChecked != 3 || rep.Stats.Intents != 2 || rep.Stats.Unresolved != 1 {
		t.Errorf("stats %+v, records searched %d", rep.Stats, rep.RecordsSearched)
	}

	var h bytes.Buffer
	if err := rep.WriteHTML(&h); err != nil {
		t.Fatal(err)
	}
	checkSelfContained(t, h.String(), []string{"sent, result not recorded", "Result not recorded", "1 request to change your data was allowed and sent",
		"may or may not have been made"})
	if n := strings.Count(h.String(), ">allowed<"); n != 3 {
		t.Errorf("HTML shows %d allowed rows, want 3", n)
	}

	var c bytes.Buffer
	if err := rep.WriteCSV(&c); err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(&c).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	var csvRows []string
	for _, r := range recs[1:] {
		csvRows = append(csvRows, r[14]+" "+r[13]+" "+r[7])
	}
	if want := []string{"access " + decID(0) + " allow", "access " + decID(1) + " unrecorded", "erasure  ", "access " + decID(2) + " allow", "access " + decID(3) + " allow"}; !slices.Equal(csvRows, want) {
		t.Errorf("csv rows %q, want %q", csvRows, want)
	}
	if recs[2][15] != unrecordedNote {
		t.Errorf("csv note %q", recs[2][15])
	}

	var j bytes.Buffer
	if err := rep.WriteJSON(&j); err != nil {
		t.Fatal(err)
	}
	var back struct {
		Unrecorded int `json:"unrecorded"`
		Accesses   []struct {
			Outcome, Note string
		} `json:"accesses"`
		ByPurpose []PurposeCount `json:"by_purpose"`
	}
	if err := json.Unmarshal(j.Bytes(), &back); err != nil || back.Unrecorded != 1 || back.Accesses[1].Outcome != OutcomeUnrecorded ||
		back.Accesses[1].Note == "" || back.ByPurpose[0].Unrecorded != 1 {
		t.Errorf("json %v: %s", err, j.String())
	}
}

// TestIntentRecordMatchesSchema validates intent records, and the decisions that resolve
// them, against policies/schema/decision_log_event.json with OPA's JSON Schema validator.
func TestIntentRecordMatchesSchema(t *testing.T) {
	raw, err := os.ReadFile("../../policies/schema/decision_log_event.json")
	if err != nil {
		t.Fatal(err)
	}
	var schema any
	if err := json.Unmarshal(raw, &schema); err != nil {
		t.Fatal(err)
	}
	pq, err := rego.New(rego.Query("x := json.match_schema(input.doc, input.schema)")).PrepareForEval(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	f := intentLog(t, []intentStep{intentOf(1), decisionOf(1), intentOf(2)})
	types := map[string]int{}
	err = ScanLines(f.dir, func(_ string, line []byte) error {
		var doc map[string]any
		if err := json.Unmarshal(line, &doc); err != nil {
			return err
		}
		types[doc["type"].(string)]++
		rs, err := pq.Eval(context.Background(), rego.EvalInput(map[string]any{"doc": doc, "schema": schema}))
		if err != nil {
			return err
		}
		if res := rs[0].Bindings["x"].([]any); res[0] != true {
			t.Errorf("%s record does not match the schema: %v", doc["type"], res[1])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if types[TypeIntent] != 2 || types[TypeDecision] != 1 {
		t.Fatalf("records validated: %v", types)
	}
}
