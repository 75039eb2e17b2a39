package consent

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// Config is the `state:` section: where consent, cases, processor agreements and customer
// state are kept, and what happens around consent withdrawal and expiry.
//
//	state:
//	  backend: sqlite            # sqlite (default, embedded) or postgres (several replicas)
//	  data_dir: var/state        # sqlite: directory of consentry-state.db
//	  postgres:
//	    url: postgres://consentry@db:5432/crm?sslmode=require
//	    schema: consentry
//	  purposes_file: policies/data/consentry/catalog/data.json
//	  erase_on_withdrawal: false
//	  expiry:
//	    notice_days: 14
//	    webhook_url: https://crm.example/hooks/consent-expiring
type Config struct {
	// Backend names the store: "sqlite" (default; embedded, one node) or "postgres"
	// (several sidecar replicas share one state and see each other's changes within 1 s).
	Backend string `yaml:"backend" json:"backend"`
	// DataDir is the SQLite data directory (created if missing). Default "var/state".
	DataDir string `yaml:"data_dir" json:"data_dir"`
	// SQLitePath overrides the SQLite file path (default DataDir/consentry-state.db).
	SQLitePath string `yaml:"sqlite_path" json:"sqlite_path"`
	// Postgres configures the postgres backend.
	Postgres PostgresConfig `yaml:"postgres" json:"postgres"`
	// Purposes is the list of purposes (fideslang data-use keys) consent may be recorded for.
	// When empty they are read from PurposesFile.
	Purposes []string `yaml:"purposes" json:"purposes"`
	// PurposesFile is the policy catalogue (data.json with a top-level "purposes" object, or
	// nested under consentry.catalog) whose purpose keys are the valid consent purposes.
	// Default policies/data/consentry/catalog/data.json.
	PurposesFile string `yaml:"purposes_file" json:"purposes_file"`
	// EraseOnWithdrawal makes a consent withdrawal trigger cryptographic erasure of the
	// customer (through the Eraser given to Open). Default false.
	EraseOnWithdrawal bool `yaml:"erase_on_withdrawal" json:"erase_on_withdrawal"`
	// EraseOnWithdrawalPurposes limits EraseOnWithdrawal to withdrawals that cover or are
	// covered by one of these purposes (fideslang keys: withdrawing "marketing" erases for
	// "marketing.communications.email", and the reverse); empty: every purpose. Each must be
	// a known purpose or a parent of one (a typo would never match: refused at start).
	EraseOnWithdrawalPurposes []string `yaml:"erase_on_withdrawal_purposes" json:"erase_on_withdrawal_purposes"`
	// Expiry configures expiry of consents and the notices sent before it.
	Expiry ExpiryConfig `yaml:"expiry" json:"expiry"`
	// RetentionErasure schedules cryptographic erasure of customers past their retention
	// deadline (decisions deny them from that moment regardless).
	RetentionErasure RetentionErasureConfig `yaml:"retention_erasure" json:"retention_erasure"`
}

// RetentionErasureConfig is `state.retention_erasure`.
type RetentionErasureConfig struct {
	// Enabled erases (through the Eraser: keys destroyed, customer marked erased) every
	// customer whose retention_until has passed, on the expiry sweep interval. Default false:
	// records past retention are not served either way, and erasure cannot be undone.
	Enabled bool `yaml:"enabled" json:"enabled"`
	// Grace waits this long after retention_until before erasing (time to fix a wrong
	// deadline). Default 0.
	Grace time.Duration `yaml:"grace" json:"grace"`
	// MaxPerSweep bounds the erasures one sweep performs (the rest wait for the next). Default 100.
	MaxPerSweep int `yaml:"max_per_sweep" json:"max_per_sweep"`
}

// PostgresConfig is `state.postgres`.
type PostgresConfig struct {
	// URL is the connection string (postgres://user@host:port/db?sslmode=...). Required
	// with backend postgres. URLFile is read instead when set (keeps the password out of YAML).
	URL     string `yaml:"url" json:"url"`
	URLFile string `yaml:"url_file" json:"url_file"`
	// Schema is the PostgreSQL schema holding consentry's tables (created if missing).
	// Default "consentry". Replicas sharing a state must use the same schema.
	Schema string `yaml:"schema" json:"schema"`
	// MaxConns bounds the connection pool. Default 10.
	MaxConns int `yaml:"max_conns" json:"max_conns"`
	// ResyncInterval is how often a replica reloads the whole view as a safety net against
	// a lost notification (a reconnect always reloads). Default 5m; "0s" keeps the default.
	ResyncInterval time.Duration `yaml:"resync_interval" json:"resync_interval"`
	// MaxFeedGap is how long lookups keep serving the view after it stops following the
	// database: the LISTEN connection failed or went silent (it is pinged after a third of
	// this without notifications, so a partition is found too), a refresh failed, or a reload
	// could not re-read the changes made while it ran. Changes by other replicas - a
	// withdrawal, an erasure - are missed meanwhile. Beyond it, counted from when the
	// connection was last heard, every lookup reports the state unavailable, so decisions
	// deny (state.unavailable, 503) until the feed reconnects and a reload succeeds.
	// Readiness fails as soon as the feed stops. Default 5s; "0s" keeps the default.
	MaxFeedGap time.Duration `yaml:"max_feed_gap" json:"max_feed_gap"`
}

