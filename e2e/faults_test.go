package e2e_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/auditlog"
	"github.com/consentry/consentry/sidecar/demo"
)

// answer is what one caller received.
type answer struct {
	who        string
	status     int
	body       string
	decisionID string
	afterFault bool
}

// load sends n requests from several callers through the proxy, calling fault once after
// faultAt requests. Callers: customers reading their own record (each customer once, so keys
// are not all cached before the fault), an unauthenticated caller, and an agent without a case.
func load(t *testing.T, s *demo.Stack, n, faultAt int, fault func()) []answer {
	t.Helper()
	var (
		mu      sync.Mutex
		answers []answer
		sent    atomic.Int64
		faulted atomic.Bool
		once    sync.Once
		wg      sync.WaitGroup
	)
	next := make(chan int)
	go func() {
		for i := 0; i < n; i++ {
			next <- i
		}
		close(next)
	}()
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if sent.Add(1) == int64(faultAt) {
					once.Do(func() { faulted.Store(true); fault() })
				}
				after := faulted.Load()
				cust := fmt.Sprintf("c-%06d", i%s.Opts.Customers+1)
				var r demo.Request
				who := "customer"
				switch i % 4 {
				case 0, 1:
					r = demo.Request{As: demo.Persona{Name: cust, Subject: "u-" + cust, Type: "customer", Roles: []string{"customer"}, CustomerID: cust, MFA: true},
						Method: "GET", Path: "/api/customers/" + cust, Purpose: demo.PurposeService}
				case 2:
					who = "agent without case"
					r = demo.Request{As: demo.Agent, Method: "GET", Path: "/api/customers/" + cust, Purpose: demo.PurposeSupport}
				case 3:
					who = "unauthenticated"
					r = demo.Request{Method: "GET", Path: "/api/customers/" + cust}
				}
				resp, err := s.Do(context.Background(), r)
				if err != nil {
					if !faulted.Load() { // after a crash the sidecar is simply gone
						t.Error(err)
					}
					continue
				}
				a := answer{status: resp.Status, body: string(resp.Body), decisionID: resp.Header.Get("X-Consentry-Decision-Id")}
				a.who, a.afterFault = who, after
				mu.Lock()
				answers = append(answers, a)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return answers
}

// checkNoLeak: ciphertext never reaches a caller, and a denied or unauthenticated caller never
// sees a customer's contact data.
func checkNoLeak(t *testing.T, answers []answer) {
	t.Helper()
	for _, a := range answers {
		if strings.Contains(a.body, "vault:v") {
			t.Errorf("%s got ciphertext (status %d): %.200s", a.who, a.status, a.body)
		}
		if a.who != "customer" && strings.Contains(a.body, "@") {
			t.Errorf("%s (status %d) saw contact data: %.200s", a.who, a.status, a.body)
		}
		// After a decision log fault even a 401 may become 503: a deny that cannot be logged
		// is still a deny.
		if a.who == "unauthenticated" && a.status != 401 && !(a.afterFault && a.status == 503) {
			t.Errorf("unauthenticated caller got %d", a.status)
		}
	}
}

