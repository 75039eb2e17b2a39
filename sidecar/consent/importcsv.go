package consent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/consentry/consentry/sidecar/enrich"
)

// ImportOptions tune a CSV import of consent records exported from an existing CRM.
type ImportOptions struct {
	// DryRun validates every row against the catalogue and the stored state (duplicates,
	// erased customers) in a transaction that is rolled back: nothing is written.
	DryRun bool `json:"dry_run"`
	// Columns maps CSV header names to fields (customer_id, purpose, status, opt_out,
	// notice_version, notice_hash, channel, captured_at, captured_by, expires_at, event_id,
	// retention_until, reason), for exports whose headers the built-in aliases do not know.
	// A mapped column wins over one whose header is merely an alias of the same field.
	Columns map[string]string `json:"columns,omitempty"`
	// Purpose, Channel, NoticeVersion, NoticeHash fill rows that lack the column. Channel
	// defaults to "import".
	Purpose       string `json:"purpose,omitempty"`
	Channel       string `json:"channel,omitempty"`
	NoticeVersion string `json:"notice_version,omitempty"`
	NoticeHash    string `json:"notice_hash,omitempty"`
	// DefaultStatus (granted or withdrawn) is the status of every row of a file with neither
	// a status nor an opt-out column. Without it such a file is refused (import.no_status):
	// an export whose opt-out flag is in a column the import does not know would otherwise
	// record every opt-out as a grant.
	DefaultStatus string `json:"default_status,omitempty"`
	// Timezone (an IANA name such as Europe/Berlin) is the zone of times written without
	// one ("2026-01-05 14:30:00", "2026-01-05"); default UTC.
	Timezone string `json:"timezone,omitempty"`
	// CapturedNow dates rows without a capture date with the time of the import (query
	// captured_at=now). Off by default: such a row is rejected (import.captured_at_missing),
	// because dating an old export "now" makes it newer than a withdrawal made since, and
	// it would grant the consent again. Only for exports known to be current.
	CapturedNow bool `json:"captured_now,omitempty"`
	// RetentionInPast "confirm" (query retention_in_past=confirm) accepts retention_until
	// deadlines already past, as PUT /v1/customers/{id}'s "retention_in_past" does. Without
	// it such a row is rejected (import.retention_in_past): the customer would stop being
	// served at once and, with retention erasure on, be erased at the next sweep.
	RetentionInPast string `json:"retention_in_past,omitempty"`
}

// ImportReport says what an import did (or, dry run, would do).
type ImportReport struct {
	DryRun bool `json:"dry_run"`
	Rows   int  `json:"rows"`
	// Accepted rows were (would be) recorded; Duplicates were already in the ledger
	// (re-running an import is harmless); Rejected rows are listed in Rejections.
	Accepted   int         `json:"accepted"`
	Duplicates int         `json:"duplicates"`
	Rejected   int         `json:"rejected"`
	Customers  int         `json:"customers_updated"`
	Rejections []Rejection `json:"rejections"`
	// IgnoredColumns are the header's columns the import does not read (no field's name
	// or alias, or another column mapped to their field): check that none holds consent.
	IgnoredColumns []string `json:"ignored_columns,omitempty"`
	// CommittedLines is set when the import failed part-way (a database error): the lines
	// whose events were written before it. Rows not counted in the totals were not.
	CommittedLines []int `json:"committed_lines,omitempty"`
}

// Rejection is one rejected CSV row.
type Rejection struct {
	// Line is the CSV line (1 = header).
	Line       int    `json:"line"`
	CustomerID string `json:"customer_id,omitempty"`
	Code       string `json:"code"`
	Reason     string `json:"reason"`
}

// maxImportRows bounds one import (the body is held in memory by the admin API anyway).
const maxImportRows = 1_000_000

// check validates the options that do not depend on the file, and returns the time zone
// of times written without one.
func (o ImportOptions) check() (*time.Location, error) {
	switch o.DefaultStatus {
	case "", KindGranted, KindWithdrawn:
	default:
		return nil, bad("import.invalid_query", "default_status=%q: granted or withdrawn", truncate(o.DefaultStatus))
	}
	if o.RetentionInPast != "" && o.RetentionInPast != RetentionInPastConfirm {
		// A misspelt confirmation must not pass for none, nor for one.
		return nil, bad("import.invalid_query", "retention_in_past=%q: the only value is %q", truncate(o.RetentionInPast), RetentionInPastConfirm)
	}
	if o.Timezone == "" {
		return time.UTC, nil
	}
	loc, err := time.LoadLocation(o.Timezone)
	if err != nil || o.Timezone == "Local" { // the server's zone is not the export's
		return nil, bad("import.invalid_query", "timezone=%q is not an IANA time zone name (Europe/Berlin, America/New_York, UTC)", truncate(o.Timezone))
	}
	return loc, nil
}

