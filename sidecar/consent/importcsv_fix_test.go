package consent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const mail = "marketing.communications.email"

// importedState is the current status of customer's consent to purpose in the database.
func importedState(t *testing.T, s *Store, customer, purpose string) Current {
	t.Helper()
	_, cur, _, err := s.be.Customer(context.Background(), customer)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cur {
		if c.Purpose == purpose {
			return c
		}
	}
	return Current{}
}

func mustImport(t *testing.T, s *Store, body string, opts ImportOptions) ImportReport {
	t.Helper()
	rep, err := s.Import(context.Background(), strings.NewReader(body), opts, "importer")
	if err != nil {
		t.Fatalf("import: %v", err)
	}
	return rep
}

// TestImportRepeatedWithdrawal: a row without event_id gets an id hashed from what it says,
// and two withdrawals on the same date (or, with captured_at=now, any two) say the same.
// The second was dropped as a duplicate and a consent granted in between stayed granted.
// It is applied again now; the same file once more is still only duplicates.
func TestImportRepeatedWithdrawal(t *testing.T) {
	for _, backend := range testBackends {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			clk := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
			s := openStore(t, testConfig(t, backend), Options{Now: clk.now})
			tick := func() { clk.t = clk.t.Add(time.Hour) }

			// Undated export, imported with captured_at=now.
			optOut := "customer_id,purpose,status\nC-now," + mail + ",withdrawn\n"
			now := ImportOptions{CapturedNow: true}
			if rep := mustImport(t, s, optOut, now); rep.Accepted != 1 {
				t.Fatalf("first opt-out: %+v", rep)
			}
			tick()
			if _, err := s.Grant(ctx, grantInput("C-now", mail), "api"); err != nil {
				t.Fatal(err)
			}
			tick()
			for _, dry := range []bool{true, false} {
				o := now
				o.DryRun = dry
				if rep := mustImport(t, s, optOut, o); rep.Accepted != 1 || rep.Duplicates != 0 || rep.Rejected != 0 {
					t.Fatalf("opt-out after a re-grant (dry run %v): %+v", dry, rep)
				}
			}
			if st := importedState(t, s, "C-now", mail).Status; st != KindWithdrawn {
				t.Fatalf("the repeated opt-out was dropped: %s", st)
			}
			tick()
			for i := 0; i < 2; i++ { // the same file again: nothing new
				if rep := mustImport(t, s, optOut, now); rep.Accepted != 0 || rep.Duplicates != 1 || rep.Rejected != 0 {
					t.Fatalf("re-run %d: %+v", i, rep)
				}
			}
			if h, _ := s.History(ctx, "C-now"); len(h) != 3 {
				t.Fatalf("history: %d events, want opt-out, grant, opt-out", len(h))
			}

			// A repeated grant is never re-applied: the customer's withdrawal since stands.
			optIn := "customer_id,purpose,status,notice_version,notice_hash,channel\nC-g," + mail + ",granted,2026-01," + noticeHash + ",web\n"
			mustImport(t, s, optIn, now)
			tick()
			if _, err := s.Withdraw(ctx, ConsentInput{CustomerID: "C-g", Purpose: mail}, "api"); err != nil {
				t.Fatal(err)
			}
			tick()
			if rep := mustImport(t, s, optIn, now); rep.Accepted != 0 || rep.Duplicates != 1 || importedState(t, s, "C-g", mail).Status != KindWithdrawn {
				t.Fatalf("repeated grant: %+v", rep)
			}

			// Date-only rows: opt-out, opt-in, opt-out on one day, one file each.
			const hdr = "customer_id,purpose,status,notice_version,notice_hash,channel,captured_at\n"
			out := hdr + "C-day," + mail + ",withdrawn,,,web,2026-01-05\n"
			in := hdr + "C-day," + mail + ",granted,2026-01," + noticeHash + ",web,2026-01-05\n"
			for i, body := range []string{out, in, out} {
				mustImport(t, s, body, ImportOptions{})
				if st := importedState(t, s, "C-day", mail).Status; st != KindWithdrawn {
					t.Fatalf("date-only file %d: %s", i, st)
				}
			}
			// All three in one file, and that file twice.
			body := hdr + strings.TrimPrefix(out, hdr) + strings.TrimPrefix(strings.ReplaceAll(in, "C-day", "C-day2"), hdr) + strings.TrimPrefix(out, hdr)
			body = strings.ReplaceAll(body, "C-day,", "C-day2,")
			if rep := mustImport(t, s, body, ImportOptions{}); rep.Accepted != 2 || rep.Duplicates != 1 || importedState(t, s, "C-day2", mail).Status != KindWithdrawn {
				t.Fatalf("one file: %+v", rep)
			}
			if rep := mustImport(t, s, body, ImportOptions{}); rep.Accepted != 0 || rep.Duplicates != 3 || rep.Rejected != 0 {
				t.Fatalf("one file again: %+v", rep)
			}
		})
	}
}

