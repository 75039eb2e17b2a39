package consent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"
	"unicode/utf8"
)

// Erasures a withdrawal or the end of retention asks for are durable requests: recorded
// before anything else happens, and retried by every sweep until the keys are destroyed. The
// customer is marked erased first, so that from the request on no replica serves them
// (customer.erased, 451), whatever happens to the key destruction; a failed destruction is
// not left to whoever called the API: a retried withdrawal with the same event id is a
// duplicate and would erase nothing. A replica claims a request for a while before it runs
// it, so replicas sweeping at once do not destroy the same keys twice.

// ErasureRequest is an erasure asked for and not yet done.
type ErasureRequest struct {
	CustomerID  string    `json:"customer_id"`
	RequestedAt time.Time `json:"requested_at"`
	Actor       string    `json:"actor"`
	Reason      string    `json:"reason"`
	// Attempts counts failed attempts; LastError is the last failure.
	Attempts  int    `json:"attempts"`
	LastError string `json:"last_error,omitempty"`
}

// ErasureQueue is the part of a Backend that keeps erasure requests.
type ErasureQueue interface {
	// RequestErasure records a request (an existing one for the customer is kept).
	RequestErasure(ctx context.Context, r ErasureRequest) error
	// PendingErasures lists the requests not yet done, oldest first.
	PendingErasures(ctx context.Context) ([]ErasureRequest, error)
	// ClaimErasure takes the request for this node for d, by the database's clock (replicas'
	// clocks may differ); false when another node holds an unexpired claim (or the request
	// is gone).
	ClaimErasure(ctx context.Context, customerID string, d time.Duration) (bool, error)
	// ErasureFailed counts a failed attempt and releases the claim; ErasureDone removes the
	// request.
	ErasureFailed(ctx context.Context, customerID, msg string) error
	ErasureDone(ctx context.Context, customerID string) error
}

var _ ErasureQueue = (*sqlStore)(nil)

func (s *sqlStore) RequestErasure(ctx context.Context, r ErasureRequest) error {
	at, err := ns(r.RequestedAt)
	if err != nil {
		return fmt.Errorf("record erasure request: %w", err)
	}
	_, err = s.db.ExecContext(ctx, s.q(`INSERT INTO erasure_requests (customer_id, requested_at, actor, reason) VALUES (?, ?, ?, ?)
ON CONFLICT (customer_id) DO NOTHING`), r.CustomerID, at, erasureText(r.Actor), erasureText(r.Reason))
	if err != nil {
		return fmt.Errorf("record erasure request: %w", err)
	}
	return nil
}

func (s *sqlStore) PendingErasures(ctx context.Context) ([]ErasureRequest, error) {
	var out []ErasureRequest
	// Fewest attempts first: requests that keep failing do not hold newer ones back.
	err := s.each(ctx, `SELECT customer_id, requested_at, actor, reason, attempts, last_error FROM erasure_requests ORDER BY attempts, requested_at, customer_id`,
		func(r scanner) error {
			var e ErasureRequest
			var at int64
			if err := r.Scan(&e.CustomerID, &at, &e.Actor, &e.Reason, &e.Attempts, &e.LastError); err != nil {
				return err
			}
			e.RequestedAt = time.Unix(0, at).UTC()
			out = append(out, e)
			return nil
		})
	if err != nil {
		return nil, fmt.Errorf("pending erasures: %w", err)
	}
	return out, nil
}

func (s *sqlStore) ClaimErasure(ctx context.Context, customerID string, d time.Duration) (bool, error) {
	query, args := `UPDATE erasure_requests SET claimed_until = ? WHERE customer_id = ? AND claimed_until < ?`, []any{time.Now().Add(d).UnixNano(), customerID, time.Now().UnixNano()}
	if s.d.name == "postgres" {
		query = `UPDATE erasure_requests SET claimed_until = ` + pgNowNS + ` + $1 WHERE customer_id = $2 AND claimed_until < ` + pgNowNS
		args = []any{int64(d), customerID}
	} else {
		query = s.q(query)
	}
	r, err := s.db.ExecContext(ctx, query, args...)
	if err != nil {
		return false, fmt.Errorf("claim erasure request: %w", err)
	}
	n, err := r.RowsAffected()
	return n == 1, err
}

