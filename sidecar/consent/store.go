package consent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/consentry/consentry/sidecar/enrich"
	"github.com/consentry/consentry/sidecar/input"
	"github.com/prometheus/client_golang/prometheus"
)

// Eraser destroys a customer's data cryptographically (vaultkeys implements it). The
// consent store calls it when a withdrawal triggers erasure (state.erase_on_withdrawal).
type Eraser interface {
	Erase(ctx context.Context, customerID, actor, reason string) error
}

// Options are the collaborators of a Store.
type Options struct {
	// Logger receives the store's log lines, as given: the caller names the component on it
	// (the sidecar passes its logger With("component", "state"); adding it here too wrote
	// the key twice in every JSON line). nil: slog.Default() with component "state".
	Logger *slog.Logger
	// Eraser is required when erase_on_withdrawal is on (may be set later with SetEraser).
	Eraser Eraser
	// HTTPClient sends expiry webhooks (default: a client with the configured timeout).
	HTTPClient *http.Client
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
	// Purposes, when set, are the valid consent purposes (e.g. the keys of the active
	// policy's data.consentry.catalog.purposes), taking precedence over state.purposes and
	// state.purposes_file.
	Purposes []string
	// Registry receives the state metrics (consentry_state_*); nil: not exported.
	Registry prometheus.Registerer
	// NoBackground disables the expiry sweeper and periodic resync goroutines (CLI, tests
	// that drive SweepExpiry themselves). Replica notifications are always followed.
	NoBackground bool
}

