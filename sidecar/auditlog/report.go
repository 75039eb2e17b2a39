package auditlog

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// ReportOptions configure a per-customer access report.
type ReportOptions struct {
	// CustomerID is the raw customer id the report is for; it is pseudonymized to search.
	CustomerID string
	// Pseudonymizer must use the log's pseudonym key.
	Pseudonymizer *Pseudonymizer
	// NameEmployees shows employee ids as logged; by default they are pseudonymized.
	NameEmployees bool
	Since, Until  time.Time
	// Now stamps the report (tests).
	Now time.Time
}

// Report is a customer's "who accessed my data and why" report (GDPR Art. 15).
type Report struct {
	Customer    string         `json:"customer"`
	Pseudonym   string         `json:"pseudonym"`
	GeneratedAt time.Time      `json:"generated_at"`
	Since       *time.Time     `json:"since,omitempty"`
	Until       *time.Time     `json:"until,omitempty"`
	Accesses    []ReportRow    `json:"accesses"`
	ByPurpose   []PurposeCount `json:"by_purpose"`
	Revisions   []string       `json:"policy_revisions"`
	Employees   string         `json:"employees"` // "pseudonymized" or "named"
	// Unrecorded counts the accesses whose outcome is OutcomeUnrecorded.
	Unrecorded int `json:"unrecorded"`
	// Erasures lists when the customer's data was erased (keys destroyed), if it was.
	Erasures []ReportErasure `json:"erasures,omitempty"`
	// RecordsSearched is the number of decision records (everyone's) in the period searched.
	RecordsSearched int `json:"records_searched"`
	// DeletedBefore is set when the log no longer holds its oldest records: those before it
	// were deleted by retention (DeletedByRetention) or are missing, and the report cannot
	// show accesses from then.
	DeletedBefore      *time.Time `json:"deleted_before,omitempty"`
	DeletedByRetention bool       `json:"deleted_by_retention,omitempty"`
	// Stats is what the scan saw, for the operator (warnings on stderr), not the customer.
	Stats   QueryStats `json:"-"`
	summary map[string]*PurposeCount
}

// ReportErasure is one erasure of the customer's data: when, why, which key classes.
type ReportErasure struct {
	Time    time.Time `json:"time"`
	Reason  string    `json:"reason"`
	Classes []string  `json:"classes"`
	// at is the number of accesses logged before it: where it goes among them in the CSV.
	at  int
	seq uint64
}

// OutcomeUnrecorded is a report row's outcome for an unresolved intent: a request that would
// change the customer's data was allowed and sent to the CRM, and its result was never
// recorded (the sidecar stopped before the CRM's answer was logged). The change may or may
// not have been made.
const OutcomeUnrecorded = "unrecorded"

// unrecordedNote says what OutcomeUnrecorded means, in the row (JSON, CSV).
const unrecordedNote = "the change was allowed and sent to the CRM, but its result was not recorded (the service stopped before the answer was logged): it may or may not have been made"

// ReportRow is one access (or refused attempt).
type ReportRow struct {
	Time       time.Time `json:"time"`
	DecisionID string    `json:"decision_id"`
	Who        string    `json:"who"`
	WhoType    string    `json:"who_type"`
	Roles      []string  `json:"roles,omitempty"`
	Purpose    string    `json:"purpose"`
	Case       string    `json:"case,omitempty"`
	Action     string    `json:"action"`
	Outcome    string    `json:"outcome"`
	Reasons    []string  `json:"reasons,omitempty"`
	Released   []string  `json:"fields_released,omitempty"`
	Masked     []string  `json:"fields_masked,omitempty"`
	Withheld   []string  `json:"fields_withheld,omitempty"`
	KeyScopes  []string  `json:"key_scopes,omitempty"`
	Revision   string    `json:"policy_revision,omitempty"`
	// Note explains an unusual outcome (OutcomeUnrecorded).
	Note string `json:"note,omitempty"`
	seq  uint64
}

// PurposeCount summarizes accesses per purpose. An access whose result was not recorded
// (OutcomeUnrecorded) counts in Unrecorded only: the policy allowed it, but whether the CRM
// acted on it is unknown, so counting it as allowed would report a completed access, and as
// refused one that cannot have happened.
type PurposeCount struct {
	Purpose    string `json:"purpose"`
	Allowed    int    `json:"allowed"`
	Denied     int    `json:"denied"`
	Unrecorded int    `json:"unrecorded"`
}

