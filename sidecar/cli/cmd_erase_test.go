package cli

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/consentry/consentry/sidecar/decision"
	"github.com/consentry/consentry/vaultkeys"
	"github.com/consentry/consentry/vaultkeys/vaulttest"
)

// sidecarAndOpsDirs starts a real Vault and writes a config into a sidecar's directory whose
// vault section keeps the default, relative ledger path; vc is that config with the ledger
// resolved where the sidecar (running in sidecarDir) has it. opsDir is another directory, where
// an operator runs the CLI.
func sidecarAndOpsDirs(t *testing.T) (srv *vaulttest.Server, sidecarDir, opsDir, cfgPath string, vc vaultkeys.Config) {
	t.Helper()
	srv = vaulttest.Start(t)
	sidecarDir, opsDir = t.TempDir(), t.TempDir()
	cfgPath = filepath.Join(sidecarDir, "consentry.yaml")
	yml := "vault:\n  address: " + srv.Addr + "\n  auth:\n    method: token\n    token: " + srv.Token + "\n  pseudonym_key: cli-test-pseudonym-key-0123\n"
	if err := os.WriteFile(cfgPath, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	vc, err := vaultkeys.LoadConfigFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	vc.LedgerPath = filepath.Join(sidecarDir, vc.WithDefaults().LedgerPath)
	return srv, sidecarDir, opsDir, cfgPath, vc
}

// checkLedgerRefusal checks a ledger command's exit code and that stderr names every wanted
// string, and that none of the ledgers no sidecar reads was created.
func checkLedgerRefusal(t *testing.T, code, wantCode int, stderr string, wantStderr []string, notCreated ...string) {
	t.Helper()
	if code != wantCode {
		t.Fatalf("exit %d, want %d; stderr: %s", code, wantCode, stderr)
	}
	for _, want := range wantStderr {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr %q does not name %q", stderr, want)
		}
	}
	for _, p := range notCreated {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a ledger no sidecar reads was created at %s (%v)", p, err)
		}
	}
}

// TestEraseRequiresTheSidecarsLedger: `consentry erase --config` records the erasure in the
// shredded-keys ledger the sidecar reads. With the default, relative vault.ledger_path, run
// from another directory than the sidecar's it used to start a new ledger there, exit 0, and
// the sidecar never learnt of the erasure. It must refuse a ledger that does not exist
// (naming the absolute path and the way out), and name the absolute ledger it wrote to.
func TestEraseRequiresTheSidecarsLedger(t *testing.T) {
	srv, sidecarDir, opsDir, cfgPath, vc := sidecarAndOpsDirs(t)
	sidecarLedger := vc.LedgerPath
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	km, err := vaultkeys.New(context.Background(), vc, vaultkeys.Options{Registerer: prometheus.NewRegistry(), Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(km.Close)
	d := &decision.Decision{Allow: true, Fields: map[string]decision.Field{"e": {Outcome: decision.OutcomeAllow, KeyScope: "contact"}}, KeyScopes: []string{"contact"}}
	keyExists := func(customer string) bool {
		s, err := srv.Client(t).Logical().Read("transit/keys/consentry-" + customer + "-contact")
		if err != nil {
			t.Fatal(err)
		}
		return s != nil
	}
	opsDefault := filepath.Join(opsDir, "var", "vaultkeys", "shredded-keys.jsonl")
	cases := []struct {
		name, dir string
		args      []string
		wantCode  int
		// wantStderr must all appear; erased: the customer's key is gone and the sidecar refuses it.
		wantStderr []string
		erased     bool
	}{
		{"relative default ledger from another directory", opsDir, nil, ExitConfig,
			[]string{opsDefault, "relative", "working directory", "--ledger"}, false},
		{"--ledger naming no file", opsDir, []string{"--ledger", "elsewhere.jsonl"}, ExitConfig,
			[]string{filepath.Join(opsDir, "elsewhere.jsonl"), "--ledger"}, false},
		{"--ledger naming the sidecar's ledger", opsDir, []string{"--ledger", sidecarLedger}, ExitOK,
			[]string{"recorded in the shredded-keys ledger " + sidecarLedger}, true},
		{"from the sidecar's directory", sidecarDir, nil, ExitOK,
			[]string{"recorded in the shredded-keys ledger " + sidecarLedger}, true},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			customer := "c-" + string(rune('a'+i))
			if _, err := km.ReleaseForWrite(context.Background(), customer, d); err != nil {
				t.Fatal(err)
			}
			t.Chdir(tc.dir)
			args := append([]string{"erase", "--config", cfgPath, "--customer", customer, "--reason", "DSR-9"}, tc.args...)
			code, _, stderr := run(t, "", args...)
			checkLedgerRefusal(t, code, tc.wantCode, stderr, tc.wantStderr, opsDefault, filepath.Join(opsDir, "elsewhere.jsonl"))
			mu.Lock()
			now = now.Add(2 * time.Second) // the sidecar re-reads the ledger at most once a second
			mu.Unlock()
			ks, err := km.Release(context.Background(), customer, d)
			if got := !ks.Has("contact") && errors.Is(err, vaultkeys.ErrErased); got != tc.erased {
				t.Errorf("sidecar refuses the key: %v, want %v (err %v)", got, tc.erased, err)
			}
			if exists := keyExists(customer); exists == tc.erased {
				t.Errorf("key in Vault: %v, want %v", exists, !tc.erased)
			}
		})
	}
}

// TestEraseAdminNeverFollowsRedirects: an --admin URL that redirects (http to https, a moved
// host, an SSO gateway) turned the POST into a bodyless GET, whose 200 (a login page) was
// reported as a completed erasure. A redirect, or a 200 without the erasure record, fails.
func TestEraseAdminNeverFollowsRedirects(t *testing.T) {
	cases := []struct {
		name     string
		status   int
		body     string
		wantCode int
		wantErr  string
	}{
		{name: "302 to a login page", status: http.StatusFound, wantCode: ExitFailure, wantErr: "redirects are not followed"},
		{name: "307, which would resend the POST", status: http.StatusTemporaryRedirect, wantCode: ExitFailure, wantErr: "redirects are not followed"},
		{name: "200 from another server", status: http.StatusOK, body: "<html>please log in</html>", wantCode: ExitFailure, wantErr: "without an erasure record"},
		{name: "the admin API's answer", status: http.StatusOK, body: `{"record":{"seq":1}}`, wantCode: ExitOK},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var erasePosts, logins int
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/login" {
					logins++
					_, _ = w.Write([]byte("<html>please log in</html>"))
					return
				}
				if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/erase") {
					erasePosts++
				}
				if tc.status/100 == 3 {
					http.Redirect(w, r, "/login", tc.status)
					return
				}
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			t.Setenv("CONSENTRY_ADMIN_TOKEN", "tok")
			code, out, errs := run(t, "", "erase", "--customer", "c-1001", "--reason", "art 17 request", "--admin", srv.URL)
			if code != tc.wantCode || !strings.Contains(errs, tc.wantErr) || erasePosts != 1 || logins != 0 {
				t.Errorf("exit %d (want %d), %d posts, %d redirects followed; stdout %q stderr %q", code, tc.wantCode, erasePosts, logins, out, errs)
			}
		})
	}
}
