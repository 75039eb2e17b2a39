package consent

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestImportRerunKeepsLaterAPIGrant: a date-only withdrawal of today is dated with the time
// of the import (withdrawalTime: the end of its day, but never after now), so every run of
// the same file dated the same row later. A re-run after the customer opted in again
// through the API compared that new time with the grant and withdrew the consent again
// (derived id: re-applied as a repeated opt-out), or refused the row as
// import.event_id_conflict (own event_id: the recorded time differed). The same file again
// is only duplicates now, the same day or the next, and the grant stands.
func TestImportRerunKeepsLaterAPIGrant(t *testing.T) {
	const (
		derived = "customer_id,purpose,status,captured_at\nC-1," + mail + ",withdrawn,2026-03-01\n"
		ownID   = "event_id,customer_id,purpose,status,captured_at\ncrm-77,C-1," + mail + ",withdrawn,2026-03-01\n"
	)
	for _, backend := range testBackends {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			for _, tc := range []struct {
				name  string
				file  string
				grant time.Duration // after the first import, the API grant (0: none)
				rerun time.Duration // after the first import, the same file again
			}{
				{"derived id, same day", derived, time.Hour, 2 * time.Hour},
				{"derived id, next day", derived, 5 * time.Hour, 29 * time.Hour},
				{"own event_id, same day", ownID, time.Hour, 2 * time.Hour},
				{"own event_id, next day", ownID, 5 * time.Hour, 29 * time.Hour},
				{"own event_id, same day, no grant", ownID, 0, 2 * time.Hour},
				{"own event_id, next day, no grant", ownID, 0, 29 * time.Hour},
			} {
				t.Run(tc.name, func(t *testing.T) {
					ctx := context.Background()
					start := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
					clk := &clock{t: start}
					s := openStore(t, testConfig(t, backend), Options{Now: clk.now})
					if rep := mustImport(t, s, tc.file, ImportOptions{}); rep.Accepted != 1 {
						t.Fatalf("first import: %+v", rep)
					}
					want, events := KindWithdrawn, 1
					if tc.grant > 0 {
						clk.t = start.Add(tc.grant)
						if _, err := s.Grant(ctx, grantInput("C-1", mail), "api"); err != nil {
							t.Fatal(err)
						}
						want, events = KindGranted, 2
					}
					clk.t = start.Add(tc.rerun)
					for i, dry := range []bool{true, false, false} {
						rep := mustImport(t, s, tc.file, ImportOptions{DryRun: dry})
						if rep.Duplicates != 1 || rep.Accepted != 0 || rep.Rejected != 0 {
							t.Fatalf("run %d (dry run %v) of the same file: %+v, want 1 duplicate", i+2, dry, rep)
						}
						if st := importedState(t, s, "C-1", mail).Status; st != want {
							t.Fatalf("run %d (dry run %v): state %s, want %s", i+2, dry, st, want)
						}
					}
					if h, _ := s.History(ctx, "C-1"); len(h) != events {
						t.Fatalf("history: %d events", len(h))
					}
				})
			}
		})
	}
}

// TestImportDateOnlyEventIDConflict: a recorded event_id is still a conflict when the
// date-only row it is reused for names another day (the same-day rule is no wildcard).
func TestImportDateOnlyEventIDConflict(t *testing.T) {
	clk := &clock{t: time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)}
	s := openStore(t, testConfig(t, "sqlite"), Options{Now: clk.now})
	const hdr = "event_id,customer_id,purpose,status,captured_at\n"
	mustImport(t, s, hdr+"crm-77,C-1,"+mail+",withdrawn,2026-03-01\n", ImportOptions{})
	rep := mustImport(t, s, hdr+"crm-77,C-1,"+mail+",withdrawn,2026-02-27\n", ImportOptions{})
	if rep.Rejected != 1 || rep.Rejections[0].Code != "import.event_id_conflict" {
		t.Fatalf("event_id reused for another day: %+v", rep)
	}
	// Read in another time zone, 2026-03-01 10:00 UTC is still 2026-03-01: the same row.
	clk.t = clk.t.Add(time.Hour)
	if rep := mustImport(t, s, hdr+"crm-77,C-1,"+mail+",withdrawn,2026-03-01\n", ImportOptions{Timezone: "Europe/Berlin"}); rep.Duplicates != 1 {
		t.Fatalf("same row, another time zone: %+v", rep)
	}
}

