// Package replay is impact analysis over the decision log: it re-evaluates the logged inputs
// of past decisions against a candidate policy (a directory or a bundle) and reports the
// decisions that would change, counted by purpose and reason, with examples. The logged input
// carries the enrichment (consent, case, agreement, customer state) and the decision time as
// of the original decision, so a replay answers "what would this policy have decided then".
package replay

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	gojson "github.com/goccy/go-json"

	"github.com/consentry/consentry/sidecar/auditlog"
	"github.com/consentry/consentry/sidecar/bundle"
	"github.com/consentry/consentry/sidecar/decision"
	"github.com/consentry/consentry/sidecar/engine"
	"github.com/consentry/consentry/sidecar/input"
	"github.com/consentry/consentry/sidecar/pipeline"
)

// Options configure a replay.
type Options struct {
	// Filter selects which logged decisions to replay (default: all).
	Filter auditlog.Filter
	// Examples is the number of example changes kept (lowest seq first). Default 10.
	Examples int
	// Workers evaluating in parallel. Default GOMAXPROCS.
	Workers int
	// Engine configures evaluation. Replay is offline, so the timeout defaults to 10s instead
	// of the hot path's 50ms: a slow machine must not report timeouts as policy changes.
	Engine engine.Config
	// Progress, when set, receives scan progress.
	Progress func(auditlog.Progress)
}

// Change is one decision that would change.
type Change struct {
	Seq        uint64    `json:"seq"`
	DecisionID string    `json:"decision_id"`
	Time       time.Time `json:"time"`
	Purpose    string    `json:"purpose"`
	Action     string    `json:"action"`
	Subject    string    `json:"subject,omitempty"`
	Customer   string    `json:"customer,omitempty"`
	// Kinds say what changed: outcome, status, reasons, fields, key_scopes, obligations,
	// flags, headers, records.
	Kinds []string `json:"kinds"`
	Old   Outcome  `json:"old"`
	New   Outcome  `json:"new"`
}

// Report is the result of a replay.
type Report struct {
	Candidate string `json:"candidate"`
	Replayed  int    `json:"replayed"`
	Changed   int    `json:"changed"`
	// AllowToDeny and DenyToAllow count outcome flips.
	AllowToDeny int `json:"allow_to_deny"`
	DenyToAllow int `json:"deny_to_allow"`
	// Skipped counts logged decisions not replayed: SkippedPipeline those the pipeline
	// decided, not the policy (public routes, allowed by the route map with reason
	// route.public; identity, request and route failures, unsupported obligations, engine
	// errors: the logged "error" is set and the input is partial), SkippedMasked those
	// whose input a mask rule erased or masked in part (the policy would see other values).
	// Credential headers and query parameters the log drops do not count: the policy never
	// sees them.
	Skipped         int `json:"skipped"`
	SkippedPipeline int `json:"skipped_pipeline"`
	SkippedMasked   int `json:"skipped_masked"`
	// Errors counts candidate evaluations that failed (they are deny decisions, and counted as
	// changes when the original was not the same deny).
	Errors int `json:"errors"`
	// ByPurpose counts changed decisions per purpose.
	ByPurpose map[string]int `json:"by_purpose"`
	// ByReason counts reason codes that appear (+code) or disappear (-code) in changed decisions.
	ByReason map[string]int `json:"by_reason"`
	// ByKind counts changes per kind.
	ByKind   map[string]int `json:"by_kind"`
	Examples []Change       `json:"examples"`
	Seconds  float64        `json:"seconds"`
	PerSec   float64        `json:"decisions_per_second"`
}

// LoadCandidate reads a candidate policy: a policy directory (rego + data/ + schema/), an OPA
// bundle directory (with .manifest) or a bundle tarball (.tar.gz). Bundle signatures are not
// required for a replay (it releases nothing), but a signed bundle is still read by OPA's
// bundle reader.
func LoadCandidate(path string) (*engine.PolicySet, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("candidate policy: %w", err)
	}
	if st.IsDir() {
		if _, err := os.Stat(filepath.Join(path, ".manifest")); err == nil {
			v, err := bundle.NewVerifier(bundle.VerificationConfig{}, false, 0)
			if err != nil {
				return nil, err
			}
			vb, err := v.ReadDir(path)
			if err != nil {
				return nil, fmt.Errorf("candidate bundle %s: %w", path, err)
			}
			return vb.PolicySet("candidate"), nil
		}
		ps, err := engine.LoadDir(path, engine.LoadOptions{})
		if err != nil {
			return nil, err
		}
		ps.Revision = "candidate:" + filepath.Base(filepath.Clean(path))
		return ps, nil
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("candidate policy: %w", err)
	}
	v, err := bundle.NewVerifier(bundle.VerificationConfig{}, false, 0)
	if err != nil {
		return nil, err
	}
	vb, err := v.ReadTarball(raw)
	if err != nil {
		return nil, fmt.Errorf("candidate bundle %s: %w", path, err)
	}
	return vb.PolicySet("candidate"), nil
}

