package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/lifeline-dev/lifeline"
)

// CreateKey stores k. It returns invalid for a key without id or hash or with an
// unknown role, and conflict if a key with the same id or the same hash exists.
func (s *Store) CreateKey(ctx context.Context, k *lifeline.Key) error {
	switch {
	case k == nil || k.ID == "":
		return lifeline.Errorf(lifeline.EInvalid, "key id is required")
	case k.Hash == "":
		return lifeline.Errorf(lifeline.EInvalid, "key hash is required")
	case !k.Role.Valid():
		return lifeline.Errorf(lifeline.EInvalid, "unknown key role %q", k.Role)
	}
	tx, err := s.beginWrite(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := insertKey(ctx, tx, k); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: create key: commit: %w", err)
	}
	return nil
}

// insertKey inserts k, mapping a duplicate id or hash to conflict.
func insertKey(ctx context.Context, tx *writeTx, k *lifeline.Key) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO keys (id, role, name, hash, created_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?)`,
		k.ID, string(k.Role), k.Name, k.Hash, formatTime(k.CreatedAt), formatTimePtr(k.RevokedAt))
	if isUniqueViolation(err) {
		// Which constraint failed is not said: a duplicate hash means a duplicate
		// secret, and that is nobody's business.
		return lifeline.Errorf(lifeline.EConflict, "key %s already exists", k.ID)
	}
	if err != nil {
		return fmt.Errorf("sqlite: create key: %w", err)
	}
	return nil
}

// Keys returns every key, revoked ones included, ordered by creation time and then id.
func (s *Store) Keys(ctx context.Context) ([]*lifeline.Key, error) {
	tx, err := s.beginRead(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	return findKeys(ctx, tx)
}

// findKeys reads every key in creation order.
func findKeys(ctx context.Context, tx *sql.Tx) ([]*lifeline.Key, error) {
	rows, err := tx.QueryContext(ctx, `SELECT id, role, name, hash, created_at, revoked_at FROM keys ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: keys: %w", err)
	}
	defer rows.Close()

	keys := []*lifeline.Key{}
	for rows.Next() {
		var (
			k         lifeline.Key
			role      string
			createdAt string
			revokedAt sql.NullString
		)
		if err := rows.Scan(&k.ID, &role, &k.Name, &k.Hash, &createdAt, &revokedAt); err != nil {
			return nil, fmt.Errorf("sqlite: keys: %w", err)
		}
		k.Role = lifeline.Role(role)
		if k.CreatedAt, err = parseTime(createdAt); err != nil {
			return nil, err
		}
		if k.RevokedAt, err = parseTimePtr(revokedAt); err != nil {
			return nil, err
		}
		keys = append(keys, &k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: keys: %w", err)
	}
	return keys, nil
}

// RevokeKey marks key id revoked at at. It returns not_found for an unknown id;
// revoking a revoked key succeeds and keeps the first revocation time.
func (s *Store) RevokeKey(ctx context.Context, id string, at time.Time) error {
	tx, err := s.beginWrite(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := revokeKey(ctx, tx, id, at); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: revoke key: commit: %w", err)
	}
	return nil
}

// revokeKey sets revoked_at of key id unless it is already set.
func revokeKey(ctx context.Context, tx *writeTx, id string, at time.Time) error {
	res, err := tx.ExecContext(ctx, `UPDATE keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?`, formatTime(at), id)
	if err != nil {
		return fmt.Errorf("sqlite: revoke key: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("sqlite: revoke key: %w", err)
	}
	if n == 0 {
		return lifeline.Errorf(lifeline.ENotFound, "key %s not found", id)
	}
	return nil
}
