package consent

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// SweepResult says what one expiry sweep did.
type SweepResult struct {
	// Expired counts grants recorded as expired by this sweep.
	Expired int `json:"expired"`
	// Notified counts expiry notices sent; Failed those whose delivery failed (retried).
	Notified int `json:"notified"`
	Failed   int `json:"failed"`
}

// ExpiryNotice is the webhook body (and log event) for a consent about to expire.
type ExpiryNotice struct {
	Type          string    `json:"type"`
	CustomerID    string    `json:"customer_id"`
	Purpose       string    `json:"purpose"`
	EventID       string    `json:"event_id"`
	NoticeVersion string    `json:"notice_version,omitempty"`
	ExpiresAt     time.Time `json:"expires_at"`
	DaysLeft      int       `json:"days_left"`
	SentAt        time.Time `json:"sent_at"`
}

// expiredEventID is deterministic so that replicas sweeping at once record one event.
func expiredEventID(grantEventID string) string {
	h := sha256.Sum256([]byte(grantEventID))
	return "exp-" + hex.EncodeToString(h[:16])
}

// SweepExpiry records grants past their expiry as expired ledger events and reports
// grants expiring within notice_days (log + webhook, once per grant across replicas).
func (s *Store) SweepExpiry(ctx context.Context) (SweepResult, error) {
	var out SweepResult
	now := s.now().UTC()
	horizon := now
	if s.cfg.Expiry.NoticeDays > 0 {
		horizon = now.Add(time.Duration(s.cfg.Expiry.NoticeDays) * 24 * time.Hour)
	}
	due, err := s.be.Due(ctx, horizon)
	if err != nil {
		return out, err
	}
	if s.afterDue != nil {
		s.afterDue()
	}
	var expired []Event
	for _, c := range due {
		if !c.ExpiresAt.After(now) {
			expired = append(expired, Event{EventID: expiredEventID(c.EventID), CustomerID: c.CustomerID, Purpose: c.Purpose,
				Kind: KindExpired, CapturedAt: c.ExpiresAt.UTC(), CapturedBy: "consentry", Reason: "expired (grant " + c.EventID + ")",
				RecordedAt: now, RecordedBy: "consentry-expiry"})
			continue
		}
		if s.cfg.Expiry.NoticeDays < 0 {
			continue
		}
		claimed, err := s.be.ClaimNotice(ctx, c.EventID, now)
		if err != nil {
			return out, err
		}
		if !claimed {
			continue
		}
		n := ExpiryNotice{Type: "consent.expiring", CustomerID: c.CustomerID, Purpose: c.Purpose, EventID: c.EventID,
			NoticeVersion: c.NoticeVersion, ExpiresAt: c.ExpiresAt.UTC(), DaysLeft: int(c.ExpiresAt.Sub(now).Hours() / 24), SentAt: now}
		s.log.Warn("consent expiring", "event", n.Type, "customer_id", n.CustomerID, "purpose", n.Purpose,
			"expires_at", n.ExpiresAt, "days_left", n.DaysLeft, "event_id", n.EventID)
		if err := s.sendNotice(ctx, n); err != nil {
			out.Failed++
			s.metrics.notices.WithLabelValues("failed").Inc()
			s.log.Error("expiry webhook failed; will retry", "event_id", c.EventID, "err", err)
			if err := s.be.ReleaseNotice(ctx, c.EventID); err != nil {
				return out, err
			}
			continue
		}
		out.Notified++
		s.metrics.notices.WithLabelValues("sent").Inc()
	}
	for len(expired) > 0 {
		batch := expired[:min(len(expired), 500)]
		expired = expired[len(batch):]
		res, err := s.be.Append(ctx, batch)
		if err != nil {
			return out, fmt.Errorf("record expiry: %w", err)
		}
		for _, r := range res {
			if r.Err != nil {
				continue // another replica recorded it first
			}
			if r.NoEffect {
				// Renewed or withdrawn since Due read it: the grant it names is no
				// longer the consent, and the expiry (recorded in the ledger) changed nothing.
				s.log.Info("consent expiry superseded", "customer_id", r.Event.CustomerID, "purpose", r.Event.Purpose, "event_id", r.Event.EventID)
				continue
			}
			s.view.putResult(r)
			s.metrics.writes.WithLabelValues(KindExpired, "ok").Inc()
			out.Expired++
			s.log.Info("consent expired", "customer_id", r.Event.CustomerID, "purpose", r.Event.Purpose, "event_id", r.Event.EventID)
		}
	}
	return out, nil
}

func (s *Store) sendNotice(ctx context.Context, n ExpiryNotice) error {
	if s.cfg.Expiry.WebhookURL == "" {
		return nil
	}
	body, err := json.Marshal(n)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Expiry.WebhookTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.Expiry.WebhookURL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Consentry-Event", n.Type)
	if len(s.secret) > 0 {
		m := hmac.New(sha256.New, s.secret)
		m.Write(body)
		req.Header.Set("X-Consentry-Signature", "sha256="+hex.EncodeToString(m.Sum(nil)))
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook answered %s", resp.Status)
	}
	return nil
}

func (s *Store) sweepLoop(ctx context.Context) {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.Expiry.Interval)
	defer t.Stop()
	for {
		if _, err := s.SweepExpiry(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("expiry sweep failed", "err", err)
		}
		if r, err := s.RetryErasures(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("erasure retry failed", "err", err)
		} else if r.Pending > 0 {
			s.log.Info("pending erasures retried", "pending", r.Pending, "erased", r.Erased, "failed", r.Failed)
		}
		if s.cfg.RetentionErasure.Enabled {
			if _, err := s.SweepRetention(ctx); err != nil && ctx.Err() == nil {
				s.log.Error("retention sweep failed", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// resyncLoop reloads the view periodically: a safety net should a notification be lost
// without the connection dropping. A failed reload is retried soon (1 s, doubling up to the
// interval): one that could not re-read the changes made while it ran leaves the view
// behind, and lookups fail closed until a reload succeeds.
func (s *Store) resyncLoop(ctx context.Context) {
	defer s.wg.Done()
	wait, retry := s.cfg.Postgres.ResyncInterval, time.Second
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if err := s.Reload(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("state resync failed; retrying", "in", retry, "err", err)
			wait, retry = retry, min(2*retry, s.cfg.Postgres.ResyncInterval)
			continue
		}
		wait, retry = s.cfg.Postgres.ResyncInterval, time.Second
	}
}
