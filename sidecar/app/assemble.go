package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/consentry/consentry/sidecar/audit"
	"github.com/consentry/consentry/sidecar/auditlog"
	"github.com/consentry/consentry/sidecar/bundle"
	"github.com/consentry/consentry/sidecar/consent"
	"github.com/consentry/consentry/sidecar/engine"
	"github.com/consentry/consentry/sidecar/enrich"
	"github.com/consentry/consentry/sidecar/enrich/static"
	"github.com/consentry/consentry/sidecar/envoy"
	"github.com/consentry/consentry/sidecar/identity"
	"github.com/consentry/consentry/sidecar/input"
	"github.com/consentry/consentry/sidecar/pipeline"
	"github.com/consentry/consentry/sidecar/routes"
	"github.com/consentry/consentry/vaultkeys"
)

// assemble builds the capabilities named in the configuration, in dependency order:
//
//	policy (bundle manager) -> Vault keys -> decision log -> state -> identity, routes ->
//	pipeline -> front doors (ext_authz/ext_proc gRPC, HTTP proxy)
//
// Each is wired here and nowhere else. Every step that fails returns an error naming its
// config section; whatever was opened before is closed by New.
func (a *App) assemble(ctx context.Context) error {
	// The route map's source matters to two steps: the policy activator (routes.from_bundle)
	// and the pipeline.
	var err error
	if a.hasRoutes, err = a.Config.Section("routes", &a.routesCfg); err != nil {
		return err
	}
	steps := []struct {
		name string
		f    func(context.Context) error
	}{
		{"policy", a.assemblePolicy},
		{"vault", a.assembleVault},
		{"decision_log", a.assembleDecisionLog},
		{"state", a.assembleState},
		{"pipeline", a.assemblePipeline},
		{"front doors", a.assembleFrontDoors},
	}
	for _, s := range steps {
		if err := s.f(ctx); err != nil {
			return err
		}
	}
	return nil
}

// assemblePolicy starts the bundle manager on the policy source. A local policy directory is
// activated right away so that `consentry run --check` and a broken start fail with the
// compiler's message (exit code 3) instead of a sidecar that never becomes ready; the
// manager's watcher then finds it unchanged instead of compiling it a second time.
func (a *App) assemblePolicy(ctx context.Context) error {
	pc := a.Config.Policy
	if a.check {
		// --check writes nothing (no persist_dir is created), but judges the configuration
		// as run would: a url without persist_dir is refused here, not at the first start.
		if err := pc.Validate(); err != nil {
			return err
		}
		pc.NoPersist = true
	}
	act := &activator{eng: a.Engine, routes: &a.routes, fromBundle: a.routesCfg.FromBundle}
	var vc vaultkeys.Config
	if ok, err := a.Config.Section("vault", &vc); err == nil && ok {
		act.keyClasses = vc.WithDefaults().Classes
	}
	mgr, err := bundle.NewManager(pc, act, a.Registry, a.Log)
	if err != nil {
		return err
	}
	if pc.Dir != "" && !bundle.IsBundleDir(pc.Dir) {
		if err := mgr.ActivatePolicyDir(ctx); err != nil {
			return fmt.Errorf("policy.dir: %w", err)
		}
	}
	a.Bundles = mgr
	mgr.Register(a.Admin)
	a.Add(mgr)
	return nil
}

// activator loads a policy set into the engine and, when the route map travels with the
// bundle (routes.from_bundle), publishes the route map with it. A bundle whose route map is
// invalid is rejected as a whole, so policy and routes never disagree about what a route is.
type activator struct {
	eng        *engine.Engine
	routes     *routes.Holder
	fromBundle bool
	// keyClasses are vault.classes (nil without a vault section): a policy whose catalogue
	// gives a field a key scope outside them is refused (checkKeyScopes).
	keyClasses []string
}

var _ bundle.Activator = (*activator)(nil)

