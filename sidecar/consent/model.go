// Package consent keeps the state policies decide on - the consent ledger (append-only
// events with proof), cases (need-to-know), processor agreements and customer lifecycle
// state - in a durable store (embedded SQLite, or PostgreSQL shared by several replicas) and
// serves it to the request pipeline from an in-memory view (enrich.Provider).
//
// Writes go to the database first, in one transaction, and only then to the view, so an
// acknowledged change survives a crash; other replicas learn about it through PostgreSQL
// LISTEN/NOTIFY and reload the changed entity. The admin API (api.go) and the CLI
// (`consentry consent ...`) are the ways in.
package consent

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/consentry/consentry/sidecar/input"
)

// Event kinds of the consent ledger.
const (
	KindGranted   = "granted"
	KindWithdrawn = "withdrawn"
	KindExpired   = "expired"
)

// Event is one entry of the append-only consent ledger, with its proof.
type Event struct {
	// Seq is the ledger position (assigned by the store).
	Seq int64 `json:"seq,omitempty"`
	// EventID identifies the event; a client-chosen id makes a retry detectable (idempotency).
	EventID    string `json:"event_id"`
	CustomerID string `json:"customer_id"`
	// Purpose is a fideslang data-use key from the catalogue.
	Purpose string `json:"purpose"`
	// Kind is granted, withdrawn or expired.
	Kind string `json:"kind"`
	// NoticeVersion and NoticeHash identify the privacy notice the customer agreed to
	// (informed consent: what was agreed). Required on grants.
	NoticeVersion string `json:"notice_version,omitempty"`
	NoticeHash    string `json:"notice_hash,omitempty"`
	// Channel is how the consent was captured: web, email, phone, paper, import, ...
	Channel string `json:"channel,omitempty"`
	// CapturedAt is when the customer gave/withdrew consent; CapturedBy who recorded it.
	CapturedAt time.Time `json:"captured_at"`
	CapturedBy string    `json:"captured_by,omitempty"`
	// ExpiresAt is when a grant lapses (optional).
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	// Reason is free text (withdrawal reason, import source, ...).
	Reason string `json:"reason,omitempty"`
	// RecordedAt/RecordedBy: when and by which authenticated actor the store accepted it.
	RecordedAt time.Time `json:"recorded_at"`
	RecordedBy string    `json:"recorded_by,omitempty"`

	// serverStamped: CapturedAt is the time the server took the event (the client sent
	// none), not the customer's. The backend then dates it after the stored state's latest
	// change (stampAfter), under the customer's lock: a server whose clock is behind the one
	// that dated the stored state must not make the event stale. event() sets it for
	// withdrawals only; not stored.
	serverStamped bool
}

// Case is a need-to-know case.
type Case struct {
	ID         string    `json:"id"`
	CustomerID string    `json:"customer_id"`
	Assignees  []string  `json:"assignees"`
	Status     string    `json:"status"`
	Purpose    string    `json:"purpose,omitempty"`
	UpdatedAt  time.Time `json:"updated_at"`
	// UpdatedBy is the authenticated admin who last put the case (need-to-know hinges on
	// the assignees: who granted someone access must be on record).
	UpdatedBy string `json:"updated_by,omitempty"`
}

// Case statuses.
const (
	CaseOpen   = "open"
	CaseClosed = "closed"
)

// Agreement is a processor (sub-processor) agreement.
type Agreement struct {
	ProcessorID string     `json:"processor_id"`
	Purposes    []string   `json:"purposes"`
	Categories  []string   `json:"categories"`
	ValidFrom   *time.Time `json:"valid_from,omitempty"`
	ValidUntil  *time.Time `json:"valid_until,omitempty"`
	UpdatedAt   time.Time  `json:"updated_at"`
	// UpdatedBy is the authenticated admin who last put the agreement.
	UpdatedBy string `json:"updated_by,omitempty"`
}

// Customer is a customer's lifecycle state.
type Customer struct {
	ID             string     `json:"id"`
	RetentionUntil *time.Time `json:"retention_until,omitempty"`
	Erased         bool       `json:"erased"`
	ErasedAt       *time.Time `json:"erased_at,omitempty"`
	UpdatedAt      time.Time  `json:"updated_at"`
	// UpdatedBy is the authenticated admin (or importer) who last set the retention
	// deadline through PutCustomer; empty for a customer only a consent event created.
	UpdatedBy string `json:"updated_by,omitempty"`
}

