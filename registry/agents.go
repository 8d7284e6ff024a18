package registry

import (
	"context"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/lifeline-dev/lifeline"
)

// authorize checks that the caller may act as the agent whose record is rec: the key
// that registered it, a coordinator or an admin (RFC-0016 Security).
func authorize(ctx context.Context, rec *lifeline.Agent) error {
	c, ok := lifeline.CallerFrom(ctx)
	if !ok || c.Role.Privileged() || c.KeyID == rec.OwnerKeyID {
		return nil
	}
	return errNotOwner
}

var errNotOwner = lifeline.Errorf(lifeline.EForbidden, "this key did not register the agent; only its own key, a coordinator or an admin may act on it")

// requirePrivileged checks that the caller is a coordinator or admin.
func requirePrivileged(ctx context.Context, what string) error {
	c, ok := lifeline.CallerFrom(ctx)
	if !ok || c.Role.Privileged() {
		return nil
	}
	return lifeline.Errorf(lifeline.EForbidden, "%s needs a coordinator or admin key", what)
}

// canDiscover checks that the caller may enumerate the registry.
func (e *Engine) canDiscover(ctx context.Context, what string) error {
	if e.cfg.OpenDiscovery {
		return nil
	}
	return requirePrivileged(ctx, what)
}

func (e *Engine) lookup(id string) (*agent, error) {
	a := e.agents.get(id)
	if a == nil {
		return nil, lifeline.Errorf(lifeline.ENotFound, "agent %q not found", id)
	}
	rec := a.rec.Load()
	if rec == nil || rec.Status == lifeline.StatusRegistering {
		return nil, lifeline.Errorf(lifeline.ENotFound, "agent %q not found", id)
	}
	return a, nil
}

// view returns the client's view of a: the committed record with the hot heartbeat
// state laid over it.
func (e *Engine) view(a *agent) *lifeline.Agent {
	rec := *a.rec.Load()
	rec.Capacity.CurrentLoad = int(a.load.Load())
	if ls := e.wall(a.lastSeen.Load()); ls.After(rec.LastHeartbeatAt) {
		rec.LastHeartbeatAt = ls
	}
	return &rec
}

// lifecycle returns the agent.lifecycle event of a transition.
func lifecycle(id string, from lifeline.Status, out lifeline.Outcome, at time.Time) lifeline.Event {
	return lifeline.Event{
		Type:           lifeline.EventAgentLifecycle,
		AgentID:        id,
		PreviousStatus: from,
		NewStatus:      out.To,
		Reason:         out.Reason,
		Timestamp:      at,
	}
}

// change is a pending change to one agent: its next record, the leases and task it
// writes, and the events that lead there. It is applied to memory only once committed.
type change struct {
	a      *agent
	rec    *lifeline.Agent // next record; nil when the agent record does not change
	events []lifeline.Event
	drain  int64             // drain deadline to install (monotonic ns), 0 for none
	leases []*lifeline.Lease // lease records written by this change
	task   *lifeline.Task
	// statusOnly: rec differs from the committed record only in its lifecycle fields.
	statusOnly bool
}

// begin starts a change of a from its committed record. Requires a.mu.
func (e *Engine) begin(a *agent) *change {
	return &change{a: a, rec: e.view(a), drain: a.drainDeadline}
}

// fire applies trigger t to the change, appending the event if the status changes. An
// agent that becomes dead or deregistered loses its leases in the same change, after
// its lifecycle event (RFC-0016 §9.1: death causes expiry, never the reverse).
func (e *Engine) fire(c *change, t lifeline.Trigger, at time.Time) (lifeline.Outcome, error) {
	from := c.rec.Status
	out, err := lifeline.Transition(from, t)
	if err != nil || !out.Changed {
		return out, err
	}
	c.rec.Status = out.To
	c.rec.Version++
	c.events = append(c.events, lifecycle(c.rec.AgentID, from, out, at))
	switch out.To {
	case lifeline.StatusDraining:
		c.rec.PendingCommand = nil // the drain was honoured
	case lifeline.StatusDead, lifeline.StatusDeregistered:
		c.rec.PendingCommand = nil
		c.rec.DrainDeadline = nil
		c.drain = 0
		reason := lifeline.LeaseReasonAgentDead
		switch t {
		case lifeline.TriggerDrainTimeout:
			reason = lifeline.LeaseReasonDrainTimeout
		case lifeline.TriggerDeregister:
			reason = lifeline.LeaseReasonDeregistered
		}
		e.expireAgentLeases(c, reason, at)
	}
	return out, nil
}

