package transform

// List responses: records located in the body, decided per record, keys released per
// customer, and the edits that filter and decrypt them.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/consentry/consentry/sidecar/audit"
	"github.com/consentry/consentry/sidecar/decision"
	"github.com/consentry/consentry/sidecar/pipeline"
	"github.com/consentry/consentry/vaultkeys"
)

// errNoRecords marks a response without a record array where the route map puts one.
var errNoRecords = errors.New("no record array")

// listRecord is one record of a list response.
type listRecord struct {
	v          span
	customerID string
	rec        *record
	keep       bool
}

// list filters and transforms the record array at the route's record_path.
// errDoc (a non-2xx on a per-record route) keeps only the envelope's message (errdoc.go).
func (t *Transformer) list(ctx context.Context, rd RecordDecider, out *pipeline.Outcome, b []byte, perRecord, errDoc bool, rep *report, enf *audit.Enforcement) ([]byte, string, error) {
	doc, err := document(b)
	if err != nil {
		return nil, ReasonInvalidJSON, err
	}
	arr, found, err := locate(b, doc, splitPath(out.Match.Route.RecordPath))
	if err != nil {
		return nil, ReasonShape, err
	}
	if !found {
		// Not where the route map says the records are (a bare array, another envelope): what
		// the body holds instead would be served without its rules.
		return nil, ReasonShape, fmt.Errorf("%w: %q not in the response", errNoRecords, out.Match.Route.RecordPath)
	}
	if k := kind(b, arr); k != 'n' && k != '[' {
		return nil, ReasonShape, fmt.Errorf("%w: %q is not an array", errNoRecords, out.Match.Route.RecordPath)
	}
	envelope, err := (&walker{t: t, b: b, rep: rep}).envelope(doc, arr, errDoc, out.Match.Route)
	if err != nil {
		return nil, ReasonInvalidJSON, err
	}
	if kind(b, arr) == 'n' {
		return apply(b, envelope), "", nil // "items": null - no records, nothing to filter
	}
	var recs []*listRecord
	if _, err := scanArray(b, arr.start, 1, func(v span) error {
		recs = append(recs, &listRecord{v: v})
		return nil
	}); err != nil {
		return nil, ReasonInvalidJSON, err
	}
	edits, code, err := t.records(ctx, rd, out, b, recs, perRecord, rep, enf)
	if err != nil {
		return nil, code, err
	}
	items := make([]span, len(recs))
	drop := make([]bool, len(recs))
	for i, r := range recs {
		items[i], drop[i] = r.v, !r.keep
	}
	edits = append(edits, removals(items, drop)...)
	edits = append(edits, envelope...)
	slices.SortFunc(edits, func(a, b edit) int { return a.start - b.start })
	return apply(b, edits), "", nil
}

// lines filters and transforms a JSON-lines body: one record per non-empty line.
func (t *Transformer) lines(ctx context.Context, rd RecordDecider, out *pipeline.Outcome, b []byte, perRecord bool, rep *report, enf *audit.Enforcement) ([]byte, string, error) {
	var recs []*listRecord
	for i := 0; i < len(b); {
		j := bytes.IndexByte(b[i:], '\n')
		end := len(b)
		if j >= 0 {
			end = i + j
		}
		if len(bytes.TrimSpace(b[i:end])) > 0 {
			v, err := scanValue(b[:end], i, 1)
			if err != nil {
				return nil, ReasonInvalidJSON, err
			}
			if skipWS(b[:end], v.end) != end {
				return nil, ReasonInvalidJSON, synErr(v.end, "trailing data on a JSON line")
			}
			recs = append(recs, &listRecord{v: v})
		}
		i = end + 1
	}
	edits, code, err := t.records(ctx, rd, out, b, recs, perRecord, rep, enf)
	if err != nil {
		return nil, code, err
	}
	slices.SortFunc(edits, func(a, b edit) int { return a.start - b.start })
	var buf bytes.Buffer
	buf.Grow(len(b))
	ei := 0
	for _, r := range recs {
		var mine []edit
		for ei < len(edits) && edits[ei].start < r.v.end {
			mine = append(mine, edit{span: span{edits[ei].start - r.v.start, edits[ei].end - r.v.start}, repl: edits[ei].repl})
			ei++
		}
		if !r.keep {
			continue
		}
		buf.Write(apply(b[r.v.start:r.v.end], mine))
		buf.WriteByte('\n')
	}
	return buf.Bytes(), "", nil
}

// locate follows an object path from v. A path member that appears twice is an error: which
// one a client reads is parser-dependent, so neither is trusted.
func locate(b []byte, v span, path []string) (span, bool, error) {
	for _, seg := range path {
		if kind(b, v) != '{' {
			return span{}, false, nil
		}
		var next span
		n := 0
		if _, err := scanObject(b, v.start, 0, func(m member) error {
			if m.key == seg {
				next = m.val
				n++
			}
			return nil
		}); err != nil {
			return span{}, false, err
		}
		switch n {
		case 0:
			return span{}, false, nil
		case 1:
			v = next
		default:
			return span{}, false, errors.New("record path member " + seg + " appears twice")
		}
	}
	return v, true, nil
}

