package consent

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// dialect holds what differs between SQLite and PostgreSQL.
type dialect struct {
	name   string
	serial string
	// dollar: placeholders are $1..$n instead of ?.
	dollar bool
	// lockCustomers serializes writers of the customers ids (PostgreSQL: advisory locks,
	// taken in lock-key order: consent_lock_customers; SQLite needs none, BEGIN IMMEDIATE
	// already serializes writers).
	lockCustomers func(ctx context.Context, tx *sql.Tx, ids []string) error
	// notify announces a change to other replicas when the transaction commits.
	notify func(ctx context.Context, tx *sql.Tx, ch Change) error
	// beginMigrate prepares a migration transaction (PostgreSQL: lock + create schema).
	beginMigrate func(ctx context.Context, tx *sql.Tx) error
	// appendMany, when set, records events in a single statement (PostgreSQL).
	appendMany func(ctx context.Context, q querier, evs []Event) ([]AppendResult, error)
	// retryAppend, when set, says that a failed append may run again (appendEvents): the
	// database rolled the whole transaction back (PostgreSQL: a deadlock victim).
	retryAppend func(err error) bool
	// watch implements Backend.Watch.
	watch func(ctx context.Context, w Watcher) error
	close func()
}

// sqlStore is the Backend over database/sql shared by both dialects.
type sqlStore struct {
	db    *sql.DB
	d     dialect
	group *groupCommitter
}

// startGroupCommit starts the group committer (workers: concurrent batches in flight).
func (s *sqlStore) startGroupCommit(workers int) {
	s.group = newGroupCommitter(workers, func(ctx context.Context, evs []Event) ([]AppendResult, error) {
		return s.appendEvents(ctx, evs, true)
	})
}

var _ Backend = (*sqlStore)(nil)

// q rewrites ? placeholders for the dialect.
func (s *sqlStore) q(query string) string {
	if !s.d.dollar {
		return query
	}
	var b strings.Builder
	n := 0
	for i := 0; i < len(query); i++ {
		if query[i] == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(query[i])
	}
	return b.String()
}

func (s *sqlStore) migrate(ctx context.Context) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin migration: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	if s.d.beginMigrate != nil {
		if err := s.d.beginMigrate(ctx, tx); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)`); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	var cur int
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&cur); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if cur > latestVersion() {
		return fmt.Errorf("state schema version %d is newer than this binary's %d: upgrade consentry", cur, latestVersion())
	}
	for _, m := range migrations {
		if m.version <= cur {
			continue
		}
		for _, stmt := range m.statements(s.d.name, s.d.serial) {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("migration %d: %w", m.version, err)
			}
		}
		if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`), m.version, time.Now().UnixNano()); err != nil {
			return fmt.Errorf("migration %d: %w", m.version, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit migrations: %w", err)
	}
	return nil
}

// SchemaVersion returns the applied schema version.
func (s *sqlStore) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	err := s.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v)
	return v, err
}

func fromNS(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := time.Unix(0, v.Int64).UTC()
	return &t
}

const eventCols = `seq, event_id, customer_id, purpose, kind, notice_version, notice_hash, channel, captured_at, captured_by, expires_at, reason, recorded_at, recorded_by`

type scanner interface{ Scan(...any) error }

func scanEvent(r scanner) (Event, error) {
	var e Event
	var captured, recorded int64
	var exp sql.NullInt64
	err := r.Scan(&e.Seq, &e.EventID, &e.CustomerID, &e.Purpose, &e.Kind, &e.NoticeVersion, &e.NoticeHash, &e.Channel,
		&captured, &e.CapturedBy, &exp, &e.Reason, &recorded, &e.RecordedBy)
	e.CapturedAt, e.RecordedAt, e.ExpiresAt = time.Unix(0, captured).UTC(), time.Unix(0, recorded).UTC(), fromNS(exp)
	return e, err
}

