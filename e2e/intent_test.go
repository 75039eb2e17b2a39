package e2e_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/consentry/consentry/e2e/harness"
	"github.com/consentry/consentry/sidecar/auditlog"
	"github.com/consentry/consentry/sidecar/demo"
)

// TestCrashAfterTheCRMWroteLeavesATrace: the CRM executes a write and answers, and consentry
// is killed (SIGKILL) before the answer reaches it, so the decision's own record is never
// written. The write-ahead intent, logged before the request was forwarded, is the trace: after
// a restart on the same log, `audit query` shows the write as forwarded with no recorded
// outcome and `audit verify` passes while warning about it. Without the intent the log would
// hold nothing about a change the CRM made.
func TestCrashAfterTheCRMWroteLeavesATrace(t *testing.T) {
	crmAddr := freeAddr(t)
	fwd, err := harness.NewTCPProxy(crmAddr) // consentry -> fwd -> CRM: replies can be held
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fwd.Cut)
	s := startStack(t, demo.Options{Customers: 20, CRM: crmAddr, Upstream: "http://" + fwd.Addr})
	ctx := context.Background()
	const cust = "c-000007"
	before := crmPhone(t, s, cust)

	held := fwd.HoldReplies()
	t.Cleanup(fwd.ReleaseReplies)
	sent := make(chan error, 1)
	go func() {
		_, err := s.Do(ctx, demo.Request{As: demo.Persona{Name: cust, Subject: "u-" + cust, Type: "customer", Roles: []string{"customer"}, CustomerID: cust, MFA: true},
			Method: "PATCH", Path: "/api/customers/" + cust, Purpose: demo.PurposeService, Body: `{"contact": {"phone": "+44 20 7946 0111"}}`})
		sent <- err
	}()
	select {
	case <-held:
	case err := <-sent:
		t.Fatalf("the write returned before the CRM's answer was held: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the CRM never answered the write")
	}
	s.Consentry.Kill()
	if err := <-sent; err == nil {
		t.Fatal("the caller got an answer from a killed sidecar")
	}
	fwd.ReleaseReplies()
	if after := crmPhone(t, s, cust); after == before {
		t.Fatalf("the CRM did not store the write (phone still %.24s...): the test did not reach its moment", after)
	}

	if err := s.StartConsentry(ctx); err != nil {
		t.Fatalf("restart after SIGKILL with an unresolved intent: %v", err)
	}
	if l := s.Consentry.Log(1 << 20); !strings.Contains(l, `"alarm":"decision_log_unresolved_intents"`) {
		t.Errorf("the restarted sidecar does not raise the alarm on the unresolved write:\n%s", l)
	}
	if err := s.Consentry.Stop(); err != nil { // closes the log: the tail is checkpointed
		t.Fatal(err)
	}

	// The library view: the intent, last, with no decision record after it.
	var events []*auditlog.Event
	if err := auditlog.Query(ctx, s.DecisionDir, auditlog.Filter{Action: "update"}, func(ev *auditlog.Event, _ []byte) error {
		events = append(events, ev)
		return nil
	}, nil); err != nil {
		t.Fatal(err)
	}
	if len(events) != 1 || events[0].Type != auditlog.TypeIntent || events[0].Purpose != demo.PurposeService || events[0].Customer == "" {
		t.Fatalf("query for updates returned %+v, want one unresolved intent of the write", events)
	}
	id := events[0].DecisionID

	// The operator's view, through the CLI.
	bin := filepath.Join(binDir, "consentry")
	out, err := exec.Command(bin, "audit", "query", "--log", s.DecisionDir, "--action", "update", "--format", "json").Output()
	if err != nil {
		t.Fatalf("audit query: %v\n%s", err, out)
	}
	found := false
	for sc := bufio.NewScanner(bytes.NewReader(out)); sc.Scan(); {
		var ev auditlog.Event
		if json.Unmarshal(sc.Bytes(), &ev) == nil && ev.DecisionID == id && ev.Type == auditlog.TypeIntent {
			found = true
		}
	}
	if !found {
		t.Errorf("audit query --format json does not show the intent %s:\n%s", id, out)
	}
	out, err = exec.Command(bin, "audit", "verify", s.DecisionDir, "--public-key", filepath.Join(s.KeysDir, "signing.pub")).CombinedOutput()
	if err != nil {
		t.Errorf("audit verify must pass (the chain is intact): %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte(id)) {
		t.Errorf("audit verify does not warn about the unresolved intent %s:\n%s", id, out)
	}
}

// crmPhone is the customer's stored phone, read from the CRM directly (ciphertext).
func crmPhone(t *testing.T, s *demo.Stack, cust string) string {
	t.Helper()
	resp, err := http.Get(s.CRMURL + "/api/customers/" + cust)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var rec struct {
		Contact struct {
			Phone string `json:"phone"`
		} `json:"contact"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(b, &rec) != nil || rec.Contact.Phone == "" {
		t.Fatalf("CRM record of %s: %d %s", cust, resp.StatusCode, b)
	}
	return rec.Contact.Phone
}