// Import reads a CSV export (header row first) and records each row as a consent event.
// Rows are validated like API input; invalid rows are rejected with their line and reason
// and do not stop the others. Rows are recorded in captured_at order so that the current
// state is the latest row per (customer, purpose). An import never triggers erasure.
// When the database fails part-way, the report so far comes back with the error, its
// CommittedLines naming the rows that were written.
func (s *Store) Import(ctx context.Context, r io.Reader, opts ImportOptions, actor string) (ImportReport, error) {
	rep := ImportReport{DryRun: opts.DryRun, Rejections: []Rejection{}}
	loc, err := opts.check()
	if err != nil {
		return rep, err
	}
	quotes := &quoteCounter{r: r}
	cr := csv.NewReader(stripBOM(quotes))
	cr.FieldsPerRecord = -1
	cr.ReuseRecord = true
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return rep, bad("import.empty", "the CSV is empty: a header row is required")
	}
	if err != nil {
		return rep, bad("import.invalid_csv", "header: %v", err)
	}
	cols, err := resolveColumns(header, opts.Columns)
	if err != nil {
		return rep, err
	}
	rep.IgnoredColumns = cols.ignored
	if !cols.has("customer_id") {
		return rep, bad("import.no_customer_column", "no customer id column (customer_id, id, contact_id, ... or --map COLUMN=customer_id)")
	}
	if !cols.has("purpose") && opts.Purpose == "" {
		return rep, bad("import.no_purpose", "no purpose column: give one, or a default purpose")
	}
	if !cols.has("status") && !cols.has("opt_out") && opts.DefaultStatus == "" {
		return rep, bad("import.no_status", "no status column (status, consent, opt_in, ...) and no opt-out column (opt_out, unsubscribed, HasOptedOutOfEmail, do_not_email, ...): map the column that says it (--map COLUMN=status or COLUMN=opt_out), or, if every row has the same status, give it (--default-status granted|withdrawn)%s", ignoredHint(cols.ignored))
	}
	if opts.Channel == "" {
		opts.Channel = "import"
	}
	run := &importRun{s: s, ctx: ctx, dry: opts.DryRun, rep: &rep, state: map[[2]string]Current{}, loaded: map[string]bool{}}
	rows, err := run.read(cr, quotes, cols, opts, loc, actor)
	if err != nil {
		return ImportReport{DryRun: opts.DryRun, Rejections: []Rejection{}}, err
	}
	if err := run.apply(rows, actor); err != nil {
		if !opts.DryRun {
			sort.Ints(run.committed)
			rep.CommittedLines = append([]int{}, run.committed...)
		}
		sort.Slice(rep.Rejections, func(i, j int) bool { return rep.Rejections[i].Line < rep.Rejections[j].Line })
		s.log.Error("consent import failed part-way", "dry_run", opts.DryRun, "rows", rep.Rows, "accepted", rep.Accepted, "committed", len(rep.CommittedLines), "actor", actor, "err", err)
		return rep, fmt.Errorf("import: %w", err)
	}
	sort.Slice(rep.Rejections, func(i, j int) bool { return rep.Rejections[i].Line < rep.Rejections[j].Line })
	s.log.Info("consent import", "dry_run", opts.DryRun, "rows", rep.Rows, "accepted", rep.Accepted, "duplicates", rep.Duplicates, "rejected", rep.Rejected,
		"ignored_columns", strings.Join(rep.IgnoredColumns, ","), "actor", actor)
	return rep, nil
}

func ignoredHint(ignored []string) string {
	if len(ignored) == 0 {
		return ""
	}
	q := make([]string, len(ignored))
	for i, c := range ignored {
		q[i] = strconv.Quote(c)
	}
	return fmt.Sprintf(" (columns not read: %s)", strings.Join(q, ", "))
}

// quoteCounter counts the double quotes of the stream: an odd count at its end means a
// quote that is never closed.
type quoteCounter struct {
	r io.Reader
	n int
}

func (q *quoteCounter) Read(p []byte) (int, error) {
	n, err := q.r.Read(p)
	q.n += bytes.Count(p[:n], []byte{'"'})
	return n, err
}

// importRun is one import while it records its rows.
type importRun struct {
	s   *Store
	ctx context.Context
	dry bool
	rep *ImportReport
	// state is each (customer, purpose) as the rows recorded so far left it (also in a
	// dry run, whose writes the database does not keep).
	state map[[2]string]Current
	// loaded are the customers whose state was read from the database into state.
	loaded map[string]bool
	// committed are the lines whose events this import wrote.
	committed []int
}

