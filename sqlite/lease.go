package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/lifeline-dev/lifeline"
)

// upsertLease inserts a lease or replaces its mutable columns.
func upsertLease(ctx context.Context, tx *writeTx, l *lifeline.Lease) error {
	if l.LeaseID == "" || l.Scope == "" || l.AgentID == "" || !l.Status.Valid() {
		return lifeline.Errorf(lifeline.EInvalid, "lease %q: lease_id, scope, agent_id and a valid status are required", l.LeaseID)
	}
	_, err := tx.ExecContext(ctx, `
		INSERT INTO leases (lease_id, scope, agent_id, fence, status, acquired_at, expires_at, ttl_seconds, ended_at, reason)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (lease_id) DO UPDATE SET
			status      = excluded.status,
			expires_at  = excluded.expires_at,
			ttl_seconds = excluded.ttl_seconds,
			ended_at    = excluded.ended_at,
			reason      = excluded.reason`,
		l.LeaseID, l.Scope, l.AgentID, l.Fence, string(l.Status), formatTime(l.AcquiredAt), formatTime(l.ExpiresAt),
		l.TTLSeconds, formatTimePtr(l.EndedAt), l.Reason)
	if err != nil {
		if isUniqueViolation(err) {
			return lifeline.Errorf(lifeline.EConflict, "lease %s: scope %q already has an active lease or fence %d", l.LeaseID, l.Scope, l.Fence)
		}
		return fmt.Errorf("sqlite: upsert lease %s: %w", l.LeaseID, err)
	}
	return nil
}

// upsertTask writes the latest state of a task.
func upsertTask(ctx context.Context, tx *writeTx, t *lifeline.Task) error {
	if t.TaskID == "" {
		return lifeline.Errorf(lifeline.EInvalid, "task_id is required")
	}
	var result any
	if len(t.Result) > 0 {
		result = string(t.Result)
	}
	_, err := tx.ExecContext(ctx, `
		INSERT INTO tasks (task_id, agent_id, lease_id, fence, status, progress, message, result, error, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (task_id) DO UPDATE SET
			agent_id = excluded.agent_id, lease_id = excluded.lease_id, fence = excluded.fence,
			status = excluded.status, progress = excluded.progress, message = excluded.message,
			result = excluded.result, error = excluded.error, updated_at = excluded.updated_at`,
		t.TaskID, t.AgentID, t.LeaseID, t.Fence, t.Status, t.Progress, t.Message, result, t.Error, formatTime(t.UpdatedAt))
	if err != nil {
		return fmt.Errorf("sqlite: upsert task %s: %w", t.TaskID, err)
	}
	return nil
}

const leaseColumns = `lease_id, scope, agent_id, fence, status, acquired_at, expires_at, ttl_seconds, ended_at, reason`

func scanLease(rows interface{ Scan(...any) error }) (*lifeline.Lease, error) {
	var (
		l                lifeline.Lease
		status, acq, exp string
		ended            sql.NullString
		err              error
	)
	if err := rows.Scan(&l.LeaseID, &l.Scope, &l.AgentID, &l.Fence, &status, &acq, &exp, &l.TTLSeconds, &ended, &l.Reason); err != nil {
		return nil, err
	}
	l.Status = lifeline.LeaseStatus(status)
	if l.AcquiredAt, err = parseTime(acq); err != nil {
		return nil, err
	}
	if l.ExpiresAt, err = parseTime(exp); err != nil {
		return nil, err
	}
	if l.EndedAt, err = parseTimePtr(ended); err != nil {
		return nil, err
	}
	return &l, nil
}

func (s *Store) queryLeases(ctx context.Context, query string, args ...any) ([]*lifeline.Lease, error) {
	tx, err := s.beginRead(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: leases: %w", err)
	}
	defer rows.Close()
	out := []*lifeline.Lease{}
	for rows.Next() {
		l, err := scanLease(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: leases: %w", err)
		}
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: leases: %w", err)
	}
	return out, nil
}

// ActiveLeases returns every active lease in lease_id order.
func (s *Store) ActiveLeases(ctx context.Context) ([]*lifeline.Lease, error) {
	return s.queryLeases(ctx, `SELECT `+leaseColumns+` FROM leases WHERE status = 'active' ORDER BY lease_id`)
}

// Lease returns one lease in any status.
func (s *Store) Lease(ctx context.Context, id string) (*lifeline.Lease, error) {
	ls, err := s.queryLeases(ctx, `SELECT `+leaseColumns+` FROM leases WHERE lease_id = ?`, id)
	if err != nil {
		return nil, err
	}
	if len(ls) == 0 {
		return nil, lifeline.Errorf(lifeline.ENotFound, "lease %q not found", id)
	}
	return ls[0], nil
}

// Leases returns leases matching f in lease_id order.
func (s *Store) Leases(ctx context.Context, f lifeline.LeaseFilter) ([]*lifeline.Lease, error) {
	var where []string
	var args []any
	if f.AgentID != "" {
		where, args = append(where, "agent_id = ?"), append(args, f.AgentID)
	}
	if f.Scope != "" {
		where, args = append(where, "scope = ?"), append(args, f.Scope)
	}
	if len(f.Statuses) > 0 {
		marks := strings.TrimSuffix(strings.Repeat("?,", len(f.Statuses)), ",")
		where = append(where, "status IN ("+marks+")")
		for _, st := range f.Statuses {
			args = append(args, string(st))
		}
	}
	if f.After != "" {
		where, args = append(where, "lease_id > ?"), append(args, f.After)
	}
	q := `SELECT ` + leaseColumns + ` FROM leases`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY lease_id LIMIT ?"
	args = append(args, lifeline.PageLimit(f.Limit))
	return s.queryLeases(ctx, q, args...)
}

// LeaseFences returns the highest fence issued per scope.
func (s *Store) LeaseFences(ctx context.Context) (map[string]int64, error) {
	tx, err := s.beginRead(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT scope, MAX(fence) FROM leases GROUP BY scope`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: lease fences: %w", err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var scope string
		var fence int64
		if err := rows.Scan(&scope, &fence); err != nil {
			return nil, fmt.Errorf("sqlite: lease fences: %w", err)
		}
		out[scope] = fence
	}
	return out, rows.Err()
}

// Task returns the latest state of a task.
func (s *Store) Task(ctx context.Context, id string) (*lifeline.Task, error) {
	tx, err := s.beginRead(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	var (
		t       lifeline.Task
		result  sql.NullString
		updated string
	)
	err = tx.QueryRowContext(ctx, `
		SELECT task_id, agent_id, lease_id, fence, status, progress, message, result, error, updated_at
		FROM tasks WHERE task_id = ?`, id).
		Scan(&t.TaskID, &t.AgentID, &t.LeaseID, &t.Fence, &t.Status, &t.Progress, &t.Message, &result, &t.Error, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, lifeline.Errorf(lifeline.ENotFound, "task %q not found", id)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: task %s: %w", id, err)
	}
	if result.Valid {
		t.Result = []byte(result.String)
	}
	if t.UpdatedAt, err = parseTime(updated); err != nil {
		return nil, err
	}
	return &t, nil
}
