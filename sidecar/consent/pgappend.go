package consent

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// On PostgreSQL a consent write is one round trip: consent_append does, server side and
// atomically, what appendEvents does statement by statement (lock the customer, refuse a
// duplicate event id or a grant for an erased customer, append, fold into the current
// state, create the customer row, NOTIFY). Over a network each round trip is latency
// spent holding the customer lock; this is what makes >= 2,000 writes/s possible.
// The fold must match apply() in model.go: the shared suite checks both backends agree.
// Schema version 3 replaced it (CREATE OR REPLACE) to add the expiry rule of apply(),
// version 5 to add its stale rule (an event captured before the current state's latest
// grant or withdrawal is recorded without effect), version 6 so that a withdrawal applied
// within the skew margin no longer moves that latest change back (withdrawn_at keeps the later
// time, as apply() does).
const pgAppendFunc = `
CREATE OR REPLACE FUNCTION consent_append(e_id text, c_id text, purp text, knd text, nv text, nh text, chan text, cap_at bigint, cap_by text,
  exp_at bigint, rsn text, rec_at bigint, rec_by text, notify_channel text)
RETURNS TABLE (outcome text, out_seq bigint, dup_event text, cur text, cust text)
LANGUAGE plpgsql AS $$
DECLARE
  v_seq bigint;
  v_erased smallint;
  prev consent_current%ROWTYPE;
  nxt consent_current%ROWTYPE;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtext(c_id));
  SELECT row_to_json(ev)::text INTO dup_event FROM consent_events ev WHERE ev.event_id = e_id;
  IF dup_event IS NOT NULL THEN
    outcome := 'duplicate'; RETURN NEXT; RETURN;
  END IF;
  SELECT erased INTO v_erased FROM customers WHERE id = c_id;
  IF v_erased = 1 AND knd = 'granted' THEN
    outcome := 'erased'; RETURN NEXT; RETURN;
  END IF;
  INSERT INTO consent_events (event_id, customer_id, purpose, kind, notice_version, notice_hash, channel, captured_at, captured_by, expires_at, reason, recorded_at, recorded_by)
  VALUES (e_id, c_id, purp, knd, nv, nh, chan, cap_at, cap_by, exp_at, rsn, rec_at, rec_by) RETURNING consent_events.seq INTO v_seq;
  SELECT * INTO prev FROM consent_current cc WHERE cc.customer_id = c_id AND cc.purpose = purp;
  -- Stale (superseded): captured before the latest grant or withdrawal; a withdrawal only
  -- when more than withdrawalSkew (5 min, in ns) before it. As superseded() in model.go.
  IF (FOUND AND cap_at < GREATEST(prev.granted_at, prev.withdrawn_at) - CASE WHEN knd = 'withdrawn' THEN 300000000000 ELSE 0 END)
    OR (knd = 'expired' AND NOT (FOUND AND prev.status = 'granted' AND prev.expires_at IS NOT NULL AND prev.expires_at <= cap_at)) THEN
    outcome := 'noop'; out_seq := v_seq;
    IF FOUND THEN cur := row_to_json(prev)::text; END IF;
    RETURN NEXT; RETURN;
  END IF;
  IF FOUND THEN
    nxt := prev;
  ELSE
    nxt.customer_id := c_id; nxt.purpose := purp; nxt.notice_version := ''; nxt.notice_hash := ''; nxt.channel := ''; nxt.captured_by := '';
  END IF;
  nxt.event_id := e_id;
  nxt.seq := v_seq;
  IF knd = 'granted' THEN
    nxt.status := 'granted'; nxt.notice_version := nv; nxt.notice_hash := nh; nxt.channel := chan; nxt.captured_by := cap_by;
    nxt.granted_at := cap_at; nxt.expires_at := exp_at; nxt.withdrawn_at := NULL;
  ELSIF knd = 'withdrawn' THEN
    -- Never before the latest grant or withdrawal (a withdrawal within the skew margin takes
    -- effect at it), as apply(): else a delayed grant captured in between would re-grant.
    -- GREATEST ignores NULLs (no previous state, or no withdrawal since the last grant).
    nxt.status := 'withdrawn'; nxt.withdrawn_at := GREATEST(cap_at, nxt.granted_at, nxt.withdrawn_at);
    IF chan <> '' THEN nxt.channel := chan; END IF;
    IF cap_by <> '' THEN nxt.captured_by := cap_by; END IF;
  ELSE
    nxt.status := 'expired';
  END IF;
  INSERT INTO consent_current VALUES (nxt.*) ON CONFLICT (customer_id, purpose) DO UPDATE SET status = excluded.status,
    notice_version = excluded.notice_version, notice_hash = excluded.notice_hash, channel = excluded.channel, captured_by = excluded.captured_by,
    granted_at = excluded.granted_at, expires_at = excluded.expires_at, withdrawn_at = excluded.withdrawn_at, event_id = excluded.event_id, seq = excluded.seq;
  INSERT INTO customers (id, erased, updated_at, rev) VALUES (c_id, 0, rec_at, 1) ON CONFLICT (id) DO NOTHING;
  SELECT row_to_json(cu)::text INTO cust FROM customers cu WHERE cu.id = c_id;
  PERFORM pg_notify(notify_channel, 'customer|' || c_id);
  outcome := 'ok'; out_seq := v_seq; cur := row_to_json(nxt)::text;
  RETURN NEXT;
END $$`

