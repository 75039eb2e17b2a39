package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func run(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Run(context.Background(), args, &Env{Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errb})
	return code, out.String(), errb.String()
}

const policies = "../../policies"

func TestExitCodes(t *testing.T) {
	broken := t.TempDir()
	if err := os.WriteFile(filepath.Join(broken, "p.rego"), []byte("package consentry\n\ndecision := {\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	failing := t.TempDir()
	os.WriteFile(filepath.Join(failing, "p.rego"), []byte("package consentry\n\ndecision := {\"allow\": true, \"status\": 200}\n"), 0o644)
	os.WriteFile(filepath.Join(failing, "p_test.rego"), []byte("package consentry_test\n\nimport data.consentry\n\ntest_fails if consentry.decision.allow == false\n"), 0o644)
	conflict := t.TempDir() // compiles, and fails at evaluation: two values for one complete rule
	os.WriteFile(filepath.Join(conflict, "p.rego"), []byte("package consentry\n\ndecision := {\"allow\": true} if input.action\n\ndecision := {\"allow\": false} if input.action\n"), 0o644)
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no args is usage", nil, ExitUsage, ""},
		{"eval that fails at evaluation", []string{"eval", "--input", policies + "/examples/support-read.json", "--policies", conflict}, ExitFailure, "evaluation failed"},
		{"unknown command", []string{"frobnicate"}, ExitUsage, "unknown command"},
		{"bad flag", []string{"eval", "--nope"}, ExitUsage, "flag provided but not defined"},
		{"eval needs input", []string{"eval"}, ExitUsage, "--input is required"},
		{"policy does not compile", []string{"test", broken}, ExitCompile, "p.rego:4"},
		{"eval with broken policy", []string{"eval", "--input", policies + "/examples/support-read.json", "--policies", broken}, ExitCompile, "does not compile"},
		{"policy tests failed", []string{"test", failing}, ExitTestsFailed, "1 test(s) failed"},
		{"library passes", []string{"test", policies}, ExitOK, ""},
		{"version", []string{"version"}, ExitOK, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := run(t, "", tc.args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, out, errs)
			}
			if tc.want != "" && !strings.Contains(out+errs, tc.want) {
				t.Errorf("output lacks %q:\n%s%s", tc.want, out, errs)
			}
		})
	}
}

func TestEvalPrintsDecision(t *testing.T) {
	code, out, errs := run(t, "", "eval", "--input", policies+"/examples/support-read.json", "--policies", policies)
	if code != 0 || !strings.Contains(out, `"allow": true`) {
		t.Fatalf("exit %d\n%s\n%s", code, out, errs)
	}
	code, _, errs = run(t, "", "eval", "--input", policies+"/examples/support-read.json", "--policies", policies, "--explain", "notes")
	if code != 0 {
		t.Fatalf("explain: exit %d: %s", code, errs)
	}
}

func TestEvalMalformedInputHasPosition(t *testing.T) {
	code, _, errs := run(t, "{\n  \"purpose\": \"x\",\n  \"action\": 7\n}", "eval", "--input", "-", "--policies", policies)
	if code != ExitUsage || !strings.Contains(errs, "line 3") {
		t.Fatalf("exit %d: %s", code, errs)
	}
	code, _, errs = run(t, "{\"purpose\": ", "eval", "--input", "-", "--policies", policies)
	if code != ExitUsage || !strings.Contains(errs, "input -") {
		t.Fatalf("exit %d: %s", code, errs)
	}
}

func TestEvalDeniesBadRequestsWithReason(t *testing.T) {
	cases := map[string]string{
		`{"purpose": "nope", "action": "read", "subject": {"id": "e", "type": "employee", "roles": ["support_agent"]}, "resource": {"type": "customer"}, "enrichment": {"consents": []}, "request": {"method": "GET", "path": "/"}, "time": {"now": "2026-11-22T09:00:00Z", "now_ns": 1}}`:                                "purpose.unknown",
		`{"purpose": "essential.service.operations.support", "action": "read", "resource": {"type": "customer"}, "enrichment": {"consents": []}, "request": {"method": "GET", "path": "/"}, "subject": {}, "time": {"now": "2026-11-22T09:00:00Z", "now_ns": 1}}`:                                                         "subject.unauthenticated",
		`{"purpose": "essential.service.operations.support", "action": "fly", "subject": {"id": "e", "type": "employee", "roles": ["support_agent"]}, "resource": {"type": "customer"}, "enrichment": {"consents": []}, "request": {"method": "GET", "path": "/"}, "time": {"now": "2026-11-22T09:00:00Z", "now_ns": 1}}`: "action.unknown",
	}
	for in, code := range cases {
		c, out, errs := run(t, in, "eval", "--input", "-", "--policies", policies)
		if c != 0 || !strings.Contains(out, code) || !strings.Contains(out, `"allow": false`) {
			t.Errorf("want deny with %s, exit %d:\n%s%s", code, c, out, errs)
		}
	}
}
