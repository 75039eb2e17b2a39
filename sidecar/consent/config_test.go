package consent

import (
	"strings"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/config"
)

func TestConfigYAML(t *testing.T) {
	doc := `
state:
  backend: postgres
  postgres:
    url: postgres://u@db:5432/crm?sslmode=require
    schema: crm_state
    resync_interval: 30s
  erase_on_withdrawal: true
  expiry:
    notice_days: 7
    interval: 10s
    webhook_url: https://crm.example/hook
`
	c, err := config.Parse("consentry.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	var sc Config
	if ok, err := c.Section("state", &sc); !ok || err != nil {
		t.Fatalf("section: %v %v", ok, err)
	}
	sc = sc.WithDefaults()
	if err := sc.Validate(); err != nil {
		t.Fatal(err)
	}
	if sc.Postgres.ResyncInterval != 30*time.Second || sc.Expiry.Interval != 10*time.Second || sc.Expiry.NoticeDays != 7 ||
		!sc.EraseOnWithdrawal || sc.Postgres.Schema != "crm_state" || sc.Postgres.MaxConns != 10 {
		t.Fatalf("decoded %+v", sc)
	}
	if _, err := c.Section("state", &struct{}{}); err == nil {
		t.Fatal("unknown keys must be errors")
	}
}

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name string
		mod  func(*Config)
		key  string
	}{
		{"unknown backend", func(c *Config) { c.Backend = "mysql" }, "state.backend"},
		{"postgres without url", func(c *Config) { c.Backend = "postgres" }, "state.postgres.url"},
		{"postgres bad url", func(c *Config) { c.Backend, c.Postgres.URL = "postgres", "mysql://x" }, "state.postgres.url"},
		{"bad schema", func(c *Config) {
			c.Backend, c.Postgres.URL, c.Postgres.Schema = "postgres", "postgres://x", "Robert'); DROP"
		}, "state.postgres.schema"},
		{"postgres section without backend", func(c *Config) { c.Postgres.URL, c.Postgres.Schema = "postgres://x", "shared" }, "state.postgres"},
		{"postgres url file without backend", func(c *Config) { c.Postgres.URLFile = "/run/secrets/pg" }, "state.postgres"},
		{"bad purpose", func(c *Config) { c.Purposes = []string{"Not A Key"} }, "state.purposes"},
		{"bad erase purpose", func(c *Config) { c.EraseOnWithdrawalPurposes = []string{"x y"} }, "state.erase_on_withdrawal_purposes"},
		{"bad webhook", func(c *Config) { c.Expiry.WebhookURL = "ftp://x" }, "state.expiry.webhook_url"},
		{"short interval", func(c *Config) { c.Expiry.Interval = time.Millisecond }, "state.expiry.interval"},
	}
	for _, tc := range cases {
		c := Config{}
		tc.mod(&c)
		err := c.WithDefaults().Validate()
		if err == nil || !strings.HasPrefix(err.Error(), tc.key+":") {
			t.Errorf("%s: got %v, want an error naming %s", tc.name, err, tc.key)
		}
	}
	if err := (Config{}).WithDefaults().Validate(); err != nil {
		t.Errorf("defaults invalid: %v", err)
	}
}

// TestCheckConfig: run --check's validation refuses what Open would, without connecting.
func TestCheckConfig(t *testing.T) {
	good := Config{Backend: "postgres", PurposesFile: catalog, Postgres: PostgresConfig{URL: "postgres://u@127.0.0.1:1/db"}}
	if err := CheckConfig(good); err != nil {
		t.Fatalf("good config: %v", err)
	}
	bad := good
	bad.Postgres.URL = "postgres://u@h/db?sslmode=bogus"
	if err := CheckConfig(bad); err == nil || !strings.Contains(err.Error(), "state.postgres.url") {
		t.Fatalf("unparsable URL: %v", err)
	}
	noPurposes := good
	noPurposes.PurposesFile = "/nonexistent/catalog.json"
	if err := CheckConfig(noPurposes); err == nil {
		t.Fatal("missing purposes file accepted")
	}
}
