package consent

import (
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/consentry/consentry/sidecar/enrich"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"
)

// ImportOptions tune a CSV import of consent records exported from an existing CRM.
type ImportOptions struct {
	// DryRun validates every row against the catalogue and the stored state (duplicates,
	// erased customers) in a transaction that is rolled back: nothing is written.
	DryRun bool `json:"dry_run"`
	// Columns maps CSV header names to fields (customer_id, purpose, status, notice_version,
	// notice_hash, channel, captured_at, captured_by, expires_at, event_id, retention_until,
	// reason), for exports whose headers the built-in aliases do not know.
	Columns map[string]string `json:"columns,omitempty"`
	// Purpose, Channel, NoticeVersion, NoticeHash fill rows that lack the column. Channel
	// defaults to "import".
	Purpose       string `json:"purpose,omitempty"`
	Channel       string `json:"channel,omitempty"`
	NoticeVersion string `json:"notice_version,omitempty"`
	NoticeHash    string `json:"notice_hash,omitempty"`
	// CapturedNow dates rows without a capture date with the time of the import (query
	// captured_at=now). Off by default: such a row is rejected (import.captured_at_missing),
	// because dating an old export "now" makes it newer than a withdrawal made since, and
	// it would grant the consent again. Only for exports known to be current.
	CapturedNow bool `json:"captured_now,omitempty"`
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

var columnAliases = map[string]string{
	"customer_id": "customer_id", "customer": "customer_id", "customerid": "customer_id", "id": "customer_id", "contact_id": "customer_id", "contactid": "customer_id",
	"purpose": "purpose", "consent_purpose": "purpose", "data_use": "purpose",
	"status": "status", "consent": "status", "consent_status": "status", "opt_in": "status", "optin": "status", "subscribed": "status",
	"notice_version": "notice_version", "policy_version": "notice_version", "notice": "notice_version",
	"notice_hash": "notice_hash", "policy_hash": "notice_hash",
	"channel": "channel", "source": "channel",
	"captured_at": "captured_at", "consent_date": "captured_at", "date": "captured_at", "timestamp": "captured_at", "updated_at": "captured_at",
	"captured_by": "captured_by", "recorded_by": "captured_by",
	"expires_at": "expires_at", "expiry": "expires_at", "expiry_date": "expires_at", "valid_until": "expires_at",
	"event_id":        "event_id",
	"retention_until": "retention_until", "retention": "retention_until",
	"reason": "reason", "note": "reason",
}

var statusAliases = map[string]string{
	"granted": KindGranted, "grant": KindGranted, "opt_in": KindGranted, "opted_in": KindGranted, "optin": KindGranted, "yes": KindGranted, "y": KindGranted, "true": KindGranted, "1": KindGranted, "subscribed": KindGranted,
	"withdrawn": KindWithdrawn, "withdraw": KindWithdrawn, "opt_out": KindWithdrawn, "opted_out": KindWithdrawn, "optout": KindWithdrawn, "no": KindWithdrawn, "n": KindWithdrawn, "false": KindWithdrawn, "0": KindWithdrawn, "unsubscribed": KindWithdrawn, "revoked": KindWithdrawn,
}

func normHeader(h string) string {
	h = strings.ToLower(strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")))
	return strings.NewReplacer(" ", "_", "-", "_").Replace(h)
}

// parseTime accepts what CRM exports carry: RFC 3339, "2006-01-02 15:04:05" (UTC), dates.
func parseTime(v string) (*time.Time, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return nil, nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02 15:04:05", "2006-01-02T15:04:05", "2006-01-02"} {
		if t, err := time.Parse(layout, v); err == nil {
			t = t.UTC()
			return &t, nil
		}
	}
	return nil, fmt.Errorf("%q is not a date (RFC 3339 or YYYY-MM-DD)", truncate(v))
}

type importRow struct {
	line      int
	kind      string
	event     Event
	retention *time.Time
	// stamped: the row had no capture date and was dated with the import (CapturedNow).
	stamped bool
}

// canonicalField resolves a --map target through the alias table (map=Datum=consent_date
// means captured_at), so that the column is read as the field it names.
func canonicalField(f string) (string, bool) {
	field, ok := columnAliases[normHeader(f)]
	return field, ok
}

// Import reads a CSV export (header row first) and records each row as a consent event.
// Rows are validated like API input; invalid rows are rejected with their line and reason
// and do not stop the others. Rows are recorded in captured_at order so that the current
// state is the latest row per (customer, purpose). An import never triggers erasure.
func (s *Store) Import(ctx context.Context, r io.Reader, opts ImportOptions, actor string) (ImportReport, error) {
	rep := ImportReport{DryRun: opts.DryRun, Rejections: []Rejection{}}
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.ReuseRecord = true
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return rep, bad("import.empty", "the CSV is empty: a header row is required")
	}
	if err != nil {
		return rep, bad("import.invalid_csv", "header: %v", err)
	}
	// Every map target must name a field (or an alias of one): a mapping that is not read
	// is refused, whether or not the file has the column.
	for c, f := range opts.Columns {
		if _, known := canonicalField(f); !known {
			return rep, bad("import.invalid_map", "column %q mapped to unknown field %q (fields: customer_id, purpose, status, notice_version, notice_hash, channel, captured_at, captured_by, expires_at, event_id, retention_until, reason)", truncate(c), truncate(f))
		}
	}
	col := map[string]int{}
	for i, h := range header {
		name := normHeader(h)
		field, ok := opts.Columns[strings.TrimSpace(h)]
		if !ok {
			field, ok = opts.Columns[name]
		}
		if !ok {
			field, ok = columnAliases[name]
		}
		if ok {
			field, _ = canonicalField(field)
			if _, dup := col[field]; !dup {
				col[field] = i
			}
		}
	}
	if _, ok := col["customer_id"]; !ok {
		return rep, bad("import.no_customer_column", "no customer id column (customer_id, id, contact_id, ... or --map COLUMN=customer_id)")
	}
	if _, ok := col["purpose"]; !ok && opts.Purpose == "" {
		return rep, bad("import.no_purpose", "no purpose column: give one, or a default purpose")
	}
	if opts.Channel == "" {
		opts.Channel = "import"
	}
	now := s.now()
	var rows []importRow
	reject := func(line int, cust string, err error) {
		code, msg := "import.invalid_row", err.Error()
		var e *Error
		if errors.As(err, &e) {
			code, msg = e.Code, e.Message
		}
		rep.Rejected++
		rep.Rejections = append(rep.Rejections, Rejection{Line: line, CustomerID: truncate(cust), Code: code, Reason: msg})
	}
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		rep.Rows++
		if rep.Rows > maxImportRows {
			return rep, errf(http.StatusRequestEntityTooLarge, "import.too_large", "more than %d rows: split the file", maxImportRows)
		}
		if err != nil {
			line := 0
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				line = pe.StartLine
			}
			reject(line, "", bad("import.invalid_csv", "%v", err))
			continue
		}
		line, _ := cr.FieldPos(0) // the physical line, also after quoted multi-line fields
		get := func(f string) string {
			if i, ok := col[f]; ok && i < len(rec) {
				return strings.TrimSpace(rec[i])
			}
			return ""
		}
		row, err := s.importRow(line, get, opts, actor, now)
		if err != nil {
			reject(line, get("customer_id"), err)
			continue
		}
		rows = append(rows, row)
	}
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].event.CapturedAt.Before(rows[j].event.CapturedAt) })
	// A row older than the state it would replace is history, not news: an export taken
	// before a withdrawal must not grant the consent again (the ledger orders by arrival).
	kept := rows[:0]
	for _, r := range rows {
		if err := s.staleRow(ctx, r.event); err != nil {
			// Unless it is this very event again (a re-import), which is only a duplicate.
			if res, cerr := s.be.CheckAppend(ctx, []Event{r.event}); cerr == nil && len(res) == 1 && CodeOf(res[0].Err) == "consent.duplicate_event" {
				if cerr := r.duplicateOf(res[0].Err); cerr != nil {
					reject(r.line, r.event.CustomerID, cerr)
				} else {
					rep.Duplicates++
				}
			} else {
				reject(r.line, r.event.CustomerID, err)
			}
			continue
		}
		kept = append(kept, r)
	}
	rows = kept
	for start := 0; start < len(rows); start += 1000 {
		batch := rows[start:min(start+1000, len(rows))]
		evs := make([]Event, len(batch))
		for i, r := range batch {
			evs[i] = r.event
		}
		var res []AppendResult
		if opts.DryRun {
			res, err = s.be.CheckAppend(ctx, evs)
		} else {
			res, err = s.be.Append(ctx, evs)
		}
		if err != nil {
			return rep, fmt.Errorf("import: %w", err)
		}
		for i, r := range res {
			switch {
			case CodeOf(r.Err) == "consent.duplicate_event":
				if cerr := batch[i].duplicateOf(r.Err); cerr != nil {
					reject(batch[i].line, batch[i].event.CustomerID, cerr)
				} else {
					rep.Duplicates++
				}
			case r.Err != nil:
				reject(batch[i].line, batch[i].event.CustomerID, r.Err)
			case r.NoEffect:
				// Older than the state in the database, which the view could not tell (not
				// loaded, not following, behind another replica's write): the store's own
				// rule recorded it without effect. It is not accepted, whatever the view knew.
				if !opts.DryRun {
					s.metrics.writes.WithLabelValues(batch[i].kind, staleCode).Inc()
				}
				latest, _ := superseded(&r.Current, r.Event)
				err := staleErr(r.Event, r.Current.Status, latest)
				err.Message += "; recorded in the consent history without effect"
				if opts.DryRun {
					err.Message = strings.Replace(err.Message, "; recorded", "; would be recorded", 1)
				}
				reject(batch[i].line, batch[i].event.CustomerID, err)
			default:
				rep.Accepted++
				if !opts.DryRun {
					s.metrics.writes.WithLabelValues(batch[i].kind, "ok").Inc()
					s.view.putResult(r)
				}
			}
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
		if !opts.DryRun {
			if _, err := s.PutCustomer(ctx, Customer{ID: id, RetentionUntil: until, UpdatedBy: actor}); err != nil {
				return rep, fmt.Errorf("import: %w", err)
			}
		}
		rep.Customers++
	}
	sort.Slice(rep.Rejections, func(i, j int) bool { return rep.Rejections[i].Line < rep.Rejections[j].Line })
	s.log.Info("consent import", "dry_run", opts.DryRun, "rows", rep.Rows, "accepted", rep.Accepted, "duplicates", rep.Duplicates, "rejected", rep.Rejected, "actor", actor)
	return rep, nil
}