// commitChanges makes changes durable and then applies them to memory. Requires the
// mu of every agent in changes.
func (e *Engine) commitChanges(ctx context.Context, cs ...*change) error {
	batch := make([]lifeline.Change, len(cs))
	for i, c := range cs {
		batch[i] = lifeline.Change{Agent: c.rec, StatusOnly: c.statusOnly, Leases: c.leases, Task: c.task, Events: c.events}
	}
	if err := e.commit(ctx, batch); err != nil {
		return err
	}
	for i, c := range cs {
		c.events = batch[i].Events // with seqs
		e.apply(c)
	}
	return nil
}

// apply installs a committed change in memory. Requires c.a.mu.
func (e *Engine) apply(c *change) {
	if len(c.leases) > 0 {
		e.applyLeases(c.leases)
	}
	if c.rec == nil {
		return
	}
	old := c.a.rec.Load()
	if old != nil && old.Status != c.rec.Status {
		e.counts[statusCode(old.Status)].Add(-1)
		e.counts[statusCode(c.rec.Status)].Add(1)
	} else if old == nil {
		e.counts[statusCode(c.rec.Status)].Add(1)
	}
	for _, ev := range c.events {
		if ev.Type == lifeline.EventAgentLifecycle {
			e.m.transitions.WithLabelValues(string(ev.NewStatus), ev.Reason).Inc()
		}
	}
	c.a.drainDeadline = c.drain
	e.install(c.a, c.rec)
}

// RegisterAgent registers a new agent or re-activates a dead or deregistered one
// (RFC-0016 §3). The calling key becomes the agent's owner. Returns invalid for a bad
// registration, conflict if the id is live, forbidden when an agent key re-registers
// an id another key owns.
func (e *Engine) RegisterAgent(ctx context.Context, r *lifeline.Registration) (*lifeline.Agent, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	caller, _ := lifeline.CallerFrom(ctx)
	id := r.AgentID
	if id == "" {
		id = "agent_" + ulid.Make().String()
	}
	nowM := e.mono()
	now := e.wall(nowM)
	rec := &lifeline.Agent{
		AgentID:         id,
		RoleID:          r.RoleID,
		Name:            r.Name,
		Capabilities:    dedupe(r.Capabilities),
		Status:          lifeline.StatusRegistering,
		Endpoint:        r.Endpoint,
		HeartbeatConfig: r.HeartbeatConfig.Config(),
		Metadata:        r.Metadata,
		RegisteredAt:    now,
		LastHeartbeatAt: now,
		OwnerKeyID:      caller.KeyID,
	}
	if r.Capacity != nil && r.Capacity.MaxConcurrentTasks != nil {
		rec.Capacity.MaxConcurrentTasks = *r.Capacity.MaxConcurrentTasks
	}
	e.interned.record(rec)
	if len(rec.Metadata) == 0 || string(rec.Metadata) == "null" {
		rec.Metadata = []byte("{}")
	}

	// Claim the id: either a fresh entry, locked before anyone else can see it, or the
	// existing one, locked.
	sh, h := e.agents.of(id)
	sh.mu.Lock()
	a := sh.lookupLocked(h, id)
	exists := a != nil
	if !exists {
		a = newAgent(id)
		a.mu.Lock()
		sh.insertLocked(h, a)
	}
	sh.mu.Unlock()
	if exists {
		a.mu.Lock()
	}
	defer a.mu.Unlock()

	prev := a.rec.Load()
	if exists && prev == nil {
		// A concurrent first registration of the same id failed to commit and left.
		return nil, lifeline.Errorf(lifeline.EConflict, "agent %q is being registered", id)
	}
	from := lifeline.StatusRegistering
	if prev != nil {
		from = prev.Status
		if from.Live() {
			return nil, lifeline.Errorf(lifeline.EConflict, "agent %q is %s; it must deregister or die before registering again", id, from)
		}
		if caller.Role == lifeline.RoleAgent && prev.OwnerKeyID != caller.KeyID && prev.OwnerKeyID != "" {
			return nil, lifeline.Errorf(lifeline.EForbidden, "agent %q was registered by another key", id)
		}
	}
	out, err := lifeline.Transition(from, lifeline.TriggerRegister)
	if err != nil {
		return nil, err
	}
	rec.Status = out.To
	rec.Version = 1
	rec.AgentID = a.id // the bytes kept inside the agent
	c := &change{a: a, rec: rec, events: []lifeline.Event{lifecycle(id, from, out, now)}}

	// The silence timer starts at registration.
	oldSeen, oldLoad, oldGrace := a.lastSeen.Load(), a.load.Load(), a.graceFrom
	a.lastSeen.Store(nowM)
	a.load.Store(0)
	a.graceFrom = nowM
	if err := e.commitChanges(ctx, c); err != nil {
		if !exists {
			sh.mu.Lock()
			sh.deleteLocked(h, id)
			sh.mu.Unlock()
		} else {
			a.lastSeen.Store(oldSeen)
			a.load.Store(oldLoad)
			a.graceFrom = oldGrace
		}
		return nil, err
	}
	return e.view(a), nil
}

