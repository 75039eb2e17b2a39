package auditlog

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Filter selects decision records, and the erasure records of a customer when only Customer
// and the time range are set. Empty fields match everything.
type Filter struct {
	// Customer is a customer pseudonym (Pseudonymizer.Customer of the raw id); it matches the
	// decision's customer and list records' customers.
	Customer   string
	Subject    string
	Purpose    string
	Case       string
	Outcome    string // allow | deny
	Reason     string // a reason code
	Action     string
	DecisionID string
	Since      time.Time
	Until      time.Time
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
	if f.Subject != "" && (ev.Subject == nil || ev.Subject.ID != f.Subject) {
		return false
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
	return f.Customer != "" && f.Subject == "" && f.Purpose == "" && f.Case == "" && f.Outcome == "" &&
		f.Reason == "" && f.Action == "" && f.DecisionID == ""
}

// Prefilter returns a cheap test that rejects lines that cannot match before they are
// decoded: the record must be a decision (or an erasure, see Match) and every string filter
// value must appear in the line's bytes as the log encodes it (JSON-escaped: a subject
// "CORP\jdoe" is stored as "CORP\\jdoe"). Match decides. The values are escaped once, here,
// not once per line.
func (f *Filter) Prefilter() func(line []byte) bool {
	var needles [][]byte
	for _, s := range []string{f.Customer, f.Subject, f.Purpose, f.Case, f.Reason, f.DecisionID} {
		if s != "" {
			q := appendString(nil, s)
			needles = append(needles, q[1:len(q)-1])
		}
	}
	erasures := f.erasures()
	return func(line []byte) bool {
		for _, n := range needles {
			if !bytes.Contains(line, n) {
				return false
			}
		}
		return bytes.Contains(line, []byte(`"type":"decision"`)) || (erasures && bytes.Contains(line, []byte(`"type":"erasure"`)))
	}
}

// Progress is reported while scanning.
type Progress struct {
	Segment string
	Scanned int
	Matched int
}

// Query streams the decision records of dir matching f to fn, in log order. progress, when not
// nil, is called at every segment start and every 100,000 records.
func Query(ctx context.Context, dir string, f Filter, fn func(ev *Event, line []byte) error, progress func(Progress)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	keep := f.Prefilter()
	var p Progress
	return ScanLines(dir, func(seg string, line []byte) error {
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
		if !keep(line) {
			return nil
		}
		var ev Event
		if err := json.Unmarshal(line, &ev); err != nil {
			return fmt.Errorf("%s: %w", seg, err)
		}
		if !f.Match(&ev) {
			return nil
		}
		p.Matched++
		return fn(&ev, line)
	})
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
	fmt.Fprintf(t.tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", ev.Timestamp.UTC().Format(time.RFC3339), ev.DecisionID, dash(subj),
		dash(ev.Purpose), dash(ev.CaseID), dash(ev.Customer), dash(ev.Action), ev.Outcome, dash(strings.Join(ev.Reasons, ",")),
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