// Current is the current consent state for one (customer, purpose): the last event.
type Current struct {
	CustomerID    string     `json:"customer_id"`
	Purpose       string     `json:"purpose"`
	Status        string     `json:"status"`
	NoticeVersion string     `json:"notice_version,omitempty"`
	NoticeHash    string     `json:"notice_hash,omitempty"`
	Channel       string     `json:"channel,omitempty"`
	CapturedBy    string     `json:"captured_by,omitempty"`
	GrantedAt     *time.Time `json:"granted_at,omitempty"`
	ExpiresAt     *time.Time `json:"expires_at,omitempty"`
	WithdrawnAt   *time.Time `json:"withdrawn_at,omitempty"`
	EventID       string     `json:"event_id"`
	// Seq is the ledger position of EventID (orders racing updates).
	Seq int64 `json:"seq"`
}

// apply folds ev into the current state cur (nil when there is none yet). It reports
// false when ev leaves the state as it was:
//   - an event captured before the current state's latest grant or withdrawal (a delayed
//     webhook, a back-dated API call; a withdrawal: more than withdrawalSkew before) is
//     stale: it is recorded, and the customer's latest expressed will stands, whatever order
//     the events arrive in. Equal times keep arrival order (the later wins).
//   - an expiry changes only a grant that has expired by the expiry's time. The sweep reads
//     due grants and records their expiry in two steps; a renewal or a withdrawal recorded
//     in between must not be overwritten by it.
//   - a change that applies never moves the state's latest grant or withdrawal back in time:
//     the stale rule compares against it. A grant applies only at or after it; a withdrawal
//     that applies within withdrawalSkew before it takes effect at it (withdrawn_at is the
//     later of the two), so it wins over the grant or withdrawal it may have followed, and a
//     delayed grant captured in between stays stale. In a withdrawn state withdrawn_at is
//     therefore never before granted_at.
//
// consent_append (pgappend.go) applies the same rules; TestFoldAgrees checks they agree.
func apply(cur *Current, ev Event) (Current, bool) {
	latest, old := superseded(cur, ev)
	if old || (ev.Kind == KindExpired && !expires(cur, ev.CapturedAt)) {
		if cur == nil {
			return Current{}, false
		}
		return *cur, false
	}
	next := Current{CustomerID: ev.CustomerID, Purpose: ev.Purpose, EventID: ev.EventID}
	if cur != nil {
		next = *cur
		next.EventID = ev.EventID
	}
	at := ev.CapturedAt
	switch ev.Kind {
	case KindGranted:
		next.Status = KindGranted
		next.NoticeVersion, next.NoticeHash, next.Channel, next.CapturedBy = ev.NoticeVersion, ev.NoticeHash, ev.Channel, ev.CapturedBy
		next.GrantedAt, next.ExpiresAt, next.WithdrawnAt = &at, ev.ExpiresAt, nil
	case KindWithdrawn:
		next.Status = KindWithdrawn
		if at.Before(latest) { // within the skew margin: see above
			at = latest
		}
		next.WithdrawnAt = &at
		if ev.Channel != "" {
			next.Channel = ev.Channel
		}
		if ev.CapturedBy != "" {
			next.CapturedBy = ev.CapturedBy
		}
	case KindExpired:
		next.Status = KindExpired
	}
	return next, true
}

// withdrawalSkew is the margin a withdrawal gets: it is stale only when captured more than
// this before the current state's latest grant or withdrawal. Closer than that, the order of
// two capture times may be the clocks' (replicas' clocks differ, a clock steps back, a
// server-stamped withdrawal on a slow replica right after a grant on a fast one), and in
// doubt the withdrawal applies in arrival order (fail closed). A grant gets no margin: one
// captured before the latest change never applies. consent_append spells it in ns.
const withdrawalSkew = allowedClockSkew

// lastChange is the current state's latest grant or withdrawal (zero: none), the time the
// stale rule compares with.
func lastChange(cur *Current) time.Time {
	var latest time.Time
	if cur == nil {
		return latest
	}
	for _, t := range []*time.Time{cur.GrantedAt, cur.WithdrawnAt} {
		if t != nil && (latest.IsZero() || t.After(latest)) {
			latest = *t
		}
	}
	return latest
}

