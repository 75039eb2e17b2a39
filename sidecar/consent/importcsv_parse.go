package consent

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
	"unicode/utf8"
)

// importFields are the fields a CSV column can be read as (the targets of a map).
var importFields = []string{"customer_id", "purpose", "status", "opt_out", "notice_version", "notice_hash", "channel",
	"captured_at", "captured_by", "expires_at", "event_id", "retention_until", "reason"}

var columnAliases = map[string]string{
	"customer_id": "customer_id", "customer": "customer_id", "customerid": "customer_id", "id": "customer_id", "contact_id": "customer_id", "contactid": "customer_id",
	"purpose": "purpose", "consent_purpose": "purpose", "data_use": "purpose",
	"status": "status", "consent": "status", "consent_status": "status", "opt_in": "status", "optin": "status", "subscribed": "status",
	// Columns that say the opposite of a status: true means the customer opted out. CRMs
	// export them as booleans (Salesforce HasOptedOutOfEmail, DoNotEmail, HubSpot's
	// unsubscribed); read as a status column they would import every opt-out as a grant.
	"opt_out": "opt_out", "optout": "opt_out", "opted_out": "opt_out", "unsubscribed": "opt_out",
	"email_opt_out": "opt_out", "email_optout": "opt_out", "emailoptout": "opt_out", "email_opted_out": "opt_out",
	"has_opted_out_of_email": "opt_out", "hasoptedoutofemail": "opt_out", "opted_out_of_email": "opt_out",
	"do_not_email": "opt_out", "donotemail": "opt_out", "unsubscribed_from_all_email": "opt_out",
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

// optOutValues read an opt-out column: a true flag is a withdrawal.
var optOutValues = map[string]string{
	"true": KindWithdrawn, "t": KindWithdrawn, "yes": KindWithdrawn, "y": KindWithdrawn, "1": KindWithdrawn,
	"opted_out": KindWithdrawn, "opt_out": KindWithdrawn, "unsubscribed": KindWithdrawn, "withdrawn": KindWithdrawn,
	"false": KindGranted, "f": KindGranted, "no": KindGranted, "n": KindGranted, "0": KindGranted,
	"opted_in": KindGranted, "opt_in": KindGranted, "subscribed": KindGranted, "granted": KindGranted,
}

func normHeader(h string) string {
	h = strings.ToLower(strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")))
	return strings.NewReplacer(" ", "_", "-", "_").Replace(h)
}

// canonicalField resolves a map target through the alias table (map=Datum=consent_date
// means captured_at), so that the column is read as the field it names.
func canonicalField(f string) (string, bool) {
	field, ok := columnAliases[normHeader(f)]
	return field, ok
}

// stripBOM drops a UTF-8 byte order mark from the start of the stream. Trimming it from
// the first header name is too late: before a quoted name ("\ufeff\"customer_id\"") it
// makes the quote a bare one, and encoding/csv refuses the header.
func stripBOM(r io.Reader) io.Reader {
	br := bufio.NewReader(r)
	if b, err := br.Peek(3); err == nil && string(b) == "\ufeff" {
		_, _ = br.Discard(3)
	}
	return br
}

// cellProblem says why a CSV cell cannot be stored ("" when it can): PostgreSQL refuses
// text that is not UTF-8 or holds a NUL, which failed an import half-way through.
func cellProblem(v string) string {
	switch {
	case !utf8.ValidString(v):
		return "is not valid UTF-8 (export the file as UTF-8)"
	case strings.IndexByte(v, 0) >= 0:
		return "contains a NUL byte"
	}
	return ""
}

// printable makes a cell safe to echo in a report (valid UTF-8, no NUL).
func printable(v string) string {
	return strings.ReplaceAll(strings.ToValidUTF8(v, "\ufffd"), "\x00", "\ufffd")
}

// columns is how an import reads its file: the column of each field, and the header
// names it does not read (reported, so that an unknown opt-out column is not ignored
// silently).
type columns struct {
	col     map[string]int
	ignored []string
}

func (c columns) has(field string) bool { _, ok := c.col[field]; return ok }

// resolveColumns maps the header to fields. A column named in the map is read as its
// target, whatever the aliases say, and beats any column whose name is merely an alias
// of the same field (header "Id,Contact ID" with map=Contact ID=customer_id reads Contact
// ID). Two columns that would both be read as one field without the map to choose, or a
// status and an opt-out column, refuse the import: reading the first one silently records
// consent under the wrong id or with the wrong status.
func resolveColumns(header []string, mapping map[string]string) (columns, error) {
	for i, h := range header {
		if p := cellProblem(h); p != "" {
			return columns{}, bad("import.invalid_encoding", "header column %d %s: nothing was imported", i+1, p)
		}
	}
	mapped := map[string]string{} // normalized column name -> field
	for c, f := range mapping {
		field, known := canonicalField(f)
		if !known {
			return columns{}, bad("import.invalid_map", "column %q mapped to unknown field %q (fields: %s)", truncate(c), truncate(f), strings.Join(importFields, ", "))
		}
		if prev, dup := mapped[normHeader(c)]; dup && prev != field {
			return columns{}, bad("import.invalid_map", "column %q is mapped twice (%s and %s)", truncate(c), prev, field)
		}
		mapped[normHeader(c)] = field
	}
	name := func(i int) string {
		if n := strings.TrimSpace(strings.TrimPrefix(header[i], "\ufeff")); n != "" {
			return truncate(n)
		}
		return fmt.Sprintf("(column %d)", i+1)
	}
	out := columns{col: map[string]int{}}
	byMap := map[string]bool{} // fields whose column the map chose
	used := map[string]bool{}  // map entries that matched a column
	for i, h := range header {
		field, ok := mapped[normHeader(h)]
		if !ok {
			continue
		}
		used[normHeader(h)] = true
		if j, dup := out.col[field]; dup {
			return columns{}, bad("import.ambiguous_column", "columns %q and %q are both mapped to %s", name(j), name(i), field)
		}
		out.col[field], byMap[field] = i, true
	}
	for c := range mapping {
		if !used[normHeader(c)] {
			return columns{}, bad("import.invalid_map", "mapped column %q is not in the header", truncate(c))
		}
	}
	isMapped := func(i int) bool { _, ok := mapped[normHeader(header[i])]; return ok }
	for i, h := range header {
		if isMapped(i) {
			continue
		}
		field, ok := columnAliases[normHeader(h)]
		switch {
		case !ok:
			out.ignored = append(out.ignored, name(i))
		case byMap[field]:
			out.ignored = append(out.ignored, name(i)) // the map chose another column
		default:
			if j, dup := out.col[field]; dup {
				return columns{}, bad("import.ambiguous_column", "columns %q and %q are both read as %s: choose one (map=%s=%s or map=%s=%s)",
					name(j), name(i), field, name(j), field, name(i), field)
			}
			out.col[field] = i
		}
	}
	// A row's status comes from one column: a status and an opt-out column could disagree.
	if st, ok := out.col["status"]; ok {
		if oo, ok := out.col["opt_out"]; ok {
			switch {
			case byMap["status"] && !byMap["opt_out"]:
				out.ignored = append(out.ignored, name(oo))
				delete(out.col, "opt_out")
			case byMap["opt_out"] && !byMap["status"]:
				out.ignored = append(out.ignored, name(st))
				delete(out.col, "status")
			default:
				return columns{}, bad("import.ambiguous_column", "columns %q (status) and %q (opt-out) both say whether the customer consented: choose one with map=%s=status or map=%s=opt_out",
					name(st), name(oo), name(st), name(oo))
			}
		}
	}
	sort.Strings(out.ignored)
	return out, nil
}

// parseTime accepts what CRM exports carry: RFC 3339, and "2006-01-02 15:04:05",
// "2006-01-02T15:04:05" and "2006-01-02" read in loc (UTC unless the import names a time
// zone). dateOnly reports a bare date, which says the day but not the time.
func parseTime(v string, loc *time.Location) (t *time.Time, dateOnly bool, err error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return nil, false, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		t = t.UTC()
		return &t, false, nil
	}
	for _, layout := range []string{"2006-01-02 15:04:05", "2006-01-02T15:04:05", time.DateOnly} {
		if t, err := time.ParseInLocation(layout, v, loc); err == nil {
			t = t.UTC()
			return &t, layout == time.DateOnly, nil
		}
	}
	return nil, false, fmt.Errorf("%q is not a date (RFC 3339, YYYY-MM-DD HH:MM:SS or YYYY-MM-DD)", truncate(v))
}

// withdrawalTime dates a date-only withdrawal: at the end of its day (in loc), but never
// after now. A day says only that the customer opted out some time on it; at 00:00 the
// withdrawal would lose to a grant made later that day (import.stale_row), and in doubt
// the withdrawal applies. A grant keeps the start of its day.
func withdrawalTime(day time.Time, loc *time.Location, now time.Time) time.Time {
	if day.After(now) {
		return day // a future day: the event's own check refuses it
	}
	d := day.In(loc)
	end := time.Date(d.Year(), d.Month(), d.Day()+1, 0, 0, 0, 0, loc).Add(-time.Millisecond).UTC()
	if end.After(now) {
		return now.UTC()
	}
	return end
}

// retentionTime reads a date-only retention deadline as the end of its day (in loc): the
// customer is kept through the day named. At 00:00 a deadline of today would already be
// past, and one of any day would end a day early. The last nanosecond of the day keeps a
// deadline on the last supported day in range.
func retentionTime(day time.Time, loc *time.Location) time.Time {
	d := day.In(loc)
	return time.Date(d.Year(), d.Month(), d.Day()+1, 0, 0, 0, 0, loc).Add(-time.Nanosecond).UTC()
}

type importRow struct {
	line      int
	kind      string
	event     Event
	retention *time.Time
	// stamped: the row had no capture date and was dated with the import (CapturedNow).
	stamped bool
	// hashed: the row had no event_id; its id is derived from its content (rowEventID).
	hashed bool
	// dateOnly: the capture date was a bare day, read in loc. The time it is dated with can
	// differ between runs of the same file (withdrawalTime caps it at now).
	dateOnly bool
	loc      *time.Location
}

// rowEventID is the id of a row without event_id: a hash of what it says, so that
// importing the same export twice records nothing new.
func rowEventID(customer, purpose, kind, capturedText, noticeVersion string) string {
	h := sha256.Sum256([]byte(strings.Join([]string{customer, purpose, kind, capturedText, noticeVersion}, "\x1f")))
	return "imp-" + hex.EncodeToString(h[:12])
}

// rowKind reads a row's status: from the status column, from an opt-out column (true is
// a withdrawal), or the import's default status when the file has neither. A blank cell is
// rejected: it says nothing, and reading it as granted imported opt-outs as consent.
func rowKind(get func(string) string, cols columns, opts ImportOptions) (string, error) {
	norm := func(v string) string { return strings.ToLower(strings.ReplaceAll(v, "-", "_")) }
	switch {
	case cols.has("status"):
		st := get("status")
		if st == "" {
			return "", bad("import.status_missing", "the status cell is blank: granted or withdrawn?")
		}
		k, ok := statusAliases[norm(st)]
		if !ok {
			return "", bad("import.invalid_status", "status %q is neither granted nor withdrawn", truncate(st))
		}
		return k, nil
	case cols.has("opt_out"):
		v := get("opt_out")
		if v == "" {
			return "", bad("import.status_missing", "the opt-out cell is blank: true (opted out) or false?")
		}
		k, ok := optOutValues[norm(v)]
		if !ok {
			return "", bad("import.invalid_status", "opt-out %q is neither true (opted out) nor false", truncate(v))
		}
		return k, nil
	}
	return opts.DefaultStatus, nil
}

func (s *Store) importRow(line int, get func(string) string, cols columns, opts ImportOptions, loc *time.Location, actor string, now time.Time) (importRow, error) {
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
	kind, err := rowKind(get, cols, opts)
	if err != nil {
		return importRow{}, err
	}
	var dateOnly bool
	if in.CapturedAt, dateOnly, err = parseTime(get("captured_at"), loc); err != nil {
		return importRow{}, bad("import.invalid_captured_at", "captured_at: %v", err)
	}
	if in.CapturedAt == nil && !opts.CapturedNow {
		// Dated "now", an old export would be newer than a withdrawal made since and grant
		// the consent again ("an old export never grants a consent again").
		return importRow{}, bad("import.captured_at_missing", "the row has no capture date: add a captured_at column (or --map COLUMN=captured_at); only for an export known to be current, import with captured_at=now")
	}
	if kind == KindGranted {
		if in.ExpiresAt, _, err = parseTime(get("expires_at"), loc); err != nil {
			return importRow{}, bad("import.invalid_expires_at", "expires_at: %v", err)
		}
	} else {
		// A CRM row for an opt-out still carries its notice columns: not part of a withdrawal.
		in.NoticeVersion, in.NoticeHash = "", ""
		if dateOnly {
			t := withdrawalTime(*in.CapturedAt, loc, now)
			in.CapturedAt = &t
		}
	}
	retention, retentionDay, err := parseTime(get("retention_until"), loc)
	if err != nil {
		return importRow{}, bad("import.invalid_retention_until", "retention_until: %v", err)
	}
	if retentionDay {
		t := retentionTime(*retention, loc)
		retention = &t
	}
	// Checked with the row: the deadline is stored after the events, too late to reject it.
	if err := checkTime("retention_until", retention); err != nil {
		return importRow{}, err
	}
	// As PUT /v1/customers/{id} (CheckRetentionDeadline): a past deadline stops serving the
	// customer at once and, with retention erasure on, erases them at the next sweep - for a
	// typo (2025 for 2035) as much as on purpose. Only an explicit confirmation lets it in.
	if retention != nil && opts.RetentionInPast != RetentionInPastConfirm && retention.Before(now.Add(-allowedClockSkew)) {
		return importRow{}, bad("import.retention_in_past", "retention_until %s is in the past: the customer would no longer be served and, with retention erasure on, be erased at the next sweep; "+
			"if that is meant, import with retention_in_past=confirm (consentry consent import --retention-in-past confirm)", retention.UTC().Format(time.RFC3339))
	}
	hashed := in.EventID == ""
	if hashed {
		// The raw date text, not the time read from it: a file imported again with another
		// --timezone, or by a version that dates it differently, is still the same rows.
		in.EventID = rowEventID(in.CustomerID, in.Purpose, kind, get("captured_at"), in.NoticeVersion)
	}
	ev, err := s.event(kind, in, actor, now)
	if err != nil {
		return importRow{}, err
	}
	if ev.Reason == "" {
		ev.Reason = fmt.Sprintf("imported (line %d)", line)
	}
	return importRow{line: line, kind: kind, event: ev, retention: retention, stamped: in.CapturedAt == nil, hashed: hashed, dateOnly: dateOnly, loc: loc}, nil
}