// TestImportStatusColumns: an opt-out flag column is read (true is a withdrawal); a file
// with no status column needs an explicit default; a blank status is rejected; the columns
// the import does not read are reported. Each used to import the opt-outs as grants.
func TestImportStatusColumns(t *testing.T) {
	const tail = ",purpose,captured_at\n"
	row := func(id, v string) string { return id + "," + v + "," + mail + ",2026-01-05T10:00:00Z\n" }
	defaults := ImportOptions{NoticeVersion: "2026-01", NoticeHash: noticeHash}
	for _, tc := range []struct {
		name, header string
		rows         []string // status cells, one row each
		opts         func(*ImportOptions)
		want         []string // per row: a status, or a rejection code
		code         string   // the import's refusal
		ignored      []string
	}{
		{name: "salesforce", header: "Id,HasOptedOutOfEmail,Email", rows: []string{"true", "false", "TRUE"}, want: []string{KindWithdrawn, KindGranted, KindWithdrawn}},
		{name: "unsubscribed", header: "customer_id,unsubscribed", rows: []string{"yes", "no"}, want: []string{KindWithdrawn, KindGranted}},
		{name: "opt_out", header: "customer_id,Opt-Out", rows: []string{"1", "0"}, want: []string{KindWithdrawn, KindGranted}},
		{name: "email_opt_out", header: "customer_id,Email Opt Out", rows: []string{"true"}, want: []string{KindWithdrawn}},
		{name: "do_not_email", header: "customer_id,DoNotEmail", rows: []string{"true", "false"}, want: []string{KindWithdrawn, KindGranted}},
		{name: "do not email spaced", header: "customer_id,Do Not Email", rows: []string{"Y"}, want: []string{KindWithdrawn}},
		{name: "opt-out value not boolean", header: "customer_id,opt_out", rows: []string{"maybe"}, want: []string{"import.invalid_status"}},
		{name: "blank opt-out cell", header: "customer_id,opt_out", rows: []string{""}, want: []string{"import.status_missing"}},
		{name: "blank status cell", header: "customer_id,status", rows: []string{"", "granted"}, want: []string{"import.status_missing", KindGranted}},
		{name: "no status column", header: "customer_id,Newsletter", rows: []string{"x"}, code: "import.no_status"},
		{name: "no status column, default granted", header: "customer_id,Newsletter", rows: []string{"x"},
			opts: func(o *ImportOptions) { o.DefaultStatus = KindGranted }, want: []string{KindGranted}, ignored: []string{"Newsletter"}},
		{name: "no status column, default withdrawn", header: "customer_id,Newsletter", rows: []string{"x"},
			opts: func(o *ImportOptions) { o.DefaultStatus = KindWithdrawn }, want: []string{KindWithdrawn}},
		{name: "default status is not a status", header: "customer_id,status", rows: []string{"yes"},
			opts: func(o *ImportOptions) { o.DefaultStatus = "yes" }, code: "import.invalid_query"},
		{name: "status and opt-out column", header: "customer_id,status,unsubscribed", rows: []string{"yes,yes"}, code: "import.ambiguous_column"},
		{name: "status and opt-out column, opt-out mapped", header: "customer_id,status,unsubscribed", rows: []string{"yes,true"},
			opts: func(o *ImportOptions) { o.Columns = map[string]string{"unsubscribed": "opt_out"} }, want: []string{KindWithdrawn}, ignored: []string{"status"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t, testConfig(t, "sqlite"), Options{})
			var b strings.Builder
			b.WriteString(tc.header + tail)
			for i, v := range tc.rows {
				cells := v
				if tc.name == "salesforce" {
					cells = v + ",a@example.com"
				}
				b.WriteString(row(fmt.Sprintf("C-%d", i), cells))
			}
			opts := defaults
			if tc.opts != nil {
				tc.opts(&opts)
			}
			rep, err := s.Import(context.Background(), strings.NewReader(b.String()), opts, "importer")
			if tc.code != "" {
				if CodeOf(err) != tc.code || !IsClientError(err) {
					t.Fatalf("got %+v %v, want the import refused as %s", rep, err, tc.code)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			rejected := map[int]string{}
			for _, rj := range rep.Rejections {
				rejected[rj.Line] = rj.Code
			}
			for i, want := range tc.want {
				got := rejected[i+2]
				if got == "" {
					got = importedState(t, s, fmt.Sprintf("C-%d", i), mail).Status
				}
				if got != want {
					t.Errorf("row %d (%q): %s, want %s", i, tc.rows[i], got, want)
				}
			}
			if tc.ignored != nil && fmt.Sprint(rep.IgnoredColumns) != fmt.Sprint(tc.ignored) {
				t.Errorf("ignored columns %q, want %q", rep.IgnoredColumns, tc.ignored)
			}
		})
	}
}

// TestImportMappedColumnWins: a mapped column is read, not an earlier column whose header
// merely is an alias of the same field (Salesforce's record Id before Contact ID); two alias
// columns without a map refuse the import, naming both.
func TestImportMappedColumnWins(t *testing.T) {
	body := "Id,Contact ID,purpose,status,captured_at\nREC-1,C-1," + mail + ",no,2026-01-05T10:00:00Z\n"
	for _, tc := range []struct {
		name    string
		columns map[string]string
		code    string
		ignored string
	}{
		{"mapped column wins", map[string]string{"Contact ID": "customer_id"}, "", "[Id]"},
		{"mapped by an alias name", map[string]string{"contact_id": "customer"}, "", "[Id]"},
		{"no map: ambiguous", nil, "import.ambiguous_column", ""},
		{"both mapped to one field", map[string]string{"Id": "customer_id", "Contact ID": "customer_id"}, "import.ambiguous_column", ""},
		{"mapped column not in the file", map[string]string{"Kontakt": "customer_id"}, "import.invalid_map", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t, testConfig(t, "sqlite"), Options{})
			rep, err := s.Import(context.Background(), strings.NewReader(body), ImportOptions{Columns: tc.columns}, "importer")
			if tc.code != "" {
				if CodeOf(err) != tc.code {
					t.Fatalf("got %v, want %s", err, tc.code)
				}
				if tc.code == "import.ambiguous_column" && (!strings.Contains(err.Error(), `"Id"`) || !strings.Contains(err.Error(), `"Contact ID"`)) {
					t.Fatalf("the error does not name both columns: %v", err)
				}
				return
			}
			if err != nil || rep.Accepted != 1 || fmt.Sprint(rep.IgnoredColumns) != tc.ignored {
				t.Fatalf("%+v %v", rep, err)
			}
			if st := importedState(t, s, "C-1", mail).Status; st != KindWithdrawn {
				t.Fatalf("not recorded under the mapped column's id: C-1 is %q", st)
			}
			if h, _ := s.History(context.Background(), "REC-1"); len(h) != 0 {
				t.Fatalf("recorded under the record id: %+v", h)
			}
		})
	}
}

