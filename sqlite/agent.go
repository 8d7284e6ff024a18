package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

	"github.com/lifeline-dev/lifeline"
)

// Apply commits batch in one transaction: agent, lease and task records are upserted
// and events appended in order, each event receiving the next seq, which is written back into
// batch. It returns invalid, and writes nothing, if a change holds an agent without
// agent_id, with an unknown status or with metadata that is not JSON, or an event
// without type. On any error nothing is written and every Seq of batch is reset to 0.
func (s *Store) Apply(ctx context.Context, batch []lifeline.Change) (err error) {
	if len(batch) == 0 {
		return ctx.Err()
	}
	defer func() {
		if err != nil {
			resetSeqs(batch)
		}
	}()

	tx, err := s.beginWrite(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()

	last, err := lastSeq(ctx, tx.Tx)
	if err != nil {
		return err
	}
	for i := range batch {
		c := &batch[i]
		switch {
		case c.Agent != nil && c.StatusOnly:
			if err := updateAgentStatus(ctx, tx, c.Agent); err != nil {
				return err
			}
		case c.Agent != nil:
			if err := upsertAgent(ctx, tx, c.Agent); err != nil {
				return err
			}
		}
		for _, l := range c.Leases {
			if err := upsertLease(ctx, tx, l); err != nil {
				return err
			}
		}
		if c.Task != nil {
			if err := upsertTask(ctx, tx, c.Task); err != nil {
				return err
			}
		}
		for j := range c.Events {
			last++
			c.Events[j].Seq = last
			if err := insertEvent(ctx, tx, &c.Events[j]); err != nil {
				return err
			}
		}
	}
	if err := setLastSeq(ctx, tx.Tx, last); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: apply: commit: %w", err)
	}
	return nil
}

// resetSeqs clears the seqs Apply wrote into a batch it then failed to commit.
func resetSeqs(batch []lifeline.Change) {
	for i := range batch {
		for j := range batch[i].Events {
			batch[i].Events[j].Seq = 0
		}
	}
}

// validateAgent checks what the store itself depends on. The full domain rules are the
// registry's job.
func validateAgent(a *lifeline.Agent) error {
	if a.AgentID == "" {
		return lifeline.Errorf(lifeline.EInvalid, "agent_id is required")
	}
	if !a.Status.Valid() {
		return lifeline.Errorf(lifeline.EInvalid, "agent %s: unknown status %q", a.AgentID, a.Status)
	}
	if len(a.Metadata) > 0 && !json.Valid(a.Metadata) {
		return lifeline.Errorf(lifeline.EInvalid, "agent %s: metadata is not valid JSON", a.AgentID)
	}
	return nil
}

// storedMetadata returns the stored form of metadata: absent or null metadata is
// stored as the empty object, which is what reads return for it.
func storedMetadata(m json.RawMessage) string {
	t := bytes.TrimSpace(m)
	if len(t) == 0 || bytes.Equal(t, []byte("null")) {
		return "{}"
	}
	return string(m)
}

// upsertAgentSQL inserts an agent record or replaces every column of it.
const upsertAgentSQL = `
INSERT INTO agents (
	agent_id, role_id, name, capabilities, max_concurrent_tasks, current_load,
	status, endpoint, interval_seconds, unhealthy_after_seconds, dead_after_seconds,
	metadata, registered_at, last_heartbeat_at, version, drain_deadline,
	owner_key_id, pending_command
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (agent_id) DO UPDATE SET
	role_id                 = excluded.role_id,
	name                    = excluded.name,
	capabilities            = excluded.capabilities,
	max_concurrent_tasks    = excluded.max_concurrent_tasks,
	current_load            = excluded.current_load,
	status                  = excluded.status,
	endpoint                = excluded.endpoint,
	interval_seconds        = excluded.interval_seconds,
	unhealthy_after_seconds = excluded.unhealthy_after_seconds,
	dead_after_seconds      = excluded.dead_after_seconds,
	metadata                = excluded.metadata,
	registered_at           = excluded.registered_at,
	last_heartbeat_at       = excluded.last_heartbeat_at,
	version                 = excluded.version,
	drain_deadline          = excluded.drain_deadline,
	owner_key_id            = excluded.owner_key_id,
	pending_command         = excluded.pending_command`

// upsertAgent inserts a, or replaces every column of the record with its agent_id.
func upsertAgent(ctx context.Context, tx *writeTx, a *lifeline.Agent) error {
	if err := validateAgent(a); err != nil {
		return err
	}
	caps := a.Capabilities
	if caps == nil {
		caps = []string{}
	}
	capsJSON, err := json.Marshal(caps)
	if err != nil {
		return fmt.Errorf("sqlite: agent %s: capabilities: %w", a.AgentID, err)
	}
	var command any // NULL unless a command is pending
	if a.PendingCommand != nil {
		b, err := json.Marshal(a.PendingCommand)
		if err != nil {
			return fmt.Errorf("sqlite: agent %s: pending command: %w", a.AgentID, err)
		}
		command = string(b)
	}
	_, err = tx.stmt(ctx, tx.s.upsertAgentStmt).ExecContext(ctx,
		a.AgentID, a.RoleID, a.Name, string(capsJSON), a.Capacity.MaxConcurrentTasks, a.Capacity.CurrentLoad,
		string(a.Status), a.Endpoint, a.HeartbeatConfig.IntervalSeconds, a.HeartbeatConfig.UnhealthyAfterSeconds, a.HeartbeatConfig.DeadAfterSeconds,
		storedMetadata(a.Metadata), formatTime(a.RegisteredAt), formatTime(a.LastHeartbeatAt), a.Version, formatTimePtr(a.DrainDeadline),
		a.OwnerKeyID, command,
	)
	if err != nil {
		return fmt.Errorf("sqlite: upsert agent %s: %w", a.AgentID, err)
	}
	return nil
}

