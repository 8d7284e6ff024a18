package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/lifeline-dev/lifeline"
)

// pruneChunk bounds how many events one pruning transaction deletes, so that the write
// lock is never held long enough to delay the engine's commits noticeably.
const pruneChunk = 5000

// FirstEventSeq returns the seq of the oldest event still stored, or LastEventSeq+1 when
// none is (an empty or fully pruned log). Pruning only ever removes a prefix of the log,
// so every seq from FirstEventSeq to LastEventSeq is stored: a reader that has seen
// every event up to FirstEventSeq-1 can resume without a gap.
func (s *Store) FirstEventSeq(ctx context.Context) (int64, error) {
	tx, err := s.beginRead(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	var first sql.NullInt64
	if err := tx.QueryRowContext(ctx, `SELECT MIN(seq) FROM events`).Scan(&first); err != nil {
		return 0, fmt.Errorf("sqlite: first event seq: %w", err)
	}
	if first.Valid {
		return first.Int64, nil
	}
	last, err := lastSeq(ctx, tx)
	if err != nil {
		return 0, err
	}
	return last + 1, nil
}

// PruneEvents deletes the oldest events, up to (excluding) the first one whose
// timestamp is at or after olderThan, and returns how many it deleted. Only a prefix
// of the log is ever removed, even if a later event carries an older timestamp. Seqs
// are never reused: the next event still gets LastEventSeq+1.
func (s *Store) PruneEvents(ctx context.Context, olderThan time.Time) (int64, error) {
	tx, err := s.beginRead(ctx)
	if err != nil {
		return 0, err
	}
	var cut int64
	err = tx.QueryRowContext(ctx, `SELECT seq FROM events WHERE timestamp >= ? ORDER BY seq LIMIT 1`, formatTime(olderThan)).Scan(&cut)
	if errors.Is(err, sql.ErrNoRows) {
		// Every stored event is older: all of them go.
		cut, err = lastSeq(ctx, tx)
		cut++
	}
	tx.Rollback()
	if err != nil {
		return 0, fmt.Errorf("sqlite: prune events: %w", err)
	}
	return s.deleteEventsBefore(ctx, cut)
}

// TrimEvents deletes the oldest events so that at most keep of the newest seqs remain,
// and returns how many it deleted. keep < 1 deletes nothing.
func (s *Store) TrimEvents(ctx context.Context, keep int64) (int64, error) {
	if keep < 1 {
		return 0, nil
	}
	last, err := s.LastEventSeq(ctx)
	if err != nil {
		return 0, err
	}
	return s.deleteEventsBefore(ctx, last-keep+1)
}

// deleteEventsBefore deletes every event with seq < cut, in chunks of pruneChunk, each
// in its own write transaction.
func (s *Store) deleteEventsBefore(ctx context.Context, cut int64) (int64, error) {
	lo, err := s.FirstEventSeq(ctx)
	if err != nil {
		return 0, err
	}
	var total int64
	for lo < cut {
		hi := min(cut, lo+pruneChunk)
		n, err := s.deleteEventsRange(ctx, hi)
		total += n
		if err != nil {
			return total, err
		}
		lo = hi
	}
	return total, nil
}

func (s *Store) deleteEventsRange(ctx context.Context, before int64) (int64, error) {
	tx, err := s.beginWrite(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, `DELETE FROM events WHERE seq < ?`, before)
	if err != nil {
		return 0, fmt.Errorf("sqlite: prune events: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("sqlite: prune events: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("sqlite: prune events: commit: %w", err)
	}
	return n, nil
}

// LastAgentEvent returns the newest stored event of type typ for agent agentID.
// Returns not_found if there is none (or it was pruned).
func (s *Store) LastAgentEvent(ctx context.Context, agentID, typ string) (*lifeline.Event, error) {
	tx, err := s.beginRead(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	var (
		seq  int64
		body string
		e    lifeline.Event
	)
	// The (agent_id, seq) index is walked backwards from the newest event of the agent.
	err = tx.QueryRowContext(ctx, `SELECT seq, body FROM events WHERE agent_id = ? AND type = ? ORDER BY seq DESC LIMIT 1`,
		agentID, typ).Scan(&seq, &body)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, lifeline.Errorf(lifeline.ENotFound, "no %s event for agent %q", typ, agentID)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: last agent event: %w", err)
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		return nil, fmt.Errorf("sqlite: event %d: %w", seq, err)
	}
	e.Seq = seq
	e.Timestamp = e.Timestamp.UTC()
	return &e, nil
}
