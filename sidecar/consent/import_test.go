package consent

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/enrich"
)

const crmExport = `Contact ID,Consent Purpose,Opt-In,Policy Version,Policy Hash,Source,Consent Date,Expiry Date,Retention
C-001,marketing.communications.email,yes,2025-06,` + noticeHash + `,web,2025-06-01,2099-01-01,2030-01-01
C-002,marketing.communications.email,no,2025-06,` + noticeHash + `,phone,2025-07-01,,
C-003,marketing.telepathy,yes,2025-06,` + noticeHash + `,web,2025-06-01,,
C-004,analytics.reporting,yes,2025-06,` + noticeHash + `,web,2025-06-01,2020-01-01,
bad id!,analytics.reporting,yes,2025-06,` + noticeHash + `,web,2025-06-01,,
C-005,analytics.reporting,maybe,2025-06,` + noticeHash + `,web,2025-06-01,,
C-006,analytics.reporting,yes,2025-06,` + noticeHash + `,web,yesterday,,
C-001,marketing.communications.email,no,2025-06,` + noticeHash + `,web,2025-05-01,,
C-007,analytics.reporting,yes,,,web,2025-06-01,,
C-ERASED,analytics.reporting,yes,2025-06,` + noticeHash + `,web,2025-06-01,,
`

func TestImport(t *testing.T) {
	for _, backend := range testBackends {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			s := openStore(t, testConfig(t, backend), Options{})
			if _, err := s.MarkErased(ctx, "C-ERASED", time.Now()); err != nil {
				t.Fatal(err)
			}
			wantRejected := map[int]string{4: "consent.unknown_purpose", 5: "consent.expiry_in_past", 6: "invalid.customer_id",
				7: "import.invalid_status", 8: "import.invalid_captured_at", 10: "consent.proof_missing", 11: "customer.erased"}
			check := func(rep ImportReport, dry bool) {
				t.Helper()
				if rep.DryRun != dry || rep.Rows != 10 || rep.Accepted != 3 || rep.Rejected != len(wantRejected) {
					t.Fatalf("report %+v", rep)
				}
				for _, r := range rep.Rejections {
					if wantRejected[r.Line] != r.Code {
						t.Errorf("line %d: got %s (%s), want %s", r.Line, r.Code, r.Reason, wantRejected[r.Line])
					}
				}
			}
			rep, err := s.Import(ctx, strings.NewReader(crmExport), ImportOptions{DryRun: true}, "importer")
			if err != nil {
				t.Fatal(err)
			}
			check(rep, true)
			if h, _ := s.History(ctx, "C-001"); len(h) != 0 {
				t.Fatalf("dry run wrote %+v", h)
			}
			rep, err = s.Import(ctx, strings.NewReader(crmExport), ImportOptions{}, "importer")
			if err != nil {
				t.Fatal(err)
			}
			check(rep, false)
			if rep.Customers != 1 {
				t.Fatalf("retention rows: %+v", rep)
			}
			// C-001's rows are applied in captured_at order: the May opt-out, then the June opt-in.
			e, _ := s.Enrich(ctx, enrich.Query{CustomerID: "C-001"})
			if len(e.Consents) != 1 || e.Consents[0].Status != KindGranted || e.Customer.RetentionUntil == nil || e.Consents[0].Channel != "web" {
				t.Fatalf("C-001 after import: %+v %+v", e.Consents, e.Customer)
			}
			if e, _ := s.Enrich(ctx, enrich.Query{CustomerID: "C-002"}); e.Consents[0].Status != KindWithdrawn || e.Consents[0].Channel != "phone" {
				t.Fatalf("C-002 after import: %+v", e.Consents)
			}
			// Importing the same export again records nothing new.
			rep, err = s.Import(ctx, strings.NewReader(crmExport), ImportOptions{}, "importer")
			if err != nil || rep.Accepted != 0 || rep.Duplicates != 3 {
				t.Fatalf("re-import %+v %v", rep, err)
			}
			// Column mapping and defaults.
			rep, err = s.Import(ctx, strings.NewReader("Kundennummer,x\nK-1,1\n"),
				ImportOptions{Columns: map[string]string{"Kundennummer": "customer_id"}, Purpose: "analytics.reporting", NoticeVersion: "v1", NoticeHash: noticeHash, CapturedNow: true, DefaultStatus: KindGranted}, "importer")
			if err != nil || rep.Accepted != 1 {
				t.Fatalf("mapped import %+v %v", rep, err)
			}
			if _, err := s.Import(ctx, strings.NewReader("name,email\na,b\n"), ImportOptions{}, "x"); CodeOf(err) != "import.no_customer_column" {
				t.Fatalf("no customer column: %v", err)
			}
			if _, err := s.Import(ctx, strings.NewReader("id\nx\n"), ImportOptions{}, "x"); CodeOf(err) != "import.no_purpose" {
				t.Fatalf("no purpose: %v", err)
			}
			if _, err := s.Import(ctx, strings.NewReader("id,purpose\n"), ImportOptions{Columns: map[string]string{"id": "nonsense"}}, "x"); CodeOf(err) != "import.invalid_map" {
				t.Fatalf("bad map: %v", err)
			}
		})
	}
}

