package consent

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/enrich"
)

func date(y int, m time.Month, d int) *time.Time {
	t := time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
	return &t
}

// TestCheckTimeRange: times outside what int64 nanoseconds hold are refused, never wrapped
// (9999-12-31 used to become 1816, 1625 became 2209).
func TestCheckTimeRange(t *testing.T) {
	for _, tc := range []struct {
		name string
		t    *time.Time
		ok   bool
	}{
		{"none", nil, true},
		{"today", date(2026, 12, 1), true},
		{"lower bound", date(1678, 1, 1), true},
		{"last day", date(2261, 12, 31), true},
		{"crm never", date(9999, 12, 31), false},
		{"upper bound", date(2262, 1, 1), false},
		{"before nanoseconds", date(1625, 3, 1), false},
		{"zero time", &time.Time{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkTime("retention_until", tc.t)
			if (err == nil) != tc.ok || (err != nil && CodeOf(err) != timeRangeCode) {
				t.Fatalf("checkTime(%v) = %v", tc.t, err)
			}
			if tc.t == nil {
				return
			}
			n, err := ns(*tc.t)
			if (err == nil) != tc.ok {
				t.Fatalf("ns(%v) = %d, %v", tc.t, n, err)
			}
			if tc.ok && !time.Unix(0, n).Equal(*tc.t) {
				t.Fatalf("ns(%v) = %d does not round-trip", tc.t, n)
			}
			if v := viewNS(tc.t); !tc.ok && (v > 0) != tc.t.After(time.Unix(0, 0)) {
				t.Fatalf("viewNS(%v) = %d wrapped", tc.t, v)
			}
		})
	}
	if err := checkTime("retention_until", date(9999, 12, 31)); !strings.Contains(err.Error(), "omit the field") {
		t.Fatalf("no hint how to say never: %v", err)
	}
}

// TestOutOfRangeTimesRefused: every write path of the admin API answers 400
// invalid.time_out_of_range instead of storing a wrapped time. A retention deadline of
// 9999-12-31 no longer makes the customer past retention (and erased by the sweep), and a
// grant "captured in 1625" can no longer make every later withdrawal stale.
func TestOutOfRangeTimesRefused(t *testing.T) {
	for _, backend := range testBackends {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			cfg := testConfig(t, backend)
			cfg.RetentionErasure = RetentionErasureConfig{Enabled: true}
			er := &recordingEraser{}
			s := openStore(t, cfg, Options{Eraser: er})
			cl := serveAdmin(t, s)
			const p = "marketing.communications.email"
			old := grantInput("C-old", p)
			old.CapturedAt = date(1625, 3, 1)
			never := grantInput("C-never", p)
			never.ExpiresAt = date(9999, 12, 31)
			for _, tc := range []struct {
				name, method, path string
				body               any
			}{
				{"retention 9999", "PUT", "/customers/C-keep", map[string]any{"retention_until": "9999-12-31T00:00:00Z"}},
				{"grant captured 1625", "POST", "/consents", old},
				{"grant expiring 9999", "POST", "/consents", never},
				{"withdrawal captured 1625", "POST", "/consents/withdrawals", ConsentInput{CustomerID: "C-old", Purpose: p, CapturedAt: date(1625, 3, 1)}},
				{"agreement until 9999", "PUT", "/agreements/P-1", map[string]any{"purposes": []string{p}, "categories": []string{"user.contact.email"}, "valid_until": "9999-12-31T00:00:00Z"}},
				{"agreement from 1600", "PUT", "/agreements/P-1", map[string]any{"purposes": []string{p}, "categories": []string{"user.contact.email"}, "valid_from": "1600-01-01T00:00:00Z", "valid_until": "2030-01-01T00:00:00Z"}},
			} {
				if err := cl.Do(tc.method, tc.path, tc.body, nil); CodeOf(err) != timeRangeCode {
					t.Errorf("%s: got %v, want 400 %s", tc.name, err, timeRangeCode)
				}
			}
			res, err := s.SweepRetention(ctx)
			if err != nil || res.Erased > 0 || len(er.calls) > 0 {
				t.Fatalf("retention sweep after refused deadline: %+v %v, eraser calls %v", res, err, er.calls)
			}
			for _, id := range []string{"C-keep", "C-old", "C-never"} {
				if h, _ := s.History(ctx, id); len(h) > 0 {
					t.Fatalf("%s: refused write left events %+v", id, h)
				}
			}
			// "Never" is spelled by omitting the field: no deadline, served.
			if err := cl.Do("PUT", "/customers/C-keep", map[string]any{}, nil); err != nil {
				t.Fatal(err)
			}
			if err := cl.Do("POST", "/consents", grantInput("C-keep", p), nil); err != nil {
				t.Fatal(err)
			}
			if e, _ := s.Enrich(ctx, enrich.Query{CustomerID: "C-keep", Purpose: p}); e.Customer == nil || e.Customer.RetentionUntil != nil || len(e.Consents) != 1 {
				t.Fatalf("customer without deadline: %+v", e)
			}
		})
	}
}