// BuildReport scans dir for the customer's decisions. An unresolved intent (see QueryLog) is a
// row with outcome OutcomeUnrecorded, placed among the others in log order (by the intent
// record's seq), and counted in PurposeCount.Unrecorded and Unrecorded.
func BuildReport(ctx context.Context, dir string, o ReportOptions) (*Report, error) {
	if o.CustomerID == "" || o.Pseudonymizer == nil {
		return nil, fmt.Errorf("report: customer id and pseudonym key are required")
	}
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	r := &Report{Customer: o.CustomerID, Pseudonym: o.Pseudonymizer.Customer(o.CustomerID), GeneratedAt: now.UTC(),
		Employees: "pseudonymized", summary: map[string]*PurposeCount{}, Accesses: []ReportRow{}}
	if o.NameEmployees {
		r.Employees = "named"
	}
	if !o.Since.IsZero() {
		r.Since = &o.Since
	}
	if !o.Until.IsZero() {
		r.Until = &o.Until
	}
	revs := map[string]bool{}
	// The key's fingerprint: a log written with another key is refused, not reported empty.
	f := Filter{Customer: r.Pseudonym, Since: o.Since, Until: o.Until, KeyFingerprint: o.Pseudonymizer.Fingerprint()}
	st, err := QueryLog(ctx, dir, f, func(ev *Event, _ []byte) error {
		if ev.Type == TypeErasure {
			r.Erasures = append(r.Erasures, ReportErasure{Time: ev.Timestamp.UTC(), Reason: ev.Erasure.Reason, Classes: ev.Erasure.Classes,
				at: len(r.Accesses), seq: ev.Seq})
			return nil
		}
		row := ReportRow{Time: ev.Timestamp.UTC(), DecisionID: ev.DecisionID, Purpose: ev.Purpose, Case: ev.CaseID, Action: ev.Action,
			Outcome: ev.Outcome, Reasons: distinct(ev.Reasons), KeyScopes: ev.KeyScopes, Revision: ev.PolicyRevision, seq: ev.Seq}
		if ev.Subject != nil {
			row.WhoType, row.Roles = ev.Subject.Type, ev.Subject.Roles
			switch {
			case ev.Subject.Type == "customer" && ev.Subject.ID == r.Pseudonym:
				row.Who = "you"
			case ev.Subject.Type == "customer":
				// Another customer (a household member, a shared case): never named, not
				// even by pseudonym, in someone else's report.
				row.Who = "another customer"
			case o.NameEmployees:
				row.Who = ev.Subject.ID
			default:
				row.Who = o.Pseudonymizer.Subject(ev.Subject.ID)
			}
		}
		if ev.Fields != nil {
			row.Released, row.Masked = ev.Fields.Released, ev.Fields.Masked
			row.Withheld = append(append([]string(nil), ev.Fields.Dropped...), ev.Fields.Withheld...)
		}
		pc := r.summary[ev.Purpose]
		if pc == nil {
			pc = &PurposeCount{Purpose: ev.Purpose}
			r.summary[ev.Purpose] = pc
		}
		switch {
		case ev.Type == TypeIntent:
			row.Outcome, row.Note = OutcomeUnrecorded, unrecordedNote
			r.insertUnrecorded(row)
			pc.Unrecorded++
		case ev.Outcome == "allow":
			r.Accesses = append(r.Accesses, row)
			pc.Allowed++
		default:
			r.Accesses = append(r.Accesses, row)
			pc.Denied++
		}
		if ev.PolicyRevision != "" {
			revs[ev.PolicyRevision] = true
		}
		return nil
	}, nil)
	if err != nil {
		return nil, err
	}
	r.Stats, r.RecordsSearched = st, st.Decisions
	if !st.DeletedBefore.IsZero() {
		t := st.DeletedBefore.UTC()
		r.DeletedBefore, r.DeletedByRetention = &t, st.DeletedByRetention
	}
	for _, pc := range r.summary {
		r.ByPurpose = append(r.ByPurpose, *pc)
	}
	sort.Slice(r.ByPurpose, func(i, j int) bool { return r.ByPurpose[i].Purpose < r.ByPurpose[j].Purpose })
	for rev := range revs {
		r.Revisions = append(r.Revisions, rev)
	}
	sort.Strings(r.Revisions)
	return r, nil
}

