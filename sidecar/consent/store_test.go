package consent

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/enrich"
	"github.com/consentry/consentry/sidecar/input"
)

// The same suite runs against every backend.
func TestStoreSuite(t *testing.T) {
	for _, backend := range testBackends {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			t.Run("ledger", func(t *testing.T) { testLedger(t, backend) })
			t.Run("validation", func(t *testing.T) { testValidation(t, backend) })
			t.Run("erasure", func(t *testing.T) { testErasure(t, backend) })
			t.Run("cases_agreements", func(t *testing.T) { testCasesAgreements(t, backend) })
			t.Run("reopen", func(t *testing.T) { testReopen(t, backend) })
			t.Run("expiry", func(t *testing.T) { testExpiry(t, backend) })
			t.Run("concurrent", func(t *testing.T) { testConcurrent(t, backend) })
			t.Run("append_only", func(t *testing.T) { testAppendOnly(t, backend) })
		})
	}
}

func testLedger(t *testing.T, backend string) {
	ctx := context.Background()
	s := openStore(t, testConfig(t, backend), Options{})
	const purpose = "marketing.communications.email"
	exp := time.Now().Add(365 * 24 * time.Hour).UTC().Truncate(time.Second)
	in := grantInput("cust-1", purpose)
	in.ExpiresAt = &exp
	in.EventID = "crm-evt-1"
	res, err := s.Grant(ctx, in, "alice")
	if err != nil {
		t.Fatalf("grant: %v", err)
	}
	if res.Current.Status != KindGranted || res.Event.Seq == 0 || res.Event.RecordedBy != "alice" || res.Current.NoticeHash != "sha256:"+noticeHash {
		t.Fatalf("unexpected result %+v", res)
	}
	// Visible to decisions at once, with proof.
	e, err := s.Enrich(ctx, enrich.Query{CustomerID: "cust-1", Purpose: purpose})
	if err != nil {
		t.Fatal(err)
	}
	if len(e.Consents) != 1 || e.Consents[0].Status != input.ConsentGranted || e.Consents[0].EventID != "crm-evt-1" ||
		e.Consents[0].NoticeVersion != "2026-01" || e.Consents[0].Channel != "web" || e.Consents[0].ExpiresAt == nil || !e.Consents[0].ExpiresAt.Equal(exp) {
		t.Fatalf("enrich after grant: %+v", e.Consents)
	}
	if e.Customer == nil || e.Customer.ID != "cust-1" || e.Customer.Erased {
		t.Fatalf("customer state after grant: %+v", e.Customer)
	}
	// A purpose the consent does not cover sees nothing; a sub-purpose is covered.
	if e, _ := s.Enrich(ctx, enrich.Query{CustomerID: "cust-1", Purpose: "analytics.reporting"}); len(e.Consents) != 0 {
		t.Fatalf("unrelated purpose got %+v", e.Consents)
	}
	if e, _ := s.Enrich(ctx, enrich.Query{CustomerID: "cust-1", Purpose: purpose + ".weekly"}); len(e.Consents) != 1 {
		t.Fatalf("sub-purpose not covered: %+v", e.Consents)
	}
	// Duplicate event id: refused with the existing event.
	_, err = s.Grant(ctx, in, "alice")
	var se *Error
	if !errors.As(err, &se) || se.Code != "consent.duplicate_event" || se.Status != 409 || se.Event == nil || se.Event.EventID != "crm-evt-1" {
		t.Fatalf("duplicate: %v", err)
	}
	// Withdraw.
	w, err := s.Withdraw(ctx, ConsentInput{CustomerID: "cust-1", Purpose: purpose, Channel: "email", Reason: "unsubscribe link"}, "bob")
	if err != nil {
		t.Fatalf("withdraw: %v", err)
	}
	if w.Current.Status != KindWithdrawn || w.Current.WithdrawnAt == nil || w.Current.GrantedAt == nil || w.Erasure != "" {
		t.Fatalf("withdraw result %+v", w)
	}
	e, _ = s.Enrich(ctx, enrich.Query{CustomerID: "cust-1", Purpose: purpose})
	if len(e.Consents) != 1 || e.Consents[0].Status != input.ConsentWithdrawn || e.Consents[0].WithdrawnAt == nil {
		t.Fatalf("enrich after withdraw: %+v", e.Consents)
	}
	h, err := s.History(ctx, "cust-1")
	if err != nil || len(h) != 2 || h[0].Kind != KindGranted || h[1].Kind != KindWithdrawn || h[0].Seq >= h[1].Seq || h[1].Reason != "unsubscribe link" {
		t.Fatalf("history %+v %v", h, err)
	}
	cv, err := s.Customer(ctx, "cust-1")
	if err != nil || len(cv.Consents) != 1 || cv.Consents[0].Status != KindWithdrawn {
		t.Fatalf("customer view %+v %v", cv, err)
	}
	// Unknown customer: no state, empty consents (policies deny customer.unknown).
	e, _ = s.Enrich(ctx, enrich.Query{CustomerID: "nobody"})
	if e.Customer != nil || e.Consents == nil || len(e.Consents) != 0 {
		t.Fatalf("unknown customer: %+v", e)
	}
	if _, err := s.Customer(ctx, "nobody"); CodeOf(err) != "customer.not_found" {
		t.Fatalf("unknown customer read: %v", err)
	}
}

