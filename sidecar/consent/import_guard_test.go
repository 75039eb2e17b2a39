package consent

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/enrich"
)

// TestImportUndatedRowsNeedOptIn: an old export without a date column (or whose date column
// was mapped to an alias, map=Datum=consent_date, which used to be accepted and never read)
// must not re-grant a consent the customer withdrew through the API since. An undated row is
// rejected (import.captured_at_missing) unless the caller asks for captured_at=now.
func TestImportUndatedRowsNeedOptIn(t *testing.T) {
	const p = "marketing.communications.email"
	for _, tc := range []struct {
		name, query, export string
		code                string // the row's rejection
	}{
		{"no date column", "", "customer_id,purpose,status,notice_version,notice_hash,channel\nC-9," + p + ",yes,2026-01," + noticeHash + ",web\n", "import.captured_at_missing"},
		{"date column mapped to an alias", "map=Datum=consent_date", "customer_id,purpose,status,notice_version,notice_hash,channel,Datum\nC-9," + p + ",yes,2026-01," + noticeHash + ",web,2026-01-01\n", "import.stale_row"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			s := openStore(t, testConfig(t, "sqlite"), Options{})
			cl := serveAdmin(t, s)
			g := grantInput("C-9", p)
			g.CapturedAt = date(2026, 1, 1)
			if err := cl.Do("POST", "/consents", g, nil); err != nil {
				t.Fatal(err)
			}
			if err := cl.Do("POST", "/consents/withdrawals", ConsentInput{CustomerID: "C-9", Purpose: p, Channel: "email"}, nil); err != nil {
				t.Fatal(err)
			}
			var rep ImportReport
			if err := cl.Do("POST", "/consents/import?"+tc.query, strings.NewReader(tc.export), &rep); err != nil {
				t.Fatal(err)
			}
			if rep.Accepted != 0 || rep.Rejected != 1 || rep.Rejections[0].Code != tc.code {
				t.Fatalf("report %+v, want the row rejected as %s", rep, tc.code)
			}
			e, _ := s.Enrich(ctx, enrich.Query{CustomerID: "C-9", Purpose: p})
			if len(e.Consents) != 1 || e.Consents[0].Status != KindWithdrawn {
				t.Fatalf("old export re-granted a withdrawn consent: %+v", e.Consents)
			}
		})
	}
}

// TestImportCapturedNow: captured_at=now is the explicit opt-in that dates undated rows with
// the import; any other value of the query is refused.
func TestImportCapturedNow(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, testConfig(t, "sqlite"), Options{})
	cl := serveAdmin(t, s)
	body := "customer_id,purpose,notice_version,notice_hash,channel\nC-now,marketing.communications.email,2026-01," + noticeHash + ",web\n"
	if err := cl.Do("POST", "/consents/import?captured_at=2026-01-01", strings.NewReader(body), nil); CodeOf(err) != "import.invalid_query" {
		t.Fatalf("captured_at=2026-01-01: %v", err)
	}
	before := time.Now().Add(-time.Minute)
	var rep ImportReport
	if err := cl.Do("POST", "/consents/import?captured_at=now&default_status=granted", strings.NewReader(body), &rep); err != nil || rep.Accepted != 1 {
		t.Fatalf("captured_at=now: %+v %v", rep, err)
	}
	h, _ := s.History(ctx, "C-now")
	if len(h) != 1 || h[0].CapturedAt.Before(before) {
		t.Fatalf("history %+v", h)
	}
	// The same undated export again is a re-import (its time is the import's, not the row's).
	if err := cl.Do("POST", "/consents/import?captured_at=now&default_status=granted", strings.NewReader(body), &rep); err != nil || rep.Duplicates != 1 || rep.Rejected != 0 {
		t.Fatalf("re-import: %+v %v", rep, err)
	}
}

// TestImportMapTargets: a map target is resolved through the alias table to its field (and
// that column is then read); a target that names no field is a 400, also when the file does
// not have the column.
func TestImportMapTargets(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, testConfig(t, "sqlite"), Options{})
	body := "Kunde,purpose,notice_version,notice_hash,channel,Datum\nC-m,marketing.communications.email,2026-01," + noticeHash + ",web,2026-01-02\n"
	rep, err := s.Import(ctx, strings.NewReader(body), ImportOptions{Columns: map[string]string{"Kunde": "Customer ID", "Datum": "consent_date"}, DefaultStatus: KindGranted}, "importer")
	if err != nil || rep.Accepted != 1 {
		t.Fatalf("aliased map targets: %+v %v", rep, err)
	}
	if h, _ := s.History(ctx, "C-m"); len(h) != 1 || !h[0].CapturedAt.Equal(*date(2026, 1, 2)) {
		t.Fatalf("the mapped date column was not read: %+v", h)
	}
	for _, m := range []map[string]string{{"Datum": "nonsense"}, {"NotInFile": "bogus_field"}} {
		if _, err := s.Import(ctx, strings.NewReader(body), ImportOptions{Columns: m}, "importer"); CodeOf(err) != "import.invalid_map" || !IsClientError(err) {
			t.Fatalf("map %v: %v", m, err)
		}
	}
}

