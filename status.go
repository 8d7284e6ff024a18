package lifeline

// Status is an agent's lifecycle status (RFC-0016 §2).
type Status string

// The statuses of RFC-0016 §2.1.
const (
	StatusRegistering  Status = "registering"
	StatusActive       Status = "active"
	StatusDraining     Status = "draining"
	StatusUnhealthy    Status = "unhealthy"
	StatusDead         Status = "dead"
	StatusDeregistered Status = "deregistered"
)

// Statuses lists every status in lifecycle order.
var Statuses = []Status{StatusRegistering, StatusActive, StatusDraining, StatusUnhealthy, StatusDead, StatusDeregistered}

// Valid reports whether s is one of the defined statuses.
func (s Status) Valid() bool {
	switch s {
	case StatusRegistering, StatusActive, StatusDraining, StatusUnhealthy, StatusDead, StatusDeregistered:
		return true
	}
	return false
}

// Live reports whether an agent in status s is a participant: it has a silence timer,
// and its id cannot be registered again.
func (s Status) Live() bool {
	return s == StatusActive || s == StatusDraining || s == StatusUnhealthy
}

// Trigger is something that happens to an agent and may move it to another status.
type Trigger string

// The triggers of RFC-0016 §2.2, plus DELETE from dead.
const (
	// TriggerRegister is a registration request for a new or retired id.
	TriggerRegister Trigger = "register"
	// TriggerHeartbeat is a heartbeat received by the server.
	TriggerHeartbeat Trigger = "heartbeat"
	// TriggerUnhealthyTimeout fires when silence exceeds unhealthy_after_seconds.
	TriggerUnhealthyTimeout Trigger = "unhealthy_timeout"
	// TriggerDeadTimeout fires when silence exceeds dead_after_seconds.
	TriggerDeadTimeout Trigger = "dead_timeout"
	// TriggerDrain is a drain request (PATCH status, or a heartbeat reporting draining).
	TriggerDrain Trigger = "drain"
	// TriggerDrainComplete fires when a draining agent holds no more work.
	TriggerDrainComplete Trigger = "drain_complete"
	// TriggerDrainTimeout fires when drain_timeout_seconds elapse with work still held.
	TriggerDrainTimeout Trigger = "drain_timeout"
	// TriggerDeregister is an explicit deregistration (DELETE, or PATCH deregistered).
	TriggerDeregister Trigger = "deregister"
)

// Triggers lists every trigger.
var Triggers = []Trigger{TriggerRegister, TriggerHeartbeat, TriggerUnhealthyTimeout, TriggerDeadTimeout,
	TriggerDrain, TriggerDrainComplete, TriggerDrainTimeout, TriggerDeregister}

// Reasons recorded on agent.lifecycle events.
const (
	ReasonRegistered       = "registered"
	ReasonReregistered     = "reregistered"
	ReasonHeartbeatTimeout = "heartbeat_timeout"
	ReasonHeartbeatResumed = "heartbeat_resumed"
	ReasonDrainInitiated   = "drain_initiated"
	ReasonDrainCompleted   = "drain_completed"
	ReasonDrainTimeout     = "drain_timeout"
	ReasonDeregistered     = "deregistered"
)

// Outcome is the result of applying a trigger to a status.
type Outcome struct {
	// To is the status after the trigger. It equals the old status when Changed is false.
	To Status
	// Changed reports whether the trigger causes a transition (and so an event).
	Changed bool
	// Reason is the agent.lifecycle reason of the transition.
	Reason string
}

// Transition is the RFC-0016 §2.2 transition table as one pure function. It returns the
// outcome of trigger t on an agent in status from, or an error:
//   - gone for a heartbeat to a dead or deregistered agent (§4.4: 410, re-register),
//   - conflict naming the allowed triggers for anything else the table forbids.
//
// Beyond the RFC's table it decides, as DESIGN.md records: dead → deregistered by an
// explicit deregistration; a heartbeat to an active or draining agent is accepted with no
// transition; silence past unhealthy_after does not move a draining agent (it already
// announced its departure), while silence past dead_after does (dead, heartbeat_timeout).
func Transition(from Status, t Trigger) (Outcome, error) {
	out, ok := next(from, t)
	switch {
	case ok:
		return out, nil
	case t == TriggerHeartbeat && (from == StatusDead || from == StatusDeregistered):
		return Outcome{}, Errorf(EGone, "agent is %s; it must register again", from)
	case !t.valid():
		return Outcome{}, Errorf(EInvalid, "unknown trigger %q", t)
	}
	return Outcome{}, &Error{
		Code:    EConflict,
		Message: "cannot " + string(t) + " an agent that is " + string(from),
		Allowed: AllowedTriggers(from),
	}
}

func (t Trigger) valid() bool {
	for _, x := range Triggers {
		if x == t {
			return true
		}
	}
	return false
}

// next is the table itself: the outcome of t from status from, and whether it is allowed.
func next(from Status, t Trigger) (Outcome, bool) {
	stay := Outcome{To: from}
	move := func(to Status, reason string) (Outcome, bool) {
		return Outcome{To: to, Changed: true, Reason: reason}, true
	}
	switch t {
	case TriggerRegister:
		switch from {
		case StatusRegistering:
			return move(StatusActive, ReasonRegistered)
		case StatusDead, StatusDeregistered:
			return move(StatusActive, ReasonReregistered)
		}
	case TriggerHeartbeat:
		switch from {
		case StatusActive, StatusDraining:
			return stay, true
		case StatusUnhealthy:
			return move(StatusActive, ReasonHeartbeatResumed)
		}
	case TriggerUnhealthyTimeout:
		switch from {
		case StatusActive:
			return move(StatusUnhealthy, ReasonHeartbeatTimeout)
		case StatusDraining, StatusUnhealthy:
			return stay, true
		}
	case TriggerDeadTimeout:
		switch from {
		case StatusUnhealthy, StatusDraining:
			return move(StatusDead, ReasonHeartbeatTimeout)
		}
	case TriggerDrain:
		switch from {
		case StatusActive, StatusUnhealthy:
			return move(StatusDraining, ReasonDrainInitiated)
		case StatusDraining:
			return stay, true
		}
	case TriggerDrainComplete:
		if from == StatusDraining {
			return move(StatusDeregistered, ReasonDrainCompleted)
		}
	case TriggerDrainTimeout:
		if from == StatusDraining {
			return move(StatusDead, ReasonDrainTimeout)
		}
	case TriggerDeregister:
		switch from {
		case StatusActive, StatusDraining, StatusUnhealthy, StatusDead:
			return move(StatusDeregistered, ReasonDeregistered)
		}
	}
	return Outcome{}, false
}

// AllowedTriggers lists the triggers Transition accepts from status s.
func AllowedTriggers(s Status) []string {
	var out []string
	for _, t := range Triggers {
		if _, ok := next(s, t); ok {
			out = append(out, string(t))
		}
	}
	return out
}

// AllowedTargets lists the statuses a client may request through
// PATCH /api/v1/agents/{id}/status from status s.
func AllowedTargets(s Status) []string {
	out := []string{}
	if _, ok := next(s, TriggerDrain); ok && s != StatusDraining {
		out = append(out, string(StatusDraining))
	}
	if _, ok := next(s, TriggerDeregister); ok {
		out = append(out, string(StatusDeregistered))
	}
	return out
}
