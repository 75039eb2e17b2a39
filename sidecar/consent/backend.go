package consent

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"
)

// Backend is a durable state store. The "sqlite" and "postgres" backends register
// themselves; both share one schema and one SQL implementation (sqlstore.go).
type Backend interface {
	// Append records events in one transaction. Each event gets its own result: a duplicate
	// event id or a grant for an erased customer fails that event only (Result.Err) and the
	// rest are committed; a database error fails the whole call and nothing is committed.
	Append(ctx context.Context, evs []Event) ([]AppendResult, error)
	// CheckAppend reports what Append would do, and changes nothing (import dry run).
	CheckAppend(ctx context.Context, evs []Event) ([]AppendResult, error)
	// History returns a customer's ledger events, oldest first (at most limit; 0 = all).
	History(ctx context.Context, customerID string, limit int) ([]Event, error)
	// Customer returns a customer's state and current consents (nil customer: unknown).
	Customer(ctx context.Context, id string) (*Customer, []Current, int64, error)
	// Case and Agreement return nil when unknown.
	Case(ctx context.Context, id string) (*Case, int64, error)
	Agreement(ctx context.Context, processorID string) (*Agreement, int64, error)
	// PutCase, PutAgreement and PutCustomer upsert; they return the new revision.
	PutCase(ctx context.Context, c Case) (int64, error)
	PutAgreement(ctx context.Context, a Agreement) (int64, error)
	// PutCustomer upserts the retention deadline; it never clears the erased flag.
	PutCustomer(ctx context.Context, c Customer) (Customer, int64, error)
	// MarkErased sets the erased flag (idempotent: the first erased_at is kept).
	MarkErased(ctx context.Context, id string, at time.Time) (Customer, int64, error)
	// Load streams the whole state into l (the view loader).
	Load(ctx context.Context, l Loader) error
	// Due returns granted consents whose expiry is before until.
	Due(ctx context.Context, until time.Time) ([]Current, error)
	// ClaimNotice records that the expiry notice for a grant event is being sent; false when
	// another node (or an earlier sweep) already claimed it. ReleaseNotice undoes a claim
	// whose delivery failed so that the next sweep retries.
	ClaimNotice(ctx context.Context, eventID string, at time.Time) (bool, error)
	ReleaseNotice(ctx context.Context, eventID string) error
	// Watch reports changes made by any node (including this one) until ctx ends; see
	// Watcher. Backends without cross-node changes call Reset once and return nil.
	Watch(ctx context.Context, w Watcher) error
	// Ping checks the database answers (readiness).
	Ping(ctx context.Context) error
	Close() error
}

// AppendResult is the outcome of one appended event.
type AppendResult struct {
	Event Event
	// Current is the consent's state after the event. NoEffect: the event was recorded
	// but left the state as it was (an expiry for a grant renewed or withdrawn since the
	// sweep read it); Current is then the unchanged state (zero when there is none).
	Current  Current
	NoEffect bool
	Seq      int64
	Customer Customer
	CustRev  int64
	// Err is a *Error (duplicate, erased) when this event was not recorded.
	Err error
}

// Watcher receives a backend's change feed.
type Watcher struct {
	// Change reports one entity changed by any node. An error (the entity could not be
	// re-read) makes the backend drop the connection and start again, so that Reset
	// reloads everything rather than leave one entry stale.
	Change func(Change) error
	// Reset is called each time listening (re)starts: changes before it may have been
	// missed, so the caller reloads everything. When it fails the backend drops the
	// connection and starts again (with backoff): the feed is not following until a Reset
	// succeeds.
	Reset func() error
	// Lost reports that the feed stopped (connection lost, or silent past a heartbeat);
	// changes since lastAlive, when the connection was last known to work, may be missed
	// until the next successful Reset.
	Lost func(lastAlive time.Time, err error)
}

// Change names an entity another node (or this one) changed.
type Change struct {
	// Kind is ChangeCustomer, ChangeCase or ChangeAgreement.
	Kind string
	Key  string
}

// Change kinds.
const (
	ChangeCustomer  = "customer"
	ChangeCase      = "case"
	ChangeAgreement = "agreement"
)

// ConsentRow is one current consent as Backend.Load streams it: times as Unix ns (0 =
// none). Its strings may share one buffer per row; a Loader copies what it keeps.
type ConsentRow struct {
	CustomerID, Purpose, Status, NoticeVersion, NoticeHash, Channel, CapturedBy, EventID string
	GrantedAt, ExpiresAt, WithdrawnAt, Seq                                               int64
}

// Loader receives the whole state from Backend.Load.
type Loader interface {
	LoadConsent(r ConsentRow)
	LoadCustomer(c Customer, rev int64)
	LoadCase(c Case, rev int64)
	LoadAgreement(a Agreement, rev int64)
}

// OpenFunc opens a backend from the state configuration.
type OpenFunc func(ctx context.Context, cfg Config) (Backend, error)

var (
	backendsMu sync.Mutex
	backends   = map[string]OpenFunc{}
)

// RegisterBackend makes a backend available under name (state.backend).
func RegisterBackend(name string, open OpenFunc) {
	backendsMu.Lock()
	defer backendsMu.Unlock()
	if _, dup := backends[name]; dup {
		panic("consent: duplicate backend " + name)
	}
	backends[name] = open
}

// BackendNames lists the registered backends.
func BackendNames() []string {
	backendsMu.Lock()
	defer backendsMu.Unlock()
	out := make([]string, 0, len(backends))
	for n := range backends {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// OpenBackend opens the configured backend and applies its migrations.
func OpenBackend(ctx context.Context, cfg Config) (Backend, error) {
	backendsMu.Lock()
	open, ok := backends[cfg.Backend]
	backendsMu.Unlock()
	if !ok {
		return nil, fmt.Errorf("state.backend: unknown backend %q", cfg.Backend)
	}
	return open(ctx, cfg)
}