// logged is the part of a decision record replay needs, decoded in one pass.
type logged struct {
	Type       string             `json:"type"`
	Seq        uint64             `json:"seq"`
	DecisionID string             `json:"decision_id"`
	Timestamp  time.Time          `json:"timestamp"`
	Purpose    string             `json:"purpose"`
	CaseID     string             `json:"case_id"`
	Action     string             `json:"action"`
	Subject    *auditlog.Subject  `json:"subject"`
	Customer   string             `json:"customer"`
	Customers  []string           `json:"customers"`
	Outcome    string             `json:"outcome"`
	Reasons    []string           `json:"reasons"`
	Erased     []string           `json:"erased"`
	Masked     []string           `json:"masked"`
	Error      string             `json:"error"`
	Input      *input.Input       `json:"input"`
	Result     *decision.Decision `json:"result"`
}

func (l *logged) event() *auditlog.Event {
	return &auditlog.Event{Type: l.Type, Seq: l.Seq, DecisionID: l.DecisionID, Timestamp: l.Timestamp, Purpose: l.Purpose, CaseID: l.CaseID,
		Action: l.Action, Subject: l.Subject, Customer: l.Customer, Customers: l.Customers, Outcome: l.Outcome, Reasons: l.Reasons, Erased: l.Erased}
}