// pgLockFunc takes the advisory locks of a batch's customers, deduplicated and in lock-key
// order (schema 8). The key is hashtext(id), and ids can share one (C-132044 and C-157406
// do): batches that locked in id order could each hold one key while waiting for the
// other's - {C-132044, C-14} and {C-14, C-157406} deadlocked. One global key order cannot.
// consent_append locks its customer again (re-entrant: already held).
const pgLockFunc = `
CREATE OR REPLACE FUNCTION consent_lock_customers(ids text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  k integer;
BEGIN
  FOR k IN SELECT DISTINCT hashtext(x) FROM unnest(ids) AS x ORDER BY 1 LOOP
    PERFORM pg_advisory_xact_lock(k);
  END LOOP;
END $$`

// pgAppendManyFunc records a batch (schema 8): every customer's lock first
// (consent_lock_customers), then consent_append per event in the order given. A
// server-stamped event (Event.serverStamped) is dated after its consent's latest grant or
// withdrawal when its stamp is not (stampAfter in model.go: + 1 microsecond, in ns); the
// capture time used is returned with each result.
const pgAppendManyFunc = `
CREATE OR REPLACE FUNCTION consent_append_many(p_eid text[], p_cid text[], p_purp text[], p_knd text[], p_nv text[], p_nh text[], p_chan text[],
  p_cap bigint[], p_cby text[], p_exp bigint[], p_rsn text[], p_rat bigint[], p_rby text[], p_stamped boolean[], notify_channel text)
RETURNS TABLE (o_ord integer, o_outcome text, o_seq bigint, o_dup text, o_cur text, o_cust text, o_cap bigint)
LANGUAGE plpgsql AS $$
DECLARE
  v_cap bigint;
  v_latest bigint;
BEGIN
  PERFORM consent_lock_customers(p_cid);
  FOR i IN 1 .. COALESCE(array_length(p_eid, 1), 0) LOOP
    v_cap := p_cap[i];
    IF p_stamped[i] THEN
      SELECT GREATEST(cc.granted_at, cc.withdrawn_at) INTO v_latest FROM consent_current cc WHERE cc.customer_id = p_cid[i] AND cc.purpose = p_purp[i];
      IF v_latest IS NOT NULL AND v_cap <= v_latest THEN
        v_cap := v_latest + 1000;
      END IF;
    END IF;
    RETURN QUERY SELECT i, r.outcome, r.out_seq, r.dup_event, r.cur, r.cust, v_cap
      FROM consent_append(p_eid[i], p_cid[i], p_purp[i], p_knd[i], p_nv[i], p_nh[i], p_chan[i], v_cap, p_cby[i], NULLIF(p_exp[i], 0),
        p_rsn[i], p_rat[i], p_rby[i], notify_channel) r;
  END LOOP;
END $$`

// pgDeadlock reports a PostgreSQL deadlock (SQLSTATE 40P01). PostgreSQL aborts one
// transaction of the cycle and rolls it back whole, so running it again is safe. Batches of
// this version cannot deadlock one another (consent_lock_customers), but during a rolling
// upgrade from schema 7 a replica still running the old version locks its batch's customers
// in id order as consent_append reaches them, and two ordinary ids (C-10, C-11) can be in
// the opposite hash order: without a retry the whole group-commit batch failed with 500.
func pgDeadlock(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "40P01"
}

// appendAttempts bounds how often appendEvents runs a batch the database aborted
// (dialect.retryAppend).
const appendAttempts = 4