// TestImportDateOnlyWithdrawal: a withdrawal dated by day only is dated at the end of that
// day (never after now), so it wins over a grant made later that day; a date-only grant
// keeps the start of its day. Zone-less times are read in the import's time zone.
func TestImportDateOnlyWithdrawal(t *testing.T) {
	const hdr = "customer_id,purpose,status,notice_version,notice_hash,channel,captured_at\n"
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name     string
		api      string // a grant or withdrawal made through the API before the import, at 2026-01-05T10:00Z
		row      string // status,captured_at
		tz       string
		status   string    // the state afterwards
		captured time.Time // the imported event's capture time (zero: the row is stale)
	}{
		{"withdrawal after a grant that day", KindGranted, "withdrawn,2026-01-05", "", KindWithdrawn, time.Date(2026, 1, 5, 23, 59, 59, 999e6, time.UTC)},
		{"grant after a withdrawal that day", KindWithdrawn, "granted,2026-01-05", "", KindWithdrawn, time.Time{}},
		{"withdrawal today: at most now", KindGranted, "withdrawn,2026-03-01", "", KindWithdrawn, now},
		{"withdrawal, day in a time zone", KindGranted, "withdrawn,2026-01-05", "Europe/Berlin", KindWithdrawn, time.Date(2026, 1, 5, 22, 59, 59, 999e6, time.UTC)},
		{"zone-less time in a time zone", KindWithdrawn, "granted,2026-01-05 12:00:00", "Europe/Berlin", KindGranted, time.Date(2026, 1, 5, 11, 0, 0, 0, time.UTC)},
		{"zone-less time is UTC by default", KindWithdrawn, "granted,2026-01-05 10:30:00", "", KindGranted, time.Date(2026, 1, 5, 10, 30, 0, 0, time.UTC)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			s := openStore(t, testConfig(t, "sqlite"), Options{Now: func() time.Time { return now }})
			at := time.Date(2026, 1, 5, 10, 0, 0, 0, time.UTC)
			in := grantInput("C-1", mail)
			in.CapturedAt = &at
			if _, err := s.Grant(ctx, in, "api"); err != nil {
				t.Fatal(err)
			}
			if tc.api == KindWithdrawn {
				if _, err := s.Withdraw(ctx, ConsentInput{CustomerID: "C-1", Purpose: mail, CapturedAt: &at}, "api"); err != nil {
					t.Fatal(err)
				}
			}
			status, date, _ := strings.Cut(tc.row, ",")
			nv := ""
			if status == KindGranted {
				nv = "2026-02," + noticeHash
			} else {
				nv = ","
			}
			rep := mustImport(t, s, hdr+"C-1,"+mail+","+status+","+nv+",web,"+date+"\n", ImportOptions{Timezone: tc.tz})
			if tc.captured.IsZero() {
				if rep.Rejected != 1 || rep.Rejections[0].Code != "import.stale_row" {
					t.Fatalf("%+v, want the row stale", rep)
				}
			} else {
				h, _ := s.History(ctx, "C-1")
				if rep.Accepted != 1 || !h[len(h)-1].CapturedAt.Equal(tc.captured) {
					t.Fatalf("%+v, captured %v, want %v", rep, h[len(h)-1].CapturedAt, tc.captured)
				}
			}
			if st := importedState(t, s, "C-1", mail).Status; st != tc.status {
				t.Fatalf("state %s, want %s", st, tc.status)
			}
		})
	}
	s := openStore(t, testConfig(t, "sqlite"), Options{})
	for _, tz := range []string{"Mars/Olympus", "Local"} {
		if _, err := s.Import(context.Background(), strings.NewReader(hdr), ImportOptions{Timezone: tz}, "importer"); CodeOf(err) != "import.invalid_query" {
			t.Fatalf("timezone %s: %v", tz, err)
		}
	}
}