func (ir *importRun) reject(line int, cust string, err error) {
	code, msg := "import.invalid_row", err.Error()
	var e *Error
	if errors.As(err, &e) {
		code, msg = e.Code, e.Message
	}
	ir.rep.Rejected++
	ir.rep.Rejections = append(ir.rep.Rejections, Rejection{Line: line, CustomerID: truncate(printable(cust)), Code: code, Reason: msg})
}

// read parses the rows. A cell that is not UTF-8 or holds a NUL rejects its row here,
// before anything is written.
func (ir *importRun) read(cr *csv.Reader, quotes *quoteCounter, cols columns, opts ImportOptions, loc *time.Location, actor string) ([]importRow, error) {
	now := ir.s.now()
	var rows []importRow
	var last *csv.ParseError // the error of the last record read, if any
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		last = nil
		ir.rep.Rows++
		if ir.rep.Rows > maxImportRows {
			return nil, errf(http.StatusRequestEntityTooLarge, "import.too_large", "more than %d rows: split the file", maxImportRows)
		}
		if err != nil {
			var pe *csv.ParseError
			if !errors.As(err, &pe) {
				return nil, fmt.Errorf("read: %w", err)
			}
			last = pe
			ir.reject(pe.StartLine, "", bad("import.invalid_csv", "%v", err))
			continue
		}
		line, _ := cr.FieldPos(0) // the physical line, also after quoted multi-line fields
		get := func(f string) string {
			if i, ok := cols.col[f]; ok && i < len(rec) {
				return strings.TrimSpace(rec[i])
			}
			return ""
		}
		if err := cellsOK(rec, cols); err != nil {
			ir.reject(line, get("customer_id"), err)
			continue
		}
		row, err := ir.s.importRow(line, get, cols, opts, loc, actor, now)
		if err != nil {
			ir.reject(line, get("customer_id"), err)
			continue
		}
		rows = append(rows, row)
	}
	// A quote never closed reads the rest of the file as one field: the rows after it
	// would be neither imported nor rejected. Refuse the file, naming the line.
	if last != nil && errors.Is(last.Err, csv.ErrQuote) && last.Line > last.StartLine && quotes.n%2 == 1 {
		return nil, bad("import.invalid_csv", "line %d: a quoted field opened on this line is never closed: lines %d-%d would be read as one field; fix the quoting (nothing was imported)",
			last.StartLine, last.StartLine, last.Line)
	}
	return rows, nil
}

// cellsOK checks every cell of a row can be stored (cellProblem).
func cellsOK(rec []string, cols columns) error {
	for i, v := range rec {
		if p := cellProblem(v); p != "" {
			col := fmt.Sprintf("column %d", i+1)
			for f, j := range cols.col {
				if j == i {
					col += " (" + f + ")"
				}
			}
			return bad("import.invalid_encoding", "%s %s", col, p)
		}
	}
	return nil
}

// apply records the rows in captured_at order, in transactions of 1000.
func (ir *importRun) apply(rows []importRow, actor string) error {
	s, ctx := ir.s, ir.ctx
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].event.CapturedAt.Before(rows[j].event.CapturedAt) })
	// A row older than the state it would replace is history, not news: an export taken
	// before a withdrawal must not grant the consent again (the ledger orders by arrival).
	kept := rows[:0]
	for _, r := range rows {
		if err := s.staleRow(ctx, r.event); err != nil {
			// Unless it is this very event again (a re-import), which is only a duplicate.
			if res, cerr := s.be.CheckAppend(ctx, []Event{r.event}); cerr == nil && len(res) == 1 && CodeOf(res[0].Err) == "consent.duplicate_event" {
				ir.duplicate(r, res[0].Err)
			} else {
				ir.reject(r.line, r.event.CustomerID, err)
			}
			continue
		}
		kept = append(kept, r)
	}
	rows = kept
	for start := 0; start < len(rows); start += 1000 {
		batch := rows[start:min(start+1000, len(rows))]
		res, err := ir.append(batch)
		if err != nil {
			return err
		}
		var again []importRow
		for i, r := range res {
			if CodeOf(r.Err) == "consent.duplicate_event" && batch[i].hashed && batch[i].kind == KindWithdrawn {
				row, retry, err := ir.repeatedWithdrawal(batch[i], r.Err)
				if err != nil {
					return err
				}
				if retry {
					again = append(again, row)
				}
				continue
			}
			ir.result(batch[i], r)
		}
		for _, row := range again {
			res, err := ir.append([]importRow{row})
			if err != nil {
				return err
			}
			ir.result(row, res[0])
		}
	}
	// Retention deadlines (last row per customer wins).
	retention := map[string]*time.Time{}
	for _, r := range rows {
		if r.retention != nil {
			retention[r.event.CustomerID] = r.retention
		}
	}
	for id, until := range retention {
		if !ir.dry {
			if _, err := s.PutCustomer(ctx, Customer{ID: id, RetentionUntil: until, UpdatedBy: actor}); err != nil {
				return fmt.Errorf("events recorded, retention deadlines set for %d customers, not all: %w", ir.rep.Customers, err)
			}
		}
		ir.rep.Customers++
	}
	return nil
}

