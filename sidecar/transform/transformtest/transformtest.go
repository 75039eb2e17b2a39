// Package transformtest builds the real environment the response-side front doors are tested
// and benchmarked in: a real Vault dev server (vaulttest) with consentry's least-privilege
// token, a vaultkeys.Manager, the real policy library and route map (pipelinetest), and the
// real demo CRM (cmd/democrm, built and run as a process) holding customers whose sensitive
// fields are Vault transit ciphertext. Nothing is mocked.
package transformtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/consentry/consentry/sidecar/audit"
	"github.com/consentry/consentry/sidecar/enrich/static"
	"github.com/consentry/consentry/sidecar/pipeline"
	"github.com/consentry/consentry/sidecar/pipeline/pipelinetest"
	"github.com/consentry/consentry/sidecar/routes"
	"github.com/consentry/consentry/sidecar/transform"
	"github.com/consentry/consentry/vaultkeys"
	"github.com/consentry/consentry/vaultkeys/vaulttest"
)

// Purposes used by the tests.
const (
	Support   = "essential.service.operations.support"
	Marketing = "marketing.communications.email"
	Billing   = "essential.service.payment_processing"
	Self      = "essential.service"
	Analytics = "analytics.reporting"
	Legal     = "essential.legal"
)

// Customer is the plaintext of a seeded customer (what the CRM holds encrypted).
type Customer struct {
	ID               string  `json:"id"`
	Name             string  `json:"name"`
	Contact          Contact `json:"contact"`
	Address          string  `json:"address"`
	DateOfBirth      string  `json:"date_of_birth"`
	Payment          Payment `json:"payment"`
	Health           Health  `json:"health"`
	MarketingSegment string  `json:"marketing_segment"`
}

// Contact, Payment and Health mirror the demo CRM's nested objects.
type (
	Contact struct {
		Email string `json:"email"`
		Phone string `json:"phone"`
	}
	Payment struct {
		CardNumber string `json:"card_number"`
		CardExpiry string `json:"card_expiry"`
	}
	Health struct {
		Notes string `json:"notes"`
	}
)

// Options tune an environment.
type Options struct {
	// ListCustomers adds customers l-000 ... for list tests: even ones opted in to marketing
	// e-mail, odd ones withdrew (mixed consent).
	ListCustomers int
	// Sink replaces the fixture's JSON-lines decision log.
	Sink audit.Sink
	// HMACKey is the hmac mask key (default: a fixed test key).
	HMACKey string
}

// Env is a running environment.
type Env struct {
	Vault       *vaulttest.Server
	Keys        *vaultkeys.Manager
	Fixture     *pipelinetest.Fixture
	Pipeline    *pipeline.Pipeline
	Transformer *transform.Transformer
	// CRM is the demo CRM's base URL (http://127.0.0.1:port).
	CRM string
	// Plain is every seeded customer's plaintext, by id.
	Plain map[string]Customer
	// Dir is a scratch directory.
	Dir string
}

