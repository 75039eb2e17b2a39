package auditlog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Filter selects decision records, and the erasure records of a customer when only Customer
// and the time range are set. Empty fields match everything. QueryLog also selects the
// unresolved intent records that match as the decisions they announce; Match and Prefilter
// do not.
type Filter struct {
	// Customer is a customer pseudonym (Pseudonymizer.Customer of the raw id); it matches the
	// decision's customer and list records' customers.
	Customer string
	// Subject matches the subject's id as logged: an employee's id. SubjectPseudonym, the
	// customer pseudonym of the same value, matches too: a customer subject is logged by the
	// pseudonym of its customer id (its login takes the same one), never raw.
	Subject          string
	SubjectPseudonym string
	Purpose          string
	Case             string
	Outcome          string // allow | deny
	Reason           string // a reason code
	Action           string
	DecisionID       string
	// Since is inclusive, Until exclusive.
	Since time.Time
	Until time.Time
	// KeyFingerprint is the Fingerprint of the key Customer and SubjectPseudonym were made
	// with: QueryLog then refuses (ErrPseudonymKeyMismatch) a log whose checkpoints show that
	// records in the time range were written with another key, where nothing could match.
	KeyFingerprint string
}

// Match reports whether ev passes f: a decision record, or an erasure record of f.Customer
// when f names nothing else a decision has (the erasure next to the accesses before it).
func (f *Filter) Match(ev *Event) bool {
	if ev.Type == TypeErasure && ev.Erasure != nil && f.erasures() {
		return ev.Erasure.Customer == f.Customer && f.inRange(ev.Timestamp)
	}
	if ev.Type != TypeDecision {
		return false
	}
	if f.Customer != "" && ev.Customer != f.Customer && !slices.Contains(ev.Customers, f.Customer) {
		return false
	}
	if f.Subject != "" || f.SubjectPseudonym != "" {
		if ev.Subject == nil || ev.Subject.ID == "" || (ev.Subject.ID != f.Subject && ev.Subject.ID != f.SubjectPseudonym) {
			return false
		}
	}
	if (f.Purpose != "" && ev.Purpose != f.Purpose) || (f.Case != "" && ev.CaseID != f.Case) ||
		(f.Outcome != "" && ev.Outcome != f.Outcome) || (f.Action != "" && ev.Action != f.Action) ||
		(f.DecisionID != "" && ev.DecisionID != f.DecisionID) {
		return false
	}
	if f.Reason != "" && !slices.Contains(ev.Reasons, f.Reason) {
		return false
	}
	return f.inRange(ev.Timestamp)
}

func (f *Filter) inRange(t time.Time) bool {
	return (f.Since.IsZero() || !t.Before(f.Since)) && (f.Until.IsZero() || t.Before(f.Until))
}

// erasures reports whether f selects erasure records too: a customer and nothing that only a
// decision has.
func (f *Filter) erasures() bool {
	return f.Customer != "" && f.Subject == "" && f.SubjectPseudonym == "" && f.Purpose == "" && f.Case == "" && f.Outcome == "" &&
		f.Reason == "" && f.Action == "" && f.DecisionID == ""
}

// Prefilter returns a cheap test that rejects lines that cannot match before they are
// decoded: the record must be a decision (or an erasure, see Match) and every string filter
// value must appear in the line's bytes as the log encodes it (JSON-escaped: a subject
// "CORP\jdoe" is stored as "CORP\\jdoe"); of the subject's two forms, one. Match decides. The
// values are escaped once, here, not once per line.
func (f *Filter) Prefilter() func(line []byte) bool { return f.prefilter(false) }

// prefilter is Prefilter, letting intent records through too when intents is set (QueryLog
// holds those that would match as decisions; see heldIntents).
func (f *Filter) prefilter(intents bool) func(line []byte) bool {
	needle := func(s string) []byte {
		q := appendString(nil, s)
		return q[1 : len(q)-1]
	}
	var needles, subject [][]byte
	for _, s := range []string{f.Customer, f.Purpose, f.Case, f.Reason, f.DecisionID} {
		if s != "" {
			needles = append(needles, needle(s))
		}
	}
	for _, s := range []string{f.Subject, f.SubjectPseudonym} {
		if s != "" {
			subject = append(subject, needle(s))
		}
	}
	erasures := f.erasures()
	return func(line []byte) bool {
		for _, n := range needles {
			if !bytes.Contains(line, n) {
				return false
			}
		}
		if len(subject) > 0 && !slices.ContainsFunc(subject, func(n []byte) bool { return bytes.Contains(line, n) }) {
			return false
		}
		return bytes.Contains(line, []byte(`"type":"decision"`)) || (intents && bytes.Contains(line, []byte(`"type":"intent"`))) ||
			(erasures && bytes.Contains(line, []byte(`"type":"erasure"`)))
	}
}

// Progress is reported while scanning.
type Progress struct {
	Segment string
	Scanned int
	Matched int
}

// Query streams the decision records of dir matching f to fn, in log order, then the
// unresolved intents that match (see QueryLog). progress, when not nil, is called at every
// segment start and every 100,000 records. It is QueryLog without the statistics.
func Query(ctx context.Context, dir string, f Filter, fn func(ev *Event, line []byte) error, progress func(Progress)) error {
	_, err := QueryLog(ctx, dir, f, fn, progress)
	return err
}

