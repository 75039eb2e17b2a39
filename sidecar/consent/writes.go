package consent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"
)

// ConsentInput is a consent event as clients send it (admin API, CLI, CSV import).
type ConsentInput struct {
	// EventID is optional; a client-chosen id makes retries detectable (a second event with
	// the same id is refused as a duplicate).
	EventID       string     `json:"event_id,omitempty"`
	CustomerID    string     `json:"customer_id"`
	Purpose       string     `json:"purpose"`
	NoticeVersion string     `json:"notice_version,omitempty"`
	NoticeHash    string     `json:"notice_hash,omitempty"`
	Channel       string     `json:"channel,omitempty"`
	CapturedAt    *time.Time `json:"captured_at,omitempty"`
	CapturedBy    string     `json:"captured_by,omitempty"`
	ExpiresAt     *time.Time `json:"expires_at,omitempty"`
	Reason        string     `json:"reason,omitempty"`
}

// Result is the outcome of a recorded consent event.
type Result struct {
	Event   Event   `json:"event"`
	Current Current `json:"current"`
	// Erasure is set when the withdrawal triggered erasure: "done"; "pending" when it failed
	// and the sweep retries it (every state.expiry.interval) until done; "failed" when not
	// even the request could be recorded.
	Erasure string `json:"erasure,omitempty"`
	// NoEffect: the event is in the ledger (the proof it was received) but left the current
	// state as it was: it was captured before the state's latest grant or withdrawal (a
	// delayed webhook, a back-dated captured_at), so the customer's later choice stands.
	// Current is that unchanged state; Note says why. Such a withdrawal triggers no erasure.
	NoEffect bool   `json:"no_effect,omitempty"`
	Note     string `json:"note,omitempty"`
}

// staleCode names a recorded event that changed nothing because it is older than the
// current state (Result.Note, the import's rejection, the metrics' result label).
const staleCode = "consent.stale_event"

func bad(code, format string, args ...any) *Error {
	return errf(http.StatusBadRequest, code, format, args...)
}

// event validates in and builds the ledger event of kind.
func (s *Store) event(kind string, in ConsentInput, actor string, now time.Time) (Event, error) {
	if err := validID("customer_id", in.CustomerID); err != nil {
		return Event{}, err
	}
	ev := Event{Kind: kind, EventID: in.EventID, CustomerID: in.CustomerID, Purpose: in.Purpose, Channel: in.Channel,
		CapturedBy: in.CapturedBy, Reason: in.Reason, RecordedAt: now.UTC(), RecordedBy: actor}
	if ev.EventID == "" {
		ev.EventID = NewEventID()
	} else if err := validID("event_id", ev.EventID); err != nil {
		return Event{}, err
	}
	if in.Purpose == "" {
		return Event{}, bad("consent.purpose_missing", "purpose is required")
	}
	if !s.purposes[in.Purpose] {
		return Event{}, bad("consent.unknown_purpose", "purpose %q is not in the catalogue (known: %s)", truncate(in.Purpose), strings.Join(s.Purposes(), ", "))
	}
	if ev.Channel != "" && !channelRe.MatchString(ev.Channel) {
		return Event{}, bad("consent.invalid_channel", "channel %q must be a short lowercase word (web, email, phone, paper, import, ...)", truncate(ev.Channel))
	}
	if ev.CapturedBy == "" {
		ev.CapturedBy = actor
	}
	if len(ev.CapturedBy) > 256 || len(ev.Reason) > 2000 {
		return Event{}, bad("consent.too_long", "captured_by (256) or reason (2000 characters) too long")
	}
	for _, f := range []struct{ name, v string }{{"captured_by", ev.CapturedBy}, {"reason", ev.Reason}, {"the admin actor's name", actor}} {
		if err := validText(f.name, f.v); err != nil {
			return Event{}, err
		}
	}
	if err := checkTime("captured_at", in.CapturedAt); err != nil {
		return Event{}, err
	}
	if err := checkTime("expires_at", in.ExpiresAt); err != nil {
		return Event{}, err
	}
	ev.CapturedAt = now.UTC()
	if in.CapturedAt != nil {
		if in.CapturedAt.After(now.Add(allowedClockSkew)) {
			return Event{}, bad("consent.captured_in_future", "captured_at %s is in the future", in.CapturedAt.Format(time.RFC3339))
		}
		ev.CapturedAt = in.CapturedAt.UTC()
	} else {
		// Stamped on arrival: a withdrawal must never lose to a state another server's clock
		// (ahead of this one) dated, nor to this server's own before its clock stepped back.
		// A grant is not re-dated: one that loses fails closed (and an explicit captured_at
		// keeps its meaning for both).
		ev.serverStamped = kind == KindWithdrawn
	}
	switch kind {
	case KindGranted:
		if in.NoticeVersion == "" || in.NoticeHash == "" || in.Channel == "" {
			return Event{}, bad("consent.proof_missing", "a grant needs its proof: notice_version, notice_hash and channel")
		}
		if !versionRe.MatchString(in.NoticeVersion) {
			return Event{}, bad("consent.invalid_notice_version", "notice_version %q is malformed", truncate(in.NoticeVersion))
		}
		if !hashRe.MatchString(strings.ToLower(in.NoticeHash)) {
			return Event{}, bad("consent.invalid_notice_hash", "notice_hash must be the notice's SHA-256 (64 hex digits, optionally prefixed sha256:)")
		}
		ev.NoticeVersion, ev.NoticeHash = in.NoticeVersion, normalizeHash(in.NoticeHash)
		if in.ExpiresAt != nil {
			if !in.ExpiresAt.After(now) {
				return Event{}, bad("consent.expiry_in_past", "expires_at %s is not in the future", in.ExpiresAt.Format(time.RFC3339))
			}
			if !in.ExpiresAt.After(ev.CapturedAt) {
				return Event{}, bad("consent.expiry_before_capture", "expires_at is before captured_at")
			}
			t := in.ExpiresAt.UTC()
			ev.ExpiresAt = &t
		}
	case KindWithdrawn:
		if in.ExpiresAt != nil || in.NoticeHash != "" || in.NoticeVersion != "" {
			return Event{}, bad("consent.invalid_withdrawal", "a withdrawal carries no notice or expiry")
		}
	}
	return ev, nil
}

