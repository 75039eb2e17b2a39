package app_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/app"
	"github.com/consentry/consentry/sidecar/config"
	"github.com/consentry/consentry/sidecar/pipeline/pipelinetest"
)

// TestCheckWritesNothingAndFetchesNoJWKS: `consentry run --check` (app.CheckOnly) creates no
// policy.persist_dir (a CI job without write access to /var/lib failed on it) and reaches no
// JWKS URL, as docs/configuration.md says.
func TestCheckWritesNothingAndFetchesNoJWKS(t *testing.T) {
	var fetched atomic.Int32
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetched.Add(1)
		w.WriteHeader(http.StatusNotFound)
	}))
	defer jwks.Close()
	root := pipelinetest.RepoRoot()
	dir := t.TempDir()
	persist := filepath.Join(dir, "persist")
	cfg, err := config.Parse("check.yaml", []byte(fmt.Sprintf(`
policy:
  url: http://127.0.0.1:1/bundle.tar.gz
  persist_dir: %[2]s
  require_signatures: false
identity:
  issuers:
    - issuer: https://idp.example
      audiences: [consentry]
      jwks_url: %[3]s/jwks.json
routes:
  file: %[1]s/deploy/routes/democrm.yaml
state:
  data_dir: %[4]s/state
  purposes_file: %[1]s/policies/data/consentry/catalog/data.json
decision_log:
  dir: %[4]s/decisions
`, root, persist, jwks.URL, dir)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := app.New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), app.CheckOnly()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // a background fetch would have arrived
	if _, err := os.Stat(persist); !os.IsNotExist(err) {
		t.Errorf("run --check created policy.persist_dir %s (stat: %v)", persist, err)
	}
	if entries, err := os.ReadDir(dir); err != nil || len(entries) != 0 {
		t.Errorf("run --check wrote into the sidecar's directory: %v (%v)", entries, err)
	}
	if n := fetched.Load(); n != 0 {
		t.Errorf("run --check fetched the JWKS URL %d time(s)", n)
	}
}