// Run replays the decisions of the log in dir against ps. One goroutine reads lines; the
// workers decode (one pass, goccy/go-json), filter, evaluate and compare.
func Run(ctx context.Context, dir string, ps *engine.PolicySet, o Options) (*Report, error) {
	if o.Examples == 0 {
		o.Examples = 10
	}
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	if o.Engine.Timeout == 0 {
		o.Engine.Timeout = 10 * time.Second
	}
	// time.now_ns() in a candidate is the time of the decision replayed, as input.time is.
	o.Engine.ClockFromInput = true
	eng := engine.New(o.Engine, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := eng.Load(ctx, ps); err != nil {
		return nil, fmt.Errorf("candidate policy: %w", err)
	}
	rev, _ := eng.Revision()
	rep := &Report{Candidate: rev, ByPurpose: map[string]int{}, ByReason: map[string]int{}, ByKind: map[string]int{}}
	start := time.Now()
	jobs := make(chan []byte, 1024)
	var mu sync.Mutex
	var wg sync.WaitGroup
	var firstErr error
	for w := 0; w < o.Workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for line := range jobs {
				var rec logged
				if err := gojson.Unmarshal(line, &rec); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("decode record: %w", err)
					}
					mu.Unlock()
					continue
				}
				if !o.Filter.Match(rec.event()) {
					continue
				}
				ch, skip, evalErr := replayOne(ctx, eng, &rec)
				mu.Lock()
				rep.add(ch, skip, evalErr, o.Examples)
				mu.Unlock()
			}
		}()
	}
	var p auditlog.Progress
	keep := o.Filter.Prefilter()
	qerr := auditlog.ScanLines(dir, func(seg string, line []byte) error {
		if seg != p.Segment {
			p.Segment = seg
			if o.Progress != nil {
				o.Progress(p)
			}
		}
		if p.Scanned++; p.Scanned%100000 == 0 && o.Progress != nil {
			o.Progress(p)
		}
		if !keep(line) {
			return nil
		}
		p.Matched++
		select {
		case jobs <- append([]byte(nil), line...):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	close(jobs)
	wg.Wait()
	if qerr == nil {
		qerr = firstErr
	}
	if qerr != nil {
		return nil, qerr
	}
	sort.Slice(rep.Examples, func(i, j int) bool { return rep.Examples[i].Seq < rep.Examples[j].Seq })
	rep.Seconds = time.Since(start).Seconds()
	if rep.Seconds > 0 {
		rep.PerSec = float64(rep.Replayed) / rep.Seconds
	}
	return rep, nil
}

func (r *Report) add(ch *Change, skip skipReason, evalErr bool, examples int) {
	switch skip {
	case skipPipeline:
		r.Skipped++
		r.SkippedPipeline++
		return
	case skipMasked:
		r.Skipped++
		r.SkippedMasked++
		return
	}
	r.Replayed++
	if evalErr {
		r.Errors++
	}
	if ch == nil {
		return
	}
	r.Changed++
	r.ByPurpose[ch.Purpose]++
	for _, k := range ch.Kinds {
		r.ByKind[k]++
	}
	if ch.Old.Allow && !ch.New.Allow {
		r.AllowToDeny++
	}
	if !ch.Old.Allow && ch.New.Allow {
		r.DenyToAllow++
	}
	for _, c := range ch.New.Reasons {
		if !slices.Contains(ch.Old.Reasons, c) {
			r.ByReason["+"+c]++
		}
	}
	for _, c := range ch.Old.Reasons {
		if !slices.Contains(ch.New.Reasons, c) {
			r.ByReason["-"+c]++
		}
	}
	// Keep the lowest-seq examples, whatever order the workers finish in.
	if len(r.Examples) < examples {
		r.Examples = append(r.Examples, *ch)
		return
	}
	worst := 0
	for i := range r.Examples {
		if r.Examples[i].Seq > r.Examples[worst].Seq {
			worst = i
		}
	}
	if ch.Seq < r.Examples[worst].Seq {
		r.Examples[worst] = *ch
	}
}

// skipReason says why a logged decision is not replayed ("" when it is).
type skipReason string

const (
	skipPipeline skipReason = "pipeline"
	skipMasked   skipReason = "masked"
)

func replayOne(ctx context.Context, eng *engine.Engine, rec *logged) (*Change, skipReason, bool) {
	if rec.Input == nil || rec.Result == nil {
		return nil, skipMasked, false
	}
	if rec.Error != "" || publicRoute(rec.Result) {
		return nil, skipPipeline, false
	}
	for _, p := range append(rec.Erased[:len(rec.Erased):len(rec.Erased)], rec.Masked...) {
		if (p == "/input" || strings.HasPrefix(p, "/input/")) && !auditlog.CredentialPointer(p) {
			return nil, skipMasked, false
		}
	}
	// A list filtered per record logs its response phase next to the request: input.records
	// (each customer with its state) and result.records (each customer's outcome as
	// enforced). The request is decided without them, as the pipeline did; the records are
	// then decided again in a response phase, as pipeline.DecideRecords does.
	in := *rec.Input
	in.Request.FrontDoor = "replay"
	page := in.Records
	in.Records = nil
	res, err := eng.Decide(ctx, &in)
	failed := err != nil
	o, n := summarize(rec.Result), summarize(res.Decision)
	if len(page) > 0 || len(rec.Result.Records) > 0 {
		ids := make([]string, len(page))
		for i, r := range page {
			ids[i] = r.CustomerID
		}
		o.Records = summarizeRecords(rec.Result.Records)
		d := res.Decision // a request the candidate refuses serves no record (EnforcedRecords)
		if d.Allow && len(page) > 0 {
			rin := in
			rin.Phase, rin.Records = input.PhaseResponse, page
			rres, rerr := eng.Decide(ctx, &rin)
			failed = failed || rerr != nil
			d = rres.Decision
		}
		n.Records = summarizeRecords(pipeline.EnforcedRecords(d, ids))
	}
	kinds := diff(o, n)
	if len(kinds) == 0 {
		return nil, "", failed
	}
	ch := &Change{Seq: rec.Seq, DecisionID: rec.DecisionID, Time: rec.Timestamp, Purpose: rec.Purpose, Action: rec.Action, Customer: rec.Customer, Kinds: kinds, Old: o, New: n}
	if rec.Subject != nil {
		ch.Subject = rec.Subject.ID
	}
	return ch, "", failed
}

// publicRoute reports whether d is the allow the pipeline gives a route the route map marks
// public: no policy was evaluated, so there is nothing to replay.
func publicRoute(d *decision.Decision) bool {
	return d.Allow && len(d.Reasons) == 1 && d.Reasons[0].Code == pipeline.ReasonRoutePublic
}

// WriteText prints a human summary.
func (r *Report) WriteText(w io.Writer) {
	fmt.Fprintf(w, "replayed %d decisions against %s in %.2fs (%.0f/s): %d would change (%d allow->deny, %d deny->allow), %d evaluation errors\n",
		r.Replayed, r.Candidate, r.Seconds, r.PerSec, r.Changed, r.AllowToDeny, r.DenyToAllow, r.Errors)
	if r.Skipped > 0 {
		fmt.Fprintf(w, "skipped %d: %d decided by the pipeline, not the policy (public routes, identity, request, obligations, engine errors); %d with input masked in part\n",
			r.Skipped, r.SkippedPipeline, r.SkippedMasked)
	}
	printCounts(w, "by purpose", r.ByPurpose)
	printCounts(w, "by reason (+ added, - removed)", r.ByReason)
	printCounts(w, "by kind", r.ByKind)
	if len(r.Examples) > 0 {
		fmt.Fprintln(w, "examples:")
		for _, c := range r.Examples {
			fmt.Fprintf(w, "  seq %d %s %s %s %s: %s\n", c.Seq, c.Time.UTC().Format(time.RFC3339), c.DecisionID, c.Purpose, c.Action, describe(c))
		}
	}
}

func printCounts(w io.Writer, title string, m map[string]int) {
	if len(m) == 0 {
		return
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return m[keys[i]] > m[keys[j]] || m[keys[i]] == m[keys[j]] && keys[i] < keys[j] })
	fmt.Fprintf(w, "%s:\n", title)
	for _, k := range keys {
		fmt.Fprintf(w, "  %6d  %s\n", m[k], k)
	}
}