func (v *activator) Load(ctx context.Context, ps *engine.PolicySet) error {
	if err := checkKeyScopes(ps.Data, v.keyClasses); err != nil {
		return err
	}
	var m *routes.Map
	if v.fromBundle {
		var ok bool
		var err error
		if m, ok, err = routes.FromData(ps.Data); err != nil {
			return err
		}
		if !ok {
			return errors.New("routes.from_bundle: the bundle has no data.consentry.routes")
		}
	}
	// Compile first (the step that may fail), then publish the route map with the policy in
	// one swap: the pipeline takes both at once for each request (engine.Active), routes it
	// with that map and decides it, and its list's response phase, with that policy. So a
	// request routed by the old map is never decided by the new policy, whose rules may not
	// decide the old routes (names, actions, customer binding) as the old one did, however
	// long it waits between routing and evaluation. The holder gets the map too: the
	// pipeline routes with it only while no policy carrying a map is active.
	p, err := v.eng.Prepare(ctx, ps)
	if err != nil {
		return err
	}
	if m != nil {
		p = p.WithRoutes(m)
		v.routes.Store(m)
	}
	v.eng.Activate(p)
	return nil
}

// checkKeyScopes refuses a policy whose catalogue gives a field a key scope that is not one
// of classes (vault.classes), when a vault section is configured. Erasure destroys the
// customer's keys of vault.classes only: a key of another class - created by a replica or a
// migration that knows it, or by the CRM - would survive an erasure, and the data under it
// would stay readable in backups, while this sidecar withholds the field forever.
func checkKeyScopes(data map[string]any, classes []string) error {
	if classes == nil {
		return nil
	}
	cons, _ := data["consentry"].(map[string]any)
	cat, _ := cons["catalog"].(map[string]any)
	fields, _ := cat["fields"].(map[string]any)
	var missing []string
	for name, def := range fields {
		d, _ := def.(map[string]any)
		if scope, _ := d["key_scope"].(string); scope != "" && !slices.Contains(classes, scope) {
			missing = append(missing, fmt.Sprintf("%s (%s)", scope, name))
		}
	}
	if len(missing) == 0 {
		return nil
	}
	slices.Sort(missing)
	return fmt.Errorf("policy catalogue: key scopes %s are not in vault.classes %v: an erasure would not destroy those keys; add the classes to vault.classes",
		strings.Join(missing, ", "), classes)
}

// assembleVault connects to Vault when the `vault:` section is present. Without it every
// field that needs a key is withheld (fail closed) and erasure is unavailable.
func (a *App) assembleVault(ctx context.Context) error {
	var vc vaultkeys.Config
	ok, err := a.Config.Section("vault", &vc)
	if err != nil || !ok {
		return err
	}
	a.hasVault = true
	if a.check {
		return checkVault(vc, a.Log)
	}
	// Destruction records and the decision log name customers by the same pseudonym, so a
	// reviewer can match an erasure to the customer's decisions. The log opens after Vault (it
	// may sign checkpoints with Vault transit), hence the late binding.
	opts := vaultkeys.Options{Registerer: a.Registry, Logger: a.Log.With("component", "vaultkeys")}
	if vc.PseudonymKey == "" && vc.PseudonymKeyFile == "" {
		opts.Pseudonymize = func(id string) string {
			if a.Decisions == nil {
				return ""
			}
			return a.Decisions.Pseudonymizer().Customer(id)
		}
	}
	// Every completed destruction also goes into the decision log's hash chain, next to the
	// customer's decisions (the key ledger keeps the full record with key names). The record
	// has no raw id: AppendErasure finds the customer's id in actor and reason by the
	// pseudonym the key manager made (its own, with a Vault pseudonym key) and replaces it.
	opts.Destructions = vaultkeys.DestructionSinkFunc(func(ctx context.Context, rec *vaultkeys.DestructionRecord) error {
		if a.Decisions == nil {
			return errors.New("decision log not open")
		}
		return a.Decisions.AppendErasure(context.WithoutCancel(ctx), rec.Time, auditlog.Erasure{
			Customer: rec.CustomerPseudonym, Classes: keyClasses(rec, a.Keys.Config().Classes),
			Actor: rec.Actor, Reason: rec.Reason, LedgerSeq: rec.Seq, LedgerHash: rec.Hash, Complete: true,
			Pseudonymize: a.Keys.Pseudonym,
		})
	})
	km, err := vaultkeys.New(ctx, vc, opts)
	if err != nil {
		return fmt.Errorf("vault: %w", err)
	}
	a.Keys = km
	a.AddCloser(closeFunc(func() error { km.Close(); return nil }))
	if vc.ReplayOnStart() {
		a.Add(&erasureReplay{keys: km, log: a.Log.With("component", "vaultkeys")})
	}
	a.Admin.AddReadiness("vault", km.Ready)
	a.Admin.AddStatus("vault", km.Status)
	return nil
}

