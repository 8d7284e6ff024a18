package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/lifeline-dev/lifeline"
)

// lastSeq returns the highest seq ever assigned; 0 for an empty log.
func lastSeq(ctx context.Context, tx *sql.Tx) (int64, error) {
	var seq int64
	if err := tx.QueryRowContext(ctx, `SELECT last_seq FROM event_log WHERE id = 1`).Scan(&seq); err != nil {
		return 0, fmt.Errorf("sqlite: last event seq: %w", err)
	}
	return seq, nil
}

// setLastSeq records the highest seq assigned.
func setLastSeq(ctx context.Context, tx *sql.Tx, seq int64) error {
	if _, err := tx.ExecContext(ctx, `UPDATE event_log SET last_seq = ? WHERE id = 1`, seq); err != nil {
		return fmt.Errorf("sqlite: set last event seq: %w", err)
	}
	return nil
}

// insertEventSQL appends one event.
const insertEventSQL = `INSERT INTO events (seq, type, agent_id, timestamp, body) VALUES (?, ?, ?, ?, ?)`

// insertEvent appends e, whose Seq is already assigned. The body is the whole event as
// JSON, so fields added to lifeline.Event later are stored without a migration.
func insertEvent(ctx context.Context, tx *writeTx, e *lifeline.Event) error {
	if e.Type == "" {
		return lifeline.Errorf(lifeline.EInvalid, "event type is required")
	}
	stored := *e
	stored.Timestamp = e.Timestamp.UTC()
	body, err := json.Marshal(stored)
	if err != nil {
		return fmt.Errorf("sqlite: event %d: %w", e.Seq, err)
	}
	if _, err := tx.stmt(ctx, tx.s.insertEventStmt).ExecContext(ctx,
		e.Seq, e.Type, e.AgentID, formatTime(e.Timestamp), string(body)); err != nil {
		return fmt.Errorf("sqlite: insert event %d: %w", e.Seq, err)
	}
	return nil
}

// Events returns up to lifeline.PageLimit(f.Limit) events with seq > f.After, of one of
// f.Types and of agent f.AgentID when those are set, in seq order.
func (s *Store) Events(ctx context.Context, f lifeline.EventFilter) ([]lifeline.Event, error) {
	tx, err := s.beginRead(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	return findEvents(ctx, tx, f)
}

// findEvents runs the one event query, built from f.
func findEvents(ctx context.Context, tx *sql.Tx, f lifeline.EventFilter) ([]lifeline.Event, error) {
	where := []string{"seq > ?"}
	args := []any{max(f.After, 0)}
	if len(f.Types) > 0 {
		where = append(where, "type IN (?"+strings.Repeat(", ?", len(f.Types)-1)+")")
		for _, t := range f.Types {
			args = append(args, t)
		}
	}
	if f.AgentID != "" {
		where = append(where, "agent_id = ?")
		args = append(args, f.AgentID)
	}
	args = append(args, lifeline.PageLimit(f.Limit))

	rows, err := tx.QueryContext(ctx, `SELECT seq, body FROM events WHERE `+strings.Join(where, " AND ")+` ORDER BY seq LIMIT ?`, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: events: %w", err)
	}
	defer rows.Close()

	events := []lifeline.Event{}
	for rows.Next() {
		var (
			seq  int64
			body string
			e    lifeline.Event
		)
		if err := rows.Scan(&seq, &body); err != nil {
			return nil, fmt.Errorf("sqlite: events: %w", err)
		}
		if err := json.Unmarshal([]byte(body), &e); err != nil {
			return nil, fmt.Errorf("sqlite: event %d: %w", seq, err)
		}
		// The column is the authority on seq; the body is written with the same value.
		e.Seq = seq
		e.Timestamp = e.Timestamp.UTC()
		events = append(events, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: events: %w", err)
	}
	return events, nil
}

// LastEventSeq returns the highest seq committed, 0 when the log is empty.
func (s *Store) LastEventSeq(ctx context.Context) (int64, error) {
	tx, err := s.beginRead(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	return lastSeq(ctx, tx)
}
