// Package vaulttest runs a real HashiCorp Vault dev server for tests: on a free loopback port,
// with the transit secrets engine and a file audit device enabled, so tests can count from
// Vault's own audit log which requests reached it. The binary is $CONSENTRY_VAULT_BIN, else
// the repository's bin/vault (`make vault`), else `vault` on PATH. Other packages' tests (proxy,
// e2e) reuse it.
package vaulttest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// RootToken is the dev server's root token (a test secret, never a real one).
const RootToken = "consentry-test-root"

// Server is a running Vault dev server.
type Server struct {
	// Addr is the server URL, e.g. http://127.0.0.1:43127.
	Addr string
	// Token is the root token.
	Token string
	// AuditPath is the file audit device's log: one JSON object per request and response.
	AuditPath string
	// Dir is the server's scratch directory (removed by the test framework).
	Dir string
	// UnsealKey is the unseal key of a persistent server (StartPersistent).
	UnsealKey string

	persistent bool

	bin  string
	port int
	mu   sync.Mutex
	cmd  *exec.Cmd
	out  *bytes.Buffer
}

// Binary finds the vault binary: $CONSENTRY_VAULT_BIN, then bin/vault in the enclosing
// repository, then vault on PATH.
func Binary() (string, error) {
	if p := os.Getenv("CONSENTRY_VAULT_BIN"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("CONSENTRY_VAULT_BIN: %w", err)
		}
		return p, nil
	}
	if dir, err := os.Getwd(); err == nil {
		for d := dir; ; d = filepath.Dir(d) {
			if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
				if p := filepath.Join(d, "bin", "vault"); isExec(p) {
					return p, nil
				}
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	if p, err := exec.LookPath("vault"); err == nil {
		return p, nil
	}
	return "", errors.New("no vault binary: set CONSENTRY_VAULT_BIN, run `make vault`, or put vault on PATH")
}

func isExec(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// Start starts a dev server with transit at "transit/" and a file audit device, and stops it
// when the test ends. It fails the test when no vault binary is available: CI runs everything.
func Start(tb testing.TB) *Server {
	tb.Helper()
	bin, err := Binary()
	if err != nil {
		tb.Fatalf("vaulttest: %v", err)
	}
	s := &Server{bin: bin, Token: RootToken, Dir: tb.TempDir()}
	s.AuditPath = filepath.Join(s.Dir, "audit.log")
	if s.port, err = freePortPair(); err != nil {
		tb.Fatalf("vaulttest: %v", err)
	}
	s.Addr = "http://127.0.0.1:" + strconv.Itoa(s.port)
	tb.Cleanup(s.Stop)
	if err := s.start(); err != nil {
		tb.Fatalf("vaulttest: %v", err)
	}
	return s
}

// Restart stops the server (if running) and starts it again on the same port. A dev server
// keeps its state in memory: transit keys, policies and tokens other than the root token are
// gone afterwards (transit and the audit device are enabled again). A persistent server
// (StartPersistent) comes back with its storage, unsealed with its key.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	s.Stop()
	if err := s.start(); err != nil {
		tb.Fatalf("vaulttest: restart: %v", err)
	}
}

func (s *Server) start() error {
	args := []string{"server", "-dev", "-dev-root-token-id=" + s.Token,
		"-dev-listen-address=127.0.0.1:" + strconv.Itoa(s.port), "-dev-no-store-token"}
	if s.persistent {
		cfg := filepath.Join(s.Dir, "server.hcl")
		hcl := fmt.Sprintf("storage \"file\" {\n  path = %q\n}\nlistener \"tcp\" {\n  address = \"127.0.0.1:%d\"\n  tls_disable = true\n}\n"+
			"disable_mlock = true\napi_addr = \"http://127.0.0.1:%d\"\ncluster_addr = \"https://127.0.0.1:%d\"\n",
			filepath.Join(s.Dir, "data"), s.port, s.port, s.port+1)
		if err := os.WriteFile(cfg, []byte(hcl), 0o600); err != nil {
			return err
		}
		args = []string{"server", "-config=" + cfg}
	}
	cmd := exec.Command(s.bin, args...)
	cmd.Env = cleanEnv()
	cmd.Dir = s.Dir
	out := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = lockedWriter(out), lockedWriter(out)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	s.mu.Lock()
	s.cmd, s.out = cmd, out
	s.mu.Unlock()
	c, err := s.client()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	fresh := false
	for {
		h, err := c.Sys().Health()
		if err == nil && h.Initialized && !h.Sealed {
			break
		}
		if err == nil && s.persistent {
			if err := s.initUnseal(c, h.Initialized, h.Sealed); err != nil {
				s.Stop()
				return err
			}
			fresh = fresh || !h.Initialized
			continue
		}
		if time.Now().After(deadline) {
			s.Stop()
			return fmt.Errorf("vault did not become ready: %v\n%s", err, s.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if s.persistent && !fresh {
		return nil // transit and the audit device are in storage already
	}
	c.SetToken(s.Token)
	if err := c.Sys().Mount("transit", &api.MountInput{Type: "transit"}); err != nil {
		return fmt.Errorf("enable transit: %w", err)
	}
	if err := c.Sys().EnableAuditWithOptions("file", &api.EnableAuditOptions{
		Type: "file", Options: map[string]string{"file_path": s.AuditPath},
	}); err != nil {
		return fmt.Errorf("enable audit: %w", err)
	}
	return nil
}

// initUnseal initializes (one key share) and unseals a persistent server.
func (s *Server) initUnseal(c *api.Client, initialized, sealed bool) error {
	if !initialized {
		resp, err := c.Sys().Init(&api.InitRequest{SecretShares: 1, SecretThreshold: 1})
		if err != nil {
			return fmt.Errorf("init: %w", err)
		}
		s.UnsealKey, s.Token = resp.KeysB64[0], resp.RootToken
		c.SetToken(s.Token)
	}
	if sealed || !initialized {
		if _, err := c.Sys().Unseal(s.UnsealKey); err != nil {
			return fmt.Errorf("unseal: %w", err)
		}
	}
	return nil
}

// StartPersistent starts a non-dev server with file storage under Dir (initialized with one
// unseal key, unsealed, transit and the file audit device enabled). Unlike a dev server it
// keeps its keys across Restart, like a production Vault; Token is its generated root token.
func StartPersistent(tb testing.TB) *Server {
	tb.Helper()
	bin, err := Binary()
	if err != nil {
		tb.Fatalf("vaulttest: %v", err)
	}
	s := &Server{bin: bin, Dir: tb.TempDir(), persistent: true}
	s.AuditPath = filepath.Join(s.Dir, "audit.log")
	if s.port, err = freePortPair(); err != nil {
		tb.Fatalf("vaulttest: %v", err)
	}
	s.Addr = "http://127.0.0.1:" + strconv.Itoa(s.port)
	tb.Cleanup(s.Stop)
	if err := s.start(); err != nil {
		tb.Fatalf("vaulttest: %v", err)
	}
	return s
}

// StorageBytes is the size of a persistent server's file storage.
func (s *Server) StorageBytes() (int64, error) {
	var n int64
	err := filepath.Walk(filepath.Join(s.Dir, "data"), func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n += fi.Size()
		}
		return err
	})
	return n, err
}

// Stop stops the server (SIGTERM, then SIGKILL after 5s). Safe to call twice.
func (s *Server) Stop() {
	s.mu.Lock()
	cmd := s.cmd
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

// PID is the server's process id (0 when stopped).
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// RSS is the server's resident memory in bytes, from /proc.
func (s *Server) RSS() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.PID()))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, errors.New("no VmRSS")
}