func testValidation(t *testing.T, backend string) {
	ctx := context.Background()
	s := openStore(t, testConfig(t, backend), Options{})
	past := time.Now().Add(-time.Hour)
	future := time.Now().Add(time.Hour)
	tests := []struct {
		name string
		in   func() ConsentInput
		code string
	}{
		{"unknown purpose", func() ConsentInput { return grantInput("c1", "marketing.telepathy") }, "consent.unknown_purpose"},
		{"missing purpose", func() ConsentInput { return grantInput("c1", "") }, "consent.purpose_missing"},
		{"malformed customer", func() ConsentInput { return grantInput("../etc/passwd", "analytics.reporting") }, "invalid.customer_id"},
		{"empty customer", func() ConsentInput { return grantInput("", "analytics.reporting") }, "invalid.customer_id"},
		{"malformed event id", func() ConsentInput {
			in := grantInput("c1", "analytics.reporting")
			in.EventID = "has space"
			return in
		}, "invalid.event_id"},
		{"expiry in the past", func() ConsentInput {
			in := grantInput("c1", "analytics.reporting")
			in.ExpiresAt = &past
			return in
		}, "consent.expiry_in_past"},
		{"captured in the future", func() ConsentInput {
			in := grantInput("c1", "analytics.reporting")
			f := time.Now().Add(24 * time.Hour)
			in.CapturedAt = &f
			return in
		}, "consent.captured_in_future"},
		{"no proof", func() ConsentInput {
			return ConsentInput{CustomerID: "c1", Purpose: "analytics.reporting", Channel: "web"}
		}, "consent.proof_missing"},
		{"bad hash", func() ConsentInput {
			in := grantInput("c1", "analytics.reporting")
			in.NoticeHash = "md5:abc"
			return in
		}, "consent.invalid_notice_hash"},
		{"bad channel", func() ConsentInput {
			in := grantInput("c1", "analytics.reporting")
			in.Channel = "Web Form!"
			return in
		}, "consent.invalid_channel"},
		{"expiry before capture", func() ConsentInput {
			in := grantInput("c1", "analytics.reporting")
			c := future.Add(time.Hour)
			in.CapturedAt, in.ExpiresAt = &c, &future
			return in
		}, "consent.captured_in_future"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Grant(ctx, tc.in(), "alice")
			var se *Error
			if !errors.As(err, &se) || se.Code != tc.code || se.Status != 400 {
				t.Fatalf("got %v, want 400 %s", err, tc.code)
			}
		})
	}
	if _, err := s.Withdraw(ctx, ConsentInput{CustomerID: "c1", Purpose: "analytics.reporting", ExpiresAt: &future}, "a"); CodeOf(err) != "consent.invalid_withdrawal" {
		t.Fatalf("withdraw with expiry: %v", err)
	}
	// Nothing of the above reached the ledger.
	if h, _ := s.History(ctx, "c1"); len(h) != 0 {
		t.Fatalf("rejected input was recorded: %+v", h)
	}
}

type recordingEraser struct {
	mu    sync.Mutex
	calls []string
	fail  error
}

func (r *recordingEraser) Erase(_ context.Context, customerID, actor, reason string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, customerID+"|"+actor+"|"+reason)
	return r.fail
}