// assembleDecisionLog opens the audit trail. It is not optional: without a `decision_log:`
// section the log goes to var/decisions with a signing key generated on first start, so no
// decision is ever unrecorded (ResolveDecisionLog: the CLI resolves the same files).
func (a *App) assembleDecisionLog(ctx context.Context) error {
	files, err := DecisionLogConfig(a.Config)
	if err != nil {
		return err
	}
	if a.check {
		return a.checkDecisionLog(files)
	}
	if err := a.generateKeys(files); err != nil {
		return err
	}
	lc := files.Config
	opts := auditlog.Options{Logger: a.Log.With("component", "decision_log"), Registerer: a.Registry}
	var vs *vaultSigner
	if lc.SigningVaultKey != "" {
		if a.Keys == nil {
			return errors.New("decision_log.signing_vault_key: needs the vault section")
		}
		if err := checkSigningVaultKey(lc.SigningVaultKey); err != nil {
			return err
		}
		// Read the key now when Vault answers, so the open checkpoint is signed; otherwise it
		// is read in the background (vaultSigner.Run) and start-up goes on, not ready.
		vs = newVaultSigner(a.Keys, lc.SigningVaultKey, a.Log.With("component", "decision_log"))
		if err := vs.resolve(ctx); err != nil {
			a.Log.Error("decision log: the Vault transit signing key cannot be read yet; retrying in the background, checkpoints are not signed meanwhile",
				"err", err, "alarm", "decision_log_checkpoint")
		}
		opts.Signer = vs
	}
	if a.Keys != nil {
		// Checkpoints anchor the key ledger's head; a start whose ledger lost records the
		// log saw is refused (rather than forget an erasure).
		opts.KeyLedger = a.Keys.Ledger()
	}
	lg, err := auditlog.Open(lc, opts)
	if err != nil {
		return err
	}
	a.AddCloser(closeFunc(func() error {
		if err := lg.Close(); err != nil {
			return fmt.Errorf("decision log: %w", err)
		}
		a.Log.Info("decision log closed", "committed", lg.Committed())
		return nil
	}))
	a.Decisions = lg
	a.Admin.AddReadiness("decision_log", func(context.Context) error { return lg.Healthy() })
	if vs != nil {
		a.Add(vs)
		a.Admin.AddReadiness("decision_log_signer", vs.Ready)
	}
	a.Admin.AddStatus("decision_log", func() any {
		st := map[string]any{"dir": lg.Dir(), "committed": lg.Committed(), "mode": lc.WithDefaults().Mode}
		if err := lg.Healthy(); err != nil {
			st["error"] = err.Error()
		}
		if up, ok := lg.UploadStatus(); ok {
			st["upload"] = up
		}
		if vs != nil {
			if err := vs.Ready(context.Background()); err != nil {
				st["signer_error"] = err.Error()
			}
		}
		return st
	})
	return nil
}