// stampAfter is the capture time of a server-stamped event (Event.serverStamped): its
// stamp at, or just after the current state's latest change when at is not after it. The
// server received the event after everything stored, whatever its clock says; a
// microsecond later keeps it strictly after (a delayed grant captured at that change
// stays stale). consent_append_many (pgappend.go) applies the same rule.
func stampAfter(cur *Current, at time.Time) time.Time {
	if latest := lastChange(cur); !latest.IsZero() && !at.After(latest) {
		return latest.Add(time.Microsecond)
	}
	return at
}

// superseded reports whether ev was captured before the current state's latest grant or
// withdrawal (for a withdrawal: more than withdrawalSkew before), and that time. An expiry
// never is: it changes only a grant (withdrawn_at unset) whose expiry, after its capture,
// is at or before the expiry's time.
func superseded(cur *Current, ev Event) (time.Time, bool) {
	latest := lastChange(cur)
	if latest.IsZero() {
		return latest, false
	}
	margin := time.Duration(0)
	if ev.Kind == KindWithdrawn {
		margin = withdrawalSkew
	}
	return latest, ev.CapturedAt.Before(latest.Add(-margin))
}

// expires reports whether an expiry at time at ends the current consent: a grant whose
// expiry is at or before at. consent_append (pgappend.go) applies the same rule.
func expires(cur *Current, at time.Time) bool {
	return cur != nil && cur.Status == KindGranted && cur.ExpiresAt != nil && !cur.ExpiresAt.After(at)
}

// Error is a store error with a stable code and the HTTP status the admin API answers with.
type Error struct {
	Status  int
	Code    string
	Message string
	// Event is the existing event, for duplicates.
	Event *Event
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

func errf(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Sentinel checks callers use with errors.As / Code.
var (
	// ErrNotFound is returned (wrapped in *Error with Code "not_found") for unknown entities.
	ErrNotFound = errors.New("not found")
)

// CodeOf returns the *Error code of err, or "".
func CodeOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

var (
	purposeRe = regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$`)
	// categoryRe is a fideslang data category key (user.contact.email, system.operations).
	categoryRe = purposeRe
	hashRe     = regexp.MustCompile(`^(sha256:)?[0-9a-f]{64}$`)
	channelRe  = regexp.MustCompile(`^[a-z][a-z0-9_.-]{0,63}$`)
	versionRe  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:+-]{0,63}$`)
)

func validID(kind, id string) error {
	if !input.ValidID(id) { // ids of customers, cases, processors, events, assignees
		return errf(http.StatusBadRequest, "invalid."+kind, "%s %q is malformed (1-128 of A-Z a-z 0-9 . _ : @ + -, starting alphanumeric)", strings.ReplaceAll(kind, "_", " "), truncate(id))
	}
	return nil
}

// truncate cuts s to 64 bytes for messages and names (marked "..."), at a UTF-8
// boundary: a name cut inside a character would be invalid UTF-8, which PostgreSQL refuses.
func truncate(s string) string {
	if len(s) <= 64 {
		return s
	}
	cut := 64
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

// textCode refuses free text a database cannot hold.
const textCode = "invalid.text"

// validText refuses a NUL character or invalid UTF-8 in free text (reasons, captured_by,
// the admin actor's name): a PostgreSQL TEXT column holds neither, so the write failed
// there as a database error (500, a withdrawal not recorded), while SQLite stored bytes no
// JSON answer can carry. Both backends refuse it alike, before anything is written.
func validText(field, s string) error {
	if utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 {
		return nil
	}
	return errf(http.StatusBadRequest, textCode, "%s contains a NUL character or invalid UTF-8", field)
}

// normalizeHash returns the notice hash in its canonical "sha256:<hex>" form.
func normalizeHash(h string) string {
	h = strings.ToLower(strings.TrimSpace(h))
	if h != "" && !strings.HasPrefix(h, "sha256:") {
		h = "sha256:" + h
	}
	return h
}

// NewEventID returns a fresh, time-ordered event id.
func NewEventID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("ev-%013x-%s", time.Now().UnixMilli(), hex.EncodeToString(b[:]))
}

// allowedClockSkew is how far in the future a captured_at may be (client clocks drift).
const allowedClockSkew = 5 * time.Minute
