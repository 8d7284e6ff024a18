package lifeline

import (
	"bytes"
	"encoding/json"
	"net/url"
	"time"
)

// Defaults of RFC-0016 §1.1.
const (
	DefaultIntervalSeconds  = 30
	DefaultUnhealthySeconds = 90
	DefaultDeadSeconds      = 300
	// MaxThresholdSeconds bounds every heartbeat_config value (one year).
	MaxThresholdSeconds = 365 * 24 * 3600
)

// Limits on client-supplied descriptive fields. They keep one agent record small and
// bound the work a single request can cause.
const (
	MaxIDLength          = 128
	MaxNameLength        = 256
	MaxCapabilities      = 64
	MaxCapabilityLength  = 64
	MaxEndpointLength    = 2048
	MaxMetadataBytes     = 16 << 10
	MaxTasksInProgress   = 1024
	MaxConcurrentTasks   = 1_000_000
	MaxDrainTimeout      = 7 * 24 * 3600
	MaxCommandReasonSize = 256
)

// Agent is the protocol-level record of a participating agent (RFC-0016 §1).
type Agent struct {
	AgentID         string          `json:"agent_id"`
	RoleID          string          `json:"role_id,omitempty"`
	Name            string          `json:"name,omitempty"`
	Capabilities    []string        `json:"capabilities"`
	Capacity        Capacity        `json:"capacity"`
	Status          Status          `json:"status"`
	Endpoint        string          `json:"endpoint,omitempty"`
	HeartbeatConfig HeartbeatConfig `json:"heartbeat_config"`
	Metadata        json.RawMessage `json:"metadata"`
	RegisteredAt    time.Time       `json:"registered_at"`
	LastHeartbeatAt time.Time       `json:"last_heartbeat_at"`
	// Version is the optimistic-concurrency version. It starts at 1 on (re)registration
	// and grows with every change to the record or its status. Heartbeats that change
	// nothing but last_heartbeat_at and current_load do not bump it, so an If-Match taken
	// from a read stays valid while the agent keeps beating.
	Version int64 `json:"version"`
	// DrainDeadline is set while the agent is draining: the moment drain_timeout_seconds
	// run out.
	DrainDeadline *time.Time `json:"drain_deadline,omitempty"`

	// OwnerKeyID is the id of the API key that registered the agent. Only that key (or
	// a coordinator/admin key) may act as the agent.
	OwnerKeyID string `json:"-"`
	// PendingCommand is a command waiting to be delivered in heartbeat responses.
	PendingCommand *Command `json:"-"`
}

// Capacity is an agent's advisory capacity (RFC-0016 §1.1, §8.4).
type Capacity struct {
	MaxConcurrentTasks int `json:"max_concurrent_tasks"`
	CurrentLoad        int `json:"current_load"`
}

// Available is max_concurrent_tasks - current_load.
func (c Capacity) Available() int { return c.MaxConcurrentTasks - c.CurrentLoad }

// HeartbeatConfig holds an agent's heartbeat interval and its two silence thresholds.
type HeartbeatConfig struct {
	IntervalSeconds       int `json:"interval_seconds"`
	UnhealthyAfterSeconds int `json:"unhealthy_after_seconds"`
	DeadAfterSeconds      int `json:"dead_after_seconds"`
}

// Interval returns the heartbeat interval as a duration.
func (c HeartbeatConfig) Interval() time.Duration {
	return time.Duration(c.IntervalSeconds) * time.Second
}

// UnhealthyAfter returns the unhealthy threshold as a duration.
func (c HeartbeatConfig) UnhealthyAfter() time.Duration {
	return time.Duration(c.UnhealthyAfterSeconds) * time.Second
}

// DeadAfter returns the dead threshold as a duration.
func (c HeartbeatConfig) DeadAfter() time.Duration {
	return time.Duration(c.DeadAfterSeconds) * time.Second
}

