package demo

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	_ "modernc.org/sqlite" // read the CRM backup the way an attacker with a stolen copy would

	"github.com/consentry/consentry/sidecar/auditlog"
)

// The tour's callers.
var (
	Agent     = Persona{Name: "support agent emp-17", Subject: "emp-17", Type: "employee", Roles: []string{"support_agent"}}
	Lead      = Persona{Name: "support lead emp-5", Subject: "emp-5", Type: "employee", Roles: []string{"support_lead"}, MFA: true}
	Marketer  = Persona{Name: "marketer mkt-40", Subject: "mkt-40", Type: "employee", Roles: []string{"marketing"}}
	Mailer    = Persona{Name: "processor acme-mail", Subject: "svc-acme-mail", Type: "processor", Roles: []string{"processor"}, ProcessorID: "acme-mail"}
	Shady     = Persona{Name: "processor shady-data (no agreement)", Subject: "svc-shady", Type: "processor", Roles: []string{"processor"}, ProcessorID: "shady-data"}
	Customer1 = Persona{Name: "customer c-000001", Subject: "u-000001", Type: "customer", Roles: []string{"customer"}, CustomerID: "c-000001", MFA: true}
	Customer3 = Persona{Name: "customer c-000003", Subject: "u-000003", Type: "customer", Roles: []string{"customer"}, CustomerID: "c-000003", MFA: true}
)

// Response is one answer through the proxy.
type Response struct {
	Status  int
	Header  http.Header
	Body    []byte
	JSON    map[string]any
	Reasons []string
}

// Request is one call through consentry's HTTP proxy.
type Request struct {
	As         Persona
	Method     string
	Path       string
	Purpose    string
	Case       string
	BreakGlass string
	Body       string
}