// insertUnrecorded puts the row of an unresolved intent among the accesses in log order.
// QueryLog passes unresolved intents after every other record, so the rows and erasures they
// go among are all there.
func (r *Report) insertUnrecorded(row ReportRow) {
	i := sort.Search(len(r.Accesses), func(i int) bool { return r.Accesses[i].seq > row.seq })
	r.Accesses = slices.Insert(r.Accesses, i, row)
	for j := range r.Erasures {
		if r.Erasures[j].seq > row.seq {
			r.Erasures[j].at++
		}
	}
	r.Unrecorded++
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteCSV writes one row per access, with the erasures of the customer's data among them
// (event "erasure": when, the reason, the key classes destroyed) and, first, a row saying
// when records before a time were deleted (event "retention"): the CSV tells what the HTML
// and JSON tell.
func (r *Report) WriteCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	write := func(row []string) {
		for i := range row {
			row[i] = CSVSafe(row[i])
		}
		_ = cw.Write(row)
	}
	// Columns added at the end (event, note), so readers of the earlier ones keep working.
	write([]string{"time", "who", "who_type", "roles", "purpose", "case", "action", "outcome", "reasons", "fields_released", "fields_masked",
		"fields_withheld", "policy_revision", "decision_id", "event", "note"})
	blank := func(t time.Time, event, reason, note string) []string {
		return []string{t.Format(time.RFC3339), "", "", "", "", "", "", "", reason, "", "", "", "", "", event, note}
	}
	if r.DeletedBefore != nil {
		// To the nanosecond: the cut is the oldest record kept, which may be one of the rows.
		row := blank(*r.DeletedBefore, "retention", "", r.deletedNote(r.DeletedBefore.Format(time.RFC3339Nano)))
		row[0] = r.DeletedBefore.Format(time.RFC3339Nano)
		write(row)
	}
	erasures := r.Erasures
	erasure := func(before int) {
		for len(erasures) > 0 && erasures[0].at <= before {
			e := erasures[0]
			erasures = erasures[1:]
			write(blank(e.Time, "erasure", e.Reason, "your data was erased: the keys that decrypted it ("+strings.Join(e.Classes, "; ")+") were destroyed"))
		}
	}
	for i, a := range r.Accesses {
		erasure(i)
		write([]string{a.Time.Format(time.RFC3339), a.Who, a.WhoType, strings.Join(a.Roles, ";"), a.Purpose, a.Case, a.Action, a.Outcome,
			strings.Join(a.Reasons, ";"), strings.Join(a.Released, ";"), strings.Join(a.Masked, ";"), strings.Join(a.Withheld, ";"), a.Revision,
			a.DecisionID, "access", a.Note})
	}
	erasure(len(r.Accesses))
	cw.Flush()
	return cw.Error()
}

// deletedNote says what DeletedBefore means, at the time when.
func (r *Report) deletedNote(when string) string {
	if r.DeletedByRetention {
		return "records before " + when + " were deleted by retention: accesses before then cannot be shown"
	}
	return "records before " + when + " are missing from the log: accesses before then cannot be shown"
}

// CSVSafe keeps a spreadsheet from reading a cell as a formula: purpose and case come from
// request headers, so a caller could log "=HYPERLINK(...)" into the customer's report. A
// cell starting with = + - @ or a tab or carriage return gets a leading apostrophe (OWASP).
// The test applies to every ';'-separated part of the cell too: a spreadsheet that splits on
// ';' (the list separator of many locales) starts a cell after each one, so a list joined
// with ';' or a purpose "x;=HYPERLINK(...)" must not put a formula there either.
func CSVSafe(s string) string {
	if !strings.Contains(s, ";") {
		return formulaSafe(s)
	}
	parts := strings.Split(s, ";")
	for i, p := range parts {
		parts[i] = formulaSafe(p)
	}
	return strings.Join(parts, ";")
}