// QueryLog is Query returning what the scan saw (QueryStats), so that a caller never reports
// "nothing recorded" about the wrong data. It fails with ErrNoLog when dir holds no segment,
// and, after the scan, with ErrPseudonymKeyMismatch when f.KeyFingerprint is set and records
// in the time range that only a pseudonym could match were written with another pseudonym
// key; not for a subject that matched by its id as logged (an employee). The statistics are
// returned with either error.
//
// Unresolved intents come last: an intent record (Event.Type TypeIntent) that would match f
// as a decision is held until a later decision record with its decision_id resolves it,
// whether or not that decision matches f (its answer is then in the log, as a match or not).
// The ones still held when the scan ends - state-changing requests forwarded to the CRM whose
// outcome was never recorded - are passed to fn after every other record, in log order.
// Memory holds only the matching intents not yet resolved.
func QueryLog(ctx context.Context, dir string, f Filter, fn func(ev *Event, line []byte) error, progress func(Progress)) (QueryStats, error) {
	var st QueryStats
	if err := ctx.Err(); err != nil {
		return st, err
	}
	segs, err := listScanSegments(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return st, fmt.Errorf("%w: %s does not exist", ErrNoLog, dir)
	}
	if err != nil {
		return st, err
	}
	if len(segs) == 0 {
		return st, fmt.Errorf("%w: %s holds no segment-*.jsonl file", ErrNoLog, dir)
	}
	st.Segments = len(segs)
	keep := f.prefilter(true)
	sc := newStatsScan(&f, &st)
	var p Progress
	// employee: a subject matched by its id as logged, which only an employee's is (a
	// customer subject is logged by pseudonym): the key cannot make that search wrong.
	employee := false
	pass := func(ev *Event, line []byte) error {
		if f.Customer == "" && f.Subject != "" && ev.Subject != nil && ev.Subject.ID == f.Subject {
			employee = true
		}
		p.Matched++
		st.Matched++
		return fn(ev, line)
	}
	held := heldIntents{}
	err = scanSegments(dir, segs, func(seg string, line []byte) error {
		if seg != p.Segment {
			p.Segment = seg
			if progress != nil {
				progress(p)
			}
		}
		p.Scanned++
		if p.Scanned%4096 == 0 {
			// Ctrl-C ends a scan of a large log promptly, with or without progress reports.
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if progress != nil && p.Scanned%100000 == 0 {
			progress(p)
		}
		if err := sc.line(seg, line); err != nil {
			return err
		}
		// A decision that f rejects by its bytes is read still when it resolves a held intent.
		if !keep(line) && !held.resolvedBy(line) {
			return nil
		}
		var ev Event
		if err := json.Unmarshal(line, &ev); err != nil {
			return fmt.Errorf("%s: %w", seg, err)
		}
		switch ev.Type {
		case TypeDecision:
			held.resolve(ev.DecisionID)
		case TypeIntent:
			if f.matchIntent(&ev) {
				held.hold(ev.DecisionID, ev.Seq, line)
			}
			return nil
		}
		if !f.Match(&ev) {
			return nil
		}
		return pass(&ev, line)
	})
	sc.finish()
	if err == nil {
		st.Unresolved = held.len()
		err = held.emit(ctx, pass)
	}
	if err != nil {
		return st, err
	}
	if st.KeyOther > 0 && !employee {
		return st, fmt.Errorf("%w: %d of the %d decision records searched were pseudonymized with another key (fingerprint %s), not with this one (%s); "+
			"pass the log's pseudonym key, or narrow --since/--until to the records this key wrote", ErrPseudonymKeyMismatch,
			st.KeyOther, st.Decisions, strings.Join(st.OtherKeys, ", "), f.KeyFingerprint)
	}
	return st, nil
}

// TableWriter prints events as an aligned table.
type TableWriter struct {
	tw     *tabwriter.Writer
	header bool
}

// NewTableWriter returns a table writer on w.
func NewTableWriter(w io.Writer) *TableWriter {
	return &TableWriter{tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}
}

// OutcomeForwarded is the OUTCOME TableWriter prints for an unresolved intent: the request was
// forwarded to the CRM and no result was recorded.
const OutcomeForwarded = "forwarded, no result"

// Write prints one event row.
func (t *TableWriter) Write(ev *Event) {
	if !t.header {
		fmt.Fprintln(t.tw, "TIME\tDECISION\tSUBJECT\tPURPOSE\tCASE\tCUSTOMER\tACTION\tOUTCOME\tREASONS\tRELEASED\tMASKED\tDROPPED")
		t.header = true
	}
	subj := ""
	if ev.Subject != nil {
		subj = ev.Subject.ID
	}
	var rel, mask, drop []string
	if ev.Fields != nil {
		rel, mask, drop = ev.Fields.Released, ev.Fields.Masked, ev.Fields.Dropped
	}
	outcome := ev.Outcome
	if ev.Type == TypeIntent {
		// An unresolved intent: the policy's outcome is not what happened at the CRM.
		outcome = OutcomeForwarded
	}
	fmt.Fprintf(t.tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", ev.Timestamp.UTC().Format(time.RFC3339), ev.DecisionID, dash(subj),
		dash(ev.Purpose), dash(ev.CaseID), dash(ev.Customer), dash(ev.Action), outcome, dash(strings.Join(ev.Reasons, ",")),
		dash(strings.Join(rel, ",")), dash(strings.Join(mask, ",")), dash(strings.Join(drop, ",")))
}

// Flush flushes the table.
func (t *TableWriter) Flush() error { return t.tw.Flush() }

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
