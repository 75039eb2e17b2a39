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
//
// The path goes into a file: URI escaped (and made absolute, since a URI path is): pasted in
// as is, a '#' or '?' in state.data_dir would end the path there, and the database would be
// created somewhere else - shared with every other store whose path has that prefix.
func sqliteDSN(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("state sqlite path %q: %w", path, err)
	}
	v := url.Values{}
	v.Add("_pragma", "journal_mode(WAL)")
	v.Add("_pragma", "synchronous(FULL)")
	v.Add("_pragma", "busy_timeout(10000)")
	v.Add("_pragma", "foreign_keys(1)")
	v.Set("_txlock", "immediate")
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(abs), RawQuery: v.Encode()}
	return u.String(), nil
}

func openSQLite(ctx context.Context, cfg Config) (Backend, error) {
	if err := os.MkdirAll(filepath.Dir(cfg.SQLitePath), 0o700); err != nil {
		return nil, fmt.Errorf("state.data_dir: %w", err)
	}
	dsn, err := sqliteDSN(cfg.SQLitePath)
	if err != nil {
		return nil, err
	}
	db, err := sql.Open("sqlite", dsn)
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