func testErasure(t *testing.T, backend string) {
	ctx := context.Background()
	cfg := testConfig(t, backend)
	cfg.EraseOnWithdrawal = true
	cfg.EraseOnWithdrawalPurposes = []string{"marketing"}
	er := &recordingEraser{}
	s := openStore(t, cfg, Options{Eraser: er})
	for _, p := range []string{"marketing.communications.email", "analytics.reporting"} {
		if _, err := s.Grant(ctx, grantInput("cust-e", p), "alice"); err != nil {
			t.Fatal(err)
		}
	}
	// Withdrawal of a purpose outside erase_on_withdrawal_purposes: no erasure.
	if r, err := s.Withdraw(ctx, ConsentInput{CustomerID: "cust-e", Purpose: "analytics.reporting"}, "alice"); err != nil || r.Erasure != "" {
		t.Fatalf("withdraw analytics: %+v %v", r, err)
	}
	// A failing eraser: withdrawal recorded, error says erasure failed, and the erasure
	// stays requested: every sweep retries it until it is done.
	er.fail = errors.New("vault sealed")
	r, err := s.Withdraw(ctx, ConsentInput{CustomerID: "cust-e", Purpose: "marketing.communications.email"}, "alice")
	if CodeOf(err) != "erasure.failed" || r.Erasure != "pending" {
		t.Fatalf("failing eraser: %+v %v", r, err)
	}
	// The customer is served nowhere from the request on, whatever happens to the keys.
	if e, _ := s.Enrich(ctx, enrich.Query{CustomerID: "cust-e"}); !e.Customer.Erased || e.Consents[1].Status != KindWithdrawn {
		t.Fatalf("after failed erasure: %+v", e)
	}
	if rr, err := s.RetryErasures(ctx); err != nil || rr != (ErasureResult{Pending: 1, Failed: 1}) {
		t.Fatalf("retry while the eraser fails: %+v %v", rr, err)
	}
	q, _ := s.erasureQueue()
	if p, err := q.PendingErasures(ctx); err != nil || len(p) != 1 || p[0].Attempts != 2 || !contains(p[0].LastError, "vault sealed") {
		t.Fatalf("pending erasure %+v %v", p, err)
	}
	er.fail = nil
	if rr, err := s.RetryErasures(ctx); err != nil || rr != (ErasureResult{Pending: 1, Erased: 1}) {
		t.Fatalf("retry: %+v %v", rr, err)
	}
	if p, err := q.PendingErasures(ctx); err != nil || len(p) != 0 {
		t.Fatalf("erasure still pending after it was done: %+v %v", p, err)
	}
	if len(er.calls) != 3 || !contains(er.calls[2], "cust-e|alice|consent withdrawn for marketing.communications.email") {
		t.Fatalf("eraser calls %q", er.calls)
	}
	// A withdrawal whose erasure succeeds at once reports it done.
	r, err = s.Withdraw(ctx, ConsentInput{CustomerID: "cust-e", Purpose: "marketing.communications.email"}, "alice")
	if err != nil || r.Erasure != "done" {
		t.Fatalf("withdraw with erasure: %+v %v", r, err)
	}
	e, _ := s.Enrich(ctx, enrich.Query{CustomerID: "cust-e"})
	if e.Customer == nil || !e.Customer.Erased || e.Customer.ErasedAt == nil {
		t.Fatalf("customer not erased in view: %+v", e.Customer)
	}
	first := *e.Customer.ErasedAt
	// After erasure: grants refused, withdrawals recorded, erased_at kept.
	if _, err := s.Grant(ctx, grantInput("cust-e", "analytics.reporting"), "alice"); CodeOf(err) != "customer.erased" {
		t.Fatalf("grant after erasure: %v", err)
	}
	if _, err := s.Withdraw(ctx, ConsentInput{CustomerID: "cust-e", Purpose: "analytics.reporting"}, "alice"); err != nil && CodeOf(err) != "erasure.failed" {
		t.Fatalf("withdraw after erasure: %v", err)
	}
	if c, err := s.MarkErased(ctx, "cust-e", time.Now().Add(time.Hour)); err != nil || !c.ErasedAt.Equal(first) {
		t.Fatalf("second MarkErased changed erased_at: %+v %v", c, err)
	}
	// MarkErased for a customer the store never saw creates its erased state.
	if c, err := s.MarkErased(ctx, "cust-unseen", time.Now()); err != nil || !c.Erased {
		t.Fatalf("MarkErased unknown: %+v %v", c, err)
	}
	if e, _ := s.Enrich(ctx, enrich.Query{CustomerID: "cust-unseen"}); e.Customer == nil || !e.Customer.Erased {
		t.Fatalf("unseen erased customer: %+v", e.Customer)
	}
	// Retention update never un-erases.
	ret := time.Now().Add(48 * time.Hour)
	if c, err := s.PutCustomer(ctx, Customer{ID: "cust-e", RetentionUntil: &ret}); err != nil || !c.Erased {
		t.Fatalf("put customer on erased: %+v %v", c, err)
	}
	// Erasure configured but no eraser: the withdrawal is recorded and the error is clear.
	s.SetEraser(nil)
	if _, err := s.Grant(ctx, grantInput("cust-f", "marketing.communications.email"), "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Withdraw(ctx, ConsentInput{CustomerID: "cust-f", Purpose: "marketing.communications.email"}, "a"); CodeOf(err) != "erasure.unavailable" {
		t.Fatalf("no eraser: %v", err)
	}
}

