// Package sqlite is the embedded Lifeline store: one SQLite database file in WAL mode,
// written through a single connection and read through a small pool.
//
// Every acknowledged write is durable: the database runs with synchronous=FULL, so a
// commit returns only after the WAL has been synced. The schema is created and upgraded
// by the migrations embedded in the binary.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	msqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/lifeline-dev/lifeline"
)

// driverName is the database/sql name registered by modernc.org/sqlite.
const driverName = "sqlite"

// busyTimeout is how long a connection waits for a lock held by another connection
// (another process opening the same file, or a checkpoint) before failing with
// SQLITE_BUSY.
const busyTimeout = 5 * time.Second

var _ lifeline.Store = (*Store)(nil)

// Store is a lifeline.Store backed by one SQLite database file.
//
// Writes go through db, a pool of exactly one connection, so they are serialised in the
// process and never meet SQLITE_BUSY from each other. Reads go through rdb, a pool of
// query-only connections that in WAL mode read a committed snapshot without waiting for
// the writer.
type Store struct {
	path string
	db   *sql.DB // the one write connection
	rdb  *sql.DB // read-only pool

	// Statements of the hot write paths, prepared once on the write connection:
	// parsing an upsert costs more than running it.
	upsertAgentStmt   *sql.Stmt
	insertEventStmt   *sql.Stmt
	saveHeartbeatStmt *sql.Stmt

	closeOnce sync.Once
	closeErr  error
}

// Open opens the database file at path, creating it and its parent directory if they
// do not exist, and brings its schema up to date. It refuses a database whose schema is
// newer than this binary knows.
func Open(path string) (*Store, error) {
	if path == "" {
		return nil, lifeline.Errorf(lifeline.EInvalid, "sqlite: database path is empty")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	// The directory holds key hashes: keep it private to the service user.
	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return nil, fmt.Errorf("sqlite: create data directory: %w", err)
	}

	s := &Store{path: abs}

	// The writer opens first: it switches the file to WAL mode (a persistent setting)
	// and runs the migrations before any reader looks at the schema.
	s.db, err = sql.Open(driverName, dsn(abs, true))
	if err != nil {
		return nil, fmt.Errorf("sqlite: open: %w", err)
	}
	s.db.SetMaxOpenConns(1)
	s.db.SetMaxIdleConns(1)
	s.db.SetConnMaxLifetime(0)
	s.db.SetConnMaxIdleTime(0)

	ctx := context.Background()
	if err := s.db.PingContext(ctx); err != nil {
		s.db.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", abs, err)
	}
	if err := migrate(ctx, s.db); err != nil {
		s.db.Close()
		return nil, err
	}
	if err := s.prepare(ctx); err != nil {
		s.closeStmts()
		s.db.Close()
		return nil, err
	}

	s.rdb, err = sql.Open(driverName, dsn(abs, false))
	if err != nil {
		s.db.Close()
		return nil, fmt.Errorf("sqlite: open: %w", err)
	}
	readers := max(4, runtime.GOMAXPROCS(0))
	s.rdb.SetMaxOpenConns(readers)
	s.rdb.SetMaxIdleConns(readers)
	if err := s.rdb.PingContext(ctx); err != nil {
		s.rdb.Close()
		s.closeStmts()
		s.db.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", abs, err)
	}
	return s, nil
}

// dsn returns the driver data source name for the file at abs. The path goes into a
// file: URI so that characters such as '?' and '#' in it are escaped rather than taken
// for the start of the parameters.
func dsn(abs string, writer bool) string {
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(abs)}
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()))
	q.Add("_pragma", "foreign_keys(1)")
	if writer {
		q.Add("_pragma", "journal_mode(WAL)")
		// FULL, not NORMAL: in WAL mode NORMAL may lose the last commits on power
		// loss, and an acknowledged write must survive a crash.
		q.Add("_pragma", "synchronous(FULL)")
		// Take the write lock at BEGIN, so a transaction never fails half-way with
		// SQLITE_BUSY when another process holds the file.
		q.Set("_txlock", "immediate")
	} else {
		q.Add("_pragma", "query_only(1)")
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// Path returns the absolute path of the database file.
func (s *Store) Path() string { return s.path }

// Ping checks that both the write connection and the read pool answer.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.db.PingContext(ctx); err != nil {
		return fmt.Errorf("sqlite: ping: %w", err)
	}
	if err := s.rdb.PingContext(ctx); err != nil {
		return fmt.Errorf("sqlite: ping: %w", err)
	}
	return nil
}