// Output is the server's log so far.
func (s *Server) Output() string {
	outMu.Lock()
	defer outMu.Unlock()
	if s.out == nil {
		return ""
	}
	return s.out.String()
}

// Client returns a root client.
func (s *Server) Client(tb testing.TB) *api.Client {
	tb.Helper()
	c, err := s.client()
	if err != nil {
		tb.Fatalf("vaulttest: %v", err)
	}
	return c
}

func (s *Server) client() (*api.Client, error) {
	cfg := api.DefaultConfig()
	cfg.Address = s.Addr
	cfg.MaxRetries = 0
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	c.SetToken(s.Token)
	return c, nil
}

// WritePolicy installs an ACL policy.
func (s *Server) WritePolicy(tb testing.TB, name, hcl string) {
	tb.Helper()
	if err := s.Client(tb).Sys().PutPolicy(name, hcl); err != nil {
		tb.Fatalf("vaulttest: policy %s: %v", name, err)
	}
}

// CreateToken creates a renewable service token with the given policies (no root, no default
// policy) and TTL.
func (s *Server) CreateToken(tb testing.TB, ttl time.Duration, policies ...string) string {
	tb.Helper()
	sec, err := s.Client(tb).Auth().Token().Create(&api.TokenCreateRequest{
		Policies: policies, NoDefaultPolicy: true, TTL: ttl.String(), Renewable: ptr(true),
	})
	if err != nil {
		tb.Fatalf("vaulttest: create token: %v", err)
	}
	return sec.Auth.ClientToken
}