// assembleState opens the consent/case/agreement store (`state:`, the default: SQLite under
// var/state) or, for fixtures, a static enrichment file (`enrichment:`).
func (a *App) assembleState(ctx context.Context) error {
	var sc static.Config
	hasStatic, err := a.Config.Section("enrichment", &sc)
	if err != nil {
		return err
	}
	var cc consent.Config
	hasState, err := a.Config.Section("state", &cc)
	if err != nil {
		return err
	}
	if hasStatic && hasState {
		return errors.New("enrichment: set either state (the consent store) or enrichment (a static file), not both")
	}
	if hasStatic {
		if err := sc.Validate(); err != nil {
			return err
		}
		p, err := static.Load(sc.File)
		if err != nil {
			return fmt.Errorf("enrichment.file: %w", err)
		}
		a.enrich = p
		return nil
	}
	if len(cc.Purposes) == 0 && cc.PurposesFile == "" && a.Config.Policy.Dir != "" {
		// Consent can be recorded for exactly the purposes the policy library knows.
		if p := filepath.Join(a.Config.Policy.Dir, "data", "consentry", "catalog", "data.json"); fileExists(p) {
			cc.PurposesFile = p
		}
	}
	opts := consent.Options{Logger: a.Log.With("component", "state"), Registry: a.Registry}
	if a.Keys != nil {
		opts.Eraser = a.Keys.EraseFunc()
	} else if !a.hasVault && (cc.EraseOnWithdrawal || cc.RetentionErasure.Enabled) {
		// Without Vault there are no keys to destroy: every erasure would wait forever.
		return errors.New("state.erase_on_withdrawal and state.retention_erasure need the vault section (the keys an erasure destroys)")
	}
	if a.check {
		if err := consent.CheckConfig(cc); err != nil {
			return fmt.Errorf("state: %w", err)
		}
		a.enrich = checkEnrich{}
		return nil
	}
	st, err := consent.Open(ctx, cc, opts)
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	a.State = st
	a.enrich = st
	a.AddCloser(st)
	st.Mount(a.Admin)
	if a.Keys != nil {
		vaultkeys.MountAdmin(a.Admin.API(), &erasure{keys: a.Keys, state: st})
	}
	return nil
}

// erasure is the admin API's erase, run as a state store erasure request (consent.RunErasure):
// the request is recorded first, then the customer is marked erased, so every later decision
// denies and new grants are refused whatever happens to the keys, then the keys are destroyed.
// If that fails, or the process dies on the way, the request stays pending and the state
// store's sweep retries it until the keys are gone: a half-erased customer is never served,
// and never forgotten.
type erasure struct {
	keys  *vaultkeys.Manager
	state *consent.Store
}

var _ vaultkeys.Eraser = (*erasure)(nil)

func (e *erasure) Erase(ctx context.Context, customerID, actor, reason string) (*vaultkeys.DestructionRecord, error) {
	var rec *vaultkeys.DestructionRecord
	req := consent.ErasureRequest{CustomerID: customerID, RequestedAt: time.Now().UTC(), Actor: actor, Reason: reason}
	err := e.state.RunErasure(ctx, req, func(ctx context.Context) error {
		r, err := e.keys.Erase(ctx, customerID, actor, reason)
		rec = r
		return err
	})
	switch {
	case err == nil:
		return rec, nil
	case consent.CodeOf(err) == "invalid.customer_id":
		return nil, fmt.Errorf("%w: %v", vaultkeys.ErrInvalidCustomer, err)
	case errors.Is(err, consent.ErrErasureInProgress):
		return nil, err
	}
	return rec, fmt.Errorf("%w (the erasure stays requested; the state sweep retries it until done)", err)
}

// assemblePipeline builds the shared request pipeline every front door uses.
func (a *App) assemblePipeline(context.Context) error {
	var ic identity.Config
	if _, err := a.Config.Section("identity", &ic); err != nil {
		return err
	}
	var idOpts []identity.Option
	if a.check {
		idOpts = append(idOpts, identity.WithoutPrefetch()) // --check reaches no JWKS URL
	}
	id, err := identity.New(ic, idOpts...)
	if err != nil {
		return err
	}
	a.Admin.AddReadiness("identity", func(context.Context) error { return id.Ready() })
	a.Admin.AddAuthenticator(adminJWT(id, a.Config.Admin.WithDefaults().AdminRoles))
	rc := a.routesCfg
	if !a.hasRoutes {
		return errors.New("routes: section required (routes.file: the CRM's route map, or routes.from_bundle: true)")
	}
	if err := rc.Validate(); err != nil {
		return err
	}
	if !rc.FromBundle {
		m, err := routes.LoadConfig(rc)
		if err != nil {
			return fmt.Errorf("routes.file: %w", err)
		}
		a.routes.Store(m)
	}
	var pc pipeline.Config
	if _, err := a.Config.Section("pipeline", &pc); err != nil {
		return err
	}
	p, err := pipeline.New(pc, pipeline.Deps{
		Engine:   a.Engine,
		Routes:   &a.routes,
		Identity: id,
		Enrich:   a.enrich,
		Log:      a.sink(),
		Logger:   a.Log.With("component", "pipeline"),
		Metrics:  a.Registry,
	})
	if err != nil {
		return err
	}
	a.Pipeline = p
	return nil
}