// Grant records a consent grant.
func (s *Store) Grant(ctx context.Context, in ConsentInput, actor string) (Result, error) {
	ev, err := s.event(KindGranted, in, actor, s.now())
	if err != nil {
		return Result{}, err
	}
	return s.record(ctx, ev)
}

// Withdraw records a withdrawal (accepted for erased customers too) and, when configured,
// triggers erasure. When erasure fails the withdrawal stays recorded and the error says so.
// A retried withdrawal (same event id: a duplicate) still makes sure its erasure was
// requested: a crash or a failure between recording the withdrawal and the request must not
// lose the erasure.
func (s *Store) Withdraw(ctx context.Context, in ConsentInput, actor string) (Result, error) {
	ev, err := s.event(KindWithdrawn, in, actor, s.now())
	if err != nil {
		return Result{}, err
	}
	res, err := s.record(ctx, ev)
	var dup *Error
	if errors.As(err, &dup) && dup.Code == "consent.duplicate_event" && dup.Event != nil && dup.Event.Kind == KindWithdrawn &&
		dup.Event.CustomerID == ev.CustomerID && s.erasesOn(dup.Event.Purpose) {
		cust, cur, _, cerr := s.be.Customer(ctx, ev.CustomerID)
		// Not for a withdrawal older than the current state (recorded without effect, or
		// overtaken since by a later grant): the customer's later choice stands.
		if cerr == nil && (cust == nil || !cust.Erased) && !supersededIn(cur, *dup.Event) {
			res.Erasure, _ = s.withdrawalErasure(ctx, *dup.Event)
		}
		return res, err
	}
	if err != nil || res.NoEffect || !s.erasesOn(ev.Purpose) {
		return res, err
	}
	res.Erasure, err = s.withdrawalErasure(ctx, res.Event)
	return res, err
}

// withdrawalErasure requests and runs the erasure a withdrawal asks for; it returns the
// result's erasure field ("done", "pending" or "failed") and the error to answer.
func (s *Store) withdrawalErasure(ctx context.Context, ev Event) (string, error) {
	q, err := s.erasureQueue()
	if err != nil {
		return "failed", err
	}
	req := ErasureRequest{CustomerID: ev.CustomerID, RequestedAt: s.now().UTC(), Actor: ev.RecordedBy,
		Reason: fmt.Sprintf("consent withdrawn for %s (event %s)", ev.Purpose, ev.EventID)}
	err = s.requestErasure(ctx, q, req, nil)
	switch {
	case err == nil:
		return "done", nil
	case errors.Is(err, ErrErasureInProgress):
		return "pending", nil // another replica is running it now
	case CodeOf(err) == "erasure.unavailable" && errors.Is(err, errNoRequest):
		return "failed", errf(http.StatusServiceUnavailable, "erasure.unavailable", "withdrawal recorded, but %v", err)
	}
	s.log.Error("erasure after withdrawal failed; retried by the sweep", "customer_id", ev.CustomerID, "event_id", ev.EventID, "err", err)
	if CodeOf(err) == "erasure.unavailable" {
		return "pending", errf(http.StatusServiceUnavailable, "erasure.unavailable", "withdrawal recorded; erase_on_withdrawal is on and no eraser is configured: the erasure stays requested until one is")
	}
	return "pending", errf(http.StatusBadGateway, "erasure.failed", "withdrawal recorded; erasure failed and will be retried every %s until done: %v", s.cfg.Expiry.Interval, err)
}

