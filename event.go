package lifeline

import (
	"time"
)

// Event types of the system event log.
const (
	EventAgentLifecycle = "agent.lifecycle"
	EventLeaseAcquired  = "lease.acquired"
	EventLeaseReleased  = "lease.released"
	EventLeaseExpired   = "lease.expired"
	EventTaskUpdate     = "task.update"
)

// Event is one entry of the durable, append-only system event log (RFC-0016 §2.3).
// Seq is assigned by the store when the event is committed; it starts at 1 and has no
// gaps.
type Event struct {
	Seq            int64     `json:"seq"`
	Type           string    `json:"type"`
	AgentID        string    `json:"agent_id,omitempty"`
	PreviousStatus Status    `json:"previous_status,omitempty"`
	NewStatus      Status    `json:"new_status,omitempty"`
	Reason         string    `json:"reason,omitempty"`
	Timestamp      time.Time `json:"timestamp"`

	// Lease events (lease.*) and task updates name the lease, its scope and fence.
	LeaseID string `json:"lease_id,omitempty"`
	Scope   string `json:"scope,omitempty"`
	Fence   int64  `json:"fence,omitempty"`
	// ExpiresAt is the lease's expiry on lease.acquired.
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	// Task is the accepted state on task.update events.
	Task *Task `json:"task,omitempty"`
}

// EventFilter selects events from the log.
type EventFilter struct {
	// After returns only events with seq > After.
	After int64
	// Limit caps the number of events; 0 means the default.
	Limit int
	// Types keeps events of any of these types; empty keeps all.
	Types []string
	// AgentID keeps events of one agent; empty keeps all.
	AgentID string
}

// Default and maximum page sizes for list endpoints.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
)

// PageLimit clamps a requested page size to [1, MaxPageSize], 0 meaning the default.
func PageLimit(n int) int {
	switch {
	case n <= 0:
		return DefaultPageSize
	case n > MaxPageSize:
		return MaxPageSize
	}
	return n
}