// TestImportUndecodableCells: a cell that is not UTF-8 or holds a NUL rejects its row before
// anything is written (PostgreSQL refused it mid-import: the batches before it committed, the
// import answered 500 without a report).
func TestImportUndecodableCells(t *testing.T) {
	for _, backend := range testBackends {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			s := openStore(t, testConfig(t, backend), Options{})
			var b strings.Builder
			b.WriteString("customer_id,purpose,status,captured_at,reason,Notiz\n")
			for i := 1; i <= 2500; i++ {
				reason, note := "", "ok"
				switch i {
				case 1501:
					reason = "caf\x96" // Windows-1252
				case 1600:
					note = "a\x00b" // NUL in a column the import does not read
				case 1700:
					note = "\xff\xfe"
				}
				fmt.Fprintf(&b, "K-%d,%s,withdrawn,2026-01-05T10:00:00Z,%s,%s\n", i, mail, reason, note)
			}
			rep := mustImport(t, s, b.String(), ImportOptions{})
			if rep.Rows != 2500 || rep.Accepted != 2497 || rep.Rejected != 3 {
				t.Fatalf("report %+v", rep.Rows)
			}
			for i, rj := range rep.Rejections {
				if rj.Code != "import.invalid_encoding" || rj.Line != []int{1502, 1601, 1701}[i] {
					t.Fatalf("rejection %+v", rj)
				}
			}
			if _, err := s.Import(context.Background(), strings.NewReader("customer_id,purpose,st\xe4tus\n"), ImportOptions{}, "importer"); CodeOf(err) != "import.invalid_encoding" {
				t.Fatalf("header: %v", err)
			}
		})
	}
}