func dedupe(caps []string) []string {
	out := make([]string, 0, len(caps))
	for _, c := range caps {
		if !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out
}

// FindAgentByID returns one agent record. Any authenticated key may read one record.
func (e *Engine) FindAgentByID(ctx context.Context, id string) (*lifeline.Agent, error) {
	a, err := e.lookup(id)
	if err != nil {
		return nil, err
	}
	return e.view(a), nil
}

// FindAgents returns a page of agents matching f (RFC-0016 §6.2), in agent_id order.
func (e *Engine) FindAgents(ctx context.Context, f lifeline.AgentFilter) ([]*lifeline.Agent, int, string, error) {
	if err := e.canDiscover(ctx, "listing agents"); err != nil {
		return nil, 0, "", err
	}
	statuses := f.Statuses
	if len(statuses) == 0 {
		statuses = []lifeline.Status{lifeline.StatusActive}
	}
	limit := lifeline.PageLimit(f.Limit)
	var match []*lifeline.Agent
	total := 0
	e.agents.each(func(a *agent) {
		rec := a.rec.Load()
		if rec == nil || !slices.Contains(statuses, rec.Status) {
			return
		}
		if f.RoleID != "" && rec.RoleID != f.RoleID {
			return
		}
		if len(f.Capabilities) > 0 && !slices.ContainsFunc(f.Capabilities, func(c string) bool {
			return slices.Contains(rec.Capabilities, c)
		}) {
			return
		}
		if f.MinAvailableCapacity != nil && rec.Capacity.MaxConcurrentTasks-int(a.load.Load()) < *f.MinAvailableCapacity {
			return
		}
		total++
		if rec.AgentID > f.After {
			match = append(match, e.view(a))
		}
	})
	sort.Slice(match, func(i, j int) bool { return match[i].AgentID < match[j].AgentID })
	next := ""
	if len(match) > limit {
		match = match[:limit]
		next = match[limit-1].AgentID
	}
	return match, total, next, nil
}

// Heartbeat records a heartbeat (RFC-0016 §4).
func (e *Engine) Heartbeat(ctx context.Context, id string, hb *lifeline.Heartbeat) (*lifeline.HeartbeatAck, error) {
	if err := hb.Validate(); err != nil {
		return nil, err
	}
	ack := new(lifeline.HeartbeatAck)
	if err := e.Beat(ctx, id, hb, ack); err != nil {
		return nil, err
	}
	return ack, nil
}

var noCommands = []lifeline.Command{}

// Beat is Heartbeat writing into a caller-owned ack. For an active or draining agent it
// takes no lock but a shard read lock, does no I/O and allocates nothing: it stores the
// receipt time and load. The hb must already be validated.
func (e *Engine) Beat(ctx context.Context, id string, hb *lifeline.Heartbeat, ack *lifeline.HeartbeatAck) error {
	a, _ := e.agents.getCounted(id, true)
	if a == nil || a.status.Load() == stRegistering {
		return lifeline.Errorf(lifeline.ENotFound, "agent %q not found", id)
	}
	// Only agent keys need the record (for its owner); the hot path of coordinators,
	// admins and the owner touches the record as little as possible.
	if c, ok := lifeline.CallerFrom(ctx); ok && !c.Role.Privileged() {
		if owner := a.owner.Load(); owner == nil || *owner != c.KeyID {
			return errNotOwner
		}
	}
	now := e.mono()
	// Order matters: the receipt time is stored before the status is read, and the
	// sweeper marks an agent busy before it re-reads the receipt time, so a heartbeat
	// either reaches the sweeper's check or sees the busy mark and waits for it.
	a.lastSeen.Store(now)
	if hb.CurrentLoad != nil {
		a.load.Store(int64(*hb.CurrentLoad))
	}
	if !a.dirty.Load() {
		a.dirty.Store(true) // written once per checkpoint period, not once per beat
	}
	e.checkDrift(a, hb.ClientTimestamp, now)

	st := a.status.Load()
	if st == stDraining || (st == stActive && hb.Status == lifeline.StatusActive) {
		ack.Acknowledged = true
		ack.ServerTimestamp = e.wall(now)
		ack.AgentStatus = statusNames[st]
		ack.PendingCommands = noCommands
		if p := a.cmds.Load(); p != nil {
			ack.PendingCommands = *p
		}
		ack.PendingCommands = e.stopTasks(a.id, hb.TasksInProgress, now, ack.PendingCommands)
		return nil
	}
	return e.beatSlow(ctx, a, hb, now, ack)
}

// beatSlow handles heartbeats that cause or meet a transition: an unhealthy agent
// resuming, an agent reporting draining, a dead or deregistered agent (gone).
func (e *Engine) beatSlow(ctx context.Context, a *agent, hb *lifeline.Heartbeat, now int64, ack *lifeline.HeartbeatAck) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := e.begin(a)
	at := e.wall(now)
	if _, err := e.fire(c, lifeline.TriggerHeartbeat, at); err != nil {
		if c.rec.Status == lifeline.StatusRegistering {
			return lifeline.Errorf(lifeline.ENotFound, "agent %q not found", a.id)
		}
		return err
	}
	if hb.Status == lifeline.StatusDraining && c.rec.Status != lifeline.StatusDraining {
		timeout := e.cfg.DrainTimeout
		if p := a.rec.Load().PendingCommand; p != nil && p.DrainTimeoutSeconds > 0 {
			timeout = time.Duration(p.DrainTimeoutSeconds) * time.Second
		}
		if err := e.drain(c, timeout, now); err != nil {
			return err
		}
	}
	if len(c.events) > 0 {
		if err := e.commitChanges(ctx, c); err != nil {
			return err
		}
	}
	ack.Acknowledged = true
	ack.ServerTimestamp = at
	ack.AgentStatus = a.rec.Load().Status
	ack.PendingCommands = noCommands
	if p := a.cmds.Load(); p != nil {
		ack.PendingCommands = *p
	}
	ack.PendingCommands = e.stopTasks(a.id, hb.TasksInProgress, now, ack.PendingCommands)
	return nil
}