func formulaSafe(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

// WriteHTML writes a self-contained HTML page (inline CSS, no scripts, no external resources).
func (r *Report) WriteHTML(w io.Writer) error { return reportTmpl.Execute(w, r) }

var reportTmpl = template.Must(template.New("report").Funcs(template.FuncMap{
	"join": func(l []string) string { return strings.Join(l, ", ") },
	"date": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC") },
	// dateUp rounds up to the minute: "records before 09:01" must cover one at 09:00:30.
	"dateUp": func(t time.Time) string {
		if m := t.Truncate(time.Minute); !m.Equal(t) {
			t = m.Add(time.Minute)
		}
		return t.UTC().Format("2006-01-02 15:04 UTC")
	},
	"purpose": func(p string) string {
		if p == "" {
			return "(none declared)"
		}
		return p
	},
	"itoa": strconv.Itoa,
}).Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Who accessed my data and why</title>
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:72rem;padding:0 1rem;color:#1b1f23;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem}
.meta{color:#57606a;font-size:.9rem}
table{border-collapse:collapse;width:100%;margin:1rem 0;font-size:.9rem}
th,td{border:1px solid #d0d7de;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}
.allow{color:#116329;font-weight:600}
.deny{color:#a40e26;font-weight:600}
.unrecorded{color:#9a6700;font-weight:600}
.note{background:#f6f8fa;border-left:4px solid #0969da;padding:.6rem 1rem;margin:1rem 0}
</style>
</head>
<body>
<h1>Who accessed my data and why</h1>
<p class="meta">Customer <strong>{{.Customer}}</strong> &middot; generated {{date .GeneratedAt}}{{if .Since}} &middot; from {{date .Since.UTC}}{{end}}{{if .Until}} &middot; before {{date .Until.UTC}}{{end}} &middot; recorded requests searched: {{itoa .RecordsSearched}}</p>
<div class="note">This report lists every request that touched your data, as recorded in our tamper-evident decision log:
who asked (employees are shown as {{.Employees}} identifiers), for which purpose, which fields were shown, masked or withheld,
and whether the request was allowed. Refused attempts are listed too.</div>
{{if .Unrecorded}}<div class="note">{{itoa .Unrecorded}} {{if eq .Unrecorded 1}}request{{else}}requests{{end}} to change your data {{if eq .Unrecorded 1}}was{{else}}were{{end}} allowed and sent to our customer system, but the service stopped before the result was recorded: the change may or may not have been made. {{if eq .Unrecorded 1}}It is{{else}}They are{{end}} listed below as "sent, result not recorded".</div>
{{end}}{{if .DeletedBefore}}<div class="note">{{if .DeletedByRetention}}Records before {{dateUp .DeletedBefore.UTC}} were deleted by retention{{else}}Records before {{dateUp .DeletedBefore.UTC}} are missing from the log{{end}}: accesses before then cannot be shown.</div>
{{end}}
<h2>Summary by purpose</h2>
{{if .ByPurpose}}<table>
<tr><th>Purpose</th><th>Allowed</th><th>Refused</th>{{if .Unrecorded}}<th>Result not recorded</th>{{end}}</tr>
{{$unrecorded := .Unrecorded}}{{range .ByPurpose}}<tr><td>{{purpose .Purpose}}</td><td>{{.Allowed}}</td><td>{{.Denied}}</td>{{if $unrecorded}}<td>{{.Unrecorded}}</td>{{end}}</tr>
{{end}}</table>{{else}}<p>No access to your data was recorded in this period.</p>{{end}}
{{range .Erasures}}<p class="meta">Your data was erased on <strong>{{date .Time}}</strong> ({{.Reason}}): the keys that decrypted it ({{join .Classes}}) were destroyed.</p>
{{end}}<h2>Accesses ({{itoa (len .Accesses)}})</h2>
{{if .Accesses}}<table>
<tr><th>When</th><th>Who</th><th>Purpose</th><th>Case</th><th>Action</th><th>Outcome</th><th>Fields shown</th><th>Fields masked</th><th>Fields withheld</th><th>Reasons</th></tr>
{{range .Accesses}}<tr><td>{{date .Time}}</td><td>{{.Who}}{{if .WhoType}} ({{.WhoType}}{{if .Roles}}: {{join .Roles}}{{end}}){{end}}</td><td>{{purpose .Purpose}}</td><td>{{.Case}}</td><td>{{.Action}}</td><td class="{{.Outcome}}">{{if eq .Outcome "allow"}}allowed{{else if eq .Outcome "unrecorded"}}sent, result not recorded{{else}}refused{{end}}</td><td>{{join .Released}}</td><td>{{join .Masked}}</td><td>{{join .Withheld}}</td><td>{{join .Reasons}}</td></tr>
{{end}}</table>{{end}}
<p class="meta">Policy revisions: {{join .Revisions}}. Reference: {{.Pseudonym}}.</p>
</body>
</html>
`))

// distinct returns codes without repeats, in first-seen order. A decision gives one reason per
// field it withholds, so the log holds e.g. special_category.mfa_required once per payment
// field; the customer's report names each reason once.
func distinct(codes []string) []string {
	seen := make(map[string]bool, len(codes))
	out := codes[:0:0]
	for _, c := range codes {
		if !seen[c] {
			seen[c] = true
			out = append(out, c)
		}
	}
	return out
}
