package consent

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"path/filepath"

	_ "modernc.org/sqlite" // pure-Go SQLite driver: no cgo, one static binary
)

func init() { RegisterBackend("sqlite", openSQLite) }

// sqliteDSN makes every connection durable: WAL with synchronous=FULL fsyncs the log on
// each commit, so an acknowledged event survives a crash or power loss; BEGIN IMMEDIATE
// takes the write lock up front so concurrent writers queue (busy_timeout) instead of
// failing on lock upgrade.
func sqliteDSN(path string) string {
	v := url.Values{}
	v.Add("_pragma", "journal_mode(WAL)")
	v.Add("_pragma", "synchronous(FULL)")
	v.Add("_pragma", "busy_timeout(10000)")
	v.Add("_pragma", "foreign_keys(1)")
	v.Set("_txlock", "immediate")
	return "file:" + path + "?" + v.Encode()
}

func openSQLite(ctx context.Context, cfg Config) (Backend, error) {
	if err := os.MkdirAll(filepath.Dir(cfg.SQLitePath), 0o700); err != nil {
		return nil, fmt.Errorf("state.data_dir: %w", err)
	}
	db, err := sql.Open("sqlite", sqliteDSN(cfg.SQLitePath))
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", cfg.SQLitePath, err)
	}
	// One writer at a time anyway; a few connections let history reads run beside it.
	db.SetMaxOpenConns(4)
	s := &sqlStore{db: db, d: dialect{name: "sqlite", serial: "INTEGER PRIMARY KEY AUTOINCREMENT"}}
	if err := s.migrate(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("sqlite %s: %w", cfg.SQLitePath, err)
	}
	s.startGroupCommit(1) // SQLite has one writer anyway
	return s, nil
}
