package consent

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

func init() { RegisterBackend("postgres", openPostgres) }

// migrationLockID is the advisory lock replicas take while migrating, so that several
// starting at once apply each migration exactly once.
const migrationLockID = 0x636f6e73656e74 // "consent"

// postgresConnConfig reads (url or url_file) and parses the connection string: openPostgres,
// and run --check without connecting.
func postgresConnConfig(cfg Config) (*pgx.ConnConfig, error) {
	raw, err := cfg.postgresURL()
	if err != nil {
		return nil, err
	}
	pcfg, err := pgx.ParseConfig(raw)
	if err != nil {
		return nil, fmt.Errorf("state.postgres.url: %w", err)
	}
	return pcfg, nil
}

func openPostgres(ctx context.Context, cfg Config) (Backend, error) {
	pcfg, err := postgresConnConfig(cfg)
	if err != nil {
		return nil, err
	}
	schema := cfg.Postgres.Schema
	pcfg.RuntimeParams["search_path"] = schema
	listenCfg := pcfg.Copy()
	// Named so operators (and the reconnect test) can tell the LISTEN connection apart.
	listenCfg.RuntimeParams["application_name"] = "consentry-listen-" + schema
	db := stdlib.OpenDB(*pcfg)
	db.SetMaxOpenConns(cfg.Postgres.MaxConns)
	db.SetMaxIdleConns(cfg.Postgres.MaxConns)
	channel := "consentry_" + schema
	s := &sqlStore{db: db}
	s.d = dialect{
		name:   "postgres",
		serial: "BIGSERIAL PRIMARY KEY",
		dollar: true,
		lockCustomers: func(ctx context.Context, tx *sql.Tx, ids []string) error {
			_, err := tx.ExecContext(ctx, `SELECT consent_lock_customers($1::text[])`, ids)
			return err
		},
		// NOTIFY is transactional: listeners hear it only if (and when) the write commits.
		notify: func(ctx context.Context, tx *sql.Tx, ch Change) error {
			_, err := tx.ExecContext(ctx, `SELECT pg_notify($1, $2)`, channel, ch.Kind+"|"+ch.Key)
			return err
		},
		beginMigrate: func(ctx context.Context, tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrationLockID)); err != nil {
				return fmt.Errorf("migration lock: %w", err)
			}
			if _, err := tx.ExecContext(ctx, `CREATE SCHEMA IF NOT EXISTS `+pgx.Identifier{schema}.Sanitize()); err != nil {
				return fmt.Errorf("create schema %s: %w", schema, err)
			}
			return nil
		},
		appendMany: func(ctx context.Context, q querier, evs []Event) ([]AppendResult, error) {
			return pgAppendMany(ctx, q, channel, evs)
		},
		retryAppend: pgDeadlock,
		watch: func(ctx context.Context, w Watcher) error {
			// A third of the gap: a silent connection is found and reported (with the time
			// it was last heard) well within max_feed_gap.
			heartbeat := min(max(cfg.Postgres.MaxFeedGap/3, 50*time.Millisecond), 5*time.Second)
			return listen(ctx, listenCfg, channel, heartbeat, w)
		},
	}
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := db.PingContext(pingCtx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("postgres %s:%d: %w", pcfg.Host, pcfg.Port, err)
	}
	if err := s.migrate(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("postgres: %w", err)
	}
	// Two workers: one batch fills while the other waits for its commit. More would
	// only split the queue into smaller batches, each paying the WAL flush.
	s.startGroupCommit(2)
	return s, nil
}

// listen holds a dedicated connection LISTENing on channel and reports each change. After
// every (re)connect it calls Reset: notifications sent while not listening are lost, so the
// caller (re)loads its whole view once the LISTEN is in place. A failed Reset drops the
// connection and starts again. A connection quiet for a heartbeat is pinged: a half-open
// connection (a partition, a failover whose old host vanished) never returns an error by
// itself, and its silence would read as "no changes".
func listen(ctx context.Context, cfg *pgx.ConnConfig, channel string, heartbeat time.Duration, w Watcher) error {
	backoff := 100 * time.Millisecond
	alive := time.Now()
	for ctx.Err() == nil {
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err == nil {
			_, err = conn.Exec(ctx, `LISTEN `+pgx.Identifier{channel}.Sanitize())
		}
		if err == nil {
			err = w.Reset()
		}
		if err == nil {
			backoff = 100 * time.Millisecond
			alive = time.Now()
			// receive returns when the connection is lost: reconnect below.
			err = receive(ctx, conn, w.Change, heartbeat, &alive)
		}
		if ctx.Err() == nil {
			w.Lost(alive, err)
		}
		if conn != nil {
			closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = conn.Close(closeCtx)
			cancel()
		}
		if ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
	return nil
}

// receive reports notifications until the connection fails; alive is when it was last
// known to work (a notification, a successful ping).
func receive(ctx context.Context, conn *pgx.Conn, change func(Change) error, heartbeat time.Duration, alive *time.Time) error {
	for {
		wctx, cancel := context.WithTimeout(ctx, heartbeat)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil || !pgconn.Timeout(err) {
				return err
			}
			// Quiet for a heartbeat (the deadline leaves the connection usable): prove it is
			// still there.
			pctx, cancel := context.WithTimeout(ctx, heartbeat)
			err = conn.Ping(pctx)
			cancel()
			if err != nil {
				return fmt.Errorf("change feed heartbeat: %w", err)
			}
			*alive = time.Now()
			continue
		}
		*alive = time.Now()
		kind, key, ok := strings.Cut(n.Payload, "|")
		if !ok {
			continue
		}
		if err := change(Change{Kind: kind, Key: key}); err != nil {
			return err
		}
	}
}
