package replay

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/audit"
	"github.com/consentry/consentry/sidecar/auditlog"
	"github.com/consentry/consentry/sidecar/bundle"
	"github.com/consentry/consentry/sidecar/decision"
	"github.com/consentry/consentry/sidecar/engine"
	"github.com/consentry/consentry/sidecar/input"
)

const policyDir = "../../../policies"

var pseudoKey = []byte("replay-test-pseudonym-key-0123456789abcdef")

// recordLog decides n inputs with the repository's policies and logs them, as the pipeline does.
func recordLog(t testing.TB, n int) string { return recordLogIn(t, n, t.TempDir()) }

// recordLogIn writes the log in dir. It logs in async mode (one fsync per interval rather than
// per decision) to build large logs quickly; strict mode is the auditlog package's subject.
func recordLogIn(t testing.TB, n int, dir string) string {
	t.Helper()
	ctx := context.Background()
	ps, err := engine.LoadDir(policyDir, engine.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	eng := engine.New(engine.Config{Timeout: time.Second}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := eng.Load(ctx, ps); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(policyDir, "examples/support-read.json"))
	if err != nil {
		t.Fatal(err)
	}
	l, err := auditlog.Open(auditlog.Config{Dir: dir, UnsignedCheckpoints: true, Mode: auditlog.ModeAsync}, auditlog.Options{PseudonymKey: pseudoKey, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i := 0; i < n; i++ {
		var in input.Input
		if err := json.Unmarshal(raw, &in); err != nil {
			t.Fatal(err)
		}
		cid := fmt.Sprintf("c-%d", 1000+i)
		in.Resource.CustomerID, in.Request.Params["customer_id"], in.Request.Path = cid, cid, "/api/customers/"+cid
		in.Enrichment.Case.CustomerID, in.Enrichment.Customer.ID = cid, cid
		in.Request.Headers["authorization"] = []string{"Bearer x"}
		if i%4 == 3 {
			in.Purpose = "marketing.communications.email"
		}
		res, _ := eng.Decide(ctx, &in)
		e := &audit.Entry{DecisionID: fmt.Sprintf("d-%d", i), Timestamp: in.Time.Now, Input: &in, Decision: res.Decision, Revision: res.Revision, Bundles: res.Bundles}
		if err := l.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// candidate copies the policy directory, removing user.contact from the support purpose.
func candidate(t testing.TB) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(policyDir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(policyDir, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if rel == filepath.Join("data", "consentry", "catalog", "data.json") {
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				return err
			}
			cats := m["purposes"].(map[string]any)["essential.service.operations.support"].(map[string]any)["categories"].(map[string]any)
			var keep []any
			for _, c := range cats["allow"].([]any) {
				if c != "user.contact" {
					keep = append(keep, c)
				}
			}
			cats["allow"] = keep
			b, _ = json.Marshal(m)
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

func TestReplaySamePolicyChangesNothing(t *testing.T) {
	dir := recordLog(t, 40)
	ps, err := LoadCandidate(policyDir)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Run(context.Background(), dir, ps, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Replayed != 40 || rep.Changed != 0 || rep.Skipped != 0 {
		var b strings.Builder
		rep.WriteText(&b)
		t.Fatalf("same policy: %s", b.String())
	}
}

func TestReplayReportsChanges(t *testing.T) {
	dir := recordLog(t, 40)
	ps, err := LoadCandidate(candidate(t))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Run(context.Background(), dir, ps, Options{Examples: 3})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	rep.WriteText(&b)
	if rep.Changed != 30 || rep.ByPurpose["essential.service.operations.support"] != 30 || rep.ByKind["fields"] != 30 || len(rep.Examples) != 3 {
		t.Fatalf("candidate: %s", b.String())
	}
	if rep.Examples[0].Seq > rep.Examples[1].Seq || !strings.Contains(b.String(), "contact.email allow->") {
		t.Fatalf("examples: %s", b.String())
	}
	// Filtering replays a subset.
	rep, err = Run(context.Background(), dir, ps, Options{Filter: auditlog.Filter{Purpose: "marketing.communications.email"}})
	if err != nil || rep.Replayed != 10 || rep.Changed != 0 {
		t.Fatalf("filtered: %v %+v", err, rep)
	}
}

func TestReplayBundleTarball(t *testing.T) {
	dir := recordLog(t, 8)
	cdir := candidate(t)
	ps, err := engine.LoadDir(cdir, engine.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := bundle.FromPolicySet(cdir, ps, "cand-7")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := bundle.WriteTarball(b)
	if err != nil {
		t.Fatal(err)
	}
	tarball := filepath.Join(t.TempDir(), "bundle.tar.gz")
	os.WriteFile(tarball, raw, 0o644)
	cps, err := LoadCandidate(tarball)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Run(context.Background(), dir, cps, Options{})
	if err != nil || rep.Candidate != "cand-7" || rep.Changed != 6 {
		t.Fatalf("tarball replay: %v %+v", err, rep)
	}
}

// TestReplaySkipsWhatThePolicyDidNotDecide: a deny the pipeline made (identity, obligations:
// the logged error is set and the input partial) and a decision whose input a mask rule
// changed are skipped, and counted apart; replaying the same policy then changes nothing.
// Credential headers the log drops do not make a decision unreplayable.
func TestReplaySkipsWhatThePolicyDidNotDecide(t *testing.T) {
	ctx := context.Background()
	dir := recordLog(t, 4) // each with an authorization header the log drops
	ps, err := LoadCandidate(policyDir)
	if err != nil {
		t.Fatal(err)
	}
	// Append a pipeline deny and a masked decision to the same log.
	l, err := auditlog.Open(auditlog.Config{Dir: dir, UnsignedCheckpoints: true, Mode: auditlog.ModeAsync,
		Mask: []auditlog.MaskRule{{Op: auditlog.MaskOpUpsert, Path: "/input/subject/roles", Value: []string{"masked"}}}},
		auditlog.Options{PseudonymKey: pseudoKey, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(filepath.Join(policyDir, "examples/support-read.json"))
	var in input.Input
	if err := json.Unmarshal(raw, &in); err != nil {
		t.Fatal(err)
	}
	eng := engine.New(engine.Config{Timeout: time.Second}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := eng.Load(ctx, ps); err != nil {
		t.Fatal(err)
	}
	res, _ := eng.Decide(ctx, &in)
	masked := &audit.Entry{DecisionID: "d-masked", Timestamp: in.Time.Now, Input: &in, Decision: res.Decision, Revision: res.Revision}
	partial := &input.Input{Time: in.Time, Phase: input.PhaseRequest, Request: input.Request{Method: "GET", Path: "/api/customers/c-1"}}
	pipelineDeny := &audit.Entry{DecisionID: "d-401", Timestamp: in.Time.Now, Input: partial,
		Decision: decision.Deny(401, "identity.credential_missing", "no credentials"), Error: "identity.credential_missing: no credentials"}
	for _, e := range []*audit.Entry{masked, pipelineDeny} {
		if err := l.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	rep, err := Run(ctx, dir, ps, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Replayed != 4 || rep.Changed != 0 || rep.Skipped != 2 || rep.SkippedPipeline != 1 || rep.SkippedMasked != 1 {
		var b strings.Builder
		rep.WriteText(&b)
		t.Fatalf("same policy: %+v\n%s", rep, b.String())
	}
}