// Do sends r through the proxy with a fresh token for its persona; a zero persona (no
// subject) sends no credential at all.
func (s *Stack) Do(ctx context.Context, r Request) (*Response, error) {
	req, err := http.NewRequestWithContext(ctx, r.Method, s.ProxyURL+r.Path, strings.NewReader(r.Body))
	if err != nil {
		return nil, err
	}
	if r.As.Subject != "" {
		tok, err := s.Token(r.As)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if r.Purpose != "" {
		req.Header.Set("X-Purpose", r.Purpose)
	}
	if r.Case != "" {
		req.Header.Set("X-Case-Id", r.Case)
	}
	if r.BreakGlass != "" {
		req.Header.Set("X-Break-Glass", r.BreakGlass)
	}
	if r.Body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := &Response{Status: resp.StatusCode, Header: resp.Header}
	if out.Body, err = io.ReadAll(resp.Body); err != nil {
		return nil, err
	}
	if json.Unmarshal(out.Body, &out.JSON) == nil {
		if rs, ok := out.JSON["reasons"].([]any); ok {
			for _, r := range rs {
				if m, ok := r.(map[string]any); ok {
					out.Reasons = append(out.Reasons, fmt.Sprint(m["code"]))
				}
			}
		}
	}
	return out, nil
}

// Tour is the narrated walk through the principles. Each step checks what it shows; Run
// returns an error naming every step whose outcome was not what the narration claims.
type Tour struct {
	S   *Stack
	Out io.Writer
	n   int
	bad []string
}

// Run walks every step in order.
func (t *Tour) Run(ctx context.Context) error {
	steps := []func(context.Context) error{
		t.supportWithCase, t.supportWithoutCase, t.marketingList, t.processors,
		t.customerSelf, t.breakGlass, t.erasure, t.reviewer,
	}
	for _, f := range steps {
		if err := ctx.Err(); err != nil {
			return ErrInterrupted
		}
		if err := f(ctx); err != nil {
			t.fail("%v", err)
		}
	}
	if len(t.bad) > 0 {
		return fmt.Errorf("%d tour check(s) failed:\n  %s", len(t.bad), strings.Join(t.bad, "\n  "))
	}
	return nil
}

func (t *Tour) title(s string) {
	t.n++
	fmt.Fprintf(t.Out, "\n\033[1m%d. %s\033[0m\n", t.n, s)
}

func (t *Tour) say(format string, args ...any) { fmt.Fprintf(t.Out, "   "+format+"\n", args...) }

func (t *Tour) fail(format string, args ...any) {
	msg := fmt.Sprintf("step %d: "+format, append([]any{t.n}, args...)...)
	t.bad = append(t.bad, msg)
	fmt.Fprintf(t.Out, "   \033[31mFAILED: %s\033[0m\n", msg)
}

func (t *Tour) check(ok bool, format string, args ...any) {
	if ok {
		fmt.Fprintf(t.Out, "   \033[32mok\033[0m  "+format+"\n", args...)
		return
	}
	t.fail(format, args...)
}

// call sends r, prints request and answer, and checks the status.
func (t *Tour) call(ctx context.Context, r Request, want int) (*Response, error) {
	ctxs := []string{}
	if r.Purpose != "" {
		ctxs = append(ctxs, "purpose "+r.Purpose)
	}
	if r.Case != "" {
		ctxs = append(ctxs, "case "+r.Case)
	}
	if r.BreakGlass != "" {
		ctxs = append(ctxs, fmt.Sprintf("break-glass %q", r.BreakGlass))
	}
	t.say("\033[36m%s %s\033[0m  as %s; %s", r.Method, r.Path, r.As.Name, strings.Join(ctxs, ", "))
	if r.Body != "" {
		t.say("  body %s", r.Body)
	}
	resp, err := t.S.Do(ctx, r)
	if err != nil {
		return nil, err
	}
	verdict := "allowed"
	if resp.Status >= 400 {
		verdict = "denied"
	}
	line := fmt.Sprintf("-> %d %s", resp.Status, verdict)
	if len(resp.Reasons) > 0 {
		line += " (" + strings.Join(resp.Reasons, ", ") + ")"
	}
	if id := resp.Header.Get("X-Consentry-Decision-Id"); id != "" {
		line += "  decision " + id
	}
	t.say("%s", line)
	for _, h := range sortedHeaderNames(resp.Header) {
		if strings.HasPrefix(strings.ToLower(h), "x-consentry-") && !strings.EqualFold(h, "X-Consentry-Decision-Id") {
			t.say("   %s: %s", h, resp.Header.Get(h))
		}
	}
	if resp.Status < 400 {
		t.say("%s", indent(pretty(resp.Body, 24), "     "))
	}
	t.check(resp.Status == want, "status %d (want %d)", resp.Status, want)
	return resp, nil
}

func (t *Tour) supportWithCase(ctx context.Context) error {
	t.title("A support agent with an assigned case sees contact details, but not the card")
	r, err := t.call(ctx, Request{As: Agent, Method: "GET", Path: "/api/customers/c-000001", Purpose: PurposeSupport, Case: "case-1"}, 200)
	if err != nil || r.Status != 200 {
		return err
	}
	email := str(r.JSON, "contact", "email")
	t.check(strings.Contains(email, "@"), "contact.email decrypted with the customer's contact key (%q)", email)
	card := str(r.JSON, "payment", "card_number")
	t.check(card == "" || !digitsOnly(card), "payment.card_number not released (%q): support may not see financial data", card)
	t.check(str(r.JSON, "health", "notes") == "", "health.notes not released: special-category data needs its own purpose")
	return nil
}

func (t *Tour) supportWithoutCase(ctx context.Context) error {
	t.title("The same agent without a case is denied (need-to-know)")
	r, err := t.call(ctx, Request{As: Agent, Method: "GET", Path: "/api/customers/c-000001", Purpose: PurposeSupport}, 403)
	if err != nil {
		return err
	}
	t.check(has(r.Reasons, "case.missing"), "reason case.missing")
	r, err = t.call(ctx, Request{As: Agent, Method: "GET", Path: "/api/customers/c-000002", Purpose: PurposeSupport, Case: "case-2"}, 403)
	if err != nil {
		return err
	}
	t.check(has(r.Reasons, "case.not_assigned"), "someone else's case: reason case.not_assigned")
	return nil
}

func (t *Tour) marketingList(ctx context.Context) error {
	t.title("A marketing list contains only customers who opted in to marketing e-mail")
	r, err := t.call(ctx, Request{As: Marketer, Method: "GET", Path: "/api/customers?page_size=30", Purpose: PurposeMarketing}, 200)
	if err != nil || r.Status != 200 {
		return err
	}
	items, _ := r.JSON["items"].([]any)
	okAll := len(items) > 0
	for _, it := range items {
		m, _ := it.(map[string]any)
		var i int
		if _, err := fmt.Sscanf(fmt.Sprint(m["id"]), "c-%d", &i); err != nil || !OptedIn(i) {
			okAll = false
		}
	}
	t.check(okAll, "%d records kept, every one opted in (the CRM returned 30; the rest never left consentry)", len(items))
	ev, err := t.S.loggedDecision(r.Header.Get("X-Consentry-Decision-Id"))
	if err != nil {
		return err
	}
	if ev.Records == nil {
		ev.Records = &auditlog.RecordsInfo{}
	}
	t.check(ev.Records.Returned == len(items) && ev.Records.Filtered == 30-len(items),
		"the decision log counts the records returned and filtered out (%d/%d), never the records themselves", ev.Records.Returned, ev.Records.Filtered)
	return nil
}

func (t *Tour) processors(ctx context.Context) error {
	t.title("A processor without an agreement is denied; with one it gets only its categories")
	r, err := t.call(ctx, Request{As: Shady, Method: "GET", Path: "/api/customers/c-000001", Purpose: PurposeSharing}, 403)
	if err != nil {
		return err
	}
	t.check(has(r.Reasons, "processor.no_agreement"), "reason processor.no_agreement")
	r, err = t.call(ctx, Request{As: Mailer, Method: "GET", Path: "/api/customers/c-000001", Purpose: PurposeSharing}, 200)
	if err != nil || r.Status != 200 {
		return err
	}
	t.check(strings.Contains(str(r.JSON, "contact", "email"), "@") && str(r.JSON, "contact", "phone") == "" && str(r.JSON, "date_of_birth") == "",
		"only name and e-mail (the agreement's categories); phone, birth date and card removed")
	return nil
}

func (t *Tour) customerSelf(ctx context.Context) error {
	t.title("A customer reads and corrects their own record, and cannot read another's")
	r, err := t.call(ctx, Request{As: Customer1, Method: "GET", Path: "/api/customers/c-000001", Purpose: PurposeService}, 200)
	if err != nil {
		return err
	}
	if r.Status == 200 {
		card := str(r.JSON, "payment", "card_number")
		t.check(strings.Contains(card, "*") || (len(card) <= 4 && card != ""), "own card shown as last four (%q)", card)
	}
	phone := "+44 20 7946 0999"
	if _, err := t.call(ctx, Request{As: Customer1, Method: "PATCH", Path: "/api/customers/c-000001", Purpose: PurposeService,
		Body: `{"contact": {"phone": "` + phone + `"}}`}, 200); err != nil {
		return err
	}
	stored, err := t.crmDirect(ctx, "/api/customers/c-000001")
	if err == nil {
		p := str(stored, "contact", "phone")
		t.check(strings.HasPrefix(p, "vault:") || strings.HasPrefix(p, "consentry:"), "the CRM stored the new phone as ciphertext (%.24s...), encrypted by consentry", p)
	}
	r, err = t.call(ctx, Request{As: Customer1, Method: "GET", Path: "/api/customers/c-000002", Purpose: PurposeService}, 403)
	if err != nil {
		return err
	}
	t.check(has(r.Reasons, "customer.not_self"), "reason customer.not_self")
	return nil
}

func (t *Tour) breakGlass(ctx context.Context) error {
	t.title("Break-glass: a support lead without a case gets in, with a justification, and is flagged")
	r, err := t.call(ctx, Request{As: Lead, Method: "GET", Path: "/api/customers/c-000002", Purpose: PurposeSupport,
		BreakGlass: "customer on the phone reports card fraud, ticket INC-4711"}, 200)
	if err != nil {
		return err
	}
	if r.Status != 200 {
		return nil
	}
	id := r.Header.Get("X-Consentry-Decision-Id")
	ev, err := t.S.loggedDecision(id)
	if err != nil {
		return err
	}
	t.check(has(ev.Flags, "break_glass") && has(ev.Reasons, "break_glass.used") && strings.Contains(string(ev.Input), "INC-4711"),
		"decision %s is in the log flagged %v, reasons %v, with the justification", id, ev.Flags, ev.Reasons)
	return nil
}

// loggedDecision reads one decision back from the log (strict mode: it is durable before the
// response leaves consentry).
func (s *Stack) loggedDecision(id string) (*auditlog.Event, error) {
	var found *auditlog.Event
	err := auditlog.ScanEvents(s.DecisionDir, func(ev *auditlog.Event, _ []byte) error {
		if ev.DecisionID == id {
			cp := *ev
			found = &cp
		}
		return nil
	})
	if err == nil && found == nil {
		err = fmt.Errorf("decision %q is not in the log", id)
	}
	return found, err
}

func (t *Tour) erasure(ctx context.Context) error {
	t.title("A customer withdraws consent: crypto-shredding makes even a backup unreadable")
	backup := filepath.Join(t.S.Opts.Dir, "crm-backup-before-erasure.db")
	if err := copyFile(t.S.CRMDB, backup); err != nil {
		return err
	}
	ct, noteCT, err := backupCiphertext(backup, "c-000003")
	if err != nil {
		return err
	}
	t.say("backup of the CRM database taken: %s", rel(t.S.Opts.Root, backup))
	_, derr := t.S.transitDecrypt("consentry-c-000003-contact", ct)
	t.check(derr == nil, "before: c-000003's e-mail in the backup (%.20s...) decrypts with Vault's root token", ct)
	_, nerr := t.S.transitDecrypt("consentry-c-000003-notes", noteCT)
	t.check(nerr == nil, "before: a note about c-000003 in the backup (%.20s...) decrypts too", noteCT)
	body := `{"customer_id": "c-000003", "purpose": "` + PurposeService + `", "channel": "account-settings"}`
	t.say("\033[36mPOST /v1/consents/withdrawals\033[0m (admin API) %s", body)
	code, resp, err := t.S.Admin(ctx, "POST", "/v1/consents/withdrawals", "application/json", []byte(body))
	if err != nil {
		return err
	}
	t.say("-> %d %s", code, summarizeWithdrawal(resp))
	t.check(code/100 == 2 && strings.Contains(string(resp), `"erasure":"done"`), "withdrawal recorded and erasure done (keys destroyed, destruction in the ledger)")
	var erasure *auditlog.Erasure
	_ = auditlog.ScanEvents(t.S.DecisionDir, func(ev *auditlog.Event, _ []byte) error {
		if ev.Type == auditlog.TypeErasure {
			erasure = ev.Erasure
		}
		return nil
	})
	t.check(erasure != nil && len(erasure.Classes) > 0 && !strings.Contains(erasure.Customer, "c-000003"),
		"the destruction is in the decision log's hash chain: %s", describeErasure(erasure))
	_, derr = t.S.transitDecrypt("consentry-c-000003-contact", ct)
	t.check(derr != nil, "after: the same backup ciphertext no longer decrypts, not even as root (%v)", firstLine(derr))
	_, nerr = t.S.transitDecrypt("consentry-c-000003-notes", noteCT)
	t.check(nerr != nil, "after: nor does the note, free text that could say anything about the customer (%v)", firstLine(nerr))
	r, err := t.call(ctx, Request{As: Customer3, Method: "GET", Path: "/api/customers/c-000003", Purpose: PurposeService}, 451)
	if err != nil {
		return err
	}
	t.check(has(r.Reasons, "customer.erased"), "reason customer.erased")
	return nil
}

func (t *Tour) reviewer(ctx context.Context) error {
	t.title("The security reviewer verifies the audit trail and prints a customer's access report")
	verify := []string{"audit", "verify", t.S.DecisionDir, "--public-key", filepath.Join(t.S.KeysDir, "signing.pub")}
	out, err := t.S.consentry(ctx, verify...)
	t.say("$ consentry %s", strings.Join(relArgs(t.S.Opts.Root, verify), " "))
	t.say("%s", indent(strings.TrimSpace(out), "  "))
	t.check(err == nil, "hash chain and signed checkpoints verify (exit 0)")
	report := []string{"audit", "report", "--log", t.S.DecisionDir, "--customer", "c-000001", "--pseudonym-key", filepath.Join(t.S.KeysDir, "pseudonym.key"), "--format", "csv"}
	out, err = t.S.consentry(ctx, report...)
	t.say("$ consentry %s", strings.Join(relArgs(t.S.Opts.Root, report), " "))
	t.say("%s", indent(headLines(strings.TrimSpace(out), 12), "  "))
	t.check(err == nil && strings.Count(out, "\n") >= 3, "c-000001's report lists who accessed which fields, for what purpose")
	return nil
}

func describeErasure(e *auditlog.Erasure) string {
	if e == nil {
		return "missing"
	}
	return fmt.Sprintf("customer %s, key classes %v, actor %s, ledger record %d", e.Customer, e.Classes, e.Actor, e.LedgerSeq)
}

// summarizeWithdrawal shows the parts of the admin API's answer the narration is about.
func summarizeWithdrawal(b []byte) string {
	var r struct {
		Event struct {
			EventID string `json:"event_id"`
			Kind    string `json:"kind"`
		} `json:"event"`
		Erasure string `json:"erasure"`
	}
	if json.Unmarshal(b, &r) != nil {
		return headLines(string(b), 3)
	}
	return fmt.Sprintf("event %s (%s), erasure: %s", r.Event.EventID, r.Event.Kind, r.Erasure)
}

// consentry runs the consentry CLI and returns its combined output.
func (s *Stack) consentry(ctx context.Context, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, filepath.Join(s.Opts.Bin, "consentry"), args...).CombinedOutput()
	return string(out), err
}