// assembleFrontDoors starts the gRPC listener (ext_authz, and ext_proc on the same port) when
// `envoy:` is configured and the HTTP reverse proxy when `proxy:` is.
func (a *App) assembleFrontDoors(ctx context.Context) error {
	var ec envoy.Config
	hasEnvoy, err := a.Config.Section("envoy", &ec)
	if err != nil {
		return err
	}
	if hasEnvoy {
		srv, err := envoy.New(ec, a.Pipeline, a.Log.With("component", "envoy"))
		if err != nil {
			return err
		}
		a.Envoy = srv
		a.Add(srv)
	}
	return a.assembleResponseSide(ctx)
}

// keyClasses names the classes of the destroyed keys (key names end in "-<class>").
func keyClasses(rec *vaultkeys.DestructionRecord, classes []string) []string {
	var out []string
	for _, k := range rec.Keys {
		for _, c := range classes {
			if strings.HasSuffix(k.Name, "-"+c) {
				out = append(out, c)
				break
			}
		}
	}
	return out
}

// erasureReplay re-applies the shredded-keys ledger to Vault once the sidecar is logged in:
// after a Vault restore from a snapshot older than an erasure, the restored keys are destroyed
// again. (The key cache refuses ledger-named keys from the start either way.)
type erasureReplay struct {
	keys *vaultkeys.Manager
	log  *slog.Logger
}

func (r *erasureReplay) Name() string { return "erasure-replay" }

// Run waits for a Vault login, replays once, then idles until shutdown (a component that
// returns would stop the sidecar).
func (r *erasureReplay) Run(ctx context.Context) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for r.keys.Ready(ctx) != nil {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
	rep, err := r.keys.ReplayErasures(ctx)
	switch {
	case err != nil && ctx.Err() == nil:
		r.log.Error("replaying the shredded-keys ledger failed; run consentry keys replay-erasures", "err", err, "alarm", "erasure_replay_failed")
	case rep != nil && len(rep.Destroyed) > 0:
		r.log.Warn("keys named by past erasures existed again in Vault and were destroyed (Vault restored from an older snapshot?)", "destroyed", len(rep.Destroyed), "records", rep.Records)
	case rep != nil:
		r.log.Info("shredded-keys ledger replayed", "records", rep.Records, "absent", rep.Absent)
	}
	<-ctx.Done()
	return nil
}

// closeFunc adapts a function to Closer.
type closeFunc func() error

func (f closeFunc) Close() error { return f() }

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// ensureFile runs create (which writes path) unless path already exists.
func ensureFile(path string, create func() error) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return create()
}

var _ enrich.Provider = (*consent.Store)(nil)

// checkSink and checkEnrich stand in for the decision log and the state store in an App
// assembled by run --check, which is never run: they refuse everything.
type (
	checkSink   struct{}
	checkEnrich struct{}
)

var (
	_ audit.Sink      = checkSink{}
	_ enrich.Provider = checkEnrich{}
)

var errCheckOnly = errors.New("assembled by run --check: not serving")

func (checkSink) Append(context.Context, *audit.Entry) error { return errCheckOnly }

func (checkEnrich) Enrich(context.Context, enrich.Query) (input.Enrichment, error) {
	return input.Enrichment{}, errCheckOnly
}

func (checkEnrich) EnrichBatch(context.Context, enrich.Query, []string) (map[string]input.Enrichment, error) {
	return nil, errCheckOnly
}