// checkDrift counts, and logs at most once a minute per agent, a client clock that is
// more than two intervals away from ours (RFC-0016 §4.5). It never changes a status.
func (e *Engine) checkDrift(a *agent, client time.Time, now int64) {
	limit := time.Duration(a.driftLimit.Load())
	skew := client.Sub(e.baseWall) - time.Duration(now)
	if skew <= limit && skew >= -limit {
		return
	}
	e.m.drift.Inc()
	if last := a.lastWarn.Load(); last != 0 && now-last < int64(time.Minute) {
		return
	}
	a.lastWarn.Store(now)
	e.log.Warn("heartbeat clock drift", "agent_id", a.id, "skew", skew.Round(time.Millisecond).String(), "limit", limit.String())
}

// drain moves the change into draining (RFC-0016 §5.2). With no work held the drain
// completes at once (deregistered, drain_completed); otherwise the drain deadline is
// set and the sweeper ends it at drain_timeout.
func (e *Engine) drain(c *change, timeout time.Duration, now int64) error {
	out, err := e.fire(c, lifeline.TriggerDrain, e.wall(now))
	if err != nil {
		return err
	}
	if !out.Changed {
		return nil
	}
	if e.holdsWork(c) {
		c.drain = now + int64(timeout)
		d := e.wall(c.drain)
		c.rec.DrainDeadline = &d
		return nil
	}
	_, err = e.fire(c, lifeline.TriggerDrainComplete, e.wall(now))
	return err
}