func (s *Store) erasesOn(purpose string) bool {
	if !s.cfg.EraseOnWithdrawal {
		return false
	}
	if len(s.cfg.EraseOnWithdrawalPurposes) == 0 {
		return true
	}
	for _, p := range s.cfg.EraseOnWithdrawalPurposes {
		// A withdrawal of the purpose, of a narrower one, or of a broader one: withdrawing
		// all "marketing" withdraws "marketing.communications.email" too (the policy takes
		// the grant back: util.takes_back), so its erasure runs.
		if covers(p, purpose) || covers(purpose, p) {
			return true
		}
	}
	return false
}

func (s *Store) record(ctx context.Context, ev Event) (Result, error) {
	res, err := s.be.Append(ctx, []Event{ev})
	if err != nil {
		return Result{}, fmt.Errorf("record consent: %w", err)
	}
	r := res[0]
	if r.Err == nil && r.NoEffect {
		s.metrics.writes.WithLabelValues(ev.Kind, staleCode).Inc()
		latest, _ := superseded(&r.Current, r.Event)
		note := fmt.Sprintf("%s: captured_at %s is before the current %s state's latest change (%s): recorded in the history; the current state is unchanged",
			staleCode, r.Event.CapturedAt.UTC().Format(time.RFC3339Nano), r.Current.Status, latest.UTC().Format(time.RFC3339Nano))
		s.log.Warn("consent event older than the current state: recorded without effect", "event_id", r.Event.EventID, "customer_id", ev.CustomerID,
			"purpose", ev.Purpose, "kind", ev.Kind, "captured_at", r.Event.CapturedAt, "current_event_id", r.Current.EventID, "seq", r.Seq, "actor", ev.RecordedBy)
		return Result{Event: r.Event, Current: r.Current, NoEffect: true, Note: note}, nil
	}
	s.metrics.writes.WithLabelValues(ev.Kind, result(r.Err)).Inc()
	if r.Err != nil {
		return Result{Event: r.Event}, r.Err
	}
	s.view.putResult(r)
	s.log.Info("consent recorded", "event_id", r.Event.EventID, "customer_id", ev.CustomerID, "purpose", ev.Purpose, "kind", ev.Kind, "seq", r.Seq, "actor", ev.RecordedBy)
	return Result{Event: r.Event, Current: r.Current}, nil
}

// supersededIn reports whether ev is older than the current state of its purpose in cur.
func supersededIn(cur []Current, ev Event) bool {
	for i := range cur {
		if cur[i].Purpose == ev.Purpose {
			_, old := superseded(&cur[i], ev)
			return old
		}
	}
	return false
}

// History returns a customer's consent ledger, oldest first.
func (s *Store) History(ctx context.Context, customerID string) ([]Event, error) {
	if err := validID("customer_id", customerID); err != nil {
		return nil, err
	}
	return s.be.History(ctx, customerID, 0)
}

// CustomerView is a customer's state with its current consents, as the admin API shows it.
type CustomerView struct {
	Customer Customer  `json:"customer"`
	Consents []Current `json:"consents"`
}

// Customer reads a customer's state and consents from the database.
func (s *Store) Customer(ctx context.Context, id string) (CustomerView, error) {
	if err := validID("customer_id", id); err != nil {
		return CustomerView{}, err
	}
	c, cur, _, err := s.be.Customer(ctx, id)
	if err != nil {
		return CustomerView{}, err
	}
	if c == nil {
		return CustomerView{}, errf(http.StatusNotFound, "customer.not_found", "customer %q is unknown", id)
	}
	if cur == nil {
		cur = []Current{}
	}
	return CustomerView{Customer: *c, Consents: cur}, nil
}

