package policymask

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/audit"
	"github.com/consentry/consentry/sidecar/auditlog"
	"github.com/consentry/consentry/sidecar/decision"
	"github.com/consentry/consentry/sidecar/engine"
	"github.com/consentry/consentry/sidecar/input"
)

const maskModule = `package consentry.log

mask contains "/input/subject/claims" if input.subject.type == "employee"

mask contains {"op": "upsert", "path": "/input/request/source/address", "value": "0.0.0.0"} if input.request.source.address
`

func policies(t *testing.T, withMask bool) *engine.PolicySet {
	t.Helper()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "decision.rego"), []byte("package consentry\n\ndecision := {\"allow\": false, \"status\": 403}\n"), 0o644)
	if withMask {
		os.WriteFile(filepath.Join(dir, "log.rego"), []byte(maskModule), 0o644)
	}
	ps, err := engine.LoadDir(dir, engine.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

func TestPolicyDrivenMasking(t *testing.T) {
	ctx := context.Background()
	src, err := New(ctx, policies(t, true), engine.Config{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	l, err := auditlog.Open(auditlog.Config{Dir: dir, UnsignedCheckpoints: true},
		auditlog.Options{PseudonymKey: []byte("policymask-test-key-0123456789abcdef"), MaskSource: src, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	in := &input.Input{Subject: input.Subject{ID: "emp-1", Type: "employee", Claims: map[string]any{"email": "emp@example.com"}},
		Request: input.Request{Source: input.Source{Address: "10.1.2.3"}}, Time: input.NewTime(time.Now())}
	if err := l.Append(ctx, &audit.Entry{DecisionID: "d1", Input: in, Decision: decision.Deny(403, "x", "y")}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	var ev *auditlog.Event
	auditlog.ScanEvents(dir, func(e *auditlog.Event, _ []byte) error {
		if e.Type == auditlog.TypeDecision {
			ev = e
		}
		return nil
	})
	if ev == nil || strings.Contains(string(ev.Input), "emp@example.com") || strings.Contains(string(ev.Input), "10.1.2.3") ||
		strings.Join(ev.Erased, ",") != "/input/subject/claims" || strings.Join(ev.Masked, ",") != "/input/request/source/address" {
		t.Fatalf("event: %+v\n%s", ev, ev.Input)
	}
}

func TestUndefinedMaskRuleYieldsNothing(t *testing.T) {
	src, err := New(context.Background(), policies(t, false), engine.Config{})
	if err != nil {
		t.Fatal(err)
	}
	rules, err := src.MaskRules(context.Background(), &input.Input{})
	if err != nil || len(rules) != 0 {
		t.Fatalf("%v %v", rules, err)
	}
}

func TestMalformedRuleIsAnError(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "decision.rego"), []byte("package consentry\n\ndecision := {}\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "log.rego"), []byte("package consentry.log\n\nmask contains \"/result/allow\"\n"), 0o644)
	ps, _ := engine.LoadDir(dir, engine.LoadOptions{})
	src, err := New(context.Background(), ps, engine.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.MaskRules(context.Background(), &input.Input{}); err == nil {
		t.Fatal("a rule hiding the outcome was accepted")
	}
}
