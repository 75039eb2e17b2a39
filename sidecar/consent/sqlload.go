package consent

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// Loading the whole state into the view (start, reconnect, resync).

func (s *sqlStore) Load(ctx context.Context, l Loader) error {
	if err := s.each(ctx, `SELECT `+customerCols+` FROM customers`, func(r scanner) error {
		c, rev, err := scanCustomer(r)
		if err == nil {
			l.LoadCustomer(c, rev)
		}
		return err
	}); err != nil {
		return fmt.Errorf("load customers: %w", err)
	}
	// A million rows: the database concatenates each row into one string, so the driver
	// allocates once per row instead of once per column; one goroutine reads rows while
	// this one builds the view (two cores: about half the wall time).
	if err := s.loadConsents(ctx, l); err != nil {
		return fmt.Errorf("load consents: %w", err)
	}
	if err := s.each(ctx, `SELECT `+caseCols+` FROM cases`, func(r scanner) error {
		c, rev, err := scanCase(r)
		if err == nil {
			l.LoadCase(c, rev)
		}
		return err
	}); err != nil {
		return fmt.Errorf("load cases: %w", err)
	}
	if err := s.each(ctx, `SELECT `+agreementCols+` FROM agreements`, func(r scanner) error {
		a, rev, err := scanAgreement(r)
		if err == nil {
			l.LoadAgreement(a, rev)
		}
		return err
	}); err != nil {
		return fmt.Errorf("load agreements: %w", err)
	}
	return nil
}

func (s *sqlStore) loadConsents(ctx context.Context, l Loader) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	batches := make(chan []string, 8)
	errc := make(chan error, 1)
	go func() {
		defer close(batches)
		batch := make([]string, 0, 1024)
		err := s.each(ctx, loadConsentsSQL, func(r scanner) error {
			var raw string
			if err := r.Scan(&raw); err != nil {
				return err
			}
			if batch = append(batch, raw); len(batch) == cap(batch) {
				select {
				case batches <- batch:
				case <-ctx.Done():
					return ctx.Err()
				}
				batch = make([]string, 0, 1024)
			}
			return nil
		})
		if err == nil && len(batch) > 0 {
			select {
			case batches <- batch:
			case <-ctx.Done():
				err = ctx.Err()
			}
		}
		errc <- err
	}()
	for batch := range batches {
		for _, raw := range batch {
			row, err := parseConsentRow(raw)
			if err != nil {
				cancel()
				for range batches { // let the reader finish
				}
				<-errc
				return err
			}
			l.LoadConsent(row)
		}
	}
	return <-errc
}

// loadConsentsSQL: '|' cannot occur in ids, purposes, statuses, versions, hashes or
// channels (see the validation regexps); captured_by, which may, comes last.
const loadConsentsSQL = `SELECT CAST(seq AS TEXT) || '|' || customer_id || '|' || purpose || '|' || status || '|' || notice_version || '|' ||
 notice_hash || '|' || channel || '|' || event_id || '|' || COALESCE(CAST(granted_at AS TEXT), '') || '|' ||
 COALESCE(CAST(expires_at AS TEXT), '') || '|' || COALESCE(CAST(withdrawn_at AS TEXT), '') || '|' || captured_by
 FROM consent_current ORDER BY customer_id, purpose`

func parseConsentRow(raw string) (ConsentRow, error) {
	var f [12]string
	rest := raw
	for i := 0; i < 11; i++ {
		var ok bool
		f[i], rest, ok = strings.Cut(rest, "|")
		if !ok {
			return ConsentRow{}, fmt.Errorf("malformed consent row %q", truncate(raw))
		}
	}
	f[11] = rest
	var n [4]int64
	for i, idx := range []int{0, 8, 9, 10} {
		if f[idx] == "" {
			continue
		}
		v, err := strconv.ParseInt(f[idx], 10, 64)
		if err != nil {
			return ConsentRow{}, fmt.Errorf("malformed consent row %q: %w", truncate(raw), err)
		}
		n[i] = v
	}
	return ConsentRow{Seq: n[0], CustomerID: f[1], Purpose: f[2], Status: f[3], NoticeVersion: f[4], NoticeHash: f[5], Channel: f[6],
		EventID: f[7], GrantedAt: n[1], ExpiresAt: n[2], WithdrawnAt: n[3], CapturedBy: f[11]}, nil
}

func (s *sqlStore) each(ctx context.Context, query string, fn func(scanner) error, args ...any) error {
	rows, err := s.db.QueryContext(ctx, s.q(query), args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := fn(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}
