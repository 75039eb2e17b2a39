package replay

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/consentry/consentry/sidecar/audit"
	"github.com/consentry/consentry/sidecar/auditlog"
	"github.com/consentry/consentry/sidecar/input"
	"github.com/consentry/consentry/sidecar/pipeline"
	"github.com/consentry/consentry/sidecar/pipeline/pipelinetest"
	"github.com/consentry/consentry/sidecar/routes"
	"github.com/consentry/consentry/sidecar/transform"
)

// pipelineLog runs real requests through the real pipeline (the fixture's policies, customer
// state and identity; the demo CRM's route map plus a public health check) and, for the
// list, the response transformer, and logs them as the proxy does:
//
//	seq 0  GET /healthz                 public route (allowed by the route map, route.public)
//	seq 1  GET /api/customers           marketing list: c-1001 served, c-3003 (withdrawn) and c-2002 (erased) removed
//	seq 2  GET /api/customers/c-1001    support lead, break-glass (flag and record_justification obligation)
//	seq 3  GET /api/customers/c-1001    support agent on case-7
func pipelineLog(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	fx, err := pipelinetest.New(t.TempDir(), pipelinetest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer fx.Close()
	raw, err := os.ReadFile(filepath.Join(pipelinetest.RepoRoot(), "deploy", "routes", "democrm.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	raw = append(raw, "\n  - method: GET\n    path: /healthz\n    public: true\n"...)
	rm, err := routes.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	l, err := auditlog.Open(auditlog.Config{Dir: dir, UnsignedCheckpoints: true, Mode: auditlog.ModeAsync}, auditlog.Options{PseudonymKey: pseudoKey, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	p, err := pipeline.New(pipeline.Config{}, pipeline.Deps{Engine: fx.Engine, Routes: rm, Identity: fx.Identity, Enrich: fx.Enrich, Log: l, Logger: fx.Logger})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := transform.New(transform.Config{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	check := func(target string, h map[string][]string) *pipeline.Outcome {
		out := p.Check(ctx, &pipeline.Request{FrontDoor: "proxy", Method: "GET", Target: target, Headers: h, Source: input.Source{Address: "127.0.0.1:1"},
			CanFulfil: []string{pipeline.ObligationFilterRecords, pipeline.ObligationMinimizeFields}})
		if !out.Allowed() {
			t.Fatalf("%s denied: %v", target, out.Decision.Reasons)
		}
		return out
	}
	bearer := func(tok string) []string { return []string{"Bearer " + tok} }
	record := func(out *pipeline.Outcome, enf audit.Enforcement) {
		if err := p.Record(ctx, out, enf); err != nil {
			t.Fatal(err)
		}
	}

	record(check("/healthz", nil), audit.Enforcement{Status: 200})

	mkt := fx.Token("emp-30", "employee", []string{"marketing"}, nil)
	list := check("/api/customers", map[string][]string{"authorization": bearer(mkt), "x-purpose": {"marketing.communications.email"}})
	res := tr.Response(ctx, p, list, transform.Response{Status: 200, ContentType: "application/json",
		Body: []byte(`{"items":[{"id":"c-1001","name":"A"},{"id":"c-3003","name":"B"},{"id":"c-2002"}],"total":3}`)})
	if res.Enforcement.RecordsReturned != 1 || res.Enforcement.Records == nil {
		t.Fatalf("list enforcement %+v", res.Enforcement)
	}
	enf := res.Enforcement
	enf.Status = res.Status
	record(list, enf)

	lead := fx.Token("emp-5", "employee", []string{"support_lead"}, nil)
	bg := check("/api/customers/c-1001", map[string][]string{"authorization": bearer(lead), "x-purpose": {"essential.service.operations.support"},
		"x-break-glass": {"customer on the phone, system down"}})
	if !slices.Contains(bg.Decision.Flags, "break_glass") {
		t.Fatalf("break-glass decision without its flag: %+v", bg.Decision)
	}
	record(bg, audit.Enforcement{Status: 200})

	record(check("/api/customers/c-1001", map[string][]string{"authorization": bearer(fx.Agent()), "x-purpose": {"essential.service.operations.support"},
		"x-case-id": {"case-7"}}), audit.Enforcement{Status: 200})
	return dir
}

// candidateWith copies the policy directory, rewriting the files edit names (paths relative to
// it) and adding the files of add.
func candidateWith(t *testing.T, edit map[string]func([]byte) []byte, add map[string]string) string {
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
		if f := edit[filepath.ToSlash(rel)]; f != nil {
			b = f(b)
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	for rel, content := range add {
		if err := os.WriteFile(filepath.Join(dst, rel), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func replayWith(t *testing.T, dir, policies string) (*Report, string) {
	t.Helper()
	ps, err := LoadCandidate(policies)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Run(context.Background(), dir, ps, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	rep.WriteText(&b)
	return rep, b.String()
}

// TestReplayPipelineLogSamePolicy: the decisions of the real pipeline replayed against the
// policy that made them change nothing. A public route's allow is the route map's, not the
// policy's: it is skipped as decided by the pipeline (it was replayed, and the policy denied
// it: --fail-on-change failed on an unchanged policy). The list is replayed with its records.
func TestReplayPipelineLogSamePolicy(t *testing.T) {
	rep, text := replayWith(t, pipelineLog(t), policyDir)
	if rep.Replayed != 3 || rep.Changed != 0 || rep.Skipped != 1 || rep.SkippedPipeline != 1 || rep.Errors != 0 {
		t.Fatalf("same policy: %+v\n%s", rep, text)
	}
}

// TestReplayComparesObligationsAndFlags: a candidate that stops flagging break-glass access
// and stops obliging the front door to record the justification changes the break-glass
// decision (it replayed with no change: obligations and flags were not compared).
func TestReplayComparesObligationsAndFlags(t *testing.T) {
	noBreakGlassDuties := func(b []byte) []byte {
		s := strings.Replace(string(b), `flags contains "break_glass" if active`, `flags contains "break_glass" if {
	active
	false
}`, 1)
		s = strings.Replace(s, `"params": {"justification": input.break_glass.justification}} if active`, `"params": {"justification": input.break_glass.justification}} if {
	active
	false
}`, 1)
		if s == string(b) {
			t.Fatal("breakglass.rego changed: update the candidate")
		}
		return []byte(s)
	}
	cand := candidateWith(t, map[string]func([]byte) []byte{"consentry/breakglass.rego": noBreakGlassDuties}, nil)
	rep, text := replayWith(t, pipelineLog(t), cand)
	if rep.Changed != 1 || rep.ByKind[KindObligations] != 1 || rep.ByKind[KindFlags] != 1 || len(rep.Examples) != 1 {
		t.Fatalf("candidate without break-glass duties: %+v\n%s", rep, text)
	}
	if !strings.Contains(text, "flags [break_glass] -> []") || !strings.Contains(text, "obligations [record_justification") {
		t.Fatalf("the example does not say what changed:\n%s", text)
	}
}

// TestReplayComparesListRecords: a candidate under which marketing needs no consent would
// serve the customer who withdrew it (c-3003) in the logged list (and deny the erased one
// for one reason fewer); the replay says so, per customer (list records were not logged, so
// nothing could be compared).
func TestReplayComparesListRecords(t *testing.T) {
	noConsent := func(b []byte) []byte {
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		m["purposes"].(map[string]any)["marketing.communications.email"].(map[string]any)["consent_required"] = false
		out, _ := json.Marshal(m)
		return out
	}
	cand := candidateWith(t, map[string]func([]byte) []byte{"data/consentry/catalog/data.json": noConsent}, nil)
	rep, text := replayWith(t, pipelineLog(t), cand)
	if rep.Changed != 1 || rep.ByKind[KindRecords] != 1 || rep.ByPurpose["marketing.communications.email"] != 1 {
		t.Fatalf("candidate without marketing consent: %+v\n%s", rep, text)
	}
	ex := rep.Examples[0]
	var flipped []string
	for id, o := range ex.Old.Records {
		if n := ex.New.Records[id]; !o.Allow && n.Allow {
			flipped = append(flipped, id)
		}
	}
	ps, _ := auditlog.NewPseudonymizer(pseudoKey)
	if !slices.Equal(flipped, []string{ps.Customer("c-3003")}) || !strings.Contains(text, ps.Customer("c-3003")+" deny(consent.withdrawn)->allow") {
		t.Fatalf("records that would be served: %v\n%s", flipped, text)
	}
}

// TestReplayPinsTheClock: time.now_ns() in a candidate is the replayed decision's time (the
// candidate saw the replay's wall clock and denied every decision).
func TestReplayPinsTheClock(t *testing.T) {
	clock := `package consentry.custom.clock

deny contains "evaluated at another time than the decision" if time.now_ns() != input.time.now_ns
`
	cand := candidateWith(t, nil, map[string]string{"consentry/zz_clock.rego": clock})
	rep, text := replayWith(t, pipelineLog(t), cand)
	if rep.Replayed != 3 || rep.Changed != 0 {
		t.Fatalf("clock candidate: %+v\n%s", rep, text)
	}
}