// holdsWork reports whether the agent of c still holds work once c is applied: an
// active lease not ended by c, or work reported by Config.Work. Requires c.a.mu.
func (e *Engine) holdsWork(c *change) bool {
	if e.cfg.Work != nil && e.cfg.Work.HoldsWork(c.a.id) {
		return true
	}
	return e.leasesLeft(c) > 0
}

// UpdateStatus drains or deregisters an agent (RFC-0016 §5.1) under optimistic
// concurrency: ifMatch must equal the current version.
func (e *Engine) UpdateStatus(ctx context.Context, id string, ifMatch int64, u *lifeline.StatusUpdate) (*lifeline.Agent, error) {
	if err := u.Validate(); err != nil {
		return nil, err
	}
	a, err := e.lookup(id)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	rec := a.rec.Load()
	if err := authorize(ctx, rec); err != nil {
		return nil, err
	}
	if ifMatch >= 0 && rec.Version != ifMatch {
		return nil, lifeline.Errorf(lifeline.EPreconditionFailed, "agent %q is at version %d, not %d", id, rec.Version, ifMatch)
	}
	now := e.mono()
	c := e.begin(a)
	switch u.Status {
	case lifeline.StatusDraining:
		if rec.Status == lifeline.StatusDraining {
			return nil, conflictTarget(rec.Status, u.Status)
		}
		timeout := e.cfg.DrainTimeout
		if u.DrainTimeoutSeconds != nil {
			timeout = time.Duration(*u.DrainTimeoutSeconds) * time.Second
		}
		if err := e.drain(c, timeout, now); err != nil {
			return nil, conflictTarget(rec.Status, u.Status)
		}
	case lifeline.StatusDeregistered:
		if _, err := e.fire(c, lifeline.TriggerDeregister, e.wall(now)); err != nil {
			return nil, conflictTarget(rec.Status, u.Status)
		}
	}
	if err := e.commitChanges(ctx, c); err != nil {
		return nil, err
	}
	return e.view(a), nil
}

func conflictTarget(from, to lifeline.Status) error {
	allowed := lifeline.AllowedTargets(from)
	msg := "an agent that is " + string(from) + " cannot become " + string(to)
	if len(allowed) > 0 {
		msg += "; allowed: " + strings.Join(allowed, ", ")
	} else {
		msg += "; no status change is allowed"
	}
	return &lifeline.Error{Code: lifeline.EConflict, Message: msg, Allowed: allowed}
}

// SendCommand queues a drain command for delivery in the agent's heartbeat responses
// (RFC-0016 §5.3). It stays pending until the agent drains (or dies).
func (e *Engine) SendCommand(ctx context.Context, id string, cmd *lifeline.Command) (*lifeline.Agent, error) {
	if err := requirePrivileged(ctx, "sending commands"); err != nil {
		return nil, err
	}
	if err := cmd.Validate(); err != nil {
		return nil, err
	}
	a, err := e.lookup(id)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	rec := a.rec.Load()
	if rec.Status != lifeline.StatusActive && rec.Status != lifeline.StatusUnhealthy {
		return nil, &lifeline.Error{Code: lifeline.EConflict,
			Message: "agent " + id + " is " + string(rec.Status) + "; only active or unhealthy agents can be asked to drain"}
	}
	c := e.begin(a)
	q := *cmd
	if q.DrainTimeoutSeconds == 0 {
		q.DrainTimeoutSeconds = int(e.cfg.DrainTimeout / time.Second)
	}
	c.rec.PendingCommand = &q
	if err := e.commitChanges(ctx, c); err != nil {
		return nil, err
	}
	return e.view(a), nil
}