// crmDirect reads from the CRM itself, bypassing consentry (what the database holds).
func (t *Tour) crmDirect(ctx context.Context, path string) (map[string]any, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", t.S.CRMURL+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var m map[string]any
	return m, json.NewDecoder(resp.Body).Decode(&m)
}

// transitDecrypt decrypts with Vault's root token: the strongest reader there is.
func (s *Stack) transitDecrypt(key, ciphertext string) (string, error) {
	c, err := s.Vault.API()
	if err != nil {
		return "", err
	}
	sec, err := c.Logical().Write("transit/decrypt/"+key, map[string]any{"ciphertext": ciphertext})
	if err != nil {
		return "", err
	}
	if sec == nil {
		return "", errors.New("no answer")
	}
	return fmt.Sprint(sec.Data["plaintext"]), nil
}

// backupCiphertext reads a customer's stored e-mail and the body of one of their notes from a
// copy of the CRM database, as an attacker with a stolen backup would.
func backupCiphertext(path, customer string) (email, note string, err error) {
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		return "", "", err
	}
	defer db.Close()
	if err := db.QueryRow(`SELECT email FROM customers WHERE id = ?`, customer).Scan(&email); err != nil {
		return "", "", fmt.Errorf("read backup: %w", err)
	}
	if err := db.QueryRow(`SELECT body FROM notes WHERE customer_id = ? ORDER BY id LIMIT 1`, customer).Scan(&note); err != nil {
		return "", "", fmt.Errorf("read backup notes: %w", err)
	}
	return email, note, nil
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	for _, suffix := range []string{"-wal", "-shm"} {
		// A live SQLite database may keep recent pages in its WAL: copy them too, as a file-level
		// backup tool would.
		if w, err := os.ReadFile(src + suffix); err == nil {
			if err := os.WriteFile(dst+suffix, w, 0o600); err != nil {
				return err
			}
		}
	}
	return os.WriteFile(dst, b, 0o600)
}