const currentCols = `customer_id, purpose, status, notice_version, notice_hash, channel, captured_by, granted_at, expires_at, withdrawn_at, event_id, seq`

func scanCurrent(r scanner) (Current, int64, error) {
	var c Current
	var g, e, w sql.NullInt64
	var seq int64
	err := r.Scan(&c.CustomerID, &c.Purpose, &c.Status, &c.NoticeVersion, &c.NoticeHash, &c.Channel, &c.CapturedBy, &g, &e, &w, &c.EventID, &seq)
	c.GrantedAt, c.ExpiresAt, c.WithdrawnAt, c.Seq = fromNS(g), fromNS(e), fromNS(w), seq
	return c, seq, err
}

const customerCols = `id, retention_until, erased, erased_at, updated_at, rev, updated_by`

func scanCustomer(r scanner) (Customer, int64, error) {
	var c Customer
	var ret, era sql.NullInt64
	var erased int
	var upd, rev int64
	err := r.Scan(&c.ID, &ret, &erased, &era, &upd, &rev, &c.UpdatedBy)
	c.RetentionUntil, c.Erased, c.ErasedAt, c.UpdatedAt = fromNS(ret), erased != 0, fromNS(era), time.Unix(0, upd).UTC()
	return c, rev, err
}

const caseCols = `id, customer_id, assignees, status, purpose, updated_at, rev, updated_by`

func scanCase(r scanner) (Case, int64, error) {
	var c Case
	var assignees string
	var upd, rev int64
	if err := r.Scan(&c.ID, &c.CustomerID, &assignees, &c.Status, &c.Purpose, &upd, &rev, &c.UpdatedBy); err != nil {
		return c, 0, err
	}
	c.UpdatedAt = time.Unix(0, upd).UTC()
	if err := json.Unmarshal([]byte(assignees), &c.Assignees); err != nil {
		return c, 0, fmt.Errorf("case %s: assignees: %w", c.ID, err)
	}
	return c, rev, nil
}

const agreementCols = `processor_id, purposes, categories, valid_from, valid_until, updated_at, rev, updated_by`

func scanAgreement(r scanner) (Agreement, int64, error) {
	var a Agreement
	var purposes, categories string
	var from, until sql.NullInt64
	var upd, rev int64
	if err := r.Scan(&a.ProcessorID, &purposes, &categories, &from, &until, &upd, &rev, &a.UpdatedBy); err != nil {
		return a, 0, err
	}
	a.ValidFrom, a.ValidUntil, a.UpdatedAt = fromNS(from), fromNS(until), time.Unix(0, upd).UTC()
	if err := json.Unmarshal([]byte(purposes), &a.Purposes); err != nil {
		return a, 0, fmt.Errorf("agreement %s: purposes: %w", a.ProcessorID, err)
	}
	if err := json.Unmarshal([]byte(categories), &a.Categories); err != nil {
		return a, 0, fmt.Errorf("agreement %s: categories: %w", a.ProcessorID, err)
	}
	return a, rev, nil
}

func (s *sqlStore) Append(ctx context.Context, evs []Event) ([]AppendResult, error) {
	// Checked before the group committer: one bad event must not fail the others' batch.
	if err := checkEventTimes(evs); err != nil {
		return nil, err
	}
	if len(evs) == 1 && s.group != nil {
		r, err := s.group.append(ctx, evs[0])
		if err != nil {
			return nil, err
		}
		return []AppendResult{r}, nil
	}
	return s.appendEvents(ctx, evs, true)
}

func (s *sqlStore) CheckAppend(ctx context.Context, evs []Event) ([]AppendResult, error) {
	if err := checkEventTimes(evs); err != nil {
		return nil, err
	}
	return s.appendEvents(ctx, evs, false)
}