// EnableAppRole enables the approle auth method (once) and creates role with policies;
// it returns the role id and a fresh secret id.
func (s *Server) EnableAppRole(tb testing.TB, role string, tokenTTL time.Duration, policies ...string) (roleID, secretID string) {
	tb.Helper()
	c := s.Client(tb)
	auths, err := c.Sys().ListAuth()
	if err != nil {
		tb.Fatalf("vaulttest: list auth: %v", err)
	}
	if _, ok := auths["approle/"]; !ok {
		if err := c.Sys().EnableAuthWithOptions("approle", &api.EnableAuthOptions{Type: "approle"}); err != nil {
			tb.Fatalf("vaulttest: enable approle: %v", err)
		}
	}
	if _, err := c.Logical().Write("auth/approle/role/"+role, map[string]any{
		"token_policies": strings.Join(policies, ","), "token_ttl": tokenTTL.String(),
		"token_max_ttl": (10 * tokenTTL).String(), "token_no_default_policy": true,
	}); err != nil {
		tb.Fatalf("vaulttest: approle role: %v", err)
	}
	sec, err := c.Logical().Read("auth/approle/role/" + role + "/role-id")
	if err != nil {
		tb.Fatalf("vaulttest: role id: %v", err)
	}
	roleID, _ = sec.Data["role_id"].(string)
	sec, err = c.Logical().Write("auth/approle/role/"+role+"/secret-id", nil)
	if err != nil {
		tb.Fatalf("vaulttest: secret id: %v", err)
	}
	secretID, _ = sec.Data["secret_id"].(string)
	return roleID, secretID
}

// AuditRequest is one request as recorded by Vault's file audit device.
type AuditRequest struct {
	Operation string
	Path      string
	Policies  []string
}

// AuditMark returns the audit log's current size, to count requests made after it.
func (s *Server) AuditMark(tb testing.TB) int64 {
	tb.Helper()
	st, err := os.Stat(s.AuditPath)
	if err != nil {
		tb.Fatalf("vaulttest: audit log: %v", err)
	}
	return st.Size()
}

// AuditRequests returns the requests Vault logged after mark (type "request" entries).
func (s *Server) AuditRequests(tb testing.TB, mark int64) []AuditRequest {
	tb.Helper()
	f, err := os.Open(s.AuditPath)
	if err != nil {
		tb.Fatalf("vaulttest: audit log: %v", err)
	}
	defer f.Close()
	if _, err := f.Seek(mark, 0); err != nil {
		tb.Fatalf("vaulttest: audit log: %v", err)
	}
	var out []AuditRequest
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e struct {
			Type string `json:"type"`
			Auth struct {
				Policies []string `json:"policies"`
			} `json:"auth"`
			Request struct {
				Operation string `json:"operation"`
				Path      string `json:"path"`
			} `json:"request"`
		}
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			tb.Fatalf("vaulttest: audit line: %v", err)
		}
		if e.Type == "request" {
			out = append(out, AuditRequest{Operation: e.Request.Operation, Path: e.Request.Path, Policies: e.Auth.Policies})
		}
	}
	if err := sc.Err(); err != nil {
		tb.Fatalf("vaulttest: audit log: %v", err)
	}
	return out
}

// WaitHealthy waits until the server answers health checks (after Restart or an unseal).
func (s *Server) WaitHealthy(ctx context.Context) error {
	c, err := s.client()
	if err != nil {
		return err
	}
	for {
		if h, err := c.Sys().HealthWithContext(ctx); err == nil && !h.Sealed {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func ptr[T any](v T) *T { return &v }

// cleanEnv is the environment without VAULT_* variables, so the server is not steered by the
// developer's own Vault settings.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VAULT_") {
			out = append(out, kv)
		}
	}
	return out
}

// freePortPair finds a port p such that p and p+1 are free: the dev server also listens on
// p+1 for cluster traffic.
func freePortPair() (int, error) { return FreePortPair() }

