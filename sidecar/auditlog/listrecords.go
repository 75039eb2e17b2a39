package auditlog

import (
	"slices"

	"github.com/consentry/consentry/sidecar/audit"
	"github.com/consentry/consentry/sidecar/decision"
	"github.com/consentry/consentry/sidecar/input"
)

// MaxRecordDetails bounds the customers of one list response whose response-phase input
// (input.records: customer and enrichment) and outcome (result.records) a decision record
// carries: about a kilobyte each, so an export of tens of thousands of records would make a
// line of tens of megabytes. Beyond it the record counts the rest in records.details_omitted;
// customers and customers_filtered still name every customer (a pseudonym is 35 bytes).
const MaxRecordDetails = 1000

// listDetails is the part of a decision record that describes a list response filtered per
// record, already pseudonymized.
type listDetails struct {
	// records and decisions are the first MaxRecordDetails customers' input and outcome.
	records   []input.Record
	decisions map[string]decision.Record
	// served and filtered are the pseudonyms of every customer served / removed, sorted.
	served, filtered []string
	omitted          int
	// ids maps every served and filtered customer's raw id to its pseudonym, for the
	// request-level strings of the record (listids.go).
	ids *listIDs
	// caseCustomers are the raw customer ids of the cases the records name: they stay in the
	// event's id set (usually the request's own case customer).
	caseCustomers []string
}

// listDetails pseudonymizes a list's response phase record by record: each record's strings
// are rewritten with its own customer's pseudonym only, so a page of n customers costs O(n),
// not the O(n²) of putting every customer into the event's id set (which every string of the
// event is matched against). The request's own strings (a search by customer id) are
// rewritten against every customer of the list by ld.ids, word by word.
func (b *builder) listDetails(lr *audit.ListRecords) *listDetails {
	ld := &listDetails{ids: &listIDs{}}
	pseudo := func(ids []string) []string {
		out := make([]string, 0, len(ids))
		for _, id := range ids {
			if id == "" {
				continue
			}
			p, ok := ld.ids.pseudonym(id)
			if !ok {
				p = b.pseudo.Customer(id)
				ld.ids.add(id, p)
			}
			out = append(out, p)
		}
		slices.Sort(out)
		return slices.Compact(out)
	}
	ld.served, ld.filtered = pseudo(lr.Served), pseudo(lr.Filtered)
	n := min(len(lr.Input), MaxRecordDetails)
	ld.omitted = len(lr.Input) - n
	if n == 0 {
		return ld
	}
	ld.records = make([]input.Record, 0, n)
	ld.decisions = make(map[string]decision.Record, n)
	for _, rec := range lr.Input[:n] {
		p, ok := ld.ids.pseudonym(rec.CustomerID)
		if !ok {
			p = b.pseudo.Customer(rec.CustomerID)
			ld.ids.add(rec.CustomerID, p)
		}
		own := idSet{{rec.CustomerID, p}}
		if rec.CustomerID == "" {
			own = nil
		}
		ld.records = append(ld.records, input.Record{CustomerID: p, Enrichment: pseudonymizeEnrichment(rec.Enrichment, own)})
		if c := rec.Enrichment.Case; c != nil && c.CustomerID != "" && !slices.Contains(ld.caseCustomers, c.CustomerID) {
			ld.caseCustomers = append(ld.caseCustomers, c.CustomerID)
		}
		if d, ok := lr.Decisions[rec.CustomerID]; ok {
			d.Reasons = replaceReasons(d.Reasons, own)
			ld.decisions[p] = d
		}
	}
	return ld
}

// pseudonymizeEnrichment returns a copy of e with ids replaced in every string (as the event's
// id set does for the rest of the event: whole strings and whole words).
func pseudonymizeEnrichment(e input.Enrichment, ids idSet) input.Enrichment {
	s := func(v string) string { return replaceInText(v, ids) }
	l := func(v []string) []string {
		if v == nil {
			return nil
		}
		out := make([]string, len(v))
		for i, x := range v {
			out[i] = s(x)
		}
		return out
	}
	out := input.Enrichment{Errors: l(e.Errors)}
	if e.Consents != nil {
		out.Consents = make([]input.Consent, len(e.Consents))
		for i, c := range e.Consents {
			c.Purpose, c.Status, c.NoticeVersion, c.NoticeHash = s(c.Purpose), s(c.Status), s(c.NoticeVersion), s(c.NoticeHash)
			c.Channel, c.CapturedBy, c.EventID = s(c.Channel), s(c.CapturedBy), s(c.EventID)
			out.Consents[i] = c
		}
	}
	if c := e.Case; c != nil {
		out.Case = &input.Case{ID: s(c.ID), CustomerID: s(c.CustomerID), Assignees: l(c.Assignees), Status: s(c.Status), Purpose: s(c.Purpose)}
	}
	if a := e.Agreement; a != nil {
		out.Agreement = &input.Agreement{ProcessorID: s(a.ProcessorID), Purposes: l(a.Purposes), Categories: l(a.Categories),
			ValidFrom: a.ValidFrom, ValidUntil: a.ValidUntil}
	}
	if c := e.Customer; c != nil {
		cs := *c
		cs.ID = s(c.ID)
		out.Customer = &cs
	}
	return out
}

func replaceReasons(rs []decision.Reason, ids idSet) []decision.Reason {
	if rs == nil {
		return nil
	}
	out := make([]decision.Reason, len(rs))
	for i, r := range rs {
		out[i] = decision.Reason{Code: replaceInText(r.Code, ids), Message: replaceInText(r.Message, ids)}
	}
	return out
}