// TestBackendRefusesOutOfRangeTime: the store's conversion to nanoseconds fails instead of
// wrapping (defence in depth below the API's validation), and nothing is written.
func TestBackendRefusesOutOfRangeTime(t *testing.T) {
	for _, backend := range testBackends {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			s := openStore(t, testConfig(t, backend), Options{})
			now := time.Now().UTC()
			ev := Event{EventID: "ev-old", CustomerID: "C-1", Purpose: "marketing.communications.email", Kind: KindGranted,
				NoticeVersion: "v1", NoticeHash: "sha256:" + noticeHash, Channel: "web", CapturedAt: *date(1625, 3, 1), RecordedAt: now}
			if _, err := s.be.Append(ctx, []Event{ev}); CodeOf(err) != timeRangeCode {
				t.Fatalf("append captured 1625: %v", err)
			}
			ev.CapturedAt, ev.ExpiresAt = now, date(9999, 12, 31)
			if _, err := s.be.CheckAppend(ctx, []Event{ev}); CodeOf(err) != timeRangeCode {
				t.Fatalf("check append expiring 9999: %v", err)
			}
			if _, _, err := s.be.PutCustomer(ctx, Customer{ID: "C-1", RetentionUntil: date(9999, 12, 31), UpdatedAt: now}); CodeOf(err) != timeRangeCode {
				t.Fatalf("put customer 9999: %v", err)
			}
			if _, err := s.be.PutAgreement(ctx, Agreement{ProcessorID: "P-1", Purposes: []string{"x"}, Categories: []string{"y"}, ValidUntil: date(9999, 1, 1), UpdatedAt: now}); CodeOf(err) != timeRangeCode {
				t.Fatalf("put agreement 9999: %v", err)
			}
			if h, _ := s.History(ctx, "C-1"); len(h) > 0 {
				t.Fatalf("events written: %+v", h)
			}
			if c, _, _, _ := s.be.Customer(ctx, "C-1"); c != nil {
				t.Fatalf("customer written: %+v", c)
			}
		})
	}
}

// TestImportOutOfRangeDates: a CRM's "never" (9999-12-31) in an export rejects the row with
// the range code - before, the grant was accepted and expired at once (stored as 1816), and
// a retention deadline made the customer past retention.
func TestImportOutOfRangeDates(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, testConfig(t, "sqlite"), Options{})
	const p = "marketing.communications.email"
	export := "customer_id,purpose,status,notice_version,notice_hash,channel,captured_at,expires_at,retention_until\n" +
		"C-n," + p + ",yes,2026-01," + noticeHash + ",web,2026-01-01,9999-12-31,\n" +
		"C-r," + p + ",yes,2026-01," + noticeHash + ",web,2026-01-01,,9999-12-31\n" +
		"C-o," + p + ",yes,2026-01," + noticeHash + ",web,1625-03-01,,\n" +
		"C-ok," + p + ",yes,2026-01," + noticeHash + ",web,2026-01-01,,\n"
	rep, err := s.Import(ctx, strings.NewReader(export), ImportOptions{}, "importer")
	if err != nil {
		t.Fatal(err)
	}
	if rep.Accepted != 1 || rep.Rejected != 3 || rep.Customers != 0 {
		t.Fatalf("report %+v", rep)
	}
	for _, rj := range rep.Rejections {
		if rj.Code != timeRangeCode {
			t.Fatalf("rejection %+v, want %s", rj, timeRangeCode)
		}
	}
	for _, id := range []string{"C-n", "C-r", "C-o"} {
		if h, _ := s.History(ctx, id); len(h) > 0 {
			t.Fatalf("%s: rejected row recorded %+v", id, h)
		}
	}
}
