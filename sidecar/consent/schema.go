package consent

import "strings"

// migration is one schema version. The same statements serve both dialects; the few
// differences are spelled {{SERIAL}} (the ledger sequence column) and per-dialect extras.
type migration struct {
	version int
	sql     string
	// extra holds dialect-specific statements (dialect name -> statements, each whole:
	// function bodies contain semicolons).
	extra map[string][]string
}

// Times are stored as BIGINT Unix nanoseconds (NULL = none) and lists as JSON text: one
// representation for both databases, and cheap to load a million rows into the view.
var migrations = []migration{
	{version: 1, sql: `
CREATE TABLE consent_events (
  seq {{SERIAL}},
  event_id TEXT NOT NULL UNIQUE,
  customer_id TEXT NOT NULL,
  purpose TEXT NOT NULL,
  kind TEXT NOT NULL,
  notice_version TEXT NOT NULL DEFAULT '',
  notice_hash TEXT NOT NULL DEFAULT '',
  channel TEXT NOT NULL DEFAULT '',
  captured_at BIGINT NOT NULL,
  captured_by TEXT NOT NULL DEFAULT '',
  expires_at BIGINT,
  reason TEXT NOT NULL DEFAULT '',
  recorded_at BIGINT NOT NULL,
  recorded_by TEXT NOT NULL DEFAULT ''
);
CREATE INDEX consent_events_customer ON consent_events (customer_id, seq);
CREATE TABLE consent_current (
  customer_id TEXT NOT NULL,
  purpose TEXT NOT NULL,
  status TEXT NOT NULL,
  notice_version TEXT NOT NULL DEFAULT '',
  notice_hash TEXT NOT NULL DEFAULT '',
  channel TEXT NOT NULL DEFAULT '',
  captured_by TEXT NOT NULL DEFAULT '',
  granted_at BIGINT,
  expires_at BIGINT,
  withdrawn_at BIGINT,
  event_id TEXT NOT NULL,
  seq BIGINT NOT NULL,
  PRIMARY KEY (customer_id, purpose)
);
CREATE INDEX consent_current_expiry ON consent_current (expires_at) WHERE status = 'granted';
CREATE TABLE customers (
  id TEXT PRIMARY KEY,
  retention_until BIGINT,
  erased SMALLINT NOT NULL DEFAULT 0,
  erased_at BIGINT,
  updated_at BIGINT NOT NULL,
  rev BIGINT NOT NULL DEFAULT 1
);
CREATE TABLE cases (
  id TEXT PRIMARY KEY,
  customer_id TEXT NOT NULL,
  assignees TEXT NOT NULL,
  status TEXT NOT NULL,
  purpose TEXT NOT NULL DEFAULT '',
  updated_at BIGINT NOT NULL,
  rev BIGINT NOT NULL DEFAULT 1
);
CREATE INDEX cases_customer ON cases (customer_id);
CREATE TABLE agreements (
  processor_id TEXT PRIMARY KEY,
  purposes TEXT NOT NULL,
  categories TEXT NOT NULL,
  valid_from BIGINT,
  valid_until BIGINT,
  updated_at BIGINT NOT NULL,
  rev BIGINT NOT NULL DEFAULT 1
);
CREATE TABLE expiry_notices (
  event_id TEXT PRIMARY KEY,
  notified_at BIGINT NOT NULL
)`,
		// The ledger is append-only in the database too, not just by convention.
		extra: map[string][]string{
			"sqlite": {
				`CREATE TRIGGER consent_events_no_update BEFORE UPDATE ON consent_events BEGIN SELECT RAISE(ABORT, 'consent_events is append-only'); END`,
				`CREATE TRIGGER consent_events_no_delete BEFORE DELETE ON consent_events BEGIN SELECT RAISE(ABORT, 'consent_events is append-only'); END`,
			},
			"postgres": {
				`CREATE FUNCTION consent_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'consent_events is append-only'; END $$`,
				`CREATE TRIGGER consent_events_no_change BEFORE UPDATE OR DELETE ON consent_events FOR EACH ROW EXECUTE FUNCTION consent_events_append_only()`,
			},
		},
	},
	// PostgreSQL: the one-round-trip consent write (pgappend.go). SQLite runs in-process
	// and needs none; the version is recorded there too, so versions mean one schema.
	{version: 2, extra: map[string][]string{"postgres": {pgAppendFunc}}},
	// PostgreSQL: consent_append gains the expiry rule (an expiry changes only a grant that
	// has expired by its time); CREATE OR REPLACE, so version 2 databases are upgraded.
	{version: 3, extra: map[string][]string{"postgres": {pgAppendFunc}}},
	// Erasures a withdrawal or the end of retention asked for, kept until done (erasures.go).
	{version: 4, sql: `
CREATE TABLE erasure_requests (
  customer_id TEXT PRIMARY KEY,
  requested_at BIGINT NOT NULL,
  actor TEXT NOT NULL DEFAULT '',
  reason TEXT NOT NULL DEFAULT '',
  attempts INTEGER NOT NULL DEFAULT 0,
  last_error TEXT NOT NULL DEFAULT '',
  claimed_until BIGINT NOT NULL DEFAULT 0
)`},
	// PostgreSQL: consent_append gains the stale rule of apply() (an event captured before
	// the current state's latest grant or withdrawal is recorded without effect);
	// CREATE OR REPLACE, so version 4 databases are upgraded. SQLite folds with apply().
	{version: 5, extra: map[string][]string{"postgres": {pgAppendFunc}}},
	// A withdrawal applied within the skew margin no longer moves the latest change back
	// (apply(); PostgreSQL: consent_append replaced). Withdrawn states the older fold left
	// with withdrawn_at before their grant or before a withdrawal captured later (the later
	// one arrived first) get the time the fold now keeps: the latest grant or withdrawal
	// captured up to the state's event. Else a delayed grant captured in between still
	// re-grants them. Raising withdrawn_at only makes such grants stale (fail closed).
	{version: 6, sql: `
UPDATE consent_current SET withdrawn_at = granted_at
WHERE status = 'withdrawn' AND granted_at IS NOT NULL AND (withdrawn_at IS NULL OR withdrawn_at < granted_at);
UPDATE consent_current SET withdrawn_at = (SELECT MAX(e.captured_at) FROM consent_events e WHERE e.customer_id = consent_current.customer_id
  AND e.purpose = consent_current.purpose AND e.kind IN ('granted', 'withdrawn') AND e.seq <= consent_current.seq)
WHERE status = 'withdrawn' AND withdrawn_at < (SELECT MAX(e.captured_at) FROM consent_events e WHERE e.customer_id = consent_current.customer_id
  AND e.purpose = consent_current.purpose AND e.kind IN ('granted', 'withdrawn') AND e.seq <= consent_current.seq)`,
		extra: map[string][]string{"postgres": {pgAppendFunc}}},
	// Who changed a case (its assignees decide need-to-know), an agreement or a customer's
	// retention deadline: the authenticated admin of the last PUT. Rows from before are ''.
	{version: 7, sql: `
ALTER TABLE cases ADD COLUMN updated_by TEXT NOT NULL DEFAULT '';
ALTER TABLE agreements ADD COLUMN updated_by TEXT NOT NULL DEFAULT '';
ALTER TABLE customers ADD COLUMN updated_by TEXT NOT NULL DEFAULT ''`},
	// PostgreSQL: batches lock their customers in lock-key order, and server-stamped events
	// are dated after the stored state (consent_lock_customers, consent_append_many:
	// pgappend.go); TRUNCATE, which fires no row trigger, is refused like UPDATE and DELETE
	// (dropped first: the statements may run again on a database that has it). SQLite has
	// no TRUNCATE and locks nothing: the version only keeps the numbering shared.
	{version: 8, extra: map[string][]string{"postgres": {pgLockFunc, pgAppendManyFunc,
		`DROP TRIGGER IF EXISTS consent_events_no_truncate ON consent_events`,
		`CREATE TRIGGER consent_events_no_truncate BEFORE TRUNCATE ON consent_events FOR EACH STATEMENT EXECUTE FUNCTION consent_events_append_only()`}}},
}

// statements splits a migration's shared SQL into statements (one per ";\n") and adds
// the dialect's own.
func (m migration) statements(dialect, serial string) []string {
	var out []string
	for _, s := range strings.Split(strings.ReplaceAll(m.sql, "{{SERIAL}}", serial), ";\n") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return append(out, m.extra[dialect]...)
}

// latestVersion is the schema version this binary writes.
func latestVersion() int { return migrations[len(migrations)-1].version }
