package crm

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	_ "modernc.org/sqlite" // pure-Go SQLite driver, registered as "sqlite"
)

// Store errors the HTTP layer maps to status codes.
var (
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("already exists")
)

// Store is the SQLite-backed record store.
type Store struct {
	db *sql.DB
}

const schema = `
CREATE TABLE IF NOT EXISTS customers (
	id TEXT PRIMARY KEY,
	name TEXT NOT NULL,
	email TEXT NOT NULL DEFAULT '',
	phone TEXT NOT NULL DEFAULT '',
	address TEXT NOT NULL DEFAULT '',
	date_of_birth TEXT NOT NULL DEFAULT '',
	card_number TEXT NOT NULL DEFAULT '',
	card_expiry TEXT NOT NULL DEFAULT '',
	health_notes TEXT NOT NULL DEFAULT '',
	marketing_segment TEXT NOT NULL DEFAULT '',
	created_at TEXT NOT NULL,
	updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS customers_segment ON customers(marketing_segment);
CREATE TABLE IF NOT EXISTS notes (
	id TEXT PRIMARY KEY,
	customer_id TEXT NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
	body TEXT NOT NULL,
	author TEXT NOT NULL,
	created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS notes_customer ON notes(customer_id);
CREATE TABLE IF NOT EXISTS cases (
	id TEXT PRIMARY KEY,
	customer_id TEXT NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
	subject TEXT NOT NULL,
	status TEXT NOT NULL CHECK (status IN ('open', 'closed')),
	assignees TEXT NOT NULL,
	created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS cases_customer ON cases(customer_id);
-- Counters never go back, so a deleted (and crypto-shredded) customer's id, and with it
-- its key names, is never handed to a new customer.
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
`

// Open opens (creating if needed) the SQLite database at path and applies the schema.
func Open(path string) (*Store, error) {
	if path == "" {
		return nil, errors.New("open store: empty database path")
	}
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous(NORMAL)")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if _, err := db.Exec(schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: schema: %w", path, err)
	}
	return &Store{db: db}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error { return s.db.PingContext(ctx) }

const customerCols = `id, name, email, phone, address, date_of_birth, card_number, card_expiry,
	health_notes, marketing_segment, created_at, updated_at`

type scanner interface{ Scan(dest ...any) error }

func scanCustomer(r scanner) (Customer, error) {
	var c Customer
	var created, updated string
	err := r.Scan(&c.ID, &c.Name, &c.Contact.Email, &c.Contact.Phone, &c.Address, &c.DateOfBirth,
		&c.Payment.CardNumber, &c.Payment.CardExpiry, &c.Health.Notes, &c.MarketingSegment, &created, &updated)
	if err != nil {
		return c, err
	}
	c.CreatedAt, _ = time.Parse(time.RFC3339, created)
	c.UpdatedAt, _ = time.Parse(time.RFC3339, updated)
	return c, nil
}

func ts(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// Now is the store's clock, truncated to the second precision timestamps are kept in.
func Now() time.Time { return time.Now().UTC().Truncate(time.Second) }

// CustomerFilter selects customers for ListCustomers.
type CustomerFilter struct {
	Query    string // substring of the name, case-insensitive
	Segment  string // exact marketing segment
	Page     int    // 1-based
	PageSize int
}

// ListCustomers returns one page of matching customers, ordered by id, and the total count.
func (s *Store) ListCustomers(ctx context.Context, f CustomerFilter) ([]Customer, int, error) {
	var where []string
	var args []any
	if f.Query != "" {
		where = append(where, `name LIKE ? ESCAPE '\'`)
		esc := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(f.Query)
		args = append(args, "%"+esc+"%")
	}
	if f.Segment != "" {
		where = append(where, `marketing_segment = ?`)
		args = append(args, f.Segment)
	}
	cond := ""
	if len(where) > 0 {
		cond = " WHERE " + strings.Join(where, " AND ")
	}
	var total int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM customers`+cond, args...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("count customers: %w", err)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT `+customerCols+` FROM customers`+cond+` ORDER BY id LIMIT ? OFFSET ?`,
		append(args, f.PageSize, (f.Page-1)*f.PageSize)...)
	if err != nil {
		return nil, 0, fmt.Errorf("list customers: %w", err)
	}
	defer rows.Close()
	items := []Customer{}
	for rows.Next() {
		c, err := scanCustomer(rows)
		if err != nil {
			return nil, 0, fmt.Errorf("list customers: %w", err)
		}
		items = append(items, c)
	}
	return items, total, rows.Err()
}

// GetCustomer returns one customer or ErrNotFound.
func (s *Store) GetCustomer(ctx context.Context, id string) (Customer, error) {
	return getCustomer(ctx, s.db, id)
}

type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