// PutCustomer creates or updates a customer's retention deadline (it never un-erases).
func (s *Store) PutCustomer(ctx context.Context, c Customer) (Customer, error) {
	if err := validID("customer_id", c.ID); err != nil {
		return Customer{}, err
	}
	if err := checkTime("retention_until", c.RetentionUntil); err != nil {
		return Customer{}, err
	}
	if err := validText("the admin actor's name", c.UpdatedBy); err != nil {
		return Customer{}, err
	}
	c.UpdatedAt = s.now().UTC()
	c.UpdatedBy = truncate(c.UpdatedBy)
	out, rev, err := s.be.PutCustomer(ctx, c)
	if err != nil {
		return Customer{}, err
	}
	s.applyCustomer(ctx, out.ID, rev)
	// A retention deadline decides when a customer stops being served (and is erased).
	s.log.Info("customer updated", "customer_id", out.ID, "retention_until", out.RetentionUntil, "rev", rev, "actor", c.UpdatedBy)
	return out, nil
}

// RetentionInPastConfirm is the value of PUT /v1/customers/{id}'s "retention_in_past" that
// confirms a retention deadline already past.
const RetentionInPastConfirm = "confirm"

// CheckRetentionDeadline refuses a retention deadline more than the clock skew margin in
// the past (400 customer.retention_in_past) unless confirm is RetentionInPastConfirm: the
// customer stops being served at once and, with state.retention_erasure on, the next sweep
// crypto-shreds it irrevocably - for a typo (2025 for 2035) as much as on purpose. Any other
// non-empty confirm is refused too: a misspelt confirmation must not pass for none. The
// admin API's PUT /v1/customers/{id} checks it; PutCustomer does not (the import calls it).
func (s *Store) CheckRetentionDeadline(until *time.Time, confirm string) error {
	if confirm != "" && confirm != RetentionInPastConfirm {
		return bad("customer.retention_in_past", "retention_in_past is %q: the only value is %q", truncate(confirm), RetentionInPastConfirm)
	}
	if until == nil || confirm == RetentionInPastConfirm || !until.Before(s.now().Add(-allowedClockSkew)) {
		return nil
	}
	return bad("customer.retention_in_past", "retention_until %s is in the past: the customer would no longer be served and, with retention erasure on, be erased at the next sweep; "+
		"send \"retention_in_past\": %q to confirm", until.UTC().Format(time.RFC3339), RetentionInPastConfirm)
}

// MarkErased records that a customer's data was erased (the erasure flow calls it after
// destroying the keys). From then on grants are refused and decisions deny.
func (s *Store) MarkErased(ctx context.Context, customerID string, at time.Time) (Customer, error) {
	if err := validID("customer_id", customerID); err != nil {
		return Customer{}, err
	}
	out, rev, err := s.be.MarkErased(ctx, customerID, at.UTC())
	if err != nil {
		return Customer{}, err
	}
	s.applyCustomer(ctx, customerID, rev)
	s.log.Info("customer marked erased", "customer_id", customerID, "erased_at", out.ErasedAt)
	return out, nil
}

// applyCustomer makes a customer state change visible on this node before returning.
func (s *Store) applyCustomer(ctx context.Context, id string, _ int64) {
	ch := Change{Kind: ChangeCustomer, Key: id}
	if err := s.refresh(ctx, ch); err != nil {
		// The write is durable, the view is behind it: the customer's lookups fail closed
		// and readiness fails until a retry of the refresh succeeds (unrefreshed.go). No
		// change feed would bring it up to date on SQLite.
		s.log.Error("state refresh after write failed; retried, the customer's lookups fail closed meanwhile", "customer_id", id, "err", err)
		s.markUnrefreshed(ch)
	}
}

// MaxCaseAssignees bounds a case's assignees: every decision on the case carries the list.
const MaxCaseAssignees = 1000