// Validate checks the rules of RFC-0016 §3.3: every value is an integer ≥ 1,
// unhealthy ≥ 2×interval and dead ≥ 2×unhealthy.
func (c HeartbeatConfig) Validate() error {
	for _, v := range []struct {
		name string
		val  int
	}{{"interval_seconds", c.IntervalSeconds}, {"unhealthy_after_seconds", c.UnhealthyAfterSeconds}, {"dead_after_seconds", c.DeadAfterSeconds}} {
		if v.val < 1 || v.val > MaxThresholdSeconds {
			return Errorf(EInvalid, "heartbeat_config.%s must be an integer from 1 to %d", v.name, MaxThresholdSeconds)
		}
	}
	if c.UnhealthyAfterSeconds < 2*c.IntervalSeconds {
		return Errorf(EInvalid, "heartbeat_config.unhealthy_after_seconds (%d) must be at least 2 × interval_seconds (%d)", c.UnhealthyAfterSeconds, 2*c.IntervalSeconds)
	}
	if c.DeadAfterSeconds < 2*c.UnhealthyAfterSeconds {
		return Errorf(EInvalid, "heartbeat_config.dead_after_seconds (%d) must be at least 2 × unhealthy_after_seconds (%d)", c.DeadAfterSeconds, 2*c.UnhealthyAfterSeconds)
	}
	return nil
}

// Registration is the body of POST /api/v1/agents (RFC-0016 §3.1).
type Registration struct {
	AgentID         string                 `json:"agent_id,omitempty"`
	RoleID          string                 `json:"role_id,omitempty"`
	Name            string                 `json:"name,omitempty"`
	Capabilities    []string               `json:"capabilities,omitempty"`
	Capacity        *RegistrationCapacity  `json:"capacity,omitempty"`
	Endpoint        string                 `json:"endpoint,omitempty"`
	HeartbeatConfig *RegistrationHeartbeat `json:"heartbeat_config,omitempty"`
	Metadata        json.RawMessage        `json:"metadata,omitempty"`
}

// RegistrationCapacity is the capacity part of a registration. current_load is not
// accepted: it starts at 0 and is reported by heartbeats.
type RegistrationCapacity struct {
	MaxConcurrentTasks *int `json:"max_concurrent_tasks,omitempty"`
}

// RegistrationHeartbeat is the heartbeat_config part of a registration; omitted values
// take the RFC defaults (30/90/300).
type RegistrationHeartbeat struct {
	IntervalSeconds       *int `json:"interval_seconds,omitempty"`
	UnhealthyAfterSeconds *int `json:"unhealthy_after_seconds,omitempty"`
	DeadAfterSeconds      *int `json:"dead_after_seconds,omitempty"`
}

// Config returns the heartbeat config with defaults applied. It does not validate.
func (r *RegistrationHeartbeat) Config() HeartbeatConfig {
	c := HeartbeatConfig{DefaultIntervalSeconds, DefaultUnhealthySeconds, DefaultDeadSeconds}
	if r == nil {
		return c
	}
	if r.IntervalSeconds != nil {
		c.IntervalSeconds = *r.IntervalSeconds
	}
	if r.UnhealthyAfterSeconds != nil {
		c.UnhealthyAfterSeconds = *r.UnhealthyAfterSeconds
	}
	if r.DeadAfterSeconds != nil {
		c.DeadAfterSeconds = *r.DeadAfterSeconds
	}
	return c
}

// Validate checks every field of a registration. The agent_id may be empty (the server
// generates one).
func (r *Registration) Validate() error {
	if r.AgentID != "" {
		if err := ValidateID("agent_id", r.AgentID); err != nil {
			return err
		}
	}
	if r.RoleID != "" {
		if err := ValidateID("role_id", r.RoleID); err != nil {
			return err
		}
	}
	if len(r.Name) > MaxNameLength {
		return Errorf(EInvalid, "name must be at most %d bytes", MaxNameLength)
	}
	if len(r.Capabilities) > MaxCapabilities {
		return Errorf(EInvalid, "at most %d capabilities", MaxCapabilities)
	}
	for _, c := range r.Capabilities {
		if err := ValidateCapability(c); err != nil {
			return err
		}
	}
	if r.Capacity != nil && r.Capacity.MaxConcurrentTasks != nil {
		if n := *r.Capacity.MaxConcurrentTasks; n < 0 || n > MaxConcurrentTasks {
			return Errorf(EInvalid, "capacity.max_concurrent_tasks must be an integer from 0 to %d", MaxConcurrentTasks)
		}
	}
	if r.Endpoint != "" {
		if len(r.Endpoint) > MaxEndpointLength {
			return Errorf(EInvalid, "endpoint must be at most %d bytes", MaxEndpointLength)
		}
		u, err := url.Parse(r.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return Errorf(EInvalid, "endpoint must be an absolute http or https URL")
		}
	}
	if err := r.HeartbeatConfig.Config().Validate(); err != nil {
		return err
	}
	return ValidateMetadata(r.Metadata)
}