func testCasesAgreements(t *testing.T, backend string) {
	ctx := context.Background()
	s := openStore(t, testConfig(t, backend), Options{})
	c, err := s.PutCase(ctx, Case{ID: "CASE-1", CustomerID: "cust-1", Assignees: []string{"alice", "bob"}, Purpose: "essential.service.operations.support"})
	if err != nil || c.Status != CaseOpen {
		t.Fatalf("put case %+v %v", c, err)
	}
	from := time.Now().Add(-time.Hour).UTC().Truncate(time.Microsecond)
	until := time.Now().Add(24 * time.Hour).UTC().Truncate(time.Microsecond)
	if _, err := s.PutAgreement(ctx, Agreement{ProcessorID: "mailer", Purposes: []string{"marketing.communications.email"},
		Categories: []string{"user.contact.email", "user.name"}, ValidFrom: &from, ValidUntil: &until}); err != nil {
		t.Fatal(err)
	}
	ret := time.Now().Add(30 * 24 * time.Hour).UTC().Truncate(time.Microsecond)
	if _, err := s.PutCustomer(ctx, Customer{ID: "cust-1", RetentionUntil: &ret}); err != nil {
		t.Fatal(err)
	}
	e, err := s.Enrich(ctx, enrich.Query{CustomerID: "cust-1", CaseID: "CASE-1", ProcessorID: "mailer"})
	if err != nil {
		t.Fatal(err)
	}
	if e.Case == nil || e.Case.Status != "open" || len(e.Case.Assignees) != 2 || e.Case.CustomerID != "cust-1" {
		t.Fatalf("case %+v", e.Case)
	}
	if e.Agreement == nil || e.Agreement.ValidUntil == nil || !e.Agreement.ValidUntil.Equal(until) || e.Agreement.Categories[0] != "user.contact.email" {
		t.Fatalf("agreement %+v", e.Agreement)
	}
	if e.Customer == nil || e.Customer.RetentionUntil == nil || !e.Customer.RetentionUntil.Equal(ret) {
		t.Fatalf("customer %+v", e.Customer)
	}
	// Close the case: visible at once.
	c.Status = CaseClosed
	if _, err := s.PutCase(ctx, c); err != nil {
		t.Fatal(err)
	}
	if e, _ := s.Enrich(ctx, enrich.Query{CaseID: "CASE-1"}); e.Case.Status != "closed" {
		t.Fatalf("closed case %+v", e.Case)
	}
	// Batch: every id has an entry; unknown ones have a nil customer; case shared.
	b, err := s.EnrichBatch(ctx, enrich.Query{CaseID: "CASE-1"}, []string{"cust-1", "cust-x"})
	if err != nil || len(b) != 2 || b["cust-1"].Customer == nil || b["cust-x"].Customer != nil || b["cust-x"].Case == nil {
		t.Fatalf("batch %+v %v", b, err)
	}
	bad := []struct {
		name string
		err  error
		code string
	}{
		{"case status", func() error { _, err := s.PutCase(ctx, Case{ID: "C2", CustomerID: "c", Status: "pending"}); return err }(), "case.invalid_status"},
		{"case id", func() error { _, err := s.PutCase(ctx, Case{ID: "C 2", CustomerID: "c"}); return err }(), "invalid.case_id"},
		{"assignee", func() error {
			_, err := s.PutCase(ctx, Case{ID: "C2", CustomerID: "c", Assignees: []string{""}})
			return err
		}(), "invalid.assignee"},
		{"agreement unbounded", func() error {
			_, err := s.PutAgreement(ctx, Agreement{ProcessorID: "p", Purposes: []string{"third_party_sharing"}, Categories: []string{"user.name"}})
			return err
		}(), "agreement.unbounded"},
		{"agreement purpose", func() error {
			_, err := s.PutAgreement(ctx, Agreement{ProcessorID: "p", Purposes: []string{"spam"}, Categories: []string{"user.name"}, ValidUntil: &until})
			return err
		}(), "agreement.unknown_purpose"},
		{"agreement period", func() error {
			_, err := s.PutAgreement(ctx, Agreement{ProcessorID: "p", Purposes: []string{"third_party_sharing"}, Categories: []string{"user.name"}, ValidFrom: &until, ValidUntil: &from})
			return err
		}(), "agreement.invalid_period"},
		{"agreement category", func() error {
			_, err := s.PutAgreement(ctx, Agreement{ProcessorID: "p", Purposes: []string{"third_party_sharing"}, Categories: []string{"User Email"}, ValidUntil: &until})
			return err
		}(), "agreement.invalid_category"},
	}
	for _, tc := range bad {
		if CodeOf(tc.err) != tc.code || !IsClientError(tc.err) {
			t.Errorf("%s: got %v, want %s", tc.name, tc.err, tc.code)
		}
	}
	if _, err := s.Case(ctx, "nope"); CodeOf(err) != "case.not_found" {
		t.Fatalf("missing case: %v", err)
	}
	if _, err := s.Agreement(ctx, "nope"); CodeOf(err) != "agreement.not_found" {
		t.Fatalf("missing agreement: %v", err)
	}
}