// FreePortPair finds a port p such that p and p+1 are free and neither is one of avoid: ports
// a caller has chosen for its own processes but not bound yet, which the kernel may hand out
// again (Launch(dir, FreePortPair(theirs...))).
func FreePortPair(avoid ...int) (int, error) {
	for range 50 {
		l1, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		p := l1.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+1))
		l1.Close()
		if err == nil {
			l2.Close()
			if !slices.Contains(avoid, p) && !slices.Contains(avoid, p+1) {
				return p, nil
			}
		}
	}
	return 0, errors.New("no free port pair")
}

// RepoRoot is the enclosing consentry repository (the directory with go.mod and deploy/).
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "deploy", "vault", "consentry.hcl")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", errors.New("deploy/vault/consentry.hcl not found above " + dir)
		}
	}
}

// ConsentryToken installs deploy/vault/consentry.hcl as policy "consentry" and returns a
// renewable one-hour token with only that policy: what consentry runs with in tests.
func (s *Server) ConsentryToken(tb testing.TB) string {
	tb.Helper()
	root, err := RepoRoot()
	if err != nil {
		tb.Fatalf("vaulttest: %v", err)
	}
	tok, err := s.PolicyToken(filepath.Join(root, "deploy", "vault", "consentry.hcl"), time.Hour)
	if err != nil {
		tb.Fatalf("vaulttest: %v", err)
	}
	return tok
}

// PolicyToken writes the Vault policy in hclFile as "consentry" and returns a renewable token
// carrying only that policy (no root, no default policy), valid for ttl.
func (s *Server) PolicyToken(hclFile string, ttl time.Duration) (string, error) {
	hcl, err := os.ReadFile(hclFile)
	if err != nil {
		return "", err
	}
	c, err := s.API()
	if err != nil {
		return "", err
	}
	if err := c.Sys().PutPolicy("consentry", string(hcl)); err != nil {
		return "", fmt.Errorf("policy consentry: %w", err)
	}
	sec, err := c.Auth().Token().Create(&api.TokenCreateRequest{
		Policies: []string{"consentry"}, NoDefaultPolicy: true, TTL: ttl.String(), Renewable: ptr(true),
	})
	if err != nil {
		return "", fmt.Errorf("create token: %w", err)
	}
	return sec.Auth.ClientToken, nil
}

// Seal seals the server: every request then fails with 503 ("Vault is sealed") until Unseal.
func (s *Server) Seal(tb testing.TB) {
	tb.Helper()
	if err := s.Client(tb).Sys().Seal(); err != nil {
		tb.Fatalf("vaulttest: seal: %v", err)
	}
}

// Unseal unseals the server with its unseal key: a persistent server's UnsealKey, or the key a
// dev server printed when it (re)started. A dev server keeps its in-memory state (keys,
// tokens) across Seal and Unseal.
func (s *Server) Unseal(tb testing.TB) {
	tb.Helper()
	key := s.UnsealKey
	if !s.persistent {
		key = devUnsealKey(s.Output())
	}
	if key == "" {
		tb.Fatal("vaulttest: no unseal key")
	}
	st, err := s.Client(tb).Sys().Unseal(key)
	if err != nil {
		tb.Fatalf("vaulttest: unseal: %v", err)
	}
	if st.Sealed {
		tb.Fatal("vaulttest: still sealed after unseal")
	}
}

// devUnsealKey finds the unseal key in a dev server's start-up banner ("Unseal Key: ...").
// Output is the current process's only (Restart starts a new buffer), so there is one.
func devUnsealKey(out string) string {
	var key string
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Unseal Key:"); ok {
			key = strings.TrimSpace(v)
		}
	}
	return key
}

// Launch starts a dev server like Start, outside a test (the demo, the e2e suite's shared
// stack): scratch files go to dir, port 0 picks a free one. The caller must Stop it.
func Launch(dir string, port int) (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	s := &Server{bin: bin, Token: RootToken, Dir: dir, port: port}
	s.AuditPath = filepath.Join(s.Dir, "audit.log")
	if s.port == 0 {
		if s.port, err = freePortPair(); err != nil {
			return nil, err
		}
	}
	s.Addr = "http://127.0.0.1:" + strconv.Itoa(s.port)
	if err := s.start(); err != nil {
		return nil, err
	}
	return s, nil
}

// API returns a client authenticated with the root token (Launch users; tests use Client).
func (s *Server) API() (*api.Client, error) {
	c, err := s.client()
	if err != nil {
		return nil, err
	}
	c.SetToken(s.Token)
	return c, nil
}
