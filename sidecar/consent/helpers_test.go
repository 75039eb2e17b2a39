package consent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

const catalog = "../../policies/data/consentry/catalog/data.json"

// pgURL is the PostgreSQL every test run uses. The suite never skips: without a server
// the postgres cases fail loudly (see .ci/ensure-postgres.sh, `make postgres`).
func pgURL() string {
	if u := os.Getenv("CONSENTRY_PG_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
}

var testBackends = []string{"sqlite", "postgres"}

// newSchema creates a fresh PostgreSQL schema name for one test and drops it afterwards,
// so parallel test packages and runs never see each other's rows.
func newSchema(t testing.TB) string {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "t_" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pgURL())
	if err != nil {
		t.Fatalf("\n!!!!!!!!\n!! PostgreSQL is not reachable at %s: %v\n!! The PostgreSQL store suite cannot run - it is never skipped.\n!! Start one (make postgres) or set CONSENTRY_PG_URL.\n!!!!!!!!", pgURL(), err)
	}
	_ = conn.Close(ctx)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, pgURL())
		if err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{schema}.Sanitize()+` CASCADE`); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return schema
}

// testConfig returns a config for backend: a temp SQLite file or a fresh PG schema.
func testConfig(t testing.TB, backend string) Config {
	t.Helper()
	cfg := Config{Backend: backend, PurposesFile: catalog}
	switch backend {
	case "sqlite":
		cfg.DataDir = t.TempDir()
	case "postgres":
		cfg.Postgres.URL = pgURL()
		cfg.Postgres.Schema = newSchema(t)
	}
	return cfg
}

// sameDB returns a config for a second store instance on the same database as cfg.
func sameDB(cfg Config) Config { return cfg }

func openStore(t testing.TB, cfg Config, opts Options) *Store {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	opts.NoBackground = true
	s, err := Open(context.Background(), cfg, opts)
	if err != nil {
		t.Fatalf("open %s store: %v", cfg.Backend, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// clock is a settable test clock.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

const noticeHash = "3f79bb7b435b05321651daefd374cdc681dc06faa65e374e38337b88ca046dea"

func grantInput(customer, purpose string) ConsentInput {
	return ConsentInput{CustomerID: customer, Purpose: purpose, NoticeVersion: "2026-01", NoticeHash: noticeHash, Channel: "web"}
}

func tempFile(t testing.TB, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
