package lifeline

import (
	"context"
	"encoding/json"
	"time"
)

// Lease defaults and bounds (RFC-0016 §9, DESIGN "Leases and tasks").
const (
	DefaultLeaseTTLSeconds = 60
	DefaultMaxLeaseTTL     = 86400
	MaxTaskMessageBytes    = 4096
	MaxTaskResultBytes     = 64 << 10
)

// LeaseStatus is the state of a lease.
type LeaseStatus string

// Lease statuses. Only an active lease protects its scope; the others are final.
const (
	LeaseActive   LeaseStatus = "active"
	LeaseReleased LeaseStatus = "released"
	LeaseExpired  LeaseStatus = "expired"
	LeaseRevoked  LeaseStatus = "revoked"
)

// Valid reports whether s is a defined lease status.
func (s LeaseStatus) Valid() bool {
	return s == LeaseActive || s == LeaseReleased || s == LeaseExpired || s == LeaseRevoked
}

// Reasons a lease ends, recorded on the lease and its lease.* event.
const (
	LeaseReasonReleased     = "released"
	LeaseReasonTTLElapsed   = "ttl_elapsed"
	LeaseReasonAgentDead    = "agent_dead"
	LeaseReasonDeregistered = "agent_deregistered"
	LeaseReasonDrainTimeout = "drain_timeout"
	LeaseReasonRevoked      = "revoked"
)

// Lease is an agent's exclusive hold on a scope (usually a task id) for a TTL. Fence is
// the fencing token: per scope it only ever grows, so a write carrying an older fence
// can always be told apart from the current holder's.
type Lease struct {
	LeaseID    string      `json:"lease_id"`
	Scope      string      `json:"scope"`
	AgentID    string      `json:"agent_id"`
	Fence      int64       `json:"fence"`
	Status     LeaseStatus `json:"status"`
	AcquiredAt time.Time   `json:"acquired_at"`
	ExpiresAt  time.Time   `json:"expires_at"`
	TTLSeconds int         `json:"ttl_seconds"`
	// EndedAt and Reason are set once the lease is no longer active.
	EndedAt *time.Time `json:"ended_at,omitempty"`
	Reason  string     `json:"reason,omitempty"`
}

// LeaseRequest is the body of POST /api/v1/leases.
type LeaseRequest struct {
	Scope      string `json:"scope"`
	AgentID    string `json:"agent_id"`
	TTLSeconds *int   `json:"ttl_seconds,omitempty"`
}

// LeaseRenewal is the body of PATCH /api/v1/leases/{lease_id}.
type LeaseRenewal struct {
	TTLSeconds *int `json:"ttl_seconds,omitempty"`
}

// LeaseFilter selects leases, newest lease id last, with cursor pagination.
type LeaseFilter struct {
	AgentID  string
	Scope    string
	Statuses []LeaseStatus
	// After is the pagination cursor: only leases whose id sorts after it.
	After string
	Limit int
}

// Task states accepted in task updates.
const (
	TaskRunning   = "running"
	TaskCompleted = "completed"
	TaskFailed    = "failed"
)

// TaskUpdate is the body of POST /api/v1/tasks/{task_id}/updates.
type TaskUpdate struct {
	Status   string          `json:"status"`
	Progress *int            `json:"progress,omitempty"`
	Message  string          `json:"message,omitempty"`
	Result   json.RawMessage `json:"result,omitempty"`
	Error    string          `json:"error,omitempty"`
}

// Task is the latest accepted state of a task, written only under an active lease on
// its id (RFC-0016 §4.6).
type Task struct {
	TaskID    string          `json:"task_id"`
	AgentID   string          `json:"agent_id"`
	LeaseID   string          `json:"lease_id"`
	Fence     int64           `json:"fence"`
	Status    string          `json:"status"`
	Progress  int             `json:"progress"`
	Message   string          `json:"message,omitempty"`
	Result    json.RawMessage `json:"result,omitempty"`
	Error     string          `json:"error,omitempty"`
	UpdatedAt time.Time       `json:"updated_at"`
}

// LeaseService manages leases (RFC-0016 §9).
type LeaseService interface {
	// AcquireLease takes the scope for the agent. Returns conflict naming the holder if
	// the scope is held, gone if the agent is dead or deregistered, agent_draining if it
	// is draining, forbidden if an agent key acquires for another agent.
	AcquireLease(ctx context.Context, r *LeaseRequest) (*Lease, error)
	// RenewLease extends an active lease by a new TTL from now. Returns gone if the
	// lease is no longer active: an ended lease is never revived.
	RenewLease(ctx context.Context, id string, r *LeaseRenewal) (*Lease, error)
	// ReleaseLease ends an active lease. Returns gone if it is no longer active.
	ReleaseLease(ctx context.Context, id string) error
	// RevokeLease ends an active lease by administrative decision (reason revoked).
	RevokeLease(ctx context.Context, id string) error
	// FindLeaseByID returns a lease in any status. Returns not_found if unknown.
	FindLeaseByID(ctx context.Context, id string) (*Lease, error)
	// FindLeases returns a page of leases and the next cursor.
	FindLeases(ctx context.Context, f LeaseFilter) ([]*Lease, string, error)
}

// TaskService records task progress fenced by leases.
type TaskService interface {
	// UpdateTask records an update under leaseID. Returns precondition_failed (and
	// writes nothing) unless leaseID is active, on scope taskID, and held by the
	// caller's agent.
	UpdateTask(ctx context.Context, taskID, leaseID string, u *TaskUpdate) (*Task, error)
	// FindTask returns the latest accepted state. Returns not_found if none.
	FindTask(ctx context.Context, taskID string) (*Task, error)
}