// TestImportCSVShape: a byte order mark before a quoted header is not a bare quote; a quote
// never closed refuses the file instead of swallowing the rows after it.
func TestImportCSVShape(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, testConfig(t, "sqlite"), Options{})
	bom := "\ufeff\"customer_id\",\"purpose\",\"status\",\"captured_at\"\nC-bom," + mail + ",no,2026-01-05T10:00:00Z\n"
	if rep := mustImport(t, s, bom, ImportOptions{}); rep.Accepted != 1 {
		t.Fatalf("BOM + quoted header: %+v", rep)
	}
	unclosed := "customer_id,purpose,status,captured_at\n" +
		"\"C-1," + mail + ",no,2026-01-05T10:00:00Z\n" +
		"C-2," + mail + ",no,2026-01-05T10:00:00Z\n" +
		"C-3," + mail + ",no,2026-01-05T10:00:00Z\n"
	_, err := s.Import(ctx, strings.NewReader(unclosed), ImportOptions{}, "importer")
	if CodeOf(err) != "import.invalid_csv" || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("unclosed quote: %v", err)
	}
	// A quote error within one line rejects that row only; every row is accounted for.
	bare := "customer_id,purpose,status,captured_at\nC-4,ab\"c,no,2026-01-05T10:00:00Z\nC-5," + mail + ",no,2026-01-05T10:00:00Z\n"
	if rep := mustImport(t, s, bare, ImportOptions{}); rep.Rows != 2 || rep.Rejected != 1 || rep.Accepted != 1 {
		t.Fatalf("bare quote: %+v", rep)
	}

	cl := serveAdmin(t, s)
	// A file (it can seek) is checked before any part is sent.
	old := importChunkBytes
	importChunkBytes = 100
	defer func() { importChunkBytes = old }()
	long := "customer_id,purpose,status,captured_at\n" + strings.Repeat("C-6,"+mail+",no,2026-01-05T10:00:00Z\n", 10) + strings.TrimPrefix(unclosed, "customer_id,purpose,status,captured_at\n")
	rep, err := cl.Import(strings.NewReader(long), "")
	if CodeOf(err) != "import.invalid_csv" || !strings.Contains(err.Error(), "line 12") || rep.Rows != 0 {
		t.Fatalf("client, file: %+v %v", rep, err)
	}
	if h, _ := s.History(ctx, "C-6"); len(h) != 0 {
		t.Fatal("a part was imported before the broken quote was found")
	}
	// A stream is refused at the broken quote: what came before it is imported, and said so.
	rep, err = cl.Import(io.MultiReader(strings.NewReader(long)), "")
	var f *ImportFailure
	if !errors.As(err, &f) || CodeOf(err) != "import.invalid_csv" || !strings.Contains(err.Error(), "line 12") || rep.Rows != 10 || f.Done != 11 || f.Last != 0 {
		t.Fatalf("client, stream: %+v %v", rep, err)
	}
}

// failingBackend fails Append from its failAt-th call on (a database that goes away).
type failingBackend struct {
	Backend
	calls, failAt int32
}

func (b *failingBackend) Append(ctx context.Context, evs []Event) ([]AppendResult, error) {
	if atomic.AddInt32(&b.calls, 1) >= b.failAt {
		return nil, errors.New("connection reset by peer")
	}
	return b.Backend.Append(ctx, evs)
}

// TestImportFailsPartWay: when the database fails mid-import, the report so far comes
// back with the error - through the API too - naming the lines that were written.
func TestImportFailsPartWay(t *testing.T) {
	s := openStore(t, testConfig(t, "sqlite"), Options{})
	s.be = &failingBackend{Backend: s.be, failAt: 2}
	var b strings.Builder
	b.WriteString("customer_id,purpose,status,captured_at\n")
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := 0; i < 2500; i++ {
		fmt.Fprintf(&b, "K-%d,%s,no,%s\n", i, mail, base.Add(time.Duration(i)*time.Minute).Format(time.RFC3339))
	}
	b.WriteString("bad id!," + mail + ",no,2026-01-05T10:00:00Z\n")
	rep, err := s.Import(context.Background(), strings.NewReader(b.String()), ImportOptions{}, "importer")
	if err == nil || IsClientError(err) || rep.Accepted != 1000 || rep.Rejected != 1 || len(rep.CommittedLines) != 1000 ||
		rep.CommittedLines[0] != 2 || rep.CommittedLines[999] != 1001 {
		t.Fatalf("store: %+v %v", rep.CommittedLines, err)
	}

	s2 := openStore(t, testConfig(t, "sqlite"), Options{})
	cl := serveAdmin(t, s2)
	old := importChunkBytes
	importChunkBytes = 80 << 10 // about 1300 rows a part: two batches each
	defer func() { importChunkBytes = old }()
	s2.be = &failingBackend{Backend: s2.be, failAt: 4} // the second part's second batch
	total, err := cl.Import(io.MultiReader(strings.NewReader(b.String())), "")
	var f *ImportFailure
	if !errors.As(err, &f) || CodeOf(err) != "state.error" || !f.Known {
		t.Fatalf("client: %v", err)
	}
	first := f.Done - 1 // rows of the first part, all recorded
	if total.Accepted != first+1000 || len(f.Committed) != 1000 || f.Committed[0] != f.Done+1 || f.Committed[999] != f.Done+1000 ||
		len(total.CommittedLines) != 1000 || !strings.Contains(f.Summary(), fmt.Sprintf("these were written: %d-%d", f.Done+1, f.Done+1000)) {
		t.Fatalf("client: %+v committed %d (%d...), done %d, last %d\n%s", total.Accepted, len(f.Committed), f.Committed[0], f.Done, f.Last, f.Summary())
	}
}
