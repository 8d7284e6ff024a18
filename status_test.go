package lifeline_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/lifeline-dev/lifeline"
)

// TestTransition checks every (status, trigger) pair against the RFC-0016 §2.2 table
// and the decisions recorded in DESIGN.md.
func TestTransition(t *testing.T) {
	type want struct {
		to     lifeline.Status // "" for an error
		reason string          // "" for no transition
		code   string          // error code
	}
	ok := func(to lifeline.Status, reason string) want { return want{to: to, reason: reason} }
	stay := func(s lifeline.Status) want { return want{to: s} }
	fail := func(code string) want { return want{code: code} }
	const (
		reg, act, dra, unh, dead, dereg = lifeline.StatusRegistering, lifeline.StatusActive, lifeline.StatusDraining,
			lifeline.StatusUnhealthy, lifeline.StatusDead, lifeline.StatusDeregistered
	)
	conflict, gone := fail(lifeline.EConflict), fail(lifeline.EGone)
	table := map[lifeline.Status]map[lifeline.Trigger]want{
		reg: {
			lifeline.TriggerRegister: ok(act, "registered"), lifeline.TriggerHeartbeat: conflict,
			lifeline.TriggerUnhealthyTimeout: conflict, lifeline.TriggerDeadTimeout: conflict, lifeline.TriggerDrain: conflict,
			lifeline.TriggerDrainComplete: conflict, lifeline.TriggerDrainTimeout: conflict, lifeline.TriggerDeregister: conflict,
		},
		act: {
			lifeline.TriggerRegister: conflict, lifeline.TriggerHeartbeat: stay(act),
			lifeline.TriggerUnhealthyTimeout: ok(unh, "heartbeat_timeout"), lifeline.TriggerDeadTimeout: conflict,
			lifeline.TriggerDrain: ok(dra, "drain_initiated"), lifeline.TriggerDrainComplete: conflict,
			lifeline.TriggerDrainTimeout: conflict, lifeline.TriggerDeregister: ok(dereg, "deregistered"),
		},
		dra: {
			lifeline.TriggerRegister: conflict, lifeline.TriggerHeartbeat: stay(dra),
			lifeline.TriggerUnhealthyTimeout: stay(dra), lifeline.TriggerDeadTimeout: ok(dead, "heartbeat_timeout"),
			lifeline.TriggerDrain: stay(dra), lifeline.TriggerDrainComplete: ok(dereg, "drain_completed"),
			lifeline.TriggerDrainTimeout: ok(dead, "drain_timeout"), lifeline.TriggerDeregister: ok(dereg, "deregistered"),
		},
		unh: {
			lifeline.TriggerRegister: conflict, lifeline.TriggerHeartbeat: ok(act, "heartbeat_resumed"),
			lifeline.TriggerUnhealthyTimeout: stay(unh), lifeline.TriggerDeadTimeout: ok(dead, "heartbeat_timeout"),
			lifeline.TriggerDrain: ok(dra, "drain_initiated"), lifeline.TriggerDrainComplete: conflict,
			lifeline.TriggerDrainTimeout: conflict, lifeline.TriggerDeregister: ok(dereg, "deregistered"),
		},
		dead: {
			lifeline.TriggerRegister: ok(act, "reregistered"), lifeline.TriggerHeartbeat: gone,
			lifeline.TriggerUnhealthyTimeout: conflict, lifeline.TriggerDeadTimeout: conflict, lifeline.TriggerDrain: conflict,
			lifeline.TriggerDrainComplete: conflict, lifeline.TriggerDrainTimeout: conflict, lifeline.TriggerDeregister: ok(dereg, "deregistered"),
		},
		dereg: {
			lifeline.TriggerRegister: ok(act, "reregistered"), lifeline.TriggerHeartbeat: gone,
			lifeline.TriggerUnhealthyTimeout: conflict, lifeline.TriggerDeadTimeout: conflict, lifeline.TriggerDrain: conflict,
			lifeline.TriggerDrainComplete: conflict, lifeline.TriggerDrainTimeout: conflict, lifeline.TriggerDeregister: conflict,
		},
	}
	for _, from := range lifeline.Statuses {
		for _, trig := range lifeline.Triggers {
			w, found := table[from][trig]
			if !found {
				t.Fatalf("table misses (%s, %s)", from, trig)
			}
			t.Run(fmt.Sprintf("%s/%s", from, trig), func(t *testing.T) {
				out, err := lifeline.Transition(from, trig)
				if w.code != "" {
					if got := lifeline.ErrorCode(err); got != w.code {
						t.Fatalf("error code = %q (%v), want %q", got, err, w.code)
					}
					if w.code == lifeline.EConflict {
						var le *lifeline.Error
						if !asError(err, &le) || slices.Contains(le.Allowed, string(trig)) {
							t.Fatalf("conflict must name the allowed triggers without %s: %+v", trig, le)
						}
					}
					return
				}
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				if out.To != w.to || out.Reason != w.reason || out.Changed != (w.reason != "") {
					t.Fatalf("got %+v, want to=%s reason=%q", out, w.to, w.reason)
				}
			})
		}
	}
}