// Store is the consent, case, agreement and customer state: durable in a Backend, served
// from an in-memory view. It is the pipeline's enrich.Provider.
type Store struct {
	cfg      Config
	be       Backend
	view     view
	log      *slog.Logger
	now      func() time.Time
	client   *http.Client
	purposes map[string]bool
	secret   []byte
	metrics  *metrics

	mu     sync.Mutex
	eraser Eraser

	// feedDown is when the change feed stopped following (Unix ns; 0: following). While it
	// is down, changes by other replicas are missed: readiness fails at once, and after
	// postgres.max_feed_gap every lookup fails closed.
	feedDown atomic.Int64
	// behind is when a reload could not re-read the changes made while it ran (0: never,
	// or a later reload succeeded): the view may miss them, as with a stopped feed.
	behind atomic.Int64

	// afterDue runs between the sweep's read of due grants and its writes (tests: a
	// renewal or withdrawal recorded in between).
	afterDue func()
	// refreshFault, set by tests only (setRefreshFault), fails a refresh: a database that
	// fails exactly for one re-read cannot be arranged for real.
	refreshFault atomic.Pointer[func(Change) error]
	// unref holds the customers whose refresh after a local write failed (unrefreshed.go).
	unref unrefreshed

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

var _ enrich.Provider = (*Store)(nil)

// Open opens the configured backend (applying migrations), loads the view and starts
// following changes (other replicas) and the expiry sweeper. Close stops them.
func Open(ctx context.Context, cfg Config, opts Options) (*Store, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(opts.Purposes) > 0 {
		cfg.Purposes = opts.Purposes
		if err := cfg.Validate(); err != nil {
			return nil, err
		}
	}
	purposes, err := purposesFor(cfg)
	if err != nil {
		return nil, err
	}
	s := &Store{cfg: cfg, log: opts.Logger, now: opts.Now, client: opts.HTTPClient, purposes: purposes, eraser: opts.Eraser}
	if s.log == nil {
		s.log = slog.Default().With("component", "state")
	}
	if s.metrics, err = newMetrics(opts.Registry, s); err != nil {
		return nil, fmt.Errorf("state metrics: %w", err)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.client == nil {
		s.client = &http.Client{Timeout: cfg.Expiry.WebhookTimeout}
	}
	if s.secret, err = webhookSecret(cfg); err != nil {
		return nil, err
	}
	if s.be, err = OpenBackend(ctx, cfg); err != nil {
		return nil, err
	}
	bg, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	if err := s.follow(ctx, bg); err != nil {
		cancel()
		s.wg.Wait()
		_ = s.be.Close()
		return nil, err
	}
	// Always, like the change feed: a view behind a write is a correctness matter.
	s.unref.kick = make(chan struct{}, 1)
	s.wg.Add(1)
	go s.retryRefreshes(bg)
	if !opts.NoBackground {
		s.wg.Add(1)
		go s.sweepLoop(bg)
		if cfg.Backend != "sqlite" {
			s.wg.Add(1)
			go s.resyncLoop(bg)
		}
	}
	return s, nil
}

// follow starts watching the backend and returns once the view is loaded (the first
// reset), so that no change between load and LISTEN can be missed.
func (s *Store) follow(ctx, bg context.Context) error {
	loaded := make(chan error, 1)
	var once sync.Once
	reset := func() error {
		first := false
		once.Do(func() { first = true })
		err := s.Reload(bg)
		if first {
			loaded <- err
		}
		if err != nil {
			s.feedStopped(time.Now())
			if !first {
				s.log.Error("state reload failed; the change feed restarts", "err", err)
			}
			return err
		}
		if down := s.feedDown.Swap(0); down != 0 {
			s.log.Info("state change feed following again", "down_for", time.Since(time.Unix(0, down)).Round(time.Millisecond))
		}
		return nil
	}
	change := func(ch Change) error {
		err := s.refresh(bg, ch)
		s.metrics.refreshes.WithLabelValues(result(err)).Inc()
		if err != nil {
			s.log.Error("state refresh failed; the change feed restarts", "kind", ch.Kind, "key", ch.Key, "err", err)
		}
		return err
	}
	lost := func(lastAlive time.Time, err error) {
		s.feedStopped(lastAlive)
		s.log.Warn("state change feed lost; reconnecting", "last_alive", lastAlive, "err", err)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.be.Watch(bg, Watcher{Change: change, Reset: reset, Lost: lost}); err != nil {
			s.log.Error("state watch stopped", "err", err)
		}
	}()
	select {
	case err := <-loaded:
		if err != nil {
			return fmt.Errorf("load state: %w", err)
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(30 * time.Second):
		return errors.New("load state: no LISTEN connection within 30s")
	}
}

// feedStopped records that the change feed stopped following at since (keeps the earliest).
func (s *Store) feedStopped(since time.Time) {
	s.feedDown.CompareAndSwap(0, since.UnixNano())
}

// feedGap is how long the view has not been following the database (0: it is): the change
// feed stopped, or a reload could not re-read the changes made while it ran.
func (s *Store) feedGap() time.Duration {
	down, behind := s.feedDown.Load(), s.behind.Load()
	if down == 0 && behind == 0 {
		return 0
	}
	since := down
	if since == 0 || (behind != 0 && behind < since) {
		since = behind
	}
	return max(time.Since(time.Unix(0, since)), 1)
}

// stale reports whether lookups must fail closed: the view has not followed the database
// for longer than max_feed_gap.
func (s *Store) stale() bool {
	return s.feedGap() > s.cfg.Postgres.MaxFeedGap // feedGap is 0, with no clock read, when following
}

// Close stops background work and closes the database.
func (s *Store) Close() error {
	s.cancel()
	s.wg.Wait()
	return s.be.Close()
}

// Backend exposes the durable store (benchmarks, tools).
func (s *Store) Backend() Backend { return s.be }

// SetEraser sets the erasure implementation used when a withdrawal triggers erasure.
func (s *Store) SetEraser(e Eraser) {
	s.mu.Lock()
	s.eraser = e
	s.mu.Unlock()
}

// Purposes lists the purposes consent may be recorded for.
func (s *Store) Purposes() []string {
	out := make([]string, 0, len(s.purposes))
	for p := range s.purposes {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// Ready reports whether the view is loaded and the database answers (readiness check).
func (s *Store) Ready(ctx context.Context) error {
	if !s.view.loaded() {
		return errors.New("state view not loaded")
	}
	if gap := s.feedGap(); gap > 0 {
		return fmt.Errorf("state change feed down or view behind for %s: changes may be missing from the view (lookups fail closed after %s)",
			gap.Round(time.Millisecond), s.cfg.Postgres.MaxFeedGap)
	}
	if n := s.unref.n.Load(); n > 0 {
		return fmt.Errorf("state view behind the database for %d customer(s): the refresh after a write failed and is retried (their lookups fail closed)", n)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := s.be.Ping(ctx); err != nil {
		return fmt.Errorf("state database: %w", err)
	}
	return nil
}

// Status is the /status section.
func (s *Store) Status() any {
	out := map[string]any{"backend": s.cfg.Backend, "loaded": s.view.loaded()}
	if gap := s.feedGap(); gap > 0 {
		out["feed"] = map[string]any{"following": false, "down_for": gap.Round(time.Millisecond).String(), "lookups_fail_closed": s.stale()}
	} else if s.cfg.Backend != "sqlite" {
		out["feed"] = map[string]any{"following": true}
	}
	if snap := s.view.snap.Load(); snap != nil {
		out["view"] = snap.stats()
	}
	if n := s.unref.n.Load(); n > 0 {
		out["unrefreshed_customers"] = n
	}
	if q, ok := s.be.(ErasureQueue); ok {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if p, err := q.PendingErasures(ctx); err == nil {
			out["erasures_pending"] = len(p)
		}
		cancel()
	}
	if ss, ok := s.be.(*sqlStore); ok && ss.group != nil {
		out["group_commit"] = map[string]int64{"commits": ss.group.batches.Load(), "events": ss.group.events.Load()}
	}
	return out
}

// Reload rebuilds the whole view from the database and swaps it in.
func (s *Store) Reload(ctx context.Context) error {
	v := &s.view
	v.reloadMu.Lock()
	defer v.reloadMu.Unlock()
	v.mu.Lock()
	v.reloading, v.pending = true, map[Change]struct{}{}
	v.mu.Unlock()
	l := &loader{snap: newSnapshot(), intern: newInterner()}
	err := s.be.Load(ctx, l)
	if s.metrics != nil {
		s.metrics.reloads.WithLabelValues(result(err)).Inc()
	}
	if err == nil {
		l.finish()
	}
	v.at("loaded")
	v.swapMu.Lock()
	if err == nil {
		v.snap.Store(l.snap)
	}
	v.mu.Lock()
	pending := v.pending
	v.reloading, v.pending = false, nil
	v.mu.Unlock()
	v.swapMu.Unlock()
	v.at("swapped")
	if err != nil {
		return err
	}
	// Changes noted during the load may be missing from the new snapshot: each is read
	// again. One that cannot be (the database failing) leaves the view behind: it counts
	// like a stopped feed until a reload succeeds.
	var failed error
	for ch := range pending {
		if err := s.refresh(ctx, ch); err != nil {
			failed = err
		}
	}
	if failed != nil {
		s.behind.CompareAndSwap(0, time.Now().UnixNano())
		return fmt.Errorf("re-read changes made during the reload: %w", failed)
	}
	s.behind.Store(0)
	return nil
}

// setRefreshFault makes every refresh call f first and fail with its error (tests; nil:
// no fault).
func (s *Store) setRefreshFault(f func(Change) error) {
	if f == nil {
		s.refreshFault.Store(nil)
		return
	}
	s.refreshFault.Store(&f)
}

// refresh re-reads one entity from the database into the view.
func (s *Store) refresh(ctx context.Context, ch Change) error {
	if f := s.refreshFault.Load(); f != nil {
		if err := (*f)(ch); err != nil {
			return err
		}
	}
	switch ch.Kind {
	case ChangeCustomer:
		cust, cur, rev, err := s.be.Customer(ctx, ch.Key)
		if err != nil {
			return err
		}
		s.view.putCustomer(ch.Key, cust, cur, rev)
	case ChangeCase:
		c, rev, err := s.be.Case(ctx, ch.Key)
		if err != nil {
			return err
		}
		s.view.putCase(ch.Key, c, rev)
	case ChangeAgreement:
		a, rev, err := s.be.Agreement(ctx, ch.Key)
		if err != nil {
			return err
		}
		s.view.putAgreement(ch.Key, a, rev)
	}
	return nil
}

// Enrich implements enrich.Provider from the in-memory view. Before the view is loaded,
// and while the change feed has been down longer than postgres.max_feed_gap, every
// lookup is reported failed, so policies deny (fail closed).
func (s *Store) Enrich(_ context.Context, q enrich.Query) (input.Enrichment, error) {
	snap := s.view.snap.Load()
	if snap == nil || s.stale() {
		return input.Enrichment{Consents: []input.Consent{}, Errors: []string{"consent", "case", "agreement", "customer"}}, nil
	}
	var e input.Enrichment
	if q.CustomerID != "" && s.customerUnrefreshed(q.CustomerID) {
		e.Consents, e.Errors = []input.Consent{}, unrefreshedErrors()
	} else if q.CustomerID != "" {
		e.Consents, e.Customer = s.view.customer(snap, q.CustomerID, q.Purpose, s.now().UnixNano(), newArena(1))
	} else {
		e.Consents = []input.Consent{}
	}
	if q.CaseID != "" {
		e.Case = s.view.caseByID(snap, q.CaseID)
	}
	if q.ProcessorID != "" {
		e.Agreement = s.view.agreement(snap, q.ProcessorID)
	}
	return e, nil
}

// EnrichBatch implements enrich.Provider: one entry per id, the request's case and
// agreement looked up once and shared.
func (s *Store) EnrichBatch(_ context.Context, q enrich.Query, customerIDs []string) (map[string]input.Enrichment, error) {
	out := make(map[string]input.Enrichment, len(customerIDs))
	snap := s.view.snap.Load()
	if snap == nil || s.stale() {
		for _, id := range customerIDs {
			out[id] = input.Enrichment{Consents: []input.Consent{}, Errors: []string{"consent", "case", "agreement", "customer"}}
		}
		return out, nil
	}
	var c *input.Case
	var a *input.Agreement
	if q.CaseID != "" {
		c = s.view.caseByID(snap, q.CaseID)
	}
	if q.ProcessorID != "" {
		a = s.view.agreement(snap, q.ProcessorID)
	}
	now := s.now().UnixNano()
	ar := newArena(len(customerIDs))
	for _, id := range customerIDs {
		var e input.Enrichment
		if s.customerUnrefreshed(id) {
			e.Consents, e.Errors = []input.Consent{}, unrefreshedErrors()
		} else {
			e.Consents, e.Customer = s.view.customer(snap, id, q.Purpose, now, ar)
		}
		e.Case, e.Agreement = c, a
		out[id] = e
	}
	return out, nil
}

// unrefreshedErrors are the failed lookups of a customer the view may be behind on
// (customerUnrefreshed): its consents and its state, so policies deny.
func unrefreshedErrors() []string { return []string{"consent", "customer"} }

// CheckConfig validates cfg as Open would, without opening the database (run --check):
// defaults, the keys' values, the purposes (file) and the PostgreSQL URL (file).
func CheckConfig(cfg Config) error {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	if _, err := purposesFor(cfg); err != nil {
		return err
	}
	if cfg.Backend == "postgres" {
		if _, err := postgresConnConfig(cfg); err != nil {
			return err
		}
	}
	_, err := webhookSecret(cfg)
	return err
}

// webhookSecret reads state.expiry.webhook_secret_file (nil when not set).
func webhookSecret(cfg Config) ([]byte, error) {
	if cfg.Expiry.WebhookSecretFile == "" {
		return nil, nil
	}
	b, err := os.ReadFile(cfg.Expiry.WebhookSecretFile)
	if err != nil {
		return nil, fmt.Errorf("state.expiry.webhook_secret_file: %w", err)
	}
	secret := trimSpace(string(b)) // as before: existing signatures stay valid
	if strings.TrimSpace(secret) == "" {
		// A secret mount that did not populate, a templating error: starting would send every
		// notice unsigned, silently, to a receiver that was told to check signatures.
		return nil, fmt.Errorf("state.expiry.webhook_secret_file: %s is empty: it must hold the webhook signing secret (unset the key to send unsigned notices)", cfg.Expiry.WebhookSecretFile)
	}
	return []byte(secret), nil
}

// purposesFor loads the purposes (loadPurposes) and checks that every
// erase_on_withdrawal_purposes entry is one of them or a parent of one: a mistyped key
// ("marketing.communication.email") is a valid fideslang key that no withdrawal would ever
// match, so the erasure it asks for would silently never run.
func purposesFor(cfg Config) (map[string]bool, error) {
	purposes, err := loadPurposes(cfg)
	if err != nil {
		return nil, err
	}
	for _, p := range cfg.EraseOnWithdrawalPurposes {
		known := false
		for q := range purposes {
			known = known || covers(p, q)
		}
		if !known {
			return nil, fmt.Errorf("state.erase_on_withdrawal_purposes: %q is neither a known purpose nor a parent of one (known: %s)",
				p, strings.Join(slices.Sorted(maps.Keys(purposes)), ", "))
		}
	}
	return purposes, nil
}

// loadPurposes returns the configured purposes or the catalogue's.
func loadPurposes(cfg Config) (map[string]bool, error) {
	out := map[string]bool{}
	if len(cfg.Purposes) > 0 {
		for _, p := range cfg.Purposes {
			out[p] = true
		}
		return out, nil
	}
	b, err := os.ReadFile(cfg.PurposesFile)
	if err != nil {
		return nil, fmt.Errorf("state.purposes_file: %w (set state.purposes or state.purposes_file)", err)
	}
	var doc struct {
		Purposes  map[string]json.RawMessage `json:"purposes"`
		Consentry struct {
			Catalog struct {
				Purposes map[string]json.RawMessage `json:"purposes"`
			} `json:"catalog"`
		} `json:"consentry"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("state.purposes_file: %s: %w", cfg.PurposesFile, err)
	}
	ps := doc.Purposes
	if len(ps) == 0 {
		ps = doc.Consentry.Catalog.Purposes
	}
	if len(ps) == 0 {
		return nil, fmt.Errorf("state.purposes_file: %s has no purposes", cfg.PurposesFile)
	}
	for p := range ps {
		if !purposeRe.MatchString(p) {
			return nil, fmt.Errorf("state.purposes_file: purpose %q is not a fideslang data-use key", p)
		}
		out[p] = true
	}
	return out, nil
}

func trimSpace(s string) string {
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == '\r' || s[len(s)-1] == ' ') {
		s = s[:len(s)-1]
	}
	return s
}