// records decides and transforms list records; it marks each record kept or not and returns
// the field edits of kept records.
func (t *Transformer) records(ctx context.Context, rd RecordDecider, out *pipeline.Outcome, b []byte, recs []*listRecord, perRecord bool, rep *report, enf *audit.Enforcement) ([]edit, string, error) {
	route := out.Match.Route
	root := t.tries.get(route)
	w := &walker{t: t, b: b, rep: rep}
	d := out.Decision
	var outcomes map[string]decision.Record
	if perRecord && len(recs) > 0 {
		var ids []string
		for _, r := range recs {
			r.customerID = customerIDOf(b, r.v, route.CustomerIDField)
			if r.customerID != "" {
				ids = append(ids, r.customerID)
			}
		}
		if len(ids) > 0 {
			if rd == nil {
				return nil, ReasonRecordsUndecided, errors.New("no record decider")
			}
			pg, err := rd.DecidePage(ctx, out, ids)
			if err != nil {
				// DecidePage denies every record on error: serve none rather than fail the
				// whole response? No: an empty list looks like "no customers match", which is
				// a lie the caller cannot detect. Fail closed with a clear status instead.
				return nil, ReasonRecordsUndecided, err
			}
			d = pg.Decision
			// A page the policy refused as a whole at response time serves no record,
			// whatever the per-record outcomes say: EnforcedRecords denies them all.
			outcomes = pipeline.EnforcedRecords(d, ids)
			enf.Records = &audit.ListRecords{Input: pg.Records, Decisions: outcomes}
		}
	}
	var need []*listRecord
	for _, r := range recs {
		fields := d.Fields
		if perRecord {
			rec, ok := outcomes[r.customerID]
			if r.customerID == "" || !ok || !rec.Allow {
				continue // undecided, denied, or without a customer id: removed
			}
			if rec.Fields != nil {
				fields = rec.Fields
			}
		}
		if kind(b, r.v) != '{' {
			continue // a record that is not an object cannot be minimized: removed
		}
		r.keep = true
		r.rec = &record{fields: fields}
		if err := w.object(r.rec, r.v, root, 1); err != nil {
			return nil, ReasonInvalidJSON, err
		}
		if r.rec.needsKeys() {
			need = append(need, r)
		}
	}
	t.releaseRecords(ctx, out, d, need, perRecord, w)
	var edits []edit
	var served, filtered []string
	for _, r := range recs {
		if r.keep {
			enf.RecordsReturned++
			edits = append(edits, r.rec.edits...)
			served = append(served, r.customerID)
		} else {
			enf.RecordsFiltered++
			if r.customerID != "" {
				filtered = append(filtered, r.customerID)
			}
		}
	}
	if enf.Records != nil {
		enf.Records.Served = sortedUnique(served)
		enf.Records.Filtered = sortedUnique(filtered)
	}
	return edits, "", nil
}

func sortedUnique(ids []string) []string {
	slices.Sort(ids)
	return slices.Compact(ids)
}

// releaseRecords releases each record's keys (concurrently, bounded) and finishes its values.
func (t *Transformer) releaseRecords(ctx context.Context, out *pipeline.Outcome, d *decision.Decision, need []*listRecord, perRecord bool, w *walker) {
	if len(need) == 0 {
		return
	}
	kss := make([]*vaultkeys.KeySet, len(need))
	if !perRecord {
		// One customer's records (notes of a customer): one release for all of them.
		ks := t.release(ctx, out.Input.Resource.CustomerID, d)
		for _, r := range need {
			w.finish(r.rec, ks)
		}
		if ks != nil {
			ks.Close()
		}
		return
	}
	if t.keys != nil {
		sem := make(chan struct{}, t.cfg.ReleaseConcurrency)
		var wg sync.WaitGroup
		for i, r := range need {
			if r.customerID == "" {
				continue
			}
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				ks, err := t.keys.ReleaseRecord(ctx, d, r.customerID)
				if err != nil {
					t.log.Warn("key release incomplete: fields withheld", "decision_id", out.DecisionID, "reason", vaultkeys.Reason(err))
				}
				kss[i] = ks
			}()
		}
		wg.Wait()
	}
	for i, r := range need {
		w.finish(r.rec, kss[i])
		if kss[i] != nil {
			kss[i].Close()
		}
	}
}

// customerIDOf reads the record's customer id member (a string, or a number's text).
func customerIDOf(b []byte, v span, field string) string {
	if kind(b, v) != '{' {
		return ""
	}
	id, n := "", 0
	_, _ = scanObject(b, v.start, 1, func(m member) error {
		if m.key != field {
			return nil
		}
		n++
		switch kind(b, m.val) {
		case '"':
			id, _ = decodeString(b[m.val.start:m.val.end])
		case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
			id = string(b[m.val.start:m.val.end])
		}
		return nil
	})
	if n != 1 {
		return "" // missing or ambiguous: the record is removed
	}
	return id
}
