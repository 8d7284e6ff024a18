package registry

import (
	"context"
	"sync"
	"time"

	"github.com/lifeline-dev/lifeline"
)

// maxSweep bounds how many due agents one sweep round commits in one transaction.
const maxSweep = 4096

// Sweep moves every agent whose deadline has passed to its next status: silence past
// unhealthy_after → unhealthy, past dead_after → dead, drain timeout → dead. It touches
// only agents whose tracked deadline is due, re-checks each against its real last
// heartbeat, and commits all transitions of a round in one transaction. Transitions
// happen strictly after their deadline, never before.
func (e *Engine) Sweep(ctx context.Context) {
	e.sweepMu.Lock()
	defer e.sweepMu.Unlock()
	start := time.Now()
	// Rounds are pipelined: while one round's transaction commits, the next round is
	// evaluated, so that thousands of simultaneous silences are reported sooner. Each
	// round keeps its agents locked until its own commit is applied, and Sweep returns
	// only when every round has.
	var rounds sync.WaitGroup
	for {
		now := e.mono()
		e.trackMu.Lock()
		due := e.track.popDue(now, maxSweep, e.sweepBuf[:0])
		e.trackMu.Unlock()
		e.sweepBuf = due
		if len(due) == 0 {
			break
		}
		pending, lags := e.evaluateRound(due, now)
		if len(pending) > 0 {
			rounds.Add(1)
			go func() {
				defer rounds.Done()
				e.commitRound(ctx, pending, lags, now)
			}()
		}
		if len(due) < maxSweep {
			break
		}
	}
	rounds.Wait()
	e.sweepLeases(ctx, e.mono())
	e.m.sweepDuration.Observe(time.Since(start).Seconds())
}

// evaluateRound locks every due agent and decides its transitions. Agents with
// nothing due are rescheduled and unlocked; the others stay locked, their changes
// returned for commitRound.
func (e *Engine) evaluateRound(due []*agent, now int64) ([]*change, []int64) {
	var pending []*change
	var lags []int64
	for _, a := range due {
		a.mu.Lock()
		rec := a.rec.Load()
		code := statusCode(rec.Status)
		// Mark busy before re-reading the receipt time (see Beat).
		a.status.Store(code | busy)
		c, lag := e.evaluate(a, now)
		if c == nil {
			a.status.Store(code)
			e.schedule(a, rec.Status)
			a.mu.Unlock()
			continue
		}
		pending = append(pending, c)
		lags = append(lags, lag)
	}
	return pending, lags
}

// commitRound commits the changes of one round, applies them and unlocks their agents.
// On failure the agents are left as they were and retried a second later.
func (e *Engine) commitRound(ctx context.Context, pending []*change, lags []int64, now int64) {
	err := e.commitChanges(ctx, pending...)
	for i, c := range pending {
		if err != nil {
			// Leave the agent as it was and try again on a later sweep.
			rec := c.a.rec.Load()
			c.a.status.Store(statusCode(rec.Status))
			e.trackMu.Lock()
			e.track.set(c.a, now+int64(time.Second))
			e.trackMu.Unlock()
		} else {
			e.m.sweepLag.Observe(time.Duration(lags[i]).Seconds())
		}
		c.a.mu.Unlock()
	}
	if err != nil {
		e.log.Error("sweep: commit failed; will retry", "agents", len(pending), "err", err)
	}
}

// evaluate decides the transitions due for a at now, chaining them when several
// deadlines have passed (active → unhealthy → dead after a long stall). It returns nil
// when nothing is due, and the lateness of the first transition. Requires a.mu.
func (e *Engine) evaluate(a *agent, now int64) (*change, int64) {
	var c *change
	var lag int64 = -1
	for {
		status := a.rec.Load().Status
		if c != nil {
			status = c.rec.Status
		}
		t, deadline, ok := e.dueTrigger(a, status, c, now)
		if !ok {
			break
		}
		if c == nil {
			c = e.begin(a)
			c.statusOnly = true // timed transitions change only lifecycle fields
		}
		// Events carry the time the transition is made, so the log's timestamps grow
		// with its seq; the lateness is measured in lifeline_sweep_lag_seconds.
		if _, err := e.fire(c, t, e.wall(now)); err != nil {
			break
		}
		if lag < 0 {
			lag = now - deadline
		}
	}
	return c, lag
}

// dueTrigger returns the trigger whose deadline has passed for an agent in status, and
// that deadline.
func (e *Engine) dueTrigger(a *agent, status lifeline.Status, c *change, now int64) (lifeline.Trigger, int64, bool) {
	cfg := a.rec.Load().HeartbeatConfig
	base := a.silenceBaseLocked()
	drain := a.drainDeadline
	if c != nil {
		drain = c.drain
	}
	switch status {
	case lifeline.StatusActive:
		if d := base + int64(cfg.UnhealthyAfter()); now > d {
			return lifeline.TriggerUnhealthyTimeout, d, true
		}
	case lifeline.StatusUnhealthy:
		if d := base + int64(cfg.DeadAfter()); now > d {
			return lifeline.TriggerDeadTimeout, d, true
		}
	case lifeline.StatusDraining:
		if drain != 0 && now > drain {
			probe := c
			if probe == nil {
				probe = &change{a: a}
			}
			if e.holdsWork(probe) {
				return lifeline.TriggerDrainTimeout, drain, true
			}
			return lifeline.TriggerDrainComplete, drain, true
		}
		if d := base + int64(cfg.DeadAfter()); now > d {
			return lifeline.TriggerDeadTimeout, d, true
		}
	}
	return "", 0, false
}