// appendEvents runs the append transaction and commits it, or rolls it back (dry run:
// the results are exactly what a real append would report). A transaction the database
// aborted and rolled back as a whole (retryAppend) runs again after a short random pause:
// failing it would fail every write of a group-commit batch.
func (s *sqlStore) appendEvents(ctx context.Context, evs []Event, commit bool) ([]AppendResult, error) {
	for attempt := 1; ; attempt++ {
		res, err := s.appendOnce(ctx, evs, commit)
		if err == nil || s.d.retryAppend == nil || !s.d.retryAppend(err) || attempt == appendAttempts {
			return res, err
		}
		// Jittered: the batches of a deadlock pause apart instead of colliding again.
		pause := time.Duration(attempt) * (5*time.Millisecond + time.Duration(mrand.Int64N(int64(20*time.Millisecond))))
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(pause):
		}
	}
}

type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// pgAppendManySQL records a whole batch in one statement (one round trip, one commit
// when run outside a transaction): consent_append_many.
const pgAppendManySQL = `SELECT o_ord, o_outcome, o_seq, o_dup, o_cur, o_cust, o_cap
FROM consent_append_many($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bigint[], $9::text[], $10::bigint[],
  $11::text[], $12::bigint[], $13::text[], $14::boolean[], $15)
ORDER BY o_ord`

// Row shapes of row_to_json over the tables (times are the BIGINT ns columns).
type (
	jsonEvent struct {
		Seq           int64  `json:"seq"`
		EventID       string `json:"event_id"`
		CustomerID    string `json:"customer_id"`
		Purpose       string `json:"purpose"`
		Kind          string `json:"kind"`
		NoticeVersion string `json:"notice_version"`
		NoticeHash    string `json:"notice_hash"`
		Channel       string `json:"channel"`
		CapturedAt    int64  `json:"captured_at"`
		CapturedBy    string `json:"captured_by"`
		ExpiresAt     *int64 `json:"expires_at"`
		Reason        string `json:"reason"`
		RecordedAt    int64  `json:"recorded_at"`
		RecordedBy    string `json:"recorded_by"`
	}
	jsonCurrent struct {
		CustomerID    string `json:"customer_id"`
		Purpose       string `json:"purpose"`
		Status        string `json:"status"`
		NoticeVersion string `json:"notice_version"`
		NoticeHash    string `json:"notice_hash"`
		Channel       string `json:"channel"`
		CapturedBy    string `json:"captured_by"`
		GrantedAt     *int64 `json:"granted_at"`
		ExpiresAt     *int64 `json:"expires_at"`
		WithdrawnAt   *int64 `json:"withdrawn_at"`
		EventID       string `json:"event_id"`
		Seq           int64  `json:"seq"`
	}
	jsonCustomer struct {
		ID             string `json:"id"`
		RetentionUntil *int64 `json:"retention_until"`
		Erased         int    `json:"erased"`
		ErasedAt       *int64 `json:"erased_at"`
		UpdatedAt      int64  `json:"updated_at"`
		Rev            int64  `json:"rev"`
		UpdatedBy      string `json:"updated_by"`
	}
)

func tsPtr(v *int64) *time.Time {
	if v == nil {
		return nil
	}
	t := time.Unix(0, *v).UTC()
	return &t
}

// pgAppendMany records evs through consent_append_many on q (the pool: one implicit
// transaction; or a transaction), in the order given. The function takes every customer's
// lock first, in lock-key order (consent_lock_customers): concurrent batches cannot
// deadlock one another, whatever their customers and however their keys collide.
func pgAppendMany(ctx context.Context, q querier, channel string, evs []Event) ([]AppendResult, error) {
	n := len(evs)
	eid, cid, purp, knd, nv, nh, chn, cby, rsn, rby := make([]string, n), make([]string, n), make([]string, n), make([]string, n),
		make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	cat, exp, rat := make([]int64, n), make([]int64, n), make([]int64, n)
	stamped := make([]bool, n)
	var ta nsArgs
	for i, ev := range evs {
		eid[i], cid[i], purp[i], knd[i], nv[i], nh[i], chn[i], cby[i], rsn[i], rby[i] = ev.EventID, ev.CustomerID, ev.Purpose, ev.Kind,
			ev.NoticeVersion, ev.NoticeHash, ev.Channel, ev.CapturedBy, ev.Reason, ev.RecordedBy
		cat[i], rat[i], stamped[i] = ta.at(ev.CapturedAt), ta.at(ev.RecordedAt), ev.serverStamped
		if ev.ExpiresAt != nil {
			exp[i] = ta.at(*ev.ExpiresAt)
		}
	}
	if ta.err != nil {
		return nil, fmt.Errorf("append events: %w", ta.err)
	}
	rows, err := q.QueryContext(ctx, pgAppendManySQL, eid, cid, purp, knd, nv, nh, chn, cat, cby, exp, rsn, rat, rby, stamped, channel)
	if err != nil {
		return nil, fmt.Errorf("append events: %w", err)
	}
	defer rows.Close()
	res := make([]AppendResult, n)
	j := 0
	for rows.Next() {
		var ord int
		var outcome string
		var seq, capAt sql.NullInt64
		var dup, cur, cust sql.NullString
		if err := rows.Scan(&ord, &outcome, &seq, &dup, &cur, &cust, &capAt); err != nil {
			return nil, fmt.Errorf("append events: %w", err)
		}
		if j >= n || ord != j+1 {
			return nil, fmt.Errorf("append events: result %d out of order (%d events)", ord, n)
		}
		ev := evs[j]
		if capAt.Valid {
			ev.CapturedAt = time.Unix(0, capAt.Int64).UTC() // a server-stamped event's, as recorded
		}
		if res[j], err = pgResult(ev, outcome, seq, dup, cur, cust); err != nil {
			return nil, err
		}
		j++
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("append events: %w", err)
	}
	if j != n {
		return nil, fmt.Errorf("append events: %d results for %d events", j, n)
	}
	return res, nil
}