func str(m map[string]any, path ...string) string {
	var cur any = m
	for _, p := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return ""
		}
		cur = mm[p]
	}
	if cur == nil {
		return ""
	}
	return fmt.Sprint(cur)
}

func has(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func digitsOnly(s string) bool {
	n := 0
	for _, r := range s {
		switch {
		case r >= '0' && r <= '9':
			n++
		case r == ' ' || r == '-':
		default:
			return false
		}
	}
	return n >= 12
}

func pretty(b []byte, maxLines int) string {
	var v any
	if json.Unmarshal(b, &v) != nil {
		return headLines(string(b), maxLines)
	}
	if m, ok := v.(map[string]any); ok {
		if items, ok := m["items"].([]any); ok {
			// A list reads best one record per line.
			lines := []string{fmt.Sprintf("items: %d records", len(items))}
			for _, it := range items {
				one, _ := json.Marshal(it)
				lines = append(lines, "  "+string(one))
			}
			return headLines(strings.Join(lines, "\n"), 12)
		}
	}
	out, _ := json.MarshalIndent(v, "", "  ")
	return headLines(string(out), maxLines)
}

func headLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = append(lines[:n], fmt.Sprintf("... (%d more lines)", len(lines)-n))
	}
	return strings.Join(lines, "\n")
}

func indent(s, prefix string) string {
	return prefix + strings.ReplaceAll(s, "\n", "\n   "+prefix)
}

func firstLine(err error) string {
	if err == nil {
		return "no error"
	}
	s := err.Error()
	if i := strings.LastIndex(s, "* "); i >= 0 {
		s = s[i+2:]
	}
	return strings.TrimSpace(strings.SplitN(s, "\n", 2)[0])
}

func sortedHeaderNames(h http.Header) []string {
	out := make([]string, 0, len(h))
	for k := range h {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func relArgs(root string, args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = rel(root, a)
	}
	return out
}