func (s *sqlStore) ErasureFailed(ctx context.Context, customerID, msg string) error {
	if _, err := s.db.ExecContext(ctx, s.q(`UPDATE erasure_requests SET attempts = attempts + 1, last_error = ?, claimed_until = 0 WHERE customer_id = ?`),
		truncate(msg), customerID); err != nil {
		return fmt.Errorf("record erasure failure: %w", err)
	}
	return nil
}

func (s *sqlStore) ErasureDone(ctx context.Context, customerID string) error {
	if _, err := s.db.ExecContext(ctx, s.q(`DELETE FROM erasure_requests WHERE customer_id = ?`), customerID); err != nil {
		return fmt.Errorf("remove erasure request: %w", err)
	}
	return nil
}

// MaxErasureText bounds the actor and the reason an erasure request keeps, in bytes. They are
// kept in full up to it: the sweep retries a request with them, and the key ledger recognizes
// a retry of the same erasure by its exact actor and reason (any difference is a second
// ledger record). Longer values are cut to it before the first attempt, so that every attempt
// uses the same text.
const MaxErasureText = 1024

// erasureText cuts s to MaxErasureText bytes (at a UTF-8 boundary, marked "..."). It is
// idempotent: a cut value stays as it is when cut again.
func erasureText(s string) string {
	if len(s) <= MaxErasureText {
		return s
	}
	cut := MaxErasureText - len("...")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

// erasureQueue returns the backend's erasure queue (every built-in backend has one).
func (s *Store) erasureQueue() (ErasureQueue, error) {
	q, ok := s.be.(ErasureQueue)
	if !ok {
		return nil, errf(503, "erasure.unavailable", "the %s backend keeps no erasure requests", s.cfg.Backend)
	}
	return q, nil
}

// pgNowNS is PostgreSQL's clock in Unix nanoseconds.
const pgNowNS = `(extract(epoch from clock_timestamp()) * 1000000000)::bigint`

// erasureClaim is how long a node holds a request it runs: longer than an erasure takes
// (a few Vault calls with their timeouts); a node that dies holding one only delays it.
const erasureClaim = 2 * time.Minute

// RunErasure records an erasure request and runs it at once, destroying the keys with
// destroy (nil: the store's Eraser). The admin API passes its own, to answer with the
// destruction record. The request stays pending when the run fails: the sweep retries it
// (with the Eraser). ErrErasureInProgress: another replica is running it now. An actor or
// reason longer than MaxErasureText is refused when destroy is given: destroy would run with
// other text than the sweep retries with. A reason or actor that is not valid UTF-8 or holds a
// NUL is refused (400 invalid.text), as on every other write.
func (s *Store) RunErasure(ctx context.Context, r ErasureRequest, destroy func(context.Context) error) error {
	if err := validID("customer_id", r.CustomerID); err != nil {
		return err
	}
	// Refused before anything is recorded: PostgreSQL cannot store the request (a retryable
	// 503 that could never succeed), SQLite would keep bytes no answer can carry.
	if err := validText("reason", r.Reason); err != nil {
		return err
	}
	if err := validText("the admin actor's name", r.Actor); err != nil {
		return err
	}
	if destroy != nil && (erasureText(r.Actor) != r.Actor || erasureText(r.Reason) != r.Reason) {
		return bad("erasure.invalid_request", "the actor and the reason of an erasure are at most %d bytes", MaxErasureText)
	}
	q, err := s.erasureQueue()
	if err != nil {
		return err
	}
	return s.requestErasure(ctx, q, r, destroy)
}

// requestErasure records the request and runs it at once (see erase; destroy nil: the
// Eraser). The request stays pending when the run fails: the sweep retries it.
func (s *Store) requestErasure(ctx context.Context, q ErasureQueue, r ErasureRequest, destroy func(context.Context) error) error {
	// The first attempt uses the text the request keeps, as every retry does.
	r.Actor, r.Reason = erasureText(r.Actor), erasureText(r.Reason)
	if err := q.RequestErasure(ctx, r); err != nil {
		e := errf(http.StatusServiceUnavailable, "erasure.unavailable", "the erasure request could not be recorded: %v", err)
		return fmt.Errorf("%w (%w)", e, errNoRequest)
	}
	return s.erase(ctx, q, r, destroy)
}

// errNoRequest marks a failure to record the request itself (nothing is pending).
var errNoRequest = errors.New("no erasure request recorded")

// erase runs one requested erasure, unless another node has claimed it: the customer is
// marked erased (served nowhere from now on), the keys are destroyed (destroy, or the
// eraser when nil), the request is removed. A failure is counted on the request, which the
// next sweep retries. Without any way to destroy keys nothing is marked: the request waits.
func (s *Store) erase(ctx context.Context, q ErasureQueue, r ErasureRequest, destroy func(context.Context) error) error {
	if destroy == nil {
		s.mu.Lock()
		eraser := s.eraser
		s.mu.Unlock()
		if eraser == nil {
			s.metrics.erasures.WithLabelValues("failed").Inc()
			return errf(503, "erasure.unavailable", "no eraser is configured (vault section missing): the erasure stays requested")
		}
		destroy = func(ctx context.Context) error { return eraser.Erase(ctx, r.CustomerID, r.Actor, r.Reason) }
	}
	claimed, err := q.ClaimErasure(ctx, r.CustomerID, erasureClaim)
	if err != nil {
		return err
	}
	if !claimed {
		return ErrErasureInProgress
	}
	_, err = s.MarkErased(ctx, r.CustomerID, s.now())
	if err == nil {
		err = destroy(ctx)
	}
	if err == nil {
		err = q.ErasureDone(ctx, r.CustomerID)
	}
	if err != nil {
		s.metrics.erasures.WithLabelValues("failed").Inc()
		if ferr := q.ErasureFailed(context.WithoutCancel(ctx), r.CustomerID, err.Error()); ferr != nil {
			s.log.Error("erasure request: recording the failure", "customer_id", r.CustomerID, "err", ferr)
		}
		return err
	}
	s.metrics.erasures.WithLabelValues("done").Inc()
	return nil
}

// ErrErasureInProgress: another replica (or request) is running this erasure now.
var ErrErasureInProgress = errf(http.StatusConflict, "erasure.in_progress", "another replica is running this erasure; it is retried until done")

// ErasureResult says what one retry of pending erasures did.
type ErasureResult struct {
	Pending int `json:"pending"`
	Erased  int `json:"erased"`
	Failed  int `json:"failed"`
	// Claimed counts requests another replica was running.
	Claimed int `json:"claimed,omitempty"`
}

// RetryErasures runs pending erasure requests, fewest attempts and oldest first, at most
// retention_erasure.max_per_sweep of them (the sweep calls it each interval).
func (s *Store) RetryErasures(ctx context.Context) (ErasureResult, error) {
	var out ErasureResult
	q, err := s.erasureQueue()
	if err != nil {
		return out, err
	}
	pending, err := q.PendingErasures(ctx)
	if err != nil {
		return out, err
	}
	out.Pending = len(pending)
	if len(pending) > s.cfg.RetentionErasure.MaxPerSweep {
		pending = pending[:s.cfg.RetentionErasure.MaxPerSweep]
	}
	for _, r := range pending {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		err := s.erase(ctx, q, r, nil)
		if errors.Is(err, ErrErasureInProgress) {
			out.Claimed++
			continue
		}
		if err != nil {
			out.Failed++
			s.log.Error("requested erasure failed; retried on the next sweep", "customer_id", r.CustomerID,
				"requested_at", r.RequestedAt, "attempts", r.Attempts+1, "err", err, "alarm", "erasure_pending")
			continue
		}
		out.Erased++
		s.log.Info("requested erasure done", "customer_id", r.CustomerID, "requested_at", r.RequestedAt, "attempts", r.Attempts+1)
	}
	return out, nil
}