// appendOnce is one attempt of appendEvents.
func (s *sqlStore) appendOnce(ctx context.Context, evs []Event, commit bool) ([]AppendResult, error) {
	if s.d.appendMany != nil && commit {
		// One statement is its own transaction: a single round trip and commit.
		return s.d.appendMany(ctx, s.db, evs)
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	if s.d.lockCustomers != nil {
		// Every customer of the batch, before any write: the dialect takes the locks in one
		// global order, so concurrent batches cannot deadlock.
		ids := make([]string, 0, len(evs))
		for _, ev := range evs {
			ids = append(ids, ev.CustomerID)
		}
		if err := s.d.lockCustomers(ctx, tx, ids); err != nil {
			return nil, fmt.Errorf("lock customers: %w", err)
		}
	}
	if s.d.appendMany != nil {
		return s.d.appendMany(ctx, tx, evs) // dry run: rolled back
	}
	res := make([]AppendResult, len(evs))
	touched := map[string][]int{}
	for i, ev := range evs {
		res[i].Event = ev
		existing, err := scanEvent(tx.QueryRowContext(ctx, s.q(`SELECT `+eventCols+` FROM consent_events WHERE event_id = ?`), ev.EventID))
		if err == nil {
			res[i].Err = duplicateErr(ev.EventID, existing)
			continue
		} else if !errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("check event id: %w", err)
		}
		var erased int
		err = tx.QueryRowContext(ctx, s.q(`SELECT erased FROM customers WHERE id = ?`), ev.CustomerID).Scan(&erased)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("read customer: %w", err)
		}
		if erased != 0 && ev.Kind == KindGranted {
			res[i].Err = erasedErr(ev.CustomerID)
			continue
		}
		var prev *Current
		c, _, err := scanCurrent(tx.QueryRowContext(ctx, s.q(`SELECT `+currentCols+` FROM consent_current WHERE customer_id = ? AND purpose = ?`), ev.CustomerID, ev.Purpose))
		if err == nil {
			prev = &c
		} else if !errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("read current consent: %w", err)
		}
		if ev.serverStamped {
			ev.CapturedAt = stampAfter(prev, ev.CapturedAt)
		}
		var seq int64
		var ta nsArgs
		capturedAt, expiresAt, recordedAt := ta.at(ev.CapturedAt), ta.ptr(ev.ExpiresAt), ta.at(ev.RecordedAt)
		if ta.err != nil {
			return nil, fmt.Errorf("insert event: %w", ta.err)
		}
		err = tx.QueryRowContext(ctx, s.q(`INSERT INTO consent_events (event_id, customer_id, purpose, kind, notice_version, notice_hash, channel, captured_at, captured_by, expires_at, reason, recorded_at, recorded_by)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq`),
			ev.EventID, ev.CustomerID, ev.Purpose, ev.Kind, ev.NoticeVersion, ev.NoticeHash, ev.Channel, capturedAt, ev.CapturedBy,
			expiresAt, ev.Reason, recordedAt, ev.RecordedBy).Scan(&seq)
		if err != nil {
			return nil, fmt.Errorf("insert event: %w", err)
		}
		ev.Seq = seq
		res[i].Event = ev
		next, changed := apply(prev, ev)
		if !changed {
			res[i].Current, res[i].NoEffect, res[i].Seq = next, true, seq
			continue
		}
		next.Seq = seq
		grantedAt, nextExpiresAt, withdrawnAt := ta.ptr(next.GrantedAt), ta.ptr(next.ExpiresAt), ta.ptr(next.WithdrawnAt)
		if ta.err != nil {
			return nil, fmt.Errorf("update current consent: %w", ta.err)
		}
		_, err = tx.ExecContext(ctx, s.q(`INSERT INTO consent_current (`+currentCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (customer_id, purpose) DO UPDATE SET status = excluded.status, notice_version = excluded.notice_version,
 notice_hash = excluded.notice_hash, channel = excluded.channel, captured_by = excluded.captured_by, granted_at = excluded.granted_at,
 expires_at = excluded.expires_at, withdrawn_at = excluded.withdrawn_at, event_id = excluded.event_id, seq = excluded.seq`),
			next.CustomerID, next.Purpose, next.Status, next.NoticeVersion, next.NoticeHash, next.Channel, next.CapturedBy,
			grantedAt, nextExpiresAt, withdrawnAt, next.EventID, seq)
		if err != nil {
			return nil, fmt.Errorf("update current consent: %w", err)
		}
		res[i].Current, res[i].Seq = next, seq
		if _, ok := touched[ev.CustomerID]; !ok {
			// Consent implies the customer exists in the CRM: create its state row.
			if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO customers (id, erased, updated_at, rev) VALUES (?, 0, ?, 1) ON CONFLICT (id) DO NOTHING`),
				ev.CustomerID, recordedAt); err != nil {
				return nil, fmt.Errorf("create customer: %w", err)
			}
		}
		touched[ev.CustomerID] = append(touched[ev.CustomerID], i)
	}
	for id, idx := range touched {
		cust, rev, err := scanCustomer(tx.QueryRowContext(ctx, s.q(`SELECT `+customerCols+` FROM customers WHERE id = ?`), id))
		if err != nil {
			return nil, fmt.Errorf("read customer: %w", err)
		}
		for _, i := range idx {
			res[i].Customer, res[i].CustRev = cust, rev
		}
		if err := s.notify(ctx, tx, Change{Kind: ChangeCustomer, Key: id}); err != nil {
			return nil, err
		}
	}
	if !commit {
		return res, nil
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	return res, nil
}