// Close waits for writes in progress, checkpoints the WAL into the database file and
// truncates it, and closes every connection. Calling Close again returns the first
// result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		// Readers go first: a TRUNCATE checkpoint cannot finish while a reader still
		// uses the WAL.
		rerr := s.rdb.Close()
		// The checkpoint waits for the one write connection, so it runs after any
		// Apply in progress has committed.
		var busy, logFrames, checkpointed int
		cerr := s.db.QueryRowContext(context.Background(), "PRAGMA wal_checkpoint(TRUNCATE)").
			Scan(&busy, &logFrames, &checkpointed)
		if cerr != nil {
			cerr = fmt.Errorf("sqlite: checkpoint: %w", cerr)
		}
		s.closeStmts()
		werr := s.db.Close()
		s.closeErr = errors.Join(rerr, cerr, werr)
	})
	return s.closeErr
}

// prepare prepares the statements of the hot write paths.
func (s *Store) prepare(ctx context.Context) error {
	for _, p := range []struct {
		stmt  **sql.Stmt
		query string
	}{
		{&s.upsertAgentStmt, upsertAgentSQL},
		{&s.insertEventStmt, insertEventSQL},
		{&s.saveHeartbeatStmt, saveHeartbeatSQL},
	} {
		stmt, err := s.db.PrepareContext(ctx, p.query)
		if err != nil {
			return fmt.Errorf("sqlite: prepare: %w", err)
		}
		*p.stmt = stmt
	}
	return nil
}

// closeStmts closes the prepared statements.
func (s *Store) closeStmts() {
	for _, stmt := range []*sql.Stmt{s.upsertAgentStmt, s.insertEventStmt, s.saveHeartbeatStmt} {
		if stmt != nil {
			stmt.Close()
		}
	}
}

// writeTx is a transaction on the write connection.
type writeTx struct {
	*sql.Tx
	s     *Store
	bound map[*sql.Stmt]*sql.Stmt
}

// stmt returns the store's prepared statement shared, bound to the transaction. With
// one write connection the statement is already prepared on it: binding re-parses
// nothing.
func (tx *writeTx) stmt(ctx context.Context, shared *sql.Stmt) *sql.Stmt {
	if st, ok := tx.bound[shared]; ok {
		return st
	}
	st := tx.StmtContext(ctx, shared)
	if tx.bound == nil {
		tx.bound = make(map[*sql.Stmt]*sql.Stmt, 2)
	}
	tx.bound[shared] = st
	return st
}

// beginWrite starts a transaction on the write connection.
func (s *Store) beginWrite(ctx context.Context) (*writeTx, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("sqlite: begin: %w", err)
	}
	return &writeTx{Tx: tx, s: s}, nil
}

// beginRead starts a read transaction: every query in it sees one snapshot.
func (s *Store) beginRead(ctx context.Context) (*sql.Tx, error) {
	tx, err := s.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("sqlite: begin: %w", err)
	}
	return tx, nil
}

// isUniqueViolation reports whether err is a PRIMARY KEY or UNIQUE constraint
// violation, judged by SQLite's extended result code.
func isUniqueViolation(err error) bool {
	var se *msqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	switch se.Code() {
	case sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY, sqlite3.SQLITE_CONSTRAINT_UNIQUE:
		return true
	}
	return false
}

// timeLayout is the stored form of every time: UTC with exactly nine fractional
// digits, so that text order is time order and nanoseconds survive.
const timeLayout = "2006-01-02T15:04:05.000000000Z07:00"

// formatTime returns the stored form of t.
func formatTime(t time.Time) string { return t.UTC().Format(timeLayout) }

// formatTimePtr returns the stored form of *t, or nil (SQL NULL) for a nil t.
func formatTimePtr(t *time.Time) any {
	if t == nil {
		return nil
	}
	return formatTime(*t)
}

// parseTime reads a stored time. The result is in UTC.
func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("sqlite: bad stored time %q: %w", s, err)
	}
	return t.UTC(), nil
}

// parseTimePtr reads a nullable stored time.
func parseTimePtr(s sql.NullString) (*time.Time, error) {
	if !s.Valid {
		return nil, nil
	}
	t, err := parseTime(s.String)
	if err != nil {
		return nil, err
	}
	return &t, nil
}