// ValidateMetadata checks that metadata, when present, is a JSON object of bounded size.
func ValidateMetadata(m json.RawMessage) error {
	if len(m) == 0 {
		return nil
	}
	if len(m) > MaxMetadataBytes {
		return Errorf(EInvalid, "metadata must be at most %d bytes", MaxMetadataBytes)
	}
	t := bytes.TrimSpace(m)
	if bytes.Equal(t, []byte("null")) {
		return nil
	}
	if len(t) == 0 || t[0] != '{' || !json.Valid(t) {
		return Errorf(EInvalid, "metadata must be a JSON object")
	}
	return nil
}

// ValidateID checks an identifier (agent_id, role_id, task id, ...): 1 to 128 bytes of
// ASCII letters, digits and . _ : -, starting with a letter or digit.
func ValidateID(field, id string) error {
	if len(id) == 0 || len(id) > MaxIDLength {
		return Errorf(EInvalid, "%s must be 1 to %d characters", field, MaxIDLength)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == ':' || c == '-'):
		default:
			return Errorf(EInvalid, "%s may contain only letters, digits and . _ : - and must start with a letter or digit", field)
		}
	}
	return nil
}

// ValidateCapability checks a capability tag: 1 to 64 bytes of letters, digits and
// . _ : / -. Commas are excluded because discovery takes a comma-separated list.
func ValidateCapability(c string) error {
	if len(c) == 0 || len(c) > MaxCapabilityLength {
		return Errorf(EInvalid, "capabilities must be 1 to %d characters each", MaxCapabilityLength)
	}
	for i := 0; i < len(c); i++ {
		ch := c[i]
		switch {
		case ch >= 'a' && ch <= 'z', ch >= 'A' && ch <= 'Z', ch >= '0' && ch <= '9':
		case ch == '.' || ch == '_' || ch == ':' || ch == '-' || ch == '/':
		default:
			return Errorf(EInvalid, "capability %q may contain only letters, digits and . _ : / -", c)
		}
	}
	return nil
}

// Heartbeat is the body of POST /api/v1/agents/{agent_id}/heartbeat (RFC-0016 §4.1).
type Heartbeat struct {
	// Status is the agent's self-reported status: active or draining.
	Status Status `json:"status"`
	// CurrentLoad is the number of tasks in progress; nil leaves the last value.
	CurrentLoad *int `json:"current_load,omitempty"`
	// TasksInProgress lists the ids of the tasks the agent is executing.
	TasksInProgress []string `json:"tasks_in_progress,omitempty"`
	// ClientTimestamp is the agent's clock when it sent the heartbeat; used only for
	// drift detection.
	ClientTimestamp time.Time `json:"client_timestamp"`
}

// Validate checks a heartbeat body.
func (h *Heartbeat) Validate() error {
	if h.Status != StatusActive && h.Status != StatusDraining {
		return Errorf(EInvalid, "status must be active or draining")
	}
	if h.ClientTimestamp.IsZero() {
		return Errorf(EInvalid, "client_timestamp is required (ISO 8601)")
	}
	if h.CurrentLoad != nil && (*h.CurrentLoad < 0 || *h.CurrentLoad > MaxConcurrentTasks) {
		return Errorf(EInvalid, "current_load must be an integer from 0 to %d", MaxConcurrentTasks)
	}
	if len(h.TasksInProgress) > MaxTasksInProgress {
		return Errorf(EInvalid, "at most %d tasks_in_progress", MaxTasksInProgress)
	}
	for _, id := range h.TasksInProgress {
		if err := ValidateID("tasks_in_progress[]", id); err != nil {
			return err
		}
	}
	return nil
}

