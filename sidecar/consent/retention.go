package consent

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"
)

// RetentionResult says what one retention sweep did.
type RetentionResult struct {
	// Due counts customers past retention (plus grace) and not yet erased.
	Due int `json:"due"`
	// Erased counts erasures completed by this sweep; Failed those that failed (retried on
	// the next sweep: the customer is still past retention and still not served).
	Erased int `json:"erased"`
	Failed int `json:"failed"`
}

// RetentionActor is the actor named in erasures the retention sweep performs.
const RetentionActor = "consentry-retention"

// SweepRetention erases customers whose retention deadline (plus state.retention_erasure.grace)
// has passed, through the erasure requests (erasures.go): each is requested, marked erased
// and its keys destroyed; a failed destruction stays pending and the sweep retries it. Each
// candidate is re-read from the database first, so a customer another replica erased, or whose
// deadline was extended meanwhile, is skipped. A customer marked erased leaves the due list
// at once, so failures never hold the others back.
func (s *Store) SweepRetention(ctx context.Context) (RetentionResult, error) {
	var out RetentionResult
	s.mu.Lock()
	eraser := s.eraser
	s.mu.Unlock()
	if eraser == nil {
		return out, errf(503, "erasure.unavailable", "state.retention_erasure is on but no eraser is configured (vault section missing)")
	}
	q, err := s.erasureQueue()
	if err != nil {
		return out, err
	}
	cutoff := s.now().UTC().Add(-s.cfg.RetentionErasure.Grace)
	due := s.view.pastRetention(cutoff)
	out.Due = len(due)
	if len(due) > s.cfg.RetentionErasure.MaxPerSweep {
		due = due[:s.cfg.RetentionErasure.MaxPerSweep]
	}
	for _, id := range due {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		cust, _, _, err := s.be.Customer(ctx, id)
		if err != nil {
			out.Failed++
			s.log.Error("retention sweep: read customer", "customer_id", id, "err", err)
			continue
		}
		if cust == nil || cust.Erased || cust.RetentionUntil == nil || !cust.RetentionUntil.Before(cutoff) {
			continue
		}
		req := ErasureRequest{CustomerID: id, RequestedAt: s.now().UTC(), Actor: RetentionActor,
			Reason: fmt.Sprintf("retention period ended %s", cust.RetentionUntil.UTC().Format(time.RFC3339))}
		if err := s.requestErasure(ctx, q, req, nil); err != nil && !errors.Is(err, ErrErasureInProgress) {
			out.Failed++
			s.log.Error("retention erasure failed; retried on the next sweep", "customer_id", id, "err", err)
			continue
		}
		out.Erased++
		s.log.Info("customer erased at the end of retention", "customer_id", id, "retention_until", cust.RetentionUntil)
	}
	return out, nil
}

// pastRetention lists (sorted) the customers known to the view whose retention deadline is
// before cutoff and who are not erased.
func (v *view) pastRetention(cutoff time.Time) []string {
	snap := v.snap.Load()
	if snap == nil {
		return nil
	}
	var out []string
	for i := range snap.shards {
		sh := &snap.shards[i]
		sh.mu.RLock()
		for id, e := range sh.customers {
			st := e.state
			if e.known && !st.Erased && st.RetentionUntil != nil && st.RetentionUntil.Before(cutoff) {
				out = append(out, id)
			}
		}
		sh.mu.RUnlock()
	}
	sort.Strings(out)
	return out
}