// testReopen: everything acknowledged is there after a restart (view rebuilt from the DB).
func testReopen(t *testing.T, backend string) {
	ctx := context.Background()
	cfg := testConfig(t, backend)
	s, err := Open(ctx, cfg, Options{Logger: quietLogger(), NoBackground: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		if _, err := s.Grant(ctx, grantInput(fmt.Sprintf("cust-%02d", i), "analytics.reporting"), "a"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Withdraw(ctx, ConsentInput{CustomerID: "cust-07", Purpose: "analytics.reporting"}, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutCase(ctx, Case{ID: "K1", CustomerID: "cust-01", Assignees: []string{"alice"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openStore(t, sameDB(cfg), Options{})
	st := s2.Status().(map[string]any)["view"].(map[string]int64)
	if st["customers"] != 20 || st["consents"] != 20 || st["cases"] != 1 {
		t.Fatalf("reloaded view %+v", st)
	}
	e, _ := s2.Enrich(ctx, enrich.Query{CustomerID: "cust-07", CaseID: "K1"})
	if len(e.Consents) != 1 || e.Consents[0].Status != KindWithdrawn || e.Case == nil {
		t.Fatalf("after reopen %+v", e)
	}
	if v, err := s2.be.(*sqlStore).SchemaVersion(ctx); err != nil || v != latestVersion() {
		t.Fatalf("schema version %d %v", v, err)
	}
}

func testConcurrent(t *testing.T, backend string) {
	ctx := context.Background()
	s := openStore(t, testConfig(t, backend), Options{})
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				in := grantInput("cust-c", "analytics.reporting")
				if i%2 == 1 {
					_, err := s.Withdraw(ctx, ConsentInput{CustomerID: "cust-c", Purpose: "analytics.reporting"}, "w")
					errs <- err
					continue
				}
				_, err := s.Grant(ctx, in, "w")
				errs <- err
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	h, _ := s.History(ctx, "cust-c")
	cv, _ := s.Customer(ctx, "cust-c")
	e, _ := s.Enrich(ctx, enrich.Query{CustomerID: "cust-c"})
	// The current state is the ledger folded in order: the last event, unless it lost the
	// race to one captured after it (then it is recorded without effect).
	var want *Current
	for _, ev := range h {
		if next, changed := apply(want, ev); changed {
			want = &next
		}
	}
	if len(h) != 40 || want == nil || cv.Consents[0].EventID != want.EventID || e.Consents[0].EventID != want.EventID {
		t.Fatalf("current state is not the ledger's fold: history %d fold %+v db %s view %s", len(h), want, cv.Consents[0].EventID, e.Consents[0].EventID)
	}
}

func testAppendOnly(t *testing.T, backend string) {
	ctx := context.Background()
	s := openStore(t, testConfig(t, backend), Options{})
	if _, err := s.Grant(ctx, grantInput("cust-a", "analytics.reporting"), "a"); err != nil {
		t.Fatal(err)
	}
	db := s.be.(*sqlStore).db
	if _, err := db.ExecContext(ctx, `UPDATE consent_events SET kind = 'withdrawn'`); err == nil || !contains(err.Error(), "append-only") {
		t.Fatalf("update of the ledger allowed: %v", err)
	}
	if _, err := db.ExecContext(ctx, `DELETE FROM consent_events`); err == nil || !contains(err.Error(), "append-only") {
		t.Fatalf("delete from the ledger allowed: %v", err)
	}
	if backend != "postgres" {
		return // SQLite has no TRUNCATE: DELETE (refused above) is its only way to empty a table
	}
	// TRUNCATE fires no row trigger: the statement trigger (schema 8) refuses it, also on a
	// database that already had the trigger when the migration ran (idempotent).
	for round := 0; round < 2; round++ {
		if _, err := db.ExecContext(ctx, `TRUNCATE consent_events`); err == nil || !contains(err.Error(), "append-only") {
			t.Fatalf("round %d: truncate of the ledger allowed: %v", round, err)
		}
		if _, err := db.ExecContext(ctx, `DELETE FROM schema_migrations WHERE version >= 8`); err != nil {
			t.Fatal(err)
		}
		if err := s.be.(*sqlStore).migrate(ctx); err != nil {
			t.Fatalf("round %d: migration 8 again: %v", round, err)
		}
	}
	if h, err := s.History(ctx, "cust-a"); err != nil || len(h) != 1 {
		t.Fatalf("ledger after the refused truncates: %+v %v", h, err)
	}
}

// TestWriteDuringReloadSwap: a write that lands in the outgoing snapshot while a reload
// swaps in a snapshot read before the write is not lost from the view. The hooks hold
// the write between updating its snapshot and noting the change, and hold the reload
// after reading the database until then; the swap must not pass the write.
func TestWriteDuringReloadSwap(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, testConfig(t, "sqlite"), Options{NoBackground: true})
	const purpose = "marketing.communications.email"
	inPut, swapped := make(chan struct{}), make(chan struct{})
	loaded := make(chan struct{})
	var putOnce, loadOnce, swapOnce sync.Once
	s.view.hook = func(point string) {
		switch point {
		case "loaded":
			loadOnce.Do(func() {
				close(loaded)
				<-inPut
			})
		case "put":
			putOnce.Do(func() {
				close(inPut)
				select { // with the swap lock the swap cannot happen now: give up after a while
				case <-swapped:
				case <-time.After(300 * time.Millisecond):
				}
			})
		case "swapped":
			swapOnce.Do(func() { close(swapped) })
		}
	}
	reloaded := make(chan error, 1)
	go func() { reloaded <- s.Reload(ctx) }()
	<-loaded // the reload has read the database: it holds no grant for "late"
	if _, err := s.Grant(ctx, grantInput("late", purpose), "a"); err != nil {
		t.Fatal(err)
	}
	if err := <-reloaded; err != nil {
		t.Fatal(err)
	}
	e, _ := s.Enrich(ctx, enrich.Query{CustomerID: "late", Purpose: purpose})
	if len(e.Consents) != 1 || e.Consents[0].Status != KindGranted {
		t.Fatalf("acknowledged grant missing from the view after the reload: %+v", e.Consents)
	}
}

// TestReloadThatCannotReReadFailsClosed: a reload whose re-read of a change made while it
// ran fails leaves the view behind: the replica is unready at once and lookups fail closed
// after max_feed_gap, until a reload succeeds and serves the change.
func TestReloadThatCannotReReadFailsClosed(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t, "sqlite")
	cfg.Postgres.MaxFeedGap = 100 * time.Millisecond
	s := openStore(t, cfg, Options{NoBackground: true})
	const purpose = "marketing.communications.email"
	var once sync.Once
	s.view.hook = func(point string) {
		if point == "loaded" {
			once.Do(func() {
				if _, err := s.Grant(ctx, grantInput("during", purpose), "a"); err != nil {
					t.Error(err)
				}
				s.setRefreshFault(func(Change) error { return errors.New("connection reset") })
			})
		}
	}
	if err := s.Reload(ctx); err == nil {
		t.Fatal("reload reported success although a change could not be re-read")
	}
	s.view.hook = nil
	if err := s.Ready(ctx); err == nil {
		t.Fatal("ready with the view behind")
	}
	time.Sleep(150 * time.Millisecond)
	if e, _ := s.Enrich(ctx, enrich.Query{CustomerID: "during", Purpose: purpose}); len(e.Errors) == 0 {
		t.Fatalf("lookups served a view that may miss an acknowledged write: %+v", e)
	}
	s.setRefreshFault(nil)
	if err := s.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	e, _ := s.Enrich(ctx, enrich.Query{CustomerID: "during", Purpose: purpose})
	if len(e.Errors) != 0 || len(e.Consents) != 1 || e.Consents[0].Status != KindGranted || s.Ready(ctx) != nil {
		t.Fatalf("after a good reload: %+v ready %v", e, s.Ready(ctx))
	}
}

// TestErasureRequestsSurviveRetriesAndReplicas: a withdrawal recorded without its erasure
// request (a crash between the two) gets it when the client retries the withdrawal (a
// duplicate); and a request one replica has claimed is not run by another at the same time.
func TestErasureRequestsSurviveRetriesAndReplicas(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t, "postgres")
	cfg.EraseOnWithdrawal = true
	erA, erB := &recordingEraser{}, &recordingEraser{}
	a := openStore(t, cfg, Options{Eraser: erA})
	b := openStore(t, sameDB(cfg), Options{Eraser: erB})
	const p = "marketing.communications.email"
	if _, err := a.Grant(ctx, grantInput("cust-crash", p), "alice"); err != nil {
		t.Fatal(err)
	}
	// The withdrawal is recorded, and the process dies before the erasure request.
	in := ConsentInput{EventID: "wd-1", CustomerID: "cust-crash", Purpose: p}
	ev, err := a.event(KindWithdrawn, in, "alice", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.record(ctx, ev); err != nil {
		t.Fatal(err)
	}
	// The client retries: a duplicate, and the erasure happens.
	r, err := a.Withdraw(ctx, in, "alice")
	if CodeOf(err) != "consent.duplicate_event" || r.Erasure != "done" || len(erA.calls) != 1 {
		t.Fatalf("retried withdrawal: %+v %v, eraser calls %q", r, err, erA.calls)
	}
	// Retried once more, after the erasure: nothing runs again.
	if r, _ := a.Withdraw(ctx, in, "alice"); r.Erasure != "" || len(erA.calls) != 1 {
		t.Fatalf("a withdrawal retried after its erasure ran it again: %+v %q", r, erA.calls)
	}

	// Replica a holds a claim on a pending request: replica b's sweep leaves it alone.
	q, _ := a.erasureQueue()
	if err := q.RequestErasure(ctx, ErasureRequest{CustomerID: "cust-2", RequestedAt: time.Now(), Actor: "dpo", Reason: "r"}); err != nil {
		t.Fatal(err)
	}
	if ok, err := q.ClaimErasure(ctx, "cust-2", time.Minute); !ok || err != nil {
		t.Fatalf("claim: %v %v", ok, err)
	}
	if rr, err := b.RetryErasures(ctx); err != nil || rr.Claimed != 1 || rr.Erased != 0 || len(erB.calls) != 0 {
		t.Fatalf("replica b ran a claimed erasure: %+v %v %q", rr, err, erB.calls)
	}
	// Once the claim expires (the claimer died), the request is run.
	if _, err := b.be.(*sqlStore).db.ExecContext(ctx, `UPDATE erasure_requests SET claimed_until = 1`); err != nil {
		t.Fatal(err)
	}
	if rr, err := b.RetryErasures(ctx); err != nil || rr.Erased != 1 || len(erB.calls) != 1 {
		t.Fatalf("expired claim: %+v %v %q", rr, err, erB.calls)
	}
}