// FuzzImport: no CSV input makes the importer panic or record an invalid event.
func FuzzImport(f *testing.F) {
	f.Add(crmExport)
	f.Add("id,purpose,status\n\"x,analytics.reporting,yes\n")
	f.Add("\ufeffcustomer_id,purpose\nA,analytics.reporting\nA,analytics.reporting,extra,fields\n")
	s := openStore(f, testConfig(f, "sqlite"), Options{})
	f.Fuzz(func(t *testing.T, data string) {
		rep, err := s.Import(context.Background(), strings.NewReader(data), ImportOptions{DryRun: true, NoticeVersion: "v1", NoticeHash: noticeHash, DefaultStatus: KindGranted}, "fuzz")
		if err != nil {
			if !IsClientError(err) {
				t.Fatalf("non-client error: %v", err)
			}
			return
		}
		if rep.Accepted+rep.Rejected+rep.Duplicates != rep.Rows {
			t.Fatalf("rows do not add up: %+v", rep)
		}
	})
}

// TestClientImportChunks: a large export goes as several requests; the merged report's
// line numbers refer to the whole file (also across a quoted multi-line field).
func TestClientImportChunks(t *testing.T) {
	old := importChunkBytes
	importChunkBytes = 300
	defer func() { importChunkBytes = old }()
	s := openStore(t, testConfig(t, "sqlite"), Options{})
	cl := serveAdmin(t, s)
	var b strings.Builder
	b.WriteString("customer_id,purpose,reason\n")
	for i := 0; i < 30; i++ {
		switch i {
		case 10:
			b.WriteString("K-10,analytics.reporting,\"two\nlines\"\n")
		case 20:
			b.WriteString("K-20,marketing.telepathy,\n") // rejected
		default:
			fmt.Fprintf(&b, "K-%d,analytics.reporting,\n", i)
		}
	}
	rep, err := cl.Import(strings.NewReader(b.String()), "captured_at=now&default_status=granted&notice_version=v1&notice_hash="+noticeHash)
	if err != nil {
		t.Fatal(err)
	}
	// Line of K-20: header (1) + 20 rows before it + 1 extra physical line of K-10.
	if rep.Rows != 30 || rep.Accepted != 29 || rep.Rejected != 1 || rep.Rejections[0].Line != 23 || rep.Rejections[0].CustomerID != "K-20" {
		t.Fatalf("merged report %+v", rep)
	}
	if e, _ := s.Enrich(context.Background(), enrich.Query{CustomerID: "K-29"}); len(e.Consents) != 1 {
		t.Fatal("last chunk not imported")
	}
}

// TestImportOlderRowDoesNotUndoAWithdrawal: re-importing a CRM export taken before the customer
// withdrew (after a restore, say) must not grant the consent again, however its date is spelled.
func TestImportOlderRowDoesNotUndoAWithdrawal(t *testing.T) {
	for _, backend := range testBackends {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			s := openStore(t, testConfig(t, backend), Options{})
			if _, err := s.Grant(ctx, grantInput("C-W", "marketing.communications.email"), "api"); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Withdraw(ctx, ConsentInput{CustomerID: "C-W", Purpose: "marketing.communications.email"}, "api"); err != nil {
				t.Fatal(err)
			}
			for _, date := range []string{"2025-01-01", "2025-01-01T00:00:00Z"} {
				csv := "customer_id,purpose,status,notice_version,notice_hash,channel,captured_at\n" +
					"C-W,marketing.communications.email,granted,2025-01," + noticeHash + ",web," + date + "\n"
				rep, err := s.Import(ctx, strings.NewReader(csv), ImportOptions{}, "importer")
				if err != nil {
					t.Fatal(err)
				}
				if rep.Accepted != 0 || len(rep.Rejections) != 1 || rep.Rejections[0].Code != "import.stale_row" {
					t.Fatalf("%s: %+v", date, rep)
				}
			}
			e, _ := s.Enrich(ctx, enrich.Query{CustomerID: "C-W", Purpose: "marketing.communications.email"})
			if len(e.Consents) != 1 || e.Consents[0].Status != KindWithdrawn {
				t.Fatalf("consent after the stale import: %+v", e.Consents)
			}
			// A row newer than the withdrawal is a new grant.
			csv := "customer_id,purpose,status,notice_version,notice_hash,channel,captured_at\n" +
				"C-W,marketing.communications.email,granted,2026-01," + noticeHash + ",web," + time.Now().Add(time.Minute).UTC().Format(time.RFC3339) + "\n"
			if rep, err := s.Import(ctx, strings.NewReader(csv), ImportOptions{}, "importer"); err != nil || rep.Accepted != 1 {
				t.Fatalf("newer row: %+v %v", rep, err)
			}
		})
	}
}
