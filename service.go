package lifeline

import "context"

// AgentService is the agent registry and lifecycle (RFC-0016 §3–§7). The registry
// engine implements it in process and the client package over HTTP, so callers can use
// either. The caller's identity travels in the context (WithCaller).
type AgentService interface {
	// RegisterAgent registers a new agent or re-activates a dead/deregistered id.
	// Returns invalid for a bad registration and conflict if the id is live.
	RegisterAgent(ctx context.Context, r *Registration) (*Agent, error)

	// FindAgentByID returns one agent. Returns not_found if the id is unknown.
	FindAgentByID(ctx context.Context, id string) (*Agent, error)

	// FindAgents returns a page of agents matching f in agent_id order, the total number
	// of matches, and the cursor of the next page ("" on the last page). Returns
	// forbidden for agent keys unless discovery is open.
	FindAgents(ctx context.Context, f AgentFilter) (agents []*Agent, total int, next string, err error)

	// Heartbeat records a heartbeat. Returns not_found for an unknown id, gone for a
	// dead or deregistered agent, forbidden for another agent's key.
	Heartbeat(ctx context.Context, id string, hb *Heartbeat) (*HeartbeatAck, error)

	// UpdateStatus drains or deregisters an agent. ifMatch is the version the caller
	// read (negative: any version, as If-Match: *). Returns precondition_failed for a
	// stale version, conflict (with the allowed
	// statuses) for a forbidden transition.
	UpdateStatus(ctx context.Context, id string, ifMatch int64, u *StatusUpdate) (*Agent, error)

	// SendCommand queues a command for delivery in heartbeat responses. Coordinators
	// and admins only. Returns conflict if the agent is not live.
	SendCommand(ctx context.Context, id string, c *Command) (*Agent, error)

	// DeregisterAgent deregisters an agent at once (no drain); the record is retained.
	DeregisterAgent(ctx context.Context, id string) error

	// Pools returns every pool (agents grouped by role_id), in role_id order.
	Pools(ctx context.Context) ([]*Pool, error)
	// FindPool returns one pool. Returns not_found when no agent has that role_id.
	FindPool(ctx context.Context, roleID string) (*Pool, error)
}

// EventService reads the system event log.
type EventService interface {
	// FindEvents returns the events matching f and the seq to pass as After for the
	// next page.
	FindEvents(ctx context.Context, f EventFilter) (events []Event, nextAfter int64, err error)
}

// KeyService manages API keys.
type KeyService interface {
	// CreateKey creates a key and returns it with its secret. Admins only.
	CreateKey(ctx context.Context, r *KeyRequest) (*NewKey, error)
	// Keys lists every key without secrets. Admins only.
	Keys(ctx context.Context) ([]*Key, error)
	// RevokeKey revokes a key at once. Admins only. Returns not_found for unknown ids.
	RevokeKey(ctx context.Context, id string) error
	// Authenticate returns the caller for a secret. Returns unauthorized for an
	// unknown or revoked secret.
	Authenticate(ctx context.Context, secret string) (Caller, error)
}
