// Package demo runs consentry end to end on one machine: a real Vault dev server, the demo
// CRM (cmd/democrm) seeded with synthetic customers whose sensitive fields are Vault transit
// ciphertext, and `consentry run` in front of it (HTTP proxy, ext_authz and ext_proc gRPC,
// admin API) on embedded defaults - SQLite state, the file decision log, the local policy
// directory. `consentry demo` narrates a tour over it; the e2e suite starts the same stack
// and asserts on it, so what the demo shows is what the tests prove.
package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/consentry/consentry/e2e/harness"
	"github.com/consentry/consentry/sidecar/identity/identitytest"
	"github.com/consentry/consentry/vaultkeys/vaulttest"
)

// Options configure a Stack. Zero values are the demo's defaults.
type Options struct {
	// Dir is the working directory; it is emptied first. Default var/demo.
	Dir string
	// Root is the repository (policies/, deploy/). Default: found from the working directory.
	Root string
	// Customers seeded into the CRM. Default 2000.
	Customers int
	// Bin holds the consentry and democrm binaries. Default: the running executable's directory.
	Bin string
	// Proxy, Admin, GRPC and CRM are listen addresses. Empty: the demo's usual port when it is
	// free (8080, 9400, 9191, 8081), else any free port.
	Proxy, Admin, GRPC, CRM string
	// StateBackend is sqlite (default) or postgres; PostgresURL is used with postgres.
	StateBackend, PostgresURL string
	// Extra is appended to the generated consentry.yaml (tests).
	Extra string
	// Upstream is the URL the proxy forwards to. Default: the CRM's (http://<CRM>); tests put
	// a fault-injecting forwarder in between.
	Upstream string
	// DecisionDir is the decision log directory. Default <Dir>/decisions.
	DecisionDir string
	// Progress receives one line per start-up step (nil: discarded).
	Progress io.Writer
}

// Stack is a running demo: every process is real and is stopped by Close.
type Stack struct {
	Opts Options

	Vault     *vaulttest.Server
	CRM       *harness.Proc
	Consentry *harness.Proc
	Issuer    *identitytest.Issuer

	ProxyURL, AdminURL, CRMURL, GRPCAddr string
	// AdminToken authenticates the admin API (Authorization: Bearer).
	AdminToken string
	// ConsentryToken is the least-privilege Vault token consentry runs with.
	ConsentryToken                          string
	ConfigPath, DecisionDir, KeysDir, CRMDB string
}

// AdminToken is the demo's admin API token (a demo secret).
const demoAdminToken = "demo-admin-token"