// HeartbeatAck is the heartbeat response (RFC-0016 §4.2).
type HeartbeatAck struct {
	Acknowledged    bool      `json:"acknowledged"`
	ServerTimestamp time.Time `json:"server_timestamp"`
	AgentStatus     Status    `json:"agent_status"`
	PendingCommands []Command `json:"pending_commands"`
}

// Commands a server delivers in pending_commands.
const (
	CommandDrain = "drain"
	// CommandStopTask tells an agent to stop a task it no longer holds a lease on.
	CommandStopTask = "stop_task"
)

// Command is a directive delivered to an agent in heartbeat responses (RFC-0016 §5.3).
type Command struct {
	Command             string `json:"command"`
	Reason              string `json:"reason,omitempty"`
	DrainTimeoutSeconds int    `json:"drain_timeout_seconds,omitempty"`
	TaskID              string `json:"task_id,omitempty"`
}

// Validate checks a command queued by a coordinator.
func (c *Command) Validate() error {
	if c.Command != CommandDrain {
		return Errorf(EInvalid, "command must be %q", CommandDrain)
	}
	if len(c.Reason) > MaxCommandReasonSize {
		return Errorf(EInvalid, "reason must be at most %d bytes", MaxCommandReasonSize)
	}
	if c.TaskID != "" {
		return Errorf(EInvalid, "task_id is not accepted for a drain command")
	}
	if c.DrainTimeoutSeconds < 0 || c.DrainTimeoutSeconds > MaxDrainTimeout {
		return Errorf(EInvalid, "drain_timeout_seconds must be an integer from 1 to %d (0 or absent: the server default)", MaxDrainTimeout)
	}
	return nil
}

// StatusUpdate is the body of PATCH /api/v1/agents/{agent_id}/status (RFC-0016 §5.1).
type StatusUpdate struct {
	Status              Status `json:"status"`
	DrainTimeoutSeconds *int   `json:"drain_timeout_seconds,omitempty"`
}

// Validate checks a status update body.
func (u *StatusUpdate) Validate() error {
	switch u.Status {
	case StatusDraining:
	case StatusDeregistered:
		if u.DrainTimeoutSeconds != nil {
			return Errorf(EInvalid, "drain_timeout_seconds applies only to status draining")
		}
	default:
		return Errorf(EInvalid, "status must be draining or deregistered")
	}
	if u.DrainTimeoutSeconds != nil && (*u.DrainTimeoutSeconds < 1 || *u.DrainTimeoutSeconds > MaxDrainTimeout) {
		return Errorf(EInvalid, "drain_timeout_seconds must be an integer from 1 to %d", MaxDrainTimeout)
	}
	return nil
}

// AgentFilter selects agents for discovery (RFC-0016 §6.2) with cursor pagination.
type AgentFilter struct {
	// Capabilities matches agents having ANY of these tags; empty matches all.
	Capabilities []string
	// Statuses matches agents in any of these statuses; empty means active only.
	Statuses []Status
	// RoleID matches agents of one pool; empty matches all.
	RoleID string
	// MinAvailableCapacity, when set, keeps agents with max - load ≥ the value.
	MinAvailableCapacity *int
	// After is the pagination cursor: only agents whose id sorts after it.
	After string
	// Limit caps the page size; 0 means the default.
	Limit int
}

// Pool is the aggregate view of the agents sharing a role_id (RFC-0016 §7.2).
type Pool struct {
	RoleID             string `json:"role_id"`
	Members            int    `json:"members"`
	ActiveMembers      int    `json:"active_members"`
	MaxConcurrentTasks int    `json:"max_concurrent_tasks"`
	CurrentLoad        int    `json:"current_load"`
	AvailableCapacity  int    `json:"available_capacity"`
}