// updateAgentStatus writes only the lifecycle columns of an existing agent.
func updateAgentStatus(ctx context.Context, tx *writeTx, a *lifeline.Agent) error {
	if err := validateAgent(a); err != nil {
		return err
	}
	var command any
	if a.PendingCommand != nil {
		b, err := json.Marshal(a.PendingCommand)
		if err != nil {
			return fmt.Errorf("sqlite: agent %s: pending command: %w", a.AgentID, err)
		}
		command = string(b)
	}
	res, err := tx.ExecContext(ctx, `UPDATE agents SET status = ?, version = ?, drain_deadline = ?, pending_command = ? WHERE agent_id = ?`,
		string(a.Status), a.Version, formatTimePtr(a.DrainDeadline), command, a.AgentID)
	if err != nil {
		return fmt.Errorf("sqlite: update agent %s: %w", a.AgentID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return lifeline.Errorf(lifeline.ENotFound, "agent %q not found", a.AgentID)
	}
	return nil
}

// Agents returns every agent record in agent_id order.
func (s *Store) Agents(ctx context.Context) ([]*lifeline.Agent, error) {
	tx, err := s.beginRead(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	return findAgents(ctx, tx)
}

// findAgents reads every agent record in agent_id order.
func findAgents(ctx context.Context, tx *sql.Tx) ([]*lifeline.Agent, error) {
	rows, err := tx.QueryContext(ctx, `
		SELECT agent_id, role_id, name, capabilities, max_concurrent_tasks, current_load,
			status, endpoint, interval_seconds, unhealthy_after_seconds, dead_after_seconds,
			metadata, registered_at, last_heartbeat_at, version, drain_deadline,
			owner_key_id, pending_command
		FROM agents
		ORDER BY agent_id`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: agents: %w", err)
	}
	defer rows.Close()

	agents := []*lifeline.Agent{}
	for rows.Next() {
		a, err := scanAgent(rows)
		if err != nil {
			return nil, err
		}
		agents = append(agents, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: agents: %w", err)
	}
	return agents, nil
}

// scanAgent reads one row of the findAgents query.
func scanAgent(rows *sql.Rows) (*lifeline.Agent, error) {
	var (
		a                          lifeline.Agent
		caps, status, metadata     string
		registeredAt, lastBeatAt   string
		drainDeadline, commandJSON sql.NullString
	)
	if err := rows.Scan(&a.AgentID, &a.RoleID, &a.Name, &caps, &a.Capacity.MaxConcurrentTasks, &a.Capacity.CurrentLoad,
		&status, &a.Endpoint, &a.HeartbeatConfig.IntervalSeconds, &a.HeartbeatConfig.UnhealthyAfterSeconds, &a.HeartbeatConfig.DeadAfterSeconds,
		&metadata, &registeredAt, &lastBeatAt, &a.Version, &drainDeadline,
		&a.OwnerKeyID, &commandJSON); err != nil {
		return nil, fmt.Errorf("sqlite: agents: %w", err)
	}
	a.Status = lifeline.Status(status)
	a.Capabilities = []string{}
	if err := json.Unmarshal([]byte(caps), &a.Capabilities); err != nil {
		return nil, fmt.Errorf("sqlite: agent %s: capabilities: %w", a.AgentID, err)
	}
	if a.Capabilities == nil { // stored "null"
		a.Capabilities = []string{}
	}
	a.Metadata = json.RawMessage(storedMetadata(json.RawMessage(metadata)))
	var err error
	if a.RegisteredAt, err = parseTime(registeredAt); err != nil {
		return nil, err
	}
	if a.LastHeartbeatAt, err = parseTime(lastBeatAt); err != nil {
		return nil, err
	}
	if a.DrainDeadline, err = parseTimePtr(drainDeadline); err != nil {
		return nil, err
	}
	if commandJSON.Valid {
		a.PendingCommand = new(lifeline.Command)
		if err := json.Unmarshal([]byte(commandJSON.String), a.PendingCommand); err != nil {
			return nil, fmt.Errorf("sqlite: agent %s: pending command: %w", a.AgentID, err)
		}
	}
	return &a, nil
}

// SaveHeartbeats stores last_heartbeat_at and current_load of the listed agents in one
// transaction. Unknown ids are ignored; versions are not bumped and no event is written.
func (s *Store) SaveHeartbeats(ctx context.Context, hbs []lifeline.HeartbeatCheckpoint) error {
	if len(hbs) == 0 {
		return ctx.Err()
	}
	tx, err := s.beginWrite(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := saveHeartbeats(ctx, tx, hbs); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: save heartbeats: commit: %w", err)
	}
	return nil
}

// saveHeartbeatSQL stores the volatile columns of one agent.
const saveHeartbeatSQL = `UPDATE agents SET last_heartbeat_at = ?, current_load = ? WHERE agent_id = ?`

// saveHeartbeats updates the volatile columns of existing agents.
func saveHeartbeats(ctx context.Context, tx *writeTx, hbs []lifeline.HeartbeatCheckpoint) error {
	stmt := tx.stmt(ctx, tx.s.saveHeartbeatStmt)
	for _, hb := range hbs {
		if _, err := stmt.ExecContext(ctx, formatTime(hb.LastHeartbeatAt), hb.CurrentLoad, hb.AgentID); err != nil {
			return fmt.Errorf("sqlite: save heartbeat of %s: %w", hb.AgentID, err)
		}
	}
	return nil
}
