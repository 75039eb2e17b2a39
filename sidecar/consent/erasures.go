package consent

import (
	"context"
	"fmt"
	"time"
)

// Erasures a withdrawal asked for are durable requests: recorded before the eraser runs, and
// retried by every sweep until the keys are destroyed and the customer is marked erased. A
// failed erasure (Vault unreachable, say) is not left to whoever called the API to retry: a
// retried withdrawal with the same event id is a duplicate and would erase nothing.

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
	// ErasureFailed counts a failed attempt; ErasureDone removes the request.
	ErasureFailed(ctx context.Context, customerID, msg string) error
	ErasureDone(ctx context.Context, customerID string) error
}

var _ ErasureQueue = (*sqlStore)(nil)

func (s *sqlStore) RequestErasure(ctx context.Context, r ErasureRequest) error {
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO erasure_requests (customer_id, requested_at, actor, reason) VALUES (?, ?, ?, ?)
ON CONFLICT (customer_id) DO NOTHING`), r.CustomerID, ns(r.RequestedAt), truncate(r.Actor), truncate(r.Reason))
	if err != nil {
		return fmt.Errorf("record erasure request: %w", err)
	}
	return nil
}

func (s *sqlStore) PendingErasures(ctx context.Context) ([]ErasureRequest, error) {
	var out []ErasureRequest
	err := s.each(ctx, `SELECT customer_id, requested_at, actor, reason, attempts, last_error FROM erasure_requests ORDER BY requested_at, customer_id`,
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

func (s *sqlStore) ErasureFailed(ctx context.Context, customerID, msg string) error {
	if _, err := s.db.ExecContext(ctx, s.q(`UPDATE erasure_requests SET attempts = attempts + 1, last_error = ? WHERE customer_id = ?`),
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

// erasureQueue returns the backend's erasure queue (every built-in backend has one).
func (s *Store) erasureQueue() (ErasureQueue, error) {
	q, ok := s.be.(ErasureQueue)
	if !ok {
		return nil, errf(503, "erasure.unavailable", "the %s backend keeps no erasure requests", s.cfg.Backend)
	}
	return q, nil
}

// erase runs one requested erasure: keys destroyed through the eraser, the customer marked
// erased, the request removed. A failure is counted on the request, which the next sweep
// retries.
func (s *Store) erase(ctx context.Context, q ErasureQueue, r ErasureRequest) error {
	s.mu.Lock()
	eraser := s.eraser
	s.mu.Unlock()
	err := error(errf(503, "erasure.unavailable", "no eraser is configured (vault section missing)"))
	if eraser != nil {
		err = eraser.Erase(ctx, r.CustomerID, r.Actor, r.Reason)
	}
	if err == nil {
		if _, err = s.MarkErased(ctx, r.CustomerID, s.now()); err == nil {
			err = q.ErasureDone(ctx, r.CustomerID)
		}
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

// ErasureResult says what one retry of pending erasures did.
type ErasureResult struct {
	Pending int `json:"pending"`
	Erased  int `json:"erased"`
	Failed  int `json:"failed"`
}

// RetryErasures runs every pending erasure request (the sweep calls it each interval).
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
	for _, r := range pending {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		if err := s.erase(ctx, q, r); err != nil {
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