// Start builds nothing (make does that) and starts everything; on failure it stops what it
// started and returns one clear error.
func Start(ctx context.Context, o Options) (*Stack, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	s := &Stack{Opts: o, AdminToken: demoAdminToken}
	if err := s.start(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (o *Options) defaults() error {
	if o.Root == "" {
		root, err := harness.RepoRoot()
		if err != nil {
			// Run from elsewhere: bin/consentry lives in the repository's bin/.
			exe, xerr := os.Executable()
			if xerr != nil {
				return err
			}
			cand := filepath.Dir(filepath.Dir(exe))
			if _, serr := os.Stat(filepath.Join(cand, "policies")); serr != nil {
				return fmt.Errorf("%w (run the demo from the repository: make demo)", err)
			}
			root = cand
		}
		o.Root = root
	}
	if o.Dir == "" {
		o.Dir = filepath.Join(o.Root, "var", "demo")
	}
	// Processes run in their log directory: every path handed to them must be absolute.
	var err error
	if o.Dir, err = filepath.Abs(o.Dir); err != nil {
		return err
	}
	if o.DecisionDir != "" {
		if o.DecisionDir, err = filepath.Abs(o.DecisionDir); err != nil {
			return err
		}
	}
	if o.Customers == 0 {
		o.Customers = 2000
	}
	if o.Bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		o.Bin = filepath.Dir(exe)
	}
	if o.StateBackend == "" {
		o.StateBackend = "sqlite"
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	for _, p := range []struct {
		addr *string
		port int
	}{{&o.Proxy, 8080}, {&o.Admin, 9400}, {&o.GRPC, 9191}, {&o.CRM, 8081}} {
		if *p.addr == "" {
			if *p.addr, err = preferredAddr(p.port); err != nil {
				return err
			}
		}
	}
	return nil
}

// preferredAddr is 127.0.0.1:port when that port is free, else a free port: a second demo or
// a busy 8080 must not stop the demo.
func preferredAddr(port int) (string, error) {
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if ln, err := net.Listen("tcp", addr); err == nil {
		ln.Close()
		return addr, nil
	}
	return harness.FreeAddr()
}

func (s *Stack) step(format string, args ...any) {
	fmt.Fprintf(s.Opts.Progress, "  - "+format+"\n", args...)
}

func (s *Stack) start(ctx context.Context) error {
	o := s.Opts
	if err := os.RemoveAll(o.Dir); err != nil {
		return fmt.Errorf("clean %s: %w", o.Dir, err)
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return err
	}
	bins := map[string]string{}
	for _, name := range []string{"consentry", "democrm"} {
		p := filepath.Join(o.Bin, name)
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%s not found in %s (run `make build`)", name, o.Bin)
		}
		bins[name] = p
	}
	if os.Getenv("CONSENTRY_VAULT_BIN") == "" {
		if p := filepath.Join(o.Root, "bin", "vault"); fileExists(p) {
			os.Setenv("CONSENTRY_VAULT_BIN", p) // the one `make vault` built
		}
	}
	t0 := time.Now()
	// Not one of the stack's own addresses: they are chosen but not bound yet, and the kernel
	// may hand a released port out again (a test saw Vault answer on the admin address).
	var ours []int
	for _, a := range []string{o.Proxy, o.Admin, o.GRPC, o.CRM} {
		if _, p, err := net.SplitHostPort(a); err == nil {
			if n, err := strconv.Atoi(p); err == nil {
				ours = append(ours, n)
			}
		}
	}
	port, err := vaulttest.FreePortPair(ours...)
	if err != nil {
		return fmt.Errorf("vault: %w", err)
	}
	v, err := vaulttest.Launch(filepath.Join(o.Dir, "vault"), port)
	if err != nil {
		return fmt.Errorf("vault: %w", err)
	}
	s.Vault = v
	s.step("Vault dev server at %s (transit enabled, file audit device at %s) [%s]", v.Addr, rel(o.Root, v.AuditPath), since(t0))
	if s.ConsentryToken, err = v.PolicyToken(filepath.Join(o.Root, "deploy", "vault", "consentry.hcl"), 24*time.Hour); err != nil {
		return fmt.Errorf("vault policy: %w", err)
	}
	s.step("consentry's Vault token carries only deploy/vault/consentry.hcl")

	s.CRMDB = filepath.Join(o.Dir, "crm.db")
	t0 = time.Now()
	seed := exec.CommandContext(ctx, bins["democrm"], "seed", "-db", s.CRMDB, "-n", fmt.Sprint(o.Customers),
		"-vault-addr", v.Addr, "-vault-token", v.Token, "-enable-transit=false")
	if out, err := seed.CombinedOutput(); err != nil {
		return fmt.Errorf("democrm seed: %w: %s", err, lastLine(out))
	} else {
		s.step("%s [%s]", strings.ReplaceAll(strings.TrimSpace(lastLine(out)), s.CRMDB, rel(o.Root, s.CRMDB)), since(t0))
	}
	logs := filepath.Join(o.Dir, "logs")
	if s.CRM, err = harness.Start("democrm", logs, bins["democrm"], []string{"serve", "-listen", o.CRM, "-db", s.CRMDB}); err != nil {
		return err
	}
	s.CRMURL = "http://" + o.CRM
	if err := s.CRM.WaitHTTP(ctx, s.CRMURL+"/healthz", 20*time.Second); err != nil {
		return fmt.Errorf("democrm did not start on %s: %s (log: %s)", o.CRM, firstLineOf(err), s.CRM.LogPath)
	}
	s.step("demo CRM at %s (it knows nothing about consentry)", s.CRMURL)

	s.KeysDir = filepath.Join(o.Dir, "keys")
	if out, err := exec.CommandContext(ctx, bins["consentry"], "audit", "keygen", "--out", s.KeysDir).CombinedOutput(); err != nil {
		return fmt.Errorf("consentry audit keygen: %w: %s", err, lastLine(out))
	}
	if s.Issuer, err = identitytest.New("https://idp.demo.consentry", "consentry"); err != nil {
		return err
	}
	jwks, err := s.Issuer.WriteJWKS(o.Dir)
	if err != nil {
		return err
	}
	s.DecisionDir = o.DecisionDir
	if s.DecisionDir == "" {
		s.DecisionDir = filepath.Join(o.Dir, "decisions")
	}
	s.ConfigPath = filepath.Join(o.Dir, "consentry.yaml")
	if err := os.WriteFile(s.ConfigPath, []byte(s.config(jwks)), 0o600); err != nil {
		return err
	}
	s.ProxyURL, s.AdminURL, s.GRPCAddr = "http://"+o.Proxy, "http://"+o.Admin, o.GRPC
	if err := s.StartConsentry(ctx); err != nil {
		return err
	}
	s.step("consentry: HTTP proxy %s, ext_authz+ext_proc gRPC %s, admin %s", s.ProxyURL, s.GRPCAddr, s.AdminURL)
	t0 = time.Now()
	if err := s.seedState(ctx); err != nil {
		return fmt.Errorf("seed consent state: %w", err)
	}
	s.step("consent, cases and a processor agreement recorded through the admin API [%s]", since(t0))
	return nil
}

// StartConsentry starts (or, after a crash or Stop, restarts) `consentry run` on the stack's
// configuration and waits until it is ready.
func (s *Stack) StartConsentry(ctx context.Context) error {
	var err error
	s.Consentry, err = harness.Start("consentry", filepath.Join(s.Opts.Dir, "logs"), filepath.Join(s.Opts.Bin, "consentry"), []string{"run", "--config", s.ConfigPath})
	if err != nil {
		return err
	}
	if err := s.Consentry.WaitHTTP(ctx, s.AdminURL+"/ready", 60*time.Second); err != nil {
		return fmt.Errorf("consentry did not become ready: %s (log: %s)", lastLogError(s.Consentry.Log(8000), err), s.Consentry.LogPath)
	}
	return nil
}

// config is the consentry.yaml the demo runs with: embedded defaults plus the demo's paths.
func (s *Stack) config(jwks string) string {
	o := s.Opts
	upstream := o.Upstream
	if upstream == "" {
		upstream = "http://" + o.CRM
	}
	state := fmt.Sprintf("  backend: sqlite\n  data_dir: %s\n", filepath.Join(o.Dir, "state"))
	if o.StateBackend == "postgres" {
		state = fmt.Sprintf("  backend: postgres\n  postgres:\n    url: %q\n    schema: demo\n", o.PostgresURL)
	}
	return fmt.Sprintf(`# Generated by consentry demo. Every key is documented in docs/configuration.md.
policy:
  dir: %[1]s/policies
  require_signatures: false   # a local policy directory is unsigned (development)
admin:
  listen: %[2]s
  token: %[3]s
identity:
  issuers:
    - issuer: %[4]s
      audiences: [consentry]
      jwks_file: %[5]s
routes:
  file: %[1]s/deploy/routes/democrm.yaml
state:
%[6]s  erase_on_withdrawal: true
  erase_on_withdrawal_purposes: [essential.service]
  retention_erasure: {enabled: true, grace: 24h}
decision_log:
  dir: %[7]s
  signing_key_file: %[8]s/signing.pem
  pseudonym_key_file: %[8]s/pseudonym.key
  checkpoint_interval: 5s
vault:
  address: %[9]s
  ledger_path: %[15]s
  auth:
    method: token
    token: %[10]s
envoy:
  listen: %[11]s
  response_phase: true
proxy:
  listen: %[12]s
  upstream: %[13]s
%[14]s`, o.Root, o.Admin, s.AdminToken, s.Issuer.Name, jwks, state, s.DecisionDir, s.KeysDir,
		s.Vault.Addr, s.ConsentryToken, o.GRPC, o.Proxy, upstream, o.Extra, filepath.Join(o.Dir, "vaultkeys", "shredded-keys.jsonl"))
}

// Close stops consentry, the CRM and Vault (in that order).
func (s *Stack) Close() {
	if s.Consentry != nil {
		_ = s.Consentry.Stop()
	}
	if s.CRM != nil {
		_ = s.CRM.Stop()
	}
	if s.Vault != nil {
		s.Vault.Stop()
	}
}

// Token mints a bearer token for a persona.
func (s *Stack) Token(p Persona) (string, error) {
	c := s.Issuer.Claims(p.Subject)
	c["subject_type"] = p.Type
	roles := make([]any, len(p.Roles))
	for i, r := range p.Roles {
		roles[i] = r
	}
	c["roles"] = roles
	if p.CustomerID != "" {
		c["customer_id"] = p.CustomerID
	}
	if p.ProcessorID != "" {
		c["processor_id"] = p.ProcessorID
	}
	if p.MFA {
		c["amr"] = []any{"pwd", "mfa"}
	}
	return s.Issuer.Sign("ES256", c)
}

// Persona is a caller in the tour.
type Persona struct {
	Name        string
	Subject     string
	Type        string
	Roles       []string
	CustomerID  string
	ProcessorID string
	MFA         bool
}

// Admin calls the admin API (JSON or CSV body) and returns the status and body.
func (s *Stack) Admin(ctx context.Context, method, path, contentType string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, s.AdminURL+path, bytesReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+s.AdminToken)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func (s *Stack) adminOK(ctx context.Context, method, path, contentType string, body []byte) error {
	code, b, err := s.Admin(ctx, method, path, contentType, body)
	if err != nil {
		return err
	}
	if code/100 != 2 {
		return fmt.Errorf("%s %s: %d %s", method, path, code, strings.TrimSpace(string(b)))
	}
	return nil
}

// firstLineOf keeps a start-up failure to one line; the process log has the rest.
func firstLineOf(err error) string {
	return strings.TrimSpace(strings.SplitN(err.Error(), "\n", 2)[0])
}

// lastLogError is the message of the last error the process logged (its JSON log lines), or
// the wait error when there is none.
func lastLogError(log string, err error) string {
	lines := strings.Split(strings.TrimSpace(log), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		var rec struct{ Level, Msg, Error, Err string }
		if json.Unmarshal([]byte(lines[i]), &rec) == nil && rec.Level == "ERROR" {
			return strings.TrimSpace(rec.Msg + " " + rec.Error + rec.Err)
		}
		if strings.HasPrefix(lines[i], "consentry:") {
			return lines[i]
		}
	}
	return firstLineOf(err)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func rel(root, p string) string {
	if r, err := filepath.Rel(root, p); err == nil && !strings.HasPrefix(r, "..") {
		return r
	}
	return p
}

func since(t time.Time) string { return time.Since(t).Round(10 * time.Millisecond).String() }

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

// ErrInterrupted is returned when the demo was stopped with Ctrl-C.
var ErrInterrupted = errors.New("interrupted")