func (ir *importRun) append(rows []importRow) ([]AppendResult, error) {
	evs := make([]Event, len(rows))
	for i, r := range rows {
		evs[i] = r.event
	}
	if ir.dry {
		return ir.s.be.CheckAppend(ir.ctx, evs)
	}
	return ir.s.be.Append(ir.ctx, evs)
}

// result counts one row's append result.
func (ir *importRun) result(row importRow, r AppendResult) {
	switch {
	case CodeOf(r.Err) == "consent.duplicate_event":
		ir.duplicate(row, r.Err)
		return
	case r.Err != nil:
		ir.reject(row.line, row.event.CustomerID, r.Err)
		return
	}
	ir.state[[2]string{row.event.CustomerID, row.event.Purpose}] = r.Current
	if !ir.dry {
		ir.committed = append(ir.committed, row.line)
	}
	if r.NoEffect {
		// Older than the state in the database, which the view could not tell (not
		// loaded, not following, behind another replica's write): the store's own
		// rule recorded it without effect. It is not accepted, whatever the view knew.
		if !ir.dry {
			ir.s.metrics.writes.WithLabelValues(row.kind, staleCode).Inc()
		}
		latest, _ := superseded(&r.Current, r.Event)
		err := staleErr(r.Event, r.Current.Status, latest)
		err.Message += "; recorded in the consent history without effect"
		if ir.dry {
			err.Message = strings.Replace(err.Message, "; recorded", "; would be recorded", 1)
		}
		ir.reject(row.line, row.event.CustomerID, err)
		return
	}
	ir.rep.Accepted++
	if !ir.dry {
		ir.s.metrics.writes.WithLabelValues(row.kind, "ok").Inc()
		ir.s.view.putResult(r)
	}
}

func (ir *importRun) duplicate(row importRow, dup error) {
	if err := row.duplicateOf(dup); err != nil {
		ir.reject(row.line, row.event.CustomerID, err)
		return
	}
	ir.rep.Duplicates++
}

// repeatedWithdrawal decides about a withdrawal row without event_id whose derived id is
// already recorded. The id is a hash of what the row says, and a withdrawal says little:
// with captured_at=now every run of an export gets the same id, and counting it as a
// duplicate left a consent granted since then granted. So it is a duplicate only when
// applying it again would change nothing: the consent is withdrawn (by this row or
// otherwise), or the opt-out is older than the state that replaced it. Otherwise it is
// applied again under an id derived from the event it overrides, so that running the same
// file once more finds it recorded and current. A grant is never re-applied this way: a
// customer's withdrawal since must stand.
//
// A dated row is the opt-out already recorded, and "older" is judged by the time it was
// recorded with, not the time this run reads: a date-only withdrawal of today is dated
// with the import (withdrawalTime), so each run of the same file dates it later, and
// against that time a grant made through the API since would lose to the same old row. A
// row stamped with the import (captured_at=now) says "as of now": its time is this run's.
func (ir *importRun) repeatedWithdrawal(row importRow, dup error) (importRow, bool, error) {
	if err := row.duplicateOf(dup); err != nil {
		ir.reject(row.line, row.event.CustomerID, err)
		return row, false, nil
	}
	cur, ok, err := ir.current(row.event.CustomerID, row.event.Purpose)
	if err != nil {
		return row, false, err
	}
	again := row
	var e *Error
	if !row.stamped && errors.As(dup, &e) && e.Event != nil { // duplicateOf checked it
		again.event.CapturedAt = e.Event.CapturedAt
	}
	if ok {
		h := sha256.Sum256([]byte(cur.EventID))
		again.event.EventID = row.event.EventID + "-" + hex.EncodeToString(h[:4])
	}
	if _, old := superseded(&cur, again.event); !ok || cur.Status == KindWithdrawn || old {
		ir.rep.Duplicates++
		return row, false, nil
	}
	return again, true, nil
}