func pgResult(ev Event, outcome string, seq sql.NullInt64, dup, cur, cust sql.NullString) (AppendResult, error) {
	res := AppendResult{Event: ev}
	switch outcome {
	case "duplicate":
		var je jsonEvent
		if err := json.Unmarshal([]byte(dup.String), &je); err != nil {
			return res, fmt.Errorf("append event: %w", err)
		}
		existing := Event{Seq: je.Seq, EventID: je.EventID, CustomerID: je.CustomerID, Purpose: je.Purpose, Kind: je.Kind, NoticeVersion: je.NoticeVersion,
			NoticeHash: je.NoticeHash, Channel: je.Channel, CapturedAt: time.Unix(0, je.CapturedAt).UTC(), CapturedBy: je.CapturedBy,
			ExpiresAt: tsPtr(je.ExpiresAt), Reason: je.Reason, RecordedAt: time.Unix(0, je.RecordedAt).UTC(), RecordedBy: je.RecordedBy}
		res.Err = duplicateErr(ev.EventID, existing)
		return res, nil
	case "erased":
		res.Err = erasedErr(ev.CustomerID)
		return res, nil
	case "noop":
		res.Event.Seq, res.Seq, res.NoEffect = seq.Int64, seq.Int64, true
		if cur.Valid {
			var jc jsonCurrent
			if err := json.Unmarshal([]byte(cur.String), &jc); err != nil {
				return res, fmt.Errorf("append event: current: %w", err)
			}
			res.Current = currentOf(jc)
		}
		return res, nil
	case "ok":
	default:
		return res, fmt.Errorf("append event: unexpected outcome %q", outcome)
	}
	var jc jsonCurrent
	var ju jsonCustomer
	if err := json.Unmarshal([]byte(cur.String), &jc); err != nil {
		return res, fmt.Errorf("append event: current: %w", err)
	}
	if err := json.Unmarshal([]byte(cust.String), &ju); err != nil {
		return res, fmt.Errorf("append event: customer: %w", err)
	}
	res.Event.Seq, res.Seq = seq.Int64, seq.Int64
	res.Current = currentOf(jc)
	res.Customer = Customer{ID: ju.ID, RetentionUntil: tsPtr(ju.RetentionUntil), Erased: ju.Erased != 0, ErasedAt: tsPtr(ju.ErasedAt), UpdatedAt: time.Unix(0, ju.UpdatedAt).UTC(), UpdatedBy: ju.UpdatedBy}
	res.CustRev = ju.Rev
	return res, nil
}

func currentOf(jc jsonCurrent) Current {
	return Current{CustomerID: jc.CustomerID, Purpose: jc.Purpose, Status: jc.Status, NoticeVersion: jc.NoticeVersion, NoticeHash: jc.NoticeHash,
		Channel: jc.Channel, CapturedBy: jc.CapturedBy, GrantedAt: tsPtr(jc.GrantedAt), ExpiresAt: tsPtr(jc.ExpiresAt), WithdrawnAt: tsPtr(jc.WithdrawnAt),
		EventID: jc.EventID, Seq: jc.Seq}
}

func duplicateErr(id string, existing Event) *Error {
	return &Error{Status: http.StatusConflict, Code: "consent.duplicate_event",
		Message: fmt.Sprintf("event %q was already recorded (seq %d); nothing changed", id, existing.Seq), Event: &existing}
}

func erasedErr(customerID string) *Error {
	return errf(http.StatusConflict, "customer.erased", "customer %q was erased: new consent cannot be recorded", customerID)
}