// Start builds an environment; everything stops when the test ends.
func Start(tb testing.TB, opts Options) *Env {
	tb.Helper()
	e := &Env{Dir: tb.TempDir(), Plain: map[string]Customer{}}
	var err error
	// The upstream is the real demo CRM, so the shipped route map runs as shipped (unlisted:
	// drop): a member it forgot to list would show up here as a missing value.
	e.Fixture, err = pipelinetest.New(e.Dir, pipelinetest.Options{Unlisted: routes.UnlistedDrop})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = e.Fixture.Close() })
	e.Vault = vaulttest.Start(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kcfg := vaultkeys.Config{
		Address:      e.Vault.Addr,
		Auth:         vaultkeys.AuthConfig{Method: vaultkeys.AuthToken, Token: e.Vault.ConsentryToken(tb)},
		LedgerPath:   filepath.Join(e.Dir, "ledger.jsonl"),
		PseudonymKey: "transformtest-pseudonym-key-0123",
		Timeout:      5 * time.Second,
	}
	e.Keys, err = vaultkeys.New(ctx, kcfg, vaultkeys.Options{Registerer: prometheus.NewRegistry()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(e.Keys.Close)
	// Seeding (key creation, encryption) runs on its own manager, as the CRM's own writer
	// would: the sidecar's key cache starts cold, as after a restart.
	seeder, err := vaultkeys.New(ctx, kcfg, vaultkeys.Options{Registerer: prometheus.NewRegistry()})
	if err != nil {
		tb.Fatal(err)
	}
	defer seeder.Close()

	state := pipelinetest.State
	customers := []Customer{
		{ID: "c-1001", Name: "Ada Lovelace", Contact: Contact{Email: "ada@example.test", Phone: "+44 20 7946 0001"}, Address: "12 St James's Square, London",
			DateOfBirth: "1815-12-10", Payment: Payment{CardNumber: "4111 1111 1111 1111", CardExpiry: "12/29"}, Health: Health{Notes: adaNotes}, MarketingSegment: "gold"},
		{ID: "c-3003", Name: "Charles Babbage", Contact: Contact{Email: "charles@example.test", Phone: "+44 20 7946 0003"}, Address: "1 Dorset Street, London",
			DateOfBirth: "1791-12-26", Payment: Payment{CardNumber: "5500 0000 0000 0004", CardExpiry: "01/28"}, Health: Health{Notes: "gout"}, MarketingSegment: "silver"},
		{ID: "c-4004", Name: "Mary Somerville", Contact: Contact{Email: "mary@example.test"}, Address: "Chelsea", DateOfBirth: "1780-12-26", MarketingSegment: "bronze"},
	}
	var extra strings.Builder
	extra.WriteString("\n")
	for i := 0; i < opts.ListCustomers; i++ {
		id := fmt.Sprintf("l-%03d", i)
		customers = append(customers, Customer{ID: id, Name: fmt.Sprintf("List Customer %d", i),
			Contact: Contact{Email: fmt.Sprintf("list%d@example.test", i), Phone: fmt.Sprintf("+1 555 01%02d", i%100)},
			Address: fmt.Sprintf("%d Main Street", i), DateOfBirth: "1990-01-02", Payment: Payment{CardNumber: "4000 0000 0000 0002", CardExpiry: "10/30"},
			Health: Health{Notes: "none"}, MarketingSegment: "list"})
	}
	state = strings.Replace(state, "customers:\n", "customers:\n"+listCustomersYAML(opts.ListCustomers), 1)
	state = strings.Replace(state, "consents:\n", "consents:\n"+listConsentsYAML(opts.ListCustomers), 1)
	enr, err := static.Parse([]byte(state))
	if err != nil {
		tb.Fatal(err)
	}
	sink := opts.Sink
	if sink == nil {
		sink = e.Fixture.Sink
	}
	e.Pipeline, err = pipeline.New(pipeline.Config{Timeout: 5 * time.Second}, pipeline.Deps{Engine: e.Fixture.Engine, Routes: e.Fixture.Routes,
		Identity: e.Fixture.Identity, Enrich: enr, Log: sink, Logger: e.Fixture.Logger})
	if err != nil {
		tb.Fatal(err)
	}
	key := opts.HMACKey
	if key == "" {
		key = "transformtest-hmac-mask-key-000"
	}
	keyFile := filepath.Join(e.Dir, "hmac.key")
	if err := os.WriteFile(keyFile, []byte(key+"\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	e.Transformer, err = transform.New(transform.Config{HMACKeyFile: keyFile}, e.Keys, e.Fixture.Logger)
	if err != nil {
		tb.Fatal(err)
	}
	e.CRM = startCRM(tb, e.Dir)
	for _, c := range customers {
		e.seed(tb, seeder, c)
	}
	return e
}

// adaNotes makes c-1001 a record of about 2 KB as the CRM stores it (the benchmark's size).
var adaNotes = "asthma; " + strings.Repeat("follow-up call scheduled, prefers e-mail contact in the morning. ", 13)

func listCustomersYAML(n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "  - {id: l-%03d, retention_until: \"2035-01-01T00:00:00Z\"}\n", i)
	}
	return b.String()
}

func listConsentsYAML(n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		status := "granted"
		if i%2 == 1 {
			status = "withdrawn"
		}
		fmt.Fprintf(&b, "  - {customer_id: l-%03d, purpose: marketing.communications.email, status: %s, notice_version: \"2026-03\", channel: web, granted_at: \"2026-03-02T10:00:00Z\", expires_at: \"2035-03-02T10:00:00Z\"}\n", i, status)
	}
	return b.String()
}

// seed encrypts c's sensitive fields (the e-mail with Vault's own transit/encrypt, as a CRM
// already using transit does; the rest with the customer's exported keys) and stores it in
// the CRM directly.
func (e *Env) seed(tb testing.TB, seeder *vaultkeys.Manager, c Customer) {
	tb.Helper()
	ctx := context.Background()
	ks, err := seeder.KeysForMigration(ctx, c.ID, vaultkeys.DefaultClasses)
	if err != nil {
		tb.Fatalf("keys for %s: %v", c.ID, err)
	}
	defer ks.Close()
	enc := func(class, v string) string {
		if v == "" {
			return ""
		}
		ct, err := ks.Encrypt(class, []byte(v))
		if err != nil {
			tb.Fatal(err)
		}
		return ct
	}
	stored := c
	stored.Contact.Email = e.TransitEncrypt(tb, "consentry-"+c.ID+"-contact", c.Contact.Email)
	stored.Contact.Phone = enc("contact", c.Contact.Phone)
	stored.Address = enc("contact", c.Address)
	stored.DateOfBirth = enc("identity", c.DateOfBirth)
	stored.Payment.CardNumber = enc("financial", c.Payment.CardNumber)
	stored.Payment.CardExpiry = enc("financial", c.Payment.CardExpiry)
	stored.Health.Notes = enc("health", c.Health.Notes)
	raw, _ := json.Marshal(stored)
	resp, err := http.Post(e.CRM+"/api/customers", "application/json", bytes.NewReader(raw))
	if err != nil {
		tb.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		tb.Fatalf("seed %s: %d %s", c.ID, resp.StatusCode, body)
	}
	e.Plain[c.ID] = c
	if c.ID == "c-1001" {
		note, _ := json.Marshal(map[string]string{"body": enc("notes", NoteBody), "author": "emp-17"})
		resp, err := http.Post(e.CRM+"/api/customers/c-1001/notes", "application/json", bytes.NewReader(note))
		if err != nil {
			tb.Fatal(err)
		}
		resp.Body.Close()
	}
}

// NoteBody is the plaintext of c-1001's note (stored encrypted under its notes key).
const NoteBody = "called about the invoice"

// TransitEncrypt encrypts with Vault's transit/encrypt as root.
func (e *Env) TransitEncrypt(tb testing.TB, key, plaintext string) string {
	tb.Helper()
	if plaintext == "" {
		return ""
	}
	s, err := e.Vault.Client(tb).Logical().Write("transit/encrypt/"+key, map[string]any{
		"plaintext": base64.StdEncoding.EncodeToString([]byte(plaintext)),
	})
	if err != nil {
		tb.Fatalf("transit encrypt: %v", err)
	}
	return s.Data["ciphertext"].(string)
}

// Stored reads a customer as the CRM holds it (bypassing consentry).
func (e *Env) Stored(tb testing.TB, id string) map[string]any {
	tb.Helper()
	resp, err := http.Get(e.CRM + "/api/customers/" + id)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		tb.Fatal(err)
	}
	return m
}