func asError(err error, target **lifeline.Error) bool {
	e, ok := err.(*lifeline.Error)
	*target = e
	return ok
}

func TestTransitionUnknownTrigger(t *testing.T) {
	if _, err := lifeline.Transition(lifeline.StatusActive, "explode"); lifeline.ErrorCode(err) != lifeline.EInvalid {
		t.Fatalf("got %v, want invalid", err)
	}
}

func TestAllowedTargets(t *testing.T) {
	for s, want := range map[lifeline.Status][]string{
		lifeline.StatusActive:       {"draining", "deregistered"},
		lifeline.StatusUnhealthy:    {"draining", "deregistered"},
		lifeline.StatusDraining:     {"deregistered"},
		lifeline.StatusDead:         {"deregistered"},
		lifeline.StatusDeregistered: {},
	} {
		if got := lifeline.AllowedTargets(s); !slices.Equal(got, want) {
			t.Errorf("AllowedTargets(%s) = %v, want %v", s, got, want)
		}
	}
}

func TestHeartbeatConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg lifeline.HeartbeatConfig
		ok  bool
	}{
		{lifeline.HeartbeatConfig{30, 90, 300}, true},
		{lifeline.HeartbeatConfig{1, 2, 4}, true},
		{lifeline.HeartbeatConfig{30, 59, 300}, false},
		{lifeline.HeartbeatConfig{30, 60, 119}, false},
		{lifeline.HeartbeatConfig{0, 2, 4}, false},
		{lifeline.HeartbeatConfig{-1, 2, 4}, false},
		{lifeline.HeartbeatConfig{1, 2, lifeline.MaxThresholdSeconds + 1}, false},
	} {
		err := tc.cfg.Validate()
		if (err == nil) != tc.ok {
			t.Errorf("%+v: err = %v, want ok=%v", tc.cfg, err, tc.ok)
		}
		if err != nil && lifeline.ErrorCode(err) != lifeline.EInvalid {
			t.Errorf("%+v: code %s", tc.cfg, lifeline.ErrorCode(err))
		}
	}
}

func TestValidateID(t *testing.T) {
	good := []string{"a", "agent_01H", "aw:sha256:00ff", "billing-processor.v2"}
	bad := []string{"", "_lead", "has space", "slash/no", "ünïcode", string(make([]byte, 129))}
	for _, id := range good {
		if err := lifeline.ValidateID("agent_id", id); err != nil {
			t.Errorf("%q: %v", id, err)
		}
	}
	for _, id := range bad {
		if err := lifeline.ValidateID("agent_id", id); err == nil {
			t.Errorf("%q accepted", id)
		}
	}
}
