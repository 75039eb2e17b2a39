package pipeline_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/consentry/consentry/sidecar/auditlog"
	"github.com/consentry/consentry/sidecar/pipeline"
)

// auditlogPipeline is the fixture's pipeline writing to a real decision log with a pseudonym key.
func auditlogPipeline(t testing.TB) (*pipeline.Pipeline, *auditlog.Log, string) {
	t.Helper()
	dir := t.TempDir()
	key := filepath.Join(t.TempDir(), "pseudonym.key")
	if err := os.WriteFile(key, []byte("0123456789abcdef0123456789abcdef-pseudonym"), 0o600); err != nil {
		t.Fatal(err)
	}
	lg, err := auditlog.Open(auditlog.Config{Dir: dir, UnsignedCheckpoints: true, PseudonymKeyFile: key}, auditlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := fx.WithConfigAndLog(slowCI, lg)
	if err != nil {
		t.Fatal(err)
	}
	return p, lg, dir
}

// loggedLine returns the decision log's line for a decision id.
func loggedLine(t *testing.T, dir, id string) string {
	t.Helper()
	var line string
	if err := auditlog.ScanEvents(dir, func(ev *auditlog.Event, raw []byte) error {
		if ev.DecisionID == id {
			line = string(raw)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if line == "" {
		t.Fatalf("decision %s not in the log", id)
	}
	return line
}

// TestEarlyDeniesAreLoggedUnderThePseudonym: a request denied before the policy ran (a target
// that does not normalize, a path no route matches, no credential, an ambiguous purpose) never
// puts a credential from its query string or fragment, or a raw customer id, into the log; a
// refused attempt on a route that names the customer appears in that customer's access
// report (a target that binds no customer is logged with only the route map's literals).
func TestEarlyDeniesAreLoggedUnderThePseudonym(t *testing.T) {
	tests := []struct {
		name     string
		req      *pipeline.Request
		code     string
		inReport bool // a known customer: listed in c-1001's report
	}{
		{"query does not normalize", request("GET", "/api/customers/c-1001?access_token=SECRET-TOKEN-123&discount=10%", hdr{"authorization": bearer(fx.Agent()), "x-purpose": {support}}), "request.", false},
		{"path does not normalize", request("GET", "/api/customers/c-1001%00", hdr{"authorization": bearer(fx.Agent()), "x-purpose": {support}}), "request.", false},
		{"fragment", request("GET", "/api/customers/c-1001#access_token=SECRET-TOKEN-123", hdr{"x-purpose": {support}}), "request.", false},
		{"override header", request("GET", "/api/customers/c-1001?access_token=SECRET-TOKEN-123", hdr{"authorization": bearer(fx.Agent()), "x-purpose": {support}, "x-http-method-override": {"DELETE"}}), "request.", false},
		{"header not utf-8", request("GET", "/api/customers/c-1001?access_token=SECRET-TOKEN-123", hdr{"authorization": bearer(fx.Agent()), "x-purpose": {support}, "x-note": {"caf\xe9"}}), "request.", false},
		{"method does not normalize", request(strings.Repeat("G", 40), "/api/customers/c-1001", hdr{"authorization": bearer(fx.Agent()), "x-purpose": {support}}), "request.", false},
		{"no route", request("GET", "/api/customer/c-1001?customer_id=c-1001&access_token=SECRET-TOKEN-123", hdr{"authorization": bearer(fx.Agent()), "x-purpose": {support}}), pipeline.ReasonRouteUnknown, false},
		{"no credential", request("GET", "/api/customers/c-1001?access_token=SECRET-TOKEN-123", hdr{"x-purpose": {support}}), "identity.", true},
		{"two purposes", request("GET", "/api/customers/c-1001", hdr{"authorization": bearer(fx.Agent()), "x-purpose": {support, marketing}}), pipeline.ReasonHeaderAmbiguous, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, lg, dir := auditlogPipeline(t)
			out := p.CheckAndRecord(context.Background(), tt.req)
			ps := lg.Pseudonymizer()
			if err := lg.Close(); err != nil {
				t.Fatal(err)
			}
			if out.Allowed() || !strings.HasPrefix(strings.Join(out.Decision.ReasonCodes(), ","), tt.code) {
				t.Fatalf("outcome %v, want a deny %s*", out.Decision.ReasonCodes(), tt.code)
			}
			line := loggedLine(t, dir, out.DecisionID)
			if strings.Contains(line, "SECRET-TOKEN-123") {
				t.Errorf("query credential in the decision log: %s", line)
			}
			if strings.Contains(line, "c-1001") {
				t.Errorf("raw customer id in the decision log: %s", line)
			}
			rep, err := auditlog.BuildReport(context.Background(), dir, auditlog.ReportOptions{CustomerID: "c-1001", Pseudonymizer: ps})
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, a := range rep.Accesses {
				found = found || a.DecisionID == out.DecisionID
			}
			if found != tt.inReport {
				t.Errorf("in c-1001's report: %v, want %v; logged: %s", found, tt.inReport, line)
			}
		})
	}
}