// Tokens for the usual callers.
func (e *Env) Agent() string { return e.Fixture.Agent() }
func (e *Env) Marketer() string {
	return e.Fixture.Token("emp-30", "employee", []string{"marketing"}, nil)
}
func (e *Env) Analyst() string {
	return e.Fixture.Token("emp-40", "employee", []string{"analyst"}, nil)
}
func (e *Env) DPO() string { return e.Fixture.Token("emp-50", "employee", []string{"dpo"}, nil) }
func (e *Env) Customer(id string) string {
	return e.Fixture.Token(id, "customer", []string{"customer"}, map[string]any{"amr": []any{"pwd", "mfa"}, "customer_id": id})
}
func (e *Env) Biller() string {
	return e.Fixture.Token("emp-60", "employee", []string{"billing_agent"}, map[string]any{"amr": []any{"pwd", "mfa"}})
}

var buildMu sync.Mutex

// startCRM builds cmd/democrm (the go build cache makes repeats cheap) and serves an empty
// database until the test ends.
func startCRM(tb testing.TB, dir string) string {
	tb.Helper()
	buildMu.Lock()
	bin := filepath.Join(dir, "democrm")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/democrm")
	cmd.Dir = pipelinetest.RepoRoot()
	out, err := cmd.CombinedOutput()
	buildMu.Unlock()
	if err != nil {
		tb.Fatalf("build democrm: %v: %s", err, out)
	}
	cmd = exec.Command(bin, "serve", "-listen", "127.0.0.1:0", "-db", filepath.Join(dir, "crm.db"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if addr, ok := strings.CutPrefix(sc.Text(), "democrm listening on "); ok {
				lines <- addr
			}
		}
	}()
	select {
	case addr := <-lines:
		return addr
	case <-time.After(60 * time.Second):
		tb.Fatal("democrm did not start")
	}
	return ""
}

// Capture is a decision log that keeps every entry in memory (and holds on to them, which is
// what the proxy's no-leakage test needs: entries must stay intact after their request).
type Capture struct {
	mu      sync.Mutex
	entries []*audit.Entry
}

var _ audit.Sink = (*Capture)(nil)

// Append stores e.
func (c *Capture) Append(_ context.Context, e *audit.Entry) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.entries = append(c.entries, e)
	return nil
}

// Entries returns the stored entries.
func (c *Capture) Entries() []*audit.Entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*audit.Entry(nil), c.entries...)
}

// IntentCapture is a Capture that refuses write-ahead entries while FailIntents is set: a
// full disk at the moment a write is about to be forwarded.
type IntentCapture struct {
	Capture
	FailIntents atomic.Bool
}

var _ audit.Sink = (*IntentCapture)(nil)

// Append stores e, or fails for an intent while FailIntents is set.
func (c *IntentCapture) Append(ctx context.Context, e *audit.Entry) error {
	if e.Intent && c.FailIntents.Load() {
		return errors.New("disk full")
	}
	return c.Capture.Append(ctx, e)
}

// Find returns the decision entry of a decision id (nil when absent); not its write-ahead
// intent (FindIntent).
func (c *Capture) Find(id string) *audit.Entry { return c.find(id, false) }

// FindIntent returns the write-ahead entry of a decision id (nil when absent).
func (c *Capture) FindIntent(id string) *audit.Entry { return c.find(id, true) }

func (c *Capture) find(id string, intent bool) *audit.Entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.entries {
		if e.DecisionID == id && e.Intent == intent {
			return e
		}
	}
	return nil
}