// DeregisterAgent deregisters an agent at once, without a drain. The record stays, as
// deregistered, for audit.
func (e *Engine) DeregisterAgent(ctx context.Context, id string) error {
	a, err := e.lookup(id)
	if err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := authorize(ctx, a.rec.Load()); err != nil {
		return err
	}
	c := e.begin(a)
	if _, err := e.fire(c, lifeline.TriggerDeregister, e.wall(e.mono())); err != nil {
		return conflictTarget(c.rec.Status, lifeline.StatusDeregistered)
	}
	return e.commitChanges(ctx, c)
}

// Pools returns every pool: live agents grouped by role_id, capacity summed over
// active members (RFC-0016 §7.2).
func (e *Engine) Pools(ctx context.Context) ([]*lifeline.Pool, error) {
	if err := e.canDiscover(ctx, "listing pools"); err != nil {
		return nil, err
	}
	pools := map[string]*lifeline.Pool{}
	e.agents.each(func(a *agent) {
		rec := a.rec.Load()
		if rec == nil || rec.RoleID == "" || !rec.Status.Live() {
			return
		}
		p := pools[rec.RoleID]
		if p == nil {
			p = &lifeline.Pool{RoleID: rec.RoleID}
			pools[rec.RoleID] = p
		}
		p.Members++
		if rec.Status == lifeline.StatusActive {
			p.ActiveMembers++
			p.MaxConcurrentTasks += rec.Capacity.MaxConcurrentTasks
			p.CurrentLoad += int(a.load.Load())
		}
	})
	out := make([]*lifeline.Pool, 0, len(pools))
	for _, p := range pools {
		p.AvailableCapacity = p.MaxConcurrentTasks - p.CurrentLoad
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].RoleID < out[j].RoleID })
	return out, nil
}

// FindPool returns the pool of one role_id. Returns not_found when no live agent has it.
func (e *Engine) FindPool(ctx context.Context, roleID string) (*lifeline.Pool, error) {
	pools, err := e.Pools(ctx)
	if err != nil {
		return nil, err
	}
	for _, p := range pools {
		if p.RoleID == roleID {
			return p, nil
		}
	}
	return nil, lifeline.Errorf(lifeline.ENotFound, "no live agent has role_id %q", roleID)
}

// FindEvents reads the event log.
func (e *Engine) FindEvents(ctx context.Context, f lifeline.EventFilter) ([]lifeline.Event, int64, error) {
	if err := e.canDiscover(ctx, "reading events"); err != nil {
		return nil, 0, err
	}
	if f.After < 0 {
		return nil, 0, lifeline.Errorf(lifeline.EInvalid, "after must be ≥ 0")
	}
	f.Limit = lifeline.PageLimit(f.Limit)
	evs, err := e.store.Events(ctx, f)
	if err != nil {
		return nil, 0, err
	}
	next := f.After
	if len(evs) > 0 {
		next = evs[len(evs)-1].Seq
	}
	return evs, next, nil
}

// WorkReleased tells the engine that an agent released work (a lease). A draining agent
// that holds nothing more completes its drain: deregistered, drain_completed
// (RFC-0016 §5.2).
func (e *Engine) WorkReleased(ctx context.Context, id string) error {
	a, err := e.lookup(id)
	if err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	c := e.begin(a)
	if c.rec.Status != lifeline.StatusDraining || e.holdsWork(c) {
		return nil
	}
	if _, err := e.fire(c, lifeline.TriggerDrainComplete, e.wall(e.mono())); err != nil {
		return err
	}
	return e.commitChanges(ctx, c)
}
