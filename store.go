package lifeline

import (
	"context"
	"time"
)

// Change is one unit of a store commit: the new full state of an agent record and the
// events its change produced. Events receive their Seq when the change is committed.
type Change struct {
	// Agent is the record to write (insert or replace by AgentID). Nil writes no agent.
	Agent *Agent
	// StatusOnly says Agent differs from the stored record only in status, version,
	// drain deadline and pending command, so a store may write just those (the
	// sweeper's timed transitions, thousands at once).
	StatusOnly bool
	// Leases are lease records to write (insert or replace by LeaseID).
	Leases []*Lease
	// Task is a task state to write (insert or replace by TaskID).
	Task *Task
	// Events are appended to the log in order, after any earlier change of the same batch.
	Events []Event
}

// HeartbeatCheckpoint is the volatile part of an agent record, saved on a timer.
type HeartbeatCheckpoint struct {
	AgentID         string
	LastHeartbeatAt time.Time
	CurrentLoad     int
}

// Store is durable storage for Lifeline. The registry engine is its only writer in a
// process and keeps the working set in memory; the store makes it survive restarts.
// Implementations: sqlite (embedded default); the behaviour is specified by the
// storetest suite.
type Store interface {
	// Apply commits a batch of changes atomically, in order: agent records are upserted,
	// events appended with gap-free, increasing Seq values which are written back into
	// the given Events slices. Either every change of the batch is durable when Apply
	// returns nil, or none is.
	Apply(ctx context.Context, batch []Change) error

	// Agents returns every stored agent record, in agent_id order, including dead and
	// deregistered ones, with OwnerKeyID and PendingCommand.
	Agents(ctx context.Context) ([]*Agent, error)

	// SaveHeartbeats stores last_heartbeat_at and current_load of existing agents.
	// Unknown ids are ignored. It does not bump versions or write events.
	SaveHeartbeats(ctx context.Context, hbs []HeartbeatCheckpoint) error

	// ActiveLeases returns every lease whose status is active, in lease_id order.
	ActiveLeases(ctx context.Context) ([]*Lease, error)
	// LeaseFences returns, for every scope that ever had a lease, the highest fence
	// issued on it.
	LeaseFences(ctx context.Context) (map[string]int64, error)
	// Lease returns one lease in any status. Returns not_found if unknown.
	Lease(ctx context.Context, id string) (*Lease, error)
	// Leases returns leases matching f in lease_id order (f.After is an exclusive
	// lower bound on lease_id; f.Limit is clamped with PageLimit).
	Leases(ctx context.Context, f LeaseFilter) ([]*Lease, error)
	// Task returns the latest state of a task. Returns not_found if none.
	Task(ctx context.Context, id string) (*Task, error)

	// Events returns events matching f in seq order.
	Events(ctx context.Context, f EventFilter) ([]Event, error)
	// LastEventSeq returns the highest committed seq, 0 when the log is empty.
	LastEventSeq(ctx context.Context) (int64, error)

	// CreateKey stores a new key. Returns conflict if the id or hash exists.
	CreateKey(ctx context.Context, k *Key) error
	// Keys returns every key, revoked ones included, in creation order.
	Keys(ctx context.Context) ([]*Key, error)
	// RevokeKey marks a key revoked at the given time. Returns not_found for an unknown
	// id; revoking a revoked key keeps the first revocation time.
	RevokeKey(ctx context.Context, id string, at time.Time) error

	// Ping checks that the store is reachable.
	Ping(ctx context.Context) error
	// Close releases the store. Pending writes are flushed first.
	Close() error
}
