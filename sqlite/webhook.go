package sqlite

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/lifeline-dev/lifeline"
)

// CreateWebhook stores w, secret included. It returns invalid for a webhook without id,
// URL, events or secret, and conflict if a webhook with the same id exists.
func (s *Store) CreateWebhook(ctx context.Context, w *lifeline.Webhook) error {
	switch {
	case w == nil || w.ID == "":
		return lifeline.Errorf(lifeline.EInvalid, "webhook id is required")
	case w.URL == "":
		return lifeline.Errorf(lifeline.EInvalid, "webhook url is required")
	case len(w.Events) == 0:
		return lifeline.Errorf(lifeline.EInvalid, "webhook events are required")
	case w.Secret == "":
		return lifeline.Errorf(lifeline.EInvalid, "webhook secret is required")
	}
	events, err := json.Marshal(w.Events)
	if err != nil {
		return fmt.Errorf("sqlite: create webhook: %w", err)
	}
	tx, err := s.beginWrite(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	_, err = tx.ExecContext(ctx, `INSERT INTO webhooks (id, url, events, secret, created_at) VALUES (?, ?, ?, ?, ?)`,
		w.ID, w.URL, string(events), w.Secret, formatTime(w.CreatedAt))
	if isUniqueViolation(err) {
		return lifeline.Errorf(lifeline.EConflict, "webhook %s already exists", w.ID)
	}
	if err != nil {
		return fmt.Errorf("sqlite: create webhook: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: create webhook: commit: %w", err)
	}
	return nil
}

// Webhooks returns every webhook with its secret, ordered by creation time and then id.
func (s *Store) Webhooks(ctx context.Context) ([]*lifeline.Webhook, error) {
	tx, err := s.beginRead(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT id, url, events, secret, created_at FROM webhooks ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: webhooks: %w", err)
	}
	defer rows.Close()
	hooks := []*lifeline.Webhook{}
	for rows.Next() {
		var (
			w         lifeline.Webhook
			events    string
			createdAt string
		)
		if err := rows.Scan(&w.ID, &w.URL, &events, &w.Secret, &createdAt); err != nil {
			return nil, fmt.Errorf("sqlite: webhooks: %w", err)
		}
		if err := json.Unmarshal([]byte(events), &w.Events); err != nil {
			return nil, fmt.Errorf("sqlite: webhook %s: events: %w", w.ID, err)
		}
		if w.CreatedAt, err = parseTime(createdAt); err != nil {
			return nil, err
		}
		hooks = append(hooks, &w)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: webhooks: %w", err)
	}
	return hooks, nil
}

// DeleteWebhook removes webhook id. It returns not_found for an unknown id.
func (s *Store) DeleteWebhook(ctx context.Context, id string) error {
	tx, err := s.beginWrite(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, `DELETE FROM webhooks WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("sqlite: delete webhook: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("sqlite: delete webhook: %w", err)
	}
	if n == 0 {
		return lifeline.Errorf(lifeline.ENotFound, "webhook %s not found", id)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: delete webhook: commit: %w", err)
	}
	return nil
}