// ExpiryConfig is `state.expiry`.
type ExpiryConfig struct {
	// NoticeDays is how many days before expiry a consent is reported as expiring
	// (log event + webhook). Default 14; negative disables notices.
	NoticeDays int `yaml:"notice_days" json:"notice_days"`
	// WebhookURL receives a POST per expiring consent (JSON, see docs/admin-api.md).
	// Empty: notices are only logged.
	WebhookURL string `yaml:"webhook_url" json:"webhook_url"`
	// WebhookSecretFile holds a secret; when set each webhook carries
	// X-Consentry-Signature: sha256=<hex HMAC-SHA256 of the body>.
	WebhookSecretFile string `yaml:"webhook_secret_file" json:"webhook_secret_file"`
	// Interval is how often expired consents are recorded as expired and notices are sent.
	// Default 1m.
	Interval time.Duration `yaml:"interval" json:"interval"`
	// WebhookTimeout bounds one webhook call. Default 5s.
	WebhookTimeout time.Duration `yaml:"webhook_timeout" json:"webhook_timeout"`
}

// DefaultPurposesFile is the catalogue of the default policy library.
const DefaultPurposesFile = "policies/data/consentry/catalog/data.json"

// WithDefaults fills defaults.
func (c Config) WithDefaults() Config {
	if c.Backend == "" {
		c.Backend = "sqlite"
	}
	if c.DataDir == "" {
		c.DataDir = "var/state"
	}
	if c.SQLitePath == "" {
		c.SQLitePath = filepath.Join(c.DataDir, "consentry-state.db")
	}
	if c.Postgres.Schema == "" {
		c.Postgres.Schema = "consentry"
	}
	if c.Postgres.MaxConns == 0 {
		c.Postgres.MaxConns = 10
	}
	if c.Postgres.ResyncInterval == 0 {
		c.Postgres.ResyncInterval = 5 * time.Minute
	}
	if c.Postgres.MaxFeedGap == 0 {
		c.Postgres.MaxFeedGap = 5 * time.Second
	}
	if len(c.Purposes) == 0 && c.PurposesFile == "" {
		c.PurposesFile = DefaultPurposesFile
	}
	if c.Expiry.NoticeDays == 0 {
		c.Expiry.NoticeDays = 14
	}
	if c.Expiry.Interval == 0 {
		c.Expiry.Interval = time.Minute
	}
	if c.Expiry.WebhookTimeout == 0 {
		c.Expiry.WebhookTimeout = 5 * time.Second
	}
	if c.RetentionErasure.MaxPerSweep == 0 {
		c.RetentionErasure.MaxPerSweep = 100
	}
	return c
}

var schemaRe = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,47}$`)

// Validate reports the first invalid key.
func (c Config) Validate() error {
	if _, ok := backends[c.Backend]; !ok {
		return fmt.Errorf("state.backend: unknown backend %q (known: %s)", c.Backend, strings.Join(BackendNames(), ", "))
	}
	switch c.Backend {
	case "sqlite":
		if c.SQLitePath == "" {
			return fmt.Errorf("state.sqlite_path: empty")
		}
		if c.Postgres.URL != "" || c.Postgres.URLFile != "" {
			// A fleet meant to share PostgreSQL would run each replica on its own SQLite file:
			// a withdrawal or an erasure through one would not reach the others.
			return fmt.Errorf("state.postgres: set, but state.backend is %q: add backend: postgres (or remove the postgres section)", c.Backend)
		}
	case "postgres":
		if c.Postgres.URL == "" && c.Postgres.URLFile == "" {
			return fmt.Errorf("state.postgres.url: required with backend postgres")
		}
		if c.Postgres.URL != "" {
			if u, err := url.Parse(c.Postgres.URL); err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
				return fmt.Errorf("state.postgres.url: not a postgres:// URL")
			}
		}
		if !schemaRe.MatchString(c.Postgres.Schema) {
			return fmt.Errorf("state.postgres.schema: %q must match %s", c.Postgres.Schema, schemaRe)
		}
		if c.Postgres.MaxConns < 1 {
			return fmt.Errorf("state.postgres.max_conns: must be >= 1")
		}
		if c.Postgres.ResyncInterval < time.Second {
			return fmt.Errorf("state.postgres.resync_interval: must be >= 1s")
		}
		if c.Postgres.MaxFeedGap < 0 {
			return fmt.Errorf("state.postgres.max_feed_gap: must not be negative")
		}
	}
	for _, p := range c.Purposes {
		if !purposeRe.MatchString(p) {
			return fmt.Errorf("state.purposes: %q is not a fideslang data-use key", p)
		}
	}
	for _, p := range c.EraseOnWithdrawalPurposes {
		if !purposeRe.MatchString(p) {
			return fmt.Errorf("state.erase_on_withdrawal_purposes: %q is not a fideslang data-use key", p)
		}
	}
	if c.Expiry.WebhookURL != "" {
		u, err := url.Parse(c.Expiry.WebhookURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("state.expiry.webhook_url: %q is not an http(s) URL", c.Expiry.WebhookURL)
		}
	}
	if c.Expiry.Interval < time.Second {
		return fmt.Errorf("state.expiry.interval: must be >= 1s")
	}
	if c.Expiry.WebhookTimeout <= 0 {
		return fmt.Errorf("state.expiry.webhook_timeout: must be > 0")
	}
	if c.RetentionErasure.Grace < 0 || c.RetentionErasure.MaxPerSweep < 0 {
		return fmt.Errorf("state.retention_erasure: grace and max_per_sweep must not be negative")
	}
	return nil
}

// postgresURL returns the configured URL, reading URLFile when set.
func (c Config) postgresURL() (string, error) {
	if c.Postgres.URLFile == "" {
		return c.Postgres.URL, nil
	}
	b, err := os.ReadFile(c.Postgres.URLFile)
	if err != nil {
		return "", fmt.Errorf("state.postgres.url_file: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}