func getCustomer(ctx context.Context, q querier, id string) (Customer, error) {
	c, err := scanCustomer(q.QueryRowContext(ctx, `SELECT `+customerCols+` FROM customers WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return c, fmt.Errorf("customer %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return c, fmt.Errorf("get customer %s: %w", id, err)
	}
	return c, nil
}

func insertCustomer(ctx context.Context, q querier, c *Customer) error {
	_, err := q.ExecContext(ctx, `INSERT INTO customers (`+customerCols+`) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)`,
		c.ID, c.Name, c.Contact.Email, c.Contact.Phone, c.Address, c.DateOfBirth, c.Payment.CardNumber,
		c.Payment.CardExpiry, c.Health.Notes, c.MarketingSegment, ts(c.CreatedAt), ts(c.UpdatedAt))
	if err != nil && strings.Contains(err.Error(), "UNIQUE constraint failed") {
		return fmt.Errorf("customer %s: %w", c.ID, ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("insert customer %s: %w", c.ID, err)
	}
	return nil
}

// nextID draws the next value of a counter inside tx.
func nextID(ctx context.Context, tx *sql.Tx, counter string) (int64, error) {
	var v int64
	err := tx.QueryRowContext(ctx, `INSERT INTO counters(name, value) VALUES (?, 1)
		ON CONFLICT(name) DO UPDATE SET value = value + 1 RETURNING value`, counter).Scan(&v)
	if err != nil {
		return 0, fmt.Errorf("counter %s: %w", counter, err)
	}
	return v, nil
}

// CreateCustomer inserts c. An empty c.ID is assigned the next free c-NNNNNN id; a given id
// that already exists yields ErrConflict. Timestamps are set by the store.
func (s *Store) CreateCustomer(ctx context.Context, c *Customer) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("create customer: %w", err)
	}
	defer tx.Rollback()
	c.CreatedAt, c.UpdatedAt = Now(), Now()
	if c.ID != "" {
		if err := insertCustomer(ctx, tx, c); err != nil {
			return err
		}
		return tx.Commit()
	}
	for {
		n, err := nextID(ctx, tx, "customer")
		if err != nil {
			return err
		}
		c.ID = fmt.Sprintf("c-%06d", n)
		err = insertCustomer(ctx, tx, c)
		if errors.Is(err, ErrConflict) {
			continue // taken by a client-chosen id; draw again
		}
		if err != nil {
			return err
		}
		return tx.Commit()
	}
}

// UpdateCustomer applies fn to the stored customer and saves the result in one transaction.
func (s *Store) UpdateCustomer(ctx context.Context, id string, fn func(*Customer) error) (Customer, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return Customer{}, fmt.Errorf("update customer: %w", err)
	}
	defer tx.Rollback()
	c, err := getCustomer(ctx, tx, id)
	if err != nil {
		return c, err
	}
	if err := fn(&c); err != nil {
		return c, err
	}
	c.ID = id
	c.UpdatedAt = Now()
	_, err = tx.ExecContext(ctx, `UPDATE customers SET name=?, email=?, phone=?, address=?, date_of_birth=?,
		card_number=?, card_expiry=?, health_notes=?, marketing_segment=?, updated_at=? WHERE id=?`,
		c.Name, c.Contact.Email, c.Contact.Phone, c.Address, c.DateOfBirth, c.Payment.CardNumber,
		c.Payment.CardExpiry, c.Health.Notes, c.MarketingSegment, ts(c.UpdatedAt), id)
	if err != nil {
		return c, fmt.Errorf("update customer %s: %w", id, err)
	}
	return c, tx.Commit()
}

// DeleteCustomer removes a customer with its notes and cases.
func (s *Store) DeleteCustomer(ctx context.Context, id string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM customers WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("delete customer %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("customer %s: %w", id, ErrNotFound)
	}
	return nil
}

// ExportCustomers calls fn for every customer in id order, streaming from the database.
func (s *Store) ExportCustomers(ctx context.Context, fn func(Customer) error) error {
	rows, err := s.db.QueryContext(ctx, `SELECT `+customerCols+` FROM customers ORDER BY id`)
	if err != nil {
		return fmt.Errorf("export customers: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		c, err := scanCustomer(rows)
		if err != nil {
			return fmt.Errorf("export customers: %w", err)
		}
		if err := fn(c); err != nil {
			return err
		}
	}
	return rows.Err()
}

// ListNotes returns a customer's notes, oldest first (ErrNotFound for an unknown customer).
func (s *Store) ListNotes(ctx context.Context, customerID string) ([]Note, error) {
	if _, err := s.GetCustomer(ctx, customerID); err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, `SELECT id, customer_id, body, author, created_at FROM notes
		WHERE customer_id = ? ORDER BY created_at, id`, customerID)
	if err != nil {
		return nil, fmt.Errorf("list notes: %w", err)
	}
	defer rows.Close()
	notes := []Note{}
	for rows.Next() {
		var n Note
		var created string
		if err := rows.Scan(&n.ID, &n.CustomerID, &n.Body, &n.Author, &created); err != nil {
			return nil, fmt.Errorf("list notes: %w", err)
		}
		n.CreatedAt, _ = time.Parse(time.RFC3339, created)
		notes = append(notes, n)
	}
	return notes, rows.Err()
}

// AddNote stores a note for an existing customer, assigning its id and creation time.
func (s *Store) AddNote(ctx context.Context, n *Note) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("add note: %w", err)
	}
	defer tx.Rollback()
	if _, err := getCustomer(ctx, tx, n.CustomerID); err != nil {
		return err
	}
	v, err := nextID(ctx, tx, "note")
	if err != nil {
		return err
	}
	n.ID, n.CreatedAt = fmt.Sprintf("n-%06d", v), Now()
	if err := insertNote(ctx, tx, n); err != nil {
		return err
	}
	return tx.Commit()
}

func insertNote(ctx context.Context, q querier, n *Note) error {
	_, err := q.ExecContext(ctx, `INSERT INTO notes (id, customer_id, body, author, created_at) VALUES (?,?,?,?,?)`,
		n.ID, n.CustomerID, n.Body, n.Author, ts(n.CreatedAt))
	if err != nil {
		return fmt.Errorf("insert note %s: %w", n.ID, err)
	}
	return nil
}

// GetCase returns one case or ErrNotFound.
func (s *Store) GetCase(ctx context.Context, id string) (Case, error) {
	cs, err := s.queryCases(ctx, `WHERE id = ?`, id)
	if err != nil {
		return Case{}, err
	}
	if len(cs) == 0 {
		return Case{}, fmt.Errorf("case %s: %w", id, ErrNotFound)
	}
	return cs[0], nil
}

// ListCases returns the cases of one customer, or all cases when customerID is empty.
func (s *Store) ListCases(ctx context.Context, customerID string) ([]Case, error) {
	if customerID == "" {
		return s.queryCases(ctx, ``)
	}
	return s.queryCases(ctx, `WHERE customer_id = ?`, customerID)
}

func (s *Store) queryCases(ctx context.Context, where string, args ...any) ([]Case, error) {
	// Case ids are case-<n>; order numerically so case-10 follows case-9.
	rows, err := s.db.QueryContext(ctx, `SELECT id, customer_id, subject, status, assignees, created_at
		FROM cases `+where+` ORDER BY length(id), id`, args...)
	if err != nil {
		return nil, fmt.Errorf("query cases: %w", err)
	}
	defer rows.Close()
	out := []Case{}
	for rows.Next() {
		var c Case
		var assignees, created string
		if err := rows.Scan(&c.ID, &c.CustomerID, &c.Subject, &c.Status, &assignees, &created); err != nil {
			return nil, fmt.Errorf("query cases: %w", err)
		}
		if err := json.Unmarshal([]byte(assignees), &c.Assignees); err != nil {
			return nil, fmt.Errorf("case %s: assignees: %w", c.ID, err)
		}
		c.CreatedAt, _ = time.Parse(time.RFC3339, created)
		out = append(out, c)
	}
	return out, rows.Err()
}

func insertCase(ctx context.Context, q querier, c *Case) error {
	assignees, err := json.Marshal(c.Assignees)
	if err != nil {
		return fmt.Errorf("case %s: %w", c.ID, err)
	}
	_, err = q.ExecContext(ctx, `INSERT INTO cases (id, customer_id, subject, status, assignees, created_at)
		VALUES (?,?,?,?,?,?)`, c.ID, c.CustomerID, c.Subject, c.Status, string(assignees), ts(c.CreatedAt))
	if err != nil {
		return fmt.Errorf("insert case %s: %w", c.ID, err)
	}
	return nil
}

// Count returns the number of customers.
func (s *Store) Count(ctx context.Context) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM customers`).Scan(&n)
	return n, err
}