func (s *sqlStore) notify(ctx context.Context, tx *sql.Tx, ch Change) error {
	if s.d.notify == nil {
		return nil
	}
	if err := s.d.notify(ctx, tx, ch); err != nil {
		return fmt.Errorf("notify: %w", err)
	}
	return nil
}

func (s *sqlStore) History(ctx context.Context, customerID string, limit int) ([]Event, error) {
	query := `SELECT ` + eventCols + ` FROM consent_events WHERE customer_id = ? ORDER BY seq`
	args := []any{customerID}
	if limit > 0 {
		query += ` LIMIT ?`
		args = append(args, limit)
	}
	rows, err := s.db.QueryContext(ctx, s.q(query), args...)
	if err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	defer rows.Close()
	out := []Event{}
	for rows.Next() {
		e, err := scanEvent(rows)
		if err != nil {
			return nil, fmt.Errorf("history: %w", err)
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

func (s *sqlStore) Customer(ctx context.Context, id string) (*Customer, []Current, int64, error) {
	c, rev, err := scanCustomer(s.db.QueryRowContext(ctx, s.q(`SELECT `+customerCols+` FROM customers WHERE id = ?`), id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil, 0, nil
	}
	if err != nil {
		return nil, nil, 0, fmt.Errorf("read customer: %w", err)
	}
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT `+currentCols+` FROM consent_current WHERE customer_id = ? ORDER BY purpose`), id)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("read consents: %w", err)
	}
	defer rows.Close()
	var cur []Current
	for rows.Next() {
		x, _, err := scanCurrent(rows)
		if err != nil {
			return nil, nil, 0, fmt.Errorf("read consents: %w", err)
		}
		cur = append(cur, x)
	}
	return &c, cur, rev, rows.Err()
}

func (s *sqlStore) Case(ctx context.Context, id string) (*Case, int64, error) {
	c, rev, err := scanCase(s.db.QueryRowContext(ctx, s.q(`SELECT `+caseCols+` FROM cases WHERE id = ?`), id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read case: %w", err)
	}
	return &c, rev, nil
}

func (s *sqlStore) Agreement(ctx context.Context, id string) (*Agreement, int64, error) {
	a, rev, err := scanAgreement(s.db.QueryRowContext(ctx, s.q(`SELECT `+agreementCols+` FROM agreements WHERE processor_id = ?`), id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read agreement: %w", err)
	}
	return &a, rev, nil
}

// writeTx runs fn in a transaction that notifies ch on commit.
func (s *sqlStore) writeTx(ctx context.Context, ch Change, fn func(tx *sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	if ch.Kind == ChangeCustomer && s.d.lockCustomers != nil {
		if err := s.d.lockCustomers(ctx, tx, []string{ch.Key}); err != nil {
			return fmt.Errorf("lock customer: %w", err)
		}
	}
	if err := fn(tx); err != nil {
		return err
	}
	if err := s.notify(ctx, tx, ch); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

func (s *sqlStore) PutCase(ctx context.Context, c Case) (int64, error) {
	assignees, _ := json.Marshal(c.Assignees)
	updatedAt, err := ns(c.UpdatedAt)
	if err != nil {
		return 0, fmt.Errorf("put case: %w", err)
	}
	var rev int64
	err = s.writeTx(ctx, Change{Kind: ChangeCase, Key: c.ID}, func(tx *sql.Tx) error {
		return tx.QueryRowContext(ctx, s.q(`INSERT INTO cases (id, customer_id, assignees, status, purpose, updated_at, updated_by, rev) VALUES (?, ?, ?, ?, ?, ?, ?, 1)
ON CONFLICT (id) DO UPDATE SET customer_id = excluded.customer_id, assignees = excluded.assignees, status = excluded.status,
 purpose = excluded.purpose, updated_at = excluded.updated_at, updated_by = excluded.updated_by, rev = cases.rev + 1 RETURNING rev`),
			c.ID, c.CustomerID, string(assignees), c.Status, c.Purpose, updatedAt, c.UpdatedBy).Scan(&rev)
	})
	if err != nil {
		return 0, fmt.Errorf("put case: %w", err)
	}
	return rev, nil
}

func (s *sqlStore) PutAgreement(ctx context.Context, a Agreement) (int64, error) {
	purposes, _ := json.Marshal(a.Purposes)
	categories, _ := json.Marshal(a.Categories)
	var ta nsArgs
	validFrom, validUntil, updatedAt := ta.ptr(a.ValidFrom), ta.ptr(a.ValidUntil), ta.at(a.UpdatedAt)
	if ta.err != nil {
		return 0, fmt.Errorf("put agreement: %w", ta.err)
	}
	var rev int64
	err := s.writeTx(ctx, Change{Kind: ChangeAgreement, Key: a.ProcessorID}, func(tx *sql.Tx) error {
		return tx.QueryRowContext(ctx, s.q(`INSERT INTO agreements (processor_id, purposes, categories, valid_from, valid_until, updated_at, updated_by, rev) VALUES (?, ?, ?, ?, ?, ?, ?, 1)
ON CONFLICT (processor_id) DO UPDATE SET purposes = excluded.purposes, categories = excluded.categories, valid_from = excluded.valid_from,
 valid_until = excluded.valid_until, updated_at = excluded.updated_at, updated_by = excluded.updated_by, rev = agreements.rev + 1 RETURNING rev`),
			a.ProcessorID, string(purposes), string(categories), validFrom, validUntil, updatedAt, a.UpdatedBy).Scan(&rev)
	})
	if err != nil {
		return 0, fmt.Errorf("put agreement: %w", err)
	}
	return rev, nil
}

func (s *sqlStore) PutCustomer(ctx context.Context, c Customer) (Customer, int64, error) {
	var ta nsArgs
	retentionUntil, updatedAt := ta.ptr(c.RetentionUntil), ta.at(c.UpdatedAt)
	if ta.err != nil {
		return Customer{}, 0, fmt.Errorf("put customer: %w", ta.err)
	}
	var out Customer
	var rev int64
	err := s.writeTx(ctx, Change{Kind: ChangeCustomer, Key: c.ID}, func(tx *sql.Tx) error {
		var err error
		out, rev, err = scanCustomer(tx.QueryRowContext(ctx, s.q(`INSERT INTO customers (id, retention_until, erased, updated_at, updated_by, rev) VALUES (?, ?, 0, ?, ?, 1)
ON CONFLICT (id) DO UPDATE SET retention_until = excluded.retention_until, updated_at = excluded.updated_at, updated_by = excluded.updated_by, rev = customers.rev + 1
RETURNING `+customerCols), c.ID, retentionUntil, updatedAt, c.UpdatedBy))
		return err
	})
	if err != nil {
		return Customer{}, 0, fmt.Errorf("put customer: %w", err)
	}
	return out, rev, nil
}

func (s *sqlStore) MarkErased(ctx context.Context, id string, at time.Time) (Customer, int64, error) {
	atNS, err := ns(at)
	if err != nil {
		return Customer{}, 0, fmt.Errorf("mark erased: %w", err)
	}
	var out Customer
	var rev int64
	err = s.writeTx(ctx, Change{Kind: ChangeCustomer, Key: id}, func(tx *sql.Tx) error {
		var err error
		out, rev, err = scanCustomer(tx.QueryRowContext(ctx, s.q(`INSERT INTO customers (id, erased, erased_at, updated_at, rev) VALUES (?, 1, ?, ?, 1)
ON CONFLICT (id) DO UPDATE SET erased = 1, erased_at = COALESCE(customers.erased_at, excluded.erased_at), updated_at = excluded.updated_at, rev = customers.rev + 1
RETURNING `+customerCols), id, atNS, atNS))
		return err
	})
	if err != nil {
		return Customer{}, 0, fmt.Errorf("mark erased: %w", err)
	}
	return out, rev, nil
}

func (s *sqlStore) Due(ctx context.Context, until time.Time) ([]Current, error) {
	untilNS, err := ns(until)
	if err != nil {
		return nil, fmt.Errorf("due consents: %w", err)
	}
	var out []Current
	err = s.each(ctx, `SELECT `+currentCols+` FROM consent_current WHERE status = 'granted' AND expires_at IS NOT NULL AND expires_at < ? ORDER BY expires_at`,
		func(r scanner) error {
			c, _, err := scanCurrent(r)
			if err == nil {
				out = append(out, c)
			}
			return err
		}, untilNS)
	if err != nil {
		return nil, fmt.Errorf("due consents: %w", err)
	}
	return out, nil
}

func (s *sqlStore) ClaimNotice(ctx context.Context, eventID string, at time.Time) (bool, error) {
	atNS, err := ns(at)
	if err != nil {
		return false, fmt.Errorf("claim notice: %w", err)
	}
	r, err := s.db.ExecContext(ctx, s.q(`INSERT INTO expiry_notices (event_id, notified_at) VALUES (?, ?) ON CONFLICT (event_id) DO NOTHING`), eventID, atNS)
	if err != nil {
		return false, fmt.Errorf("claim notice: %w", err)
	}
	n, err := r.RowsAffected()
	return n == 1, err
}

func (s *sqlStore) ReleaseNotice(ctx context.Context, eventID string) error {
	if _, err := s.db.ExecContext(ctx, s.q(`DELETE FROM expiry_notices WHERE event_id = ?`), eventID); err != nil {
		return fmt.Errorf("release notice: %w", err)
	}
	return nil
}

func (s *sqlStore) Watch(ctx context.Context, w Watcher) error {
	if s.d.watch == nil {
		return w.Reset()
	}
	return s.d.watch(ctx, w)
}

func (s *sqlStore) Ping(ctx context.Context) error { return s.db.PingContext(ctx) }

func (s *sqlStore) Close() error {
	if s.group != nil {
		s.group.close()
	}
	if s.d.close != nil {
		s.d.close()
	}
	return s.db.Close()
}