// TestImportRetentionInPast: PUT /v1/customers/{id} refuses a retention deadline already
// past unless confirmed, but the import stored one silently (2025 for 2035: the customer no
// longer served and, with retention erasure on, erased at the next sweep). Such a row is now
// rejected (import.retention_in_past), in a dry run too, unless the import confirms it
// (retention_in_past=confirm). A date-only deadline means the end of its day: at 00:00 one
// of today was already past.
func TestImportRetentionInPast(t *testing.T) {
	const hdr = "customer_id,purpose,status,captured_at,retention_until\n"
	body := hdr +
		"C-1," + mail + ",withdrawn,2026-01-05T10:00:00Z,2025-01-01\n" + // past
		"C-2," + mail + ",withdrawn,2026-01-05T10:00:00Z,2026-03-01\n" + // today: kept through it
		"C-3," + mail + ",withdrawn,2026-01-05T10:00:00Z,2026-03-01T09:00:00Z\n" + // an hour ago
		"C-4," + mail + ",withdrawn,2026-01-05T10:00:00Z,2026-03-01T09:58:00Z\n" // within the clock skew margin
	endOfDay := func(y int, m time.Month, d int, loc *time.Location) time.Time {
		return time.Date(y, m, d+1, 0, 0, 0, 0, loc).Add(-time.Nanosecond).UTC()
	}
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	for _, backend := range testBackends {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			now := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
			s := openStore(t, testConfig(t, backend), Options{Now: func() time.Time { return now }})
			retention := func(id string) *time.Time {
				t.Helper()
				c, _, _, err := s.be.Customer(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				if c == nil {
					return nil
				}
				return c.RetentionUntil
			}
			for _, dry := range []bool{true, false} {
				rep := mustImport(t, s, body, ImportOptions{DryRun: dry})
				if rep.Accepted != 2 || rep.Rejected != 2 || rep.Customers != 2 {
					t.Fatalf("dry run %v: %+v", dry, rep)
				}
				for i, line := range []int{2, 4} {
					if r := rep.Rejections[i]; r.Line != line || r.Code != "import.retention_in_past" || !strings.Contains(r.Reason, "retention_in_past=confirm") {
						t.Fatalf("dry run %v: rejection %+v, want line %d import.retention_in_past", dry, r, line)
					}
				}
			}
			if r := retention("C-1"); r != nil {
				t.Fatalf("unconfirmed past deadline stored: %v", r)
			}
			if r := retention("C-2"); r == nil || !r.Equal(endOfDay(2026, 3, 1, time.UTC)) {
				t.Fatalf("date-only deadline of today: %v, want the end of the day", r)
			}

			// Confirmed: stored as written (a date: the end of that day, in the import's zone).
			rep := mustImport(t, s, body, ImportOptions{RetentionInPast: RetentionInPastConfirm, Timezone: "Europe/Berlin"})
			if rep.Rejected != 0 || rep.Accepted != 2 || rep.Duplicates != 2 {
				t.Fatalf("confirmed: %+v", rep)
			}
			if r := retention("C-1"); r == nil || !r.Equal(endOfDay(2025, 1, 1, berlin)) {
				t.Fatalf("confirmed past deadline: %v", r)
			}
			if _, err := s.Import(ctx, strings.NewReader(body), ImportOptions{RetentionInPast: "yes"}, "importer"); CodeOf(err) != "import.invalid_query" {
				t.Fatalf("retention_in_past=yes: %v", err)
			}

			// Through the admin API: the query parameter.
			cl := serveAdmin(t, s)
			past := hdr + "C-5," + mail + ",withdrawn,2026-01-05T10:00:00Z,2025-01-01\n"
			if rep, err := cl.Import(strings.NewReader(past), "dry_run=true"); err != nil || rep.Rejected != 1 || rep.Rejections[0].Code != "import.retention_in_past" {
				t.Fatalf("API, unconfirmed: %+v %v", rep, err)
			}
			if rep, err := cl.Import(strings.NewReader(past), "retention_in_past=confirm"); err != nil || rep.Accepted != 1 {
				t.Fatalf("API, confirmed: %+v %v", rep, err)
			}
			if _, err := cl.Import(strings.NewReader(past), "retention_in_past=true"); CodeOf(err) != "import.invalid_query" {
				t.Fatalf("API, retention_in_past=true: %v", err)
			}
		})
	}
}