// checkLogged: every decision a caller was told about is in the log, and the log verifies.
func checkLogged(t *testing.T, s *demo.Stack, answers []answer) {
	t.Helper()
	if err := s.Consentry.Stop(); err != nil {
		t.Fatal(err)
	}
	logged := map[string]bool{}
	if err := auditlog.ScanEvents(s.DecisionDir, func(ev *auditlog.Event, _ []byte) error {
		logged[ev.DecisionID] = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	missing := 0
	for _, a := range answers {
		if a.status < 500 && a.decisionID == "" {
			t.Errorf("%s: answer %d without a decision id", a.who, a.status)
		}
		if a.status < 500 && !logged[a.decisionID] {
			missing++
		}
	}
	if missing > 0 {
		t.Errorf("%d acknowledged decisions are missing from the log", missing)
	}
	out, err := exec.Command(filepath.Join(binDir, "consentry"), "audit", "verify", s.DecisionDir, "--public-key", filepath.Join(s.KeysDir, "signing.pub")).CombinedOutput()
	if err != nil {
		t.Errorf("audit verify after the fault: %v\n%s", err, out)
	}
}

// TestFaultVaultStoppedMidLoad: Vault stops while requests flow. Decisions go on; fields whose
// keys are not cached are withheld - never ciphertext, never another caller's plaintext - and
// every answer is in the log.
func TestFaultVaultStoppedMidLoad(t *testing.T) {
	s := startStack(t, demo.Options{Customers: 80})
	answers := load(t, s, 160, 40, func() { s.Vault.Stop() })
	checkNoLeak(t, answers)
	withheld, served := 0, 0
	for _, a := range answers {
		if a.who == "customer" && a.status == 200 {
			if a.afterFault && !strings.Contains(a.body, "@") {
				withheld++
			}
			served++
		}
	}
	if served == 0 || withheld == 0 {
		t.Fatalf("want customers still served after Vault stopped, with contact fields withheld (served %d, withheld %d)", served, withheld)
	}
	t.Logf("%d customer reads served, %d with fields withheld after Vault stopped", served, withheld)
	checkLogged(t, s, answers)
}

// TestFaultDecisionLogDiskFull: the decision log's file system fills up mid-load (a real tmpfs,
// really full). Readiness fails at once; requests are still answered and logged while the
// segment's preallocated space lasts (decision_log.preallocate_bytes, at most 1 MiB: a few
// hundred decisions), then denied with 503 audit.unavailable - no response is released
// unlogged - and every response released is in the log.
func TestFaultDecisionLogDiskFull(t *testing.T) {
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", mnt).CombinedOutput(); err != nil {
		if os.Geteuid() != 0 {
			t.Skipf("needs root to mount a small tmpfs: %v %s", err, out)
		}
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", mnt).Run() })
	dir := filepath.Join(mnt, "decisions")
	s := startStack(t, demo.Options{Customers: 40, DecisionDir: dir})
	fill := func() {
		f, err := os.Create(filepath.Join(mnt, "filler"))
		if err != nil {
			t.Error(err)
			return
		}
		defer f.Close()
		buf := make([]byte, 64<<10)
		for {
			if _, err := f.Write(buf); err != nil {
				return // ENOSPC: the disk is full
			}
		}
	}
	answers := load(t, s, 1200, 30, fill)
	checkNoLeak(t, answers)
	unavailable := 0
	for _, a := range answers {
		if a.afterFault && a.status == 503 && strings.Contains(a.body, "audit.unavailable") {
			unavailable++
		}
	}
	if unavailable == 0 {
		t.Fatal("after the disk filled, requests must be denied with 503 audit.unavailable")
	}
	resp, err := http.Get(s.AdminURL + "/ready")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Error("readiness must fail while the decision log cannot write")
		}
	}
	t.Logf("%d requests denied with audit.unavailable after the disk filled", unavailable)
	// Free the space so the sidecar can write its closing checkpoint, then check the log.
	_ = os.Remove(filepath.Join(mnt, "filler"))
	checkLogged(t, s, answers)
}

// TestCrashLosesNoAcknowledgedDecision kills consentry with SIGKILL while requests flow, starts
// it again on the same log, and checks that the log verifies and holds every decision a caller
// received an answer for.
func TestCrashLosesNoAcknowledgedDecision(t *testing.T) {
	s := startStack(t, demo.Options{Customers: 40})
	answers := load(t, s, 200, 80, func() { s.Consentry.Kill() })
	if err := s.StartConsentry(context.Background()); err != nil {
		t.Fatalf("restart after SIGKILL: %v", err)
	}
	before := 0
	for _, a := range answers {
		if !a.afterFault {
			before++
		}
	}
	t.Logf("%d answers before the kill, %d in all", before, len(answers))
	checkNoLeak(t, answers)
	checkLogged(t, s, answers)
}

// TestErasureSurvivesVaultRestore: after an erasure, Vault "comes back from an older backup"
// holding the customer's key again. A restarted sidecar replays its shredded-keys ledger and
// destroys the key again; the customer stays erased.
func TestErasureSurvivesVaultRestore(t *testing.T) {
	s := startStack(t, demo.Options{Customers: 20})
	ctx := context.Background()
	code, body, err := s.Admin(ctx, "POST", "/v1/customers/c-000005/erase", "application/json", []byte(`{"reason": "customer request, ticket DSR-12"}`))
	if err != nil || code != 200 {
		t.Fatalf("erase: %d %s %v", code, body, err)
	}
	vc, err := s.Vault.API()
	if err != nil {
		t.Fatal(err)
	}
	const key = "transit/keys/consentry-c-000005-contact"
	if sec, _ := vc.Logical().Read(key); sec != nil {
		t.Fatal("the key must be gone after the erasure")
	}
	// The restore: the key exists again.
	if _, err := vc.Logical().Write(key, map[string]any{"type": "aes256-gcm96", "exportable": true}); err != nil {
		t.Fatal(err)
	}
	if err := s.Consentry.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := s.StartConsentry(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		sec, err := vc.Logical().Read(key)
		if err == nil && sec == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("restored key not destroyed again after restart (log: %s)", s.Consentry.Log(2000))
		}
		time.Sleep(200 * time.Millisecond)
	}
	r, err := s.Do(ctx, demo.Request{As: demo.Persona{Name: "c-000005", Subject: "u-000005", Type: "customer", Roles: []string{"customer"}, CustomerID: "c-000005", MFA: true},
		Method: "GET", Path: "/api/customers/c-000005", Purpose: demo.PurposeService})
	if err != nil || r.Status != 451 {
		t.Fatalf("erased customer after restore: %v %d %s", err, r.Status, r.Body)
	}
}