// Reset deletes every record and counter (used by seed -force).
func (s *Store) Reset(ctx context.Context) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM notes; DELETE FROM cases; DELETE FROM customers; DELETE FROM counters;`)
	if err != nil {
		return fmt.Errorf("reset store: %w", err)
	}
	return nil
}

// Load inserts a complete data set (customers with ids and timestamps set, notes, cases) in
// one transaction and advances the counters past the loaded ids.
func (s *Store) Load(ctx context.Context, customers []Customer, notes []Note, cases []Case) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("load: %w", err)
	}
	defer tx.Rollback()
	for i := range customers {
		if err := insertCustomer(ctx, tx, &customers[i]); err != nil {
			return err
		}
	}
	for i := range notes {
		if err := insertNote(ctx, tx, &notes[i]); err != nil {
			return err
		}
	}
	for i := range cases {
		if err := insertCase(ctx, tx, &cases[i]); err != nil {
			return err
		}
	}
	for name, v := range map[string]int{"customer": len(customers), "note": len(notes), "case": len(cases)} {
		if _, err := tx.ExecContext(ctx, `INSERT INTO counters(name, value) VALUES (?, ?)
			ON CONFLICT(name) DO UPDATE SET value = max(value, excluded.value)`, name, v); err != nil {
			return fmt.Errorf("load: counter %s: %w", name, err)
		}
	}
	return tx.Commit()
}