func (s *Store) importRow(line int, get func(string) string, opts ImportOptions, actor string, now time.Time) (importRow, error) {
	in := ConsentInput{CustomerID: get("customer_id"), Purpose: get("purpose"), NoticeVersion: get("notice_version"), NoticeHash: get("notice_hash"),
		Channel: strings.ToLower(get("channel")), CapturedBy: get("captured_by"), EventID: get("event_id"), Reason: get("reason")}
	if in.Purpose == "" {
		in.Purpose = opts.Purpose
	}
	if in.Channel == "" {
		in.Channel = opts.Channel
	}
	if in.NoticeVersion == "" {
		in.NoticeVersion = opts.NoticeVersion
	}
	if in.NoticeHash == "" {
		in.NoticeHash = opts.NoticeHash
	}
	kind := KindGranted
	if st := get("status"); st != "" {
		k, ok := statusAliases[strings.ToLower(strings.ReplaceAll(st, "-", "_"))]
		if !ok {
			return importRow{}, bad("import.invalid_status", "status %q is neither granted nor withdrawn", truncate(st))
		}
		kind = k
	}
	var err error
	if in.CapturedAt, err = parseTime(get("captured_at")); err != nil {
		return importRow{}, bad("import.invalid_captured_at", "captured_at: %v", err)
	}
	if in.CapturedAt == nil && !opts.CapturedNow {
		// Dated "now", an old export would be newer than a withdrawal made since and grant
		// the consent again ("an old export never grants a consent again").
		return importRow{}, bad("import.captured_at_missing", "the row has no capture date: add a captured_at column (or --map COLUMN=captured_at); only for an export known to be current, import with captured_at=now")
	}
	if kind == KindGranted {
		if in.ExpiresAt, err = parseTime(get("expires_at")); err != nil {
			return importRow{}, bad("import.invalid_expires_at", "expires_at: %v", err)
		}
	} else {
		// A CRM row for an opt-out still carries its notice columns: not part of a withdrawal.
		in.NoticeVersion, in.NoticeHash = "", ""
	}
	retention, err := parseTime(get("retention_until"))
	if err != nil {
		return importRow{}, bad("import.invalid_retention_until", "retention_until: %v", err)
	}
	// Checked with the row: the deadline is stored after the events, too late to reject it.
	if err := checkTime("retention_until", retention); err != nil {
		return importRow{}, err
	}
	if in.EventID == "" {
		// Deterministic id: importing the same export twice records nothing new.
		h := sha256.Sum256([]byte(strings.Join([]string{in.CustomerID, in.Purpose, kind, get("captured_at"), in.NoticeVersion}, "\x1f")))
		in.EventID = "imp-" + hex.EncodeToString(h[:12])
	}
	ev, err := s.event(kind, in, actor, now)
	if err != nil {
		return importRow{}, err
	}
	if ev.Reason == "" {
		ev.Reason = fmt.Sprintf("imported (line %d)", line)
	}
	return importRow{line: line, kind: kind, event: ev, retention: retention, stamped: in.CapturedAt == nil}, nil
}

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
	same := old.CustomerID == ev.CustomerID && old.Purpose == ev.Purpose && old.Kind == ev.Kind &&
		old.NoticeVersion == ev.NoticeVersion && old.NoticeHash == ev.NoticeHash && sameTime(old.ExpiresAt, ev.ExpiresAt) &&
		(r.stamped || old.CapturedAt.Equal(ev.CapturedAt)) // a stamped row's time is the import's, not the customer's
	if same {
		return nil
	}
	return bad("import.event_id_conflict", "event_id %q is already recorded for a different event (%s %s of %s, captured %s): a reused id is not a duplicate; give this row its own event_id",
		ev.EventID, old.Kind, old.Purpose, old.CustomerID, old.CapturedAt.UTC().Format(time.RFC3339))
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