// TestImportReusedEventID: a CRM row that keeps its record id when the customer opts out
// comes back with the same event_id and status=withdrawn. That is not a duplicate of the
// recorded grant: it is rejected as import.event_id_conflict (it used to be counted as a
// duplicate and dropped, the consent staying granted without a word). The same row again
// is still a duplicate.
func TestImportReusedEventID(t *testing.T) {
	const header = "event_id,customer_id,purpose,status,notice_version,notice_hash,channel,captured_at\n"
	const p = "marketing.communications.email"
	jan := "crm-4711,C-1," + p + ",granted,2026-01," + noticeHash + ",web,2026-01-01T00:00:00Z\n"
	feb := "crm-4712,C-1," + p + ",granted,2026-02," + noticeHash + ",web,2026-02-01T00:00:00Z\n"
	for _, backend := range testBackends {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			s := openStore(t, testConfig(t, backend), Options{})
			if rep, err := s.Import(ctx, strings.NewReader(header+jan+feb), ImportOptions{}, "importer"); err != nil || rep.Accepted != 2 {
				t.Fatalf("first import: %+v %v", rep, err)
			}
			// crm-4711 is older than the current state (crm-4712): its rows take the stale
			// path; crm-4712's the append path.
			for _, tc := range []struct {
				name, row string
				dup       bool
			}{
				{"same row, older than the state", jan, true},
				{"same row, current", feb, true},
				{"same row, other channel", strings.Replace(feb, ",web,", ",email,", 1), true},
				{"opt-out under an older grant's id", "crm-4711,C-1," + p + ",withdrawn,,,web,2026-01-15T00:00:00Z\n", false},
				{"opt-out under the current grant's id", "crm-4712,C-1," + p + ",withdrawn,,,web,2026-03-01T00:00:00Z\n", false},
				{"other notice under the id", strings.Replace(feb, "2026-02,", "2026-03,", 1), false},
				{"other capture time under the id", strings.Replace(feb, "2026-02-01T", "2026-02-02T", 1), false},
			} {
				for _, dry := range []bool{true, false} {
					rep, err := s.Import(ctx, strings.NewReader(header+tc.row), ImportOptions{DryRun: dry}, "importer")
					if err != nil {
						t.Fatal(err)
					}
					if tc.dup && (rep.Duplicates != 1 || rep.Rejected != 0) || !tc.dup && (rep.Duplicates != 0 || rep.Rejected != 1 || rep.Rejections[0].Code != "import.event_id_conflict") {
						t.Fatalf("%s (dry run %v): %+v", tc.name, dry, rep)
					}
				}
			}
			e, _ := s.Enrich(ctx, enrich.Query{CustomerID: "C-1", Purpose: p})
			if len(e.Consents) != 1 || e.Consents[0].Status != KindGranted || e.Consents[0].EventID != "crm-4712" {
				t.Fatalf("state %+v", e.Consents)
			}
		})
	}
}

// TestImportDryRunQuery: ?dry_run in any spelling that asks for a dry run is one (it used to
// be parsed with c.QueryBool: "?dry_run", "=yes", "=on" ran a real import); a value that is
// not a boolean is a 400, never a real import.
func TestImportDryRunQuery(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, testConfig(t, "sqlite"), Options{})
	cl := serveAdmin(t, s)
	body := "customer_id,purpose,status,notice_version,notice_hash,channel,captured_at\n" +
		"C-dry,marketing.communications.email,granted,2026-01," + noticeHash + ",web,2026-01-01T00:00:00Z\n"
	for _, tc := range []struct {
		query string
		dry   bool
		code  string
	}{
		{"dry_run", true, ""},
		{"dry_run=", true, ""},
		{"dry_run=yes", true, ""},
		{"dry_run=on", true, ""},
		{"dry_run=TRUE", true, ""},
		{"dry_run=1", true, ""},
		{"dry_run=maybe", false, "import.invalid_query"},
		{"dry_run=true&dry_run=false", false, "import.invalid_query"},
		{"dry_run=false", false, ""},
	} {
		var rep ImportReport
		err := cl.Do("POST", "/consents/import?"+tc.query, strings.NewReader(body), &rep)
		h, _ := s.History(ctx, "C-dry")
		switch {
		case tc.code != "":
			if CodeOf(err) != tc.code || len(h) != 0 {
				t.Fatalf("?%s: %v, %d events written", tc.query, err, len(h))
			}
		case err != nil:
			t.Fatalf("?%s: %v", tc.query, err)
		case tc.dry != rep.DryRun || tc.dry == (len(h) > 0):
			t.Fatalf("?%s: report %+v, %d events written", tc.query, rep, len(h))
		}
	}
}

// TestImportTooLarge: a body over the admin server's limit gets the documented 413
// import.too_large (it got "admin.error"). Sent on a raw connection, headers only: the server
// answers from the Content-Length and closes, and a client still writing the body may see
// the reset before the answer.
func TestImportTooLarge(t *testing.T) {
	s := openStore(t, testConfig(t, "sqlite"), Options{})
	cl := serveAdmin(t, s)
	for _, tc := range []struct{ path, code string }{
		{"/v1/consents/import?dry_run=true", "import.too_large"},
		{"/v1/consents", "request.too_large"},
	} {
		conn, err := net.Dial("tcp", strings.TrimPrefix(cl.BaseURL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: text/csv\r\nContent-Length: %d\r\n\r\n", tc.path, cl.Token, 5<<20)
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		var eb struct {
			Error struct{ Code string } `json:"error"`
		}
		err = json.NewDecoder(resp.Body).Decode(&eb)
		conn.Close()
		if err != nil || resp.StatusCode != http.StatusRequestEntityTooLarge || eb.Error.Code != tc.code {
			t.Fatalf("%s: 5 MiB body: %s %+v %v, want 413 %s", tc.path, resp.Status, eb, err, tc.code)
		}
	}
	// Under the limit, a large import goes through.
	body := "customer_id,purpose\n" + strings.Repeat("C-1,marketing.communications.email\n", 3<<20/35)
	var rep ImportReport
	if err := cl.Do("POST", "/consents/import?dry_run=true&default_status=granted", strings.NewReader(body), &rep); err != nil || rep.Rows == 0 {
		t.Fatalf("3 MiB import: %+v %v", rep.Rows, err)
	}
}