// current is a consent's state: as this import left it, else as the database has it
// (read once per customer and import: a re-run of a large export asks about every row).
func (ir *importRun) current(customer, purpose string) (Current, bool, error) {
	key := [2]string{customer, purpose}
	if c, ok := ir.state[key]; ok || ir.loaded[customer] {
		return c, ok, nil
	}
	_, cur, _, err := ir.s.be.Customer(ir.ctx, customer)
	if err != nil {
		return Current{}, false, err
	}
	ir.loaded[customer] = true
	for _, c := range cur {
		if k := [2]string{customer, c.Purpose}; !hasKey(ir.state, k) {
			ir.state[k] = c
		}
	}
	c, ok := ir.state[key]
	return c, ok, nil
}

func hasKey(m map[[2]string]Current, k [2]string) bool { _, ok := m[k]; return ok }

// duplicateOf checks that the event already recorded under the row's event id (dup, a
// consent.duplicate_event) is this row's event again - a re-import - and not another one
// under a reused id: a CRM that keeps a consent record's id when the customer opts out
// exports the withdrawal under the grant's id, and counting it as a duplicate would drop
// the withdrawal silently. Provenance (channel, captured_by, reason) may differ between
// imports; what was agreed, by whom, and when may not.
func (r importRow) duplicateOf(dup error) error {
	var e *Error
	if !errors.As(dup, &e) || e.Event == nil {
		return bad("import.event_id_conflict", "event_id %q is already recorded and the recorded event could not be compared with this row", r.event.EventID)
	}
	old, ev := e.Event, r.event
	// The time of a stamped row is the import's, not the customer's; a derived id hashes
	// the row's date text, so the same id is the same date (read perhaps in another time
	// zone, or at another end of its day). A bare day says only the day: a date-only
	// withdrawal of today is dated with the time of each run (withdrawalTime).
	sameWhen := r.stamped || r.hashed || old.CapturedAt.Equal(ev.CapturedAt) || (r.dateOnly && sameDay(old.CapturedAt, ev.CapturedAt, r.loc))
	same := old.CustomerID == ev.CustomerID && old.Purpose == ev.Purpose && old.Kind == ev.Kind &&
		old.NoticeVersion == ev.NoticeVersion && old.NoticeHash == ev.NoticeHash && sameTime(old.ExpiresAt, ev.ExpiresAt) && sameWhen
	if same {
		return nil
	}
	return bad("import.event_id_conflict", "event_id %q is already recorded for a different event (%s %s of %s, captured %s): a reused id is not a duplicate; give this row its own event_id",
		ev.EventID, old.Kind, old.Purpose, old.CustomerID, old.CapturedAt.UTC().Format(time.RFC3339))
}

// sameDay reports whether a and b fall on the same day in loc.
func sameDay(a, b time.Time, loc *time.Location) bool {
	if loc == nil {
		loc = time.UTC
	}
	ay, am, ad := a.In(loc).Date()
	by, bm, bd := b.In(loc).Date()
	return ay == by && am == bm && ad == bd
}

func sameTime(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.Equal(*b)
}

// staleRow refuses an imported event captured before the customer's current state for its
// purpose was (granted or withdrawn after it; see superseded), as seen by the view, so that
// it is not even recorded. The same event again is a duplicate, which Append reports. When
// the view cannot answer, the row goes on: the store applies the same rule itself,
// atomically against the database (apply, consent_append), and a row it records without
// effect is rejected as stale all the same (Import) - never accepted, never granting.
func (s *Store) staleRow(ctx context.Context, ev Event) error {
	e, err := s.Enrich(ctx, enrich.Query{CustomerID: ev.CustomerID, Purpose: ev.Purpose})
	if err != nil || len(e.Errors) > 0 {
		return nil
	}
	for _, c := range e.Consents {
		if c.Purpose != ev.Purpose || c.EventID == ev.EventID {
			continue
		}
		// The store's rule (a withdrawal gets withdrawalSkew), so the view and the store agree.
		if at, old := superseded(&Current{GrantedAt: c.GrantedAt, WithdrawnAt: c.WithdrawnAt}, ev); old {
			return staleErr(ev, c.Status, at)
		}
	}
	return nil
}

// staleErr is the rejection of an imported row older than the current state (at).
func staleErr(ev Event, status string, at time.Time) *Error {
	return bad("import.stale_row", "captured %s, before the current %s state of %s (%s)",
		ev.CapturedAt.UTC().Format(time.RFC3339), status, ev.Purpose, at.UTC().Format(time.RFC3339))
}