// PutCase creates or replaces a case.
func (s *Store) PutCase(ctx context.Context, c Case) (Case, error) {
	if err := validID("case_id", c.ID); err != nil {
		return Case{}, err
	}
	if err := validID("customer_id", c.CustomerID); err != nil {
		return Case{}, err
	}
	if c.Status == "" {
		c.Status = CaseOpen
	}
	if c.Status != CaseOpen && c.Status != CaseClosed {
		return Case{}, bad("case.invalid_status", "status must be open or closed, not %q", truncate(c.Status))
	}
	if c.Assignees == nil {
		c.Assignees = []string{}
	}
	if len(c.Assignees) > MaxCaseAssignees {
		return Case{}, bad("case.too_many_assignees", "a case has at most %d assignees, not %d", MaxCaseAssignees, len(c.Assignees))
	}
	for _, a := range c.Assignees {
		if err := validID("assignee", a); err != nil {
			return Case{}, err
		}
	}
	if c.Purpose != "" && !s.purposes[c.Purpose] {
		return Case{}, bad("case.unknown_purpose", "purpose %q is not in the catalogue", truncate(c.Purpose))
	}
	if err := validText("the admin actor's name", c.UpdatedBy); err != nil {
		return Case{}, err
	}
	c.UpdatedAt = s.now().UTC()
	c.UpdatedBy = truncate(c.UpdatedBy)
	rev, err := s.be.PutCase(ctx, c)
	if err != nil {
		return Case{}, err
	}
	s.view.putCase(c.ID, &c, rev)
	// The assignees get need-to-know access: who put them there is on record here too.
	s.log.Info("case updated", "case_id", c.ID, "customer_id", c.CustomerID, "assignees", c.Assignees, "status", c.Status, "purpose", c.Purpose, "rev", rev, "actor", c.UpdatedBy)
	return c, nil
}

// Case reads a case from the database.
func (s *Store) Case(ctx context.Context, id string) (Case, error) {
	if err := validID("case_id", id); err != nil {
		return Case{}, err
	}
	c, _, err := s.be.Case(ctx, id)
	if err != nil {
		return Case{}, err
	}
	if c == nil {
		return Case{}, errf(http.StatusNotFound, "case.not_found", "case %q is unknown", id)
	}
	return *c, nil
}

// PutAgreement creates or replaces a processor agreement.
func (s *Store) PutAgreement(ctx context.Context, a Agreement) (Agreement, error) {
	if err := validID("processor_id", a.ProcessorID); err != nil {
		return Agreement{}, err
	}
	if len(a.Purposes) == 0 || len(a.Categories) == 0 {
		return Agreement{}, bad("agreement.incomplete", "an agreement names at least one purpose and one data category")
	}
	for _, p := range a.Purposes {
		if !s.purposes[p] {
			return Agreement{}, bad("agreement.unknown_purpose", "purpose %q is not in the catalogue", truncate(p))
		}
	}
	for _, c := range a.Categories {
		if !categoryRe.MatchString(c) {
			return Agreement{}, bad("agreement.invalid_category", "data category %q is not a fideslang key (e.g. user.contact.email)", truncate(c))
		}
	}
	if err := checkTime("valid_from", a.ValidFrom); err != nil {
		return Agreement{}, err
	}
	if err := checkTime("valid_until", a.ValidUntil); err != nil {
		return Agreement{}, err
	}
	if a.ValidUntil == nil {
		return Agreement{}, bad("agreement.unbounded", "valid_until is required: an agreement without an end date is not accepted")
	}
	if a.ValidFrom != nil && !a.ValidUntil.After(*a.ValidFrom) {
		return Agreement{}, bad("agreement.invalid_period", "valid_until must be after valid_from")
	}
	if err := validText("the admin actor's name", a.UpdatedBy); err != nil {
		return Agreement{}, err
	}
	sort.Strings(a.Purposes)
	sort.Strings(a.Categories)
	a.UpdatedAt = s.now().UTC()
	a.UpdatedBy = truncate(a.UpdatedBy)
	rev, err := s.be.PutAgreement(ctx, a)
	if err != nil {
		return Agreement{}, err
	}
	s.view.putAgreement(a.ProcessorID, &a, rev)
	s.log.Info("agreement updated", "processor_id", a.ProcessorID, "purposes", a.Purposes, "categories", a.Categories,
		"valid_from", a.ValidFrom, "valid_until", a.ValidUntil, "rev", rev, "actor", a.UpdatedBy)
	return a, nil
}

// Agreement reads a processor agreement from the database.
func (s *Store) Agreement(ctx context.Context, processorID string) (Agreement, error) {
	if err := validID("processor_id", processorID); err != nil {
		return Agreement{}, err
	}
	a, _, err := s.be.Agreement(ctx, processorID)
	if err != nil {
		return Agreement{}, err
	}
	if a == nil {
		return Agreement{}, errf(http.StatusNotFound, "agreement.not_found", "no agreement for processor %q", processorID)
	}
	return *a, nil
}

// IsClientError reports whether err is the caller's fault (4xx).
func IsClientError(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status >= 400 && e.Status < 500
}
