package registry

import (
	"container/heap"
	"context"
	"encoding/json"
	"slices"
	"sort"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/lifeline-dev/lifeline"
)

// lease is the in-memory state of an active lease. rec is replaced, never mutated.
type lease struct {
	rec     *lifeline.Lease
	expires int64 // monotonic ns of rec.ExpiresAt
	pending bool  // reserved by an acquisition that is not committed yet
	index   int   // in the expiry heap; -1 when not tracked
}

// leaseTable holds the active leases, indexed three ways, and their expiry heap. It is
// guarded by Engine.leaseMu. Every change to a lease is made while holding the mu of
// the lease's agent too (agent.mu before leaseMu), so lease changes and the holder's
// lifecycle never interleave.
type leaseTable struct {
	byID    map[string]*lease
	byScope map[string]*lease
	byAgent map[string]map[string]*lease
	fences  map[string]int64 // highest fence ever issued per scope
	heap    deadlineHeap[*lease]
}

func newLeaseTable() *leaseTable {
	return &leaseTable{
		byID: map[string]*lease{}, byScope: map[string]*lease{},
		byAgent: map[string]map[string]*lease{}, fences: map[string]int64{},
	}
}

func (t *leaseTable) add(l *lease) {
	t.byID[l.rec.LeaseID] = l
	t.byScope[l.rec.Scope] = l
	m := t.byAgent[l.rec.AgentID]
	if m == nil {
		m = map[string]*lease{}
		t.byAgent[l.rec.AgentID] = m
	}
	m[l.rec.LeaseID] = l
	if l.index >= 0 {
		heap.Fix(&t.heap, l.index)
	} else {
		heap.Push(&t.heap, l)
	}
}

func (t *leaseTable) remove(l *lease) {
	delete(t.byID, l.rec.LeaseID)
	if t.byScope[l.rec.Scope] == l {
		delete(t.byScope, l.rec.Scope)
	}
	if m := t.byAgent[l.rec.AgentID]; m != nil {
		delete(m, l.rec.LeaseID)
		if len(m) == 0 {
			delete(t.byAgent, l.rec.AgentID)
		}
	}
	if l.index >= 0 {
		heap.Remove(&t.heap, l.index)
	}
}

func (l *lease) due() int64     { return l.expires }
func (l *lease) setIndex(i int) { l.index = i }

// loadLeases puts the store's active leases in memory. Their expiry is absolute: a
// lease whose TTL ran out while the server was down expires on the first sweep, and the
// boot grace of agents does not extend it.
func (e *Engine) loadLeases(ctx context.Context) error {
	fences, err := e.store.LeaseFences(ctx)
	if err != nil {
		return err
	}
	active, err := e.store.ActiveLeases(ctx)
	if err != nil {
		return err
	}
	e.leases.fences = fences
	for _, rec := range active {
		e.leases.add(&lease{rec: rec, expires: e.monoOf(rec.ExpiresAt), index: -1})
	}
	return nil
}

// ended returns a copy of rec that ended at at with status and reason.
func ended(rec *lifeline.Lease, status lifeline.LeaseStatus, reason string, at time.Time) *lifeline.Lease {
	l := *rec
	l.Status, l.Reason, l.EndedAt = status, reason, &at
	return &l
}

// leaseEvent returns the event of a lease change.
func leaseEvent(typ string, l *lifeline.Lease, at time.Time) lifeline.Event {
	ev := lifeline.Event{Type: typ, AgentID: l.AgentID, LeaseID: l.LeaseID, Scope: l.Scope, Fence: l.Fence, Reason: l.Reason, Timestamp: at}
	if typ == lifeline.EventLeaseAcquired {
		exp := l.ExpiresAt
		ev.ExpiresAt = &exp
	}
	return ev
}

// expireAgentLeases ends every active lease of c's agent with reason. Requires c.a.mu.
func (e *Engine) expireAgentLeases(c *change, reason string, at time.Time) {
	e.leaseMu.RLock()
	held := make([]*lease, 0, len(e.leases.byAgent[c.a.id]))
	for _, l := range e.leases.byAgent[c.a.id] {
		if !l.pending && !slices.ContainsFunc(c.leases, func(x *lifeline.Lease) bool { return x.LeaseID == l.rec.LeaseID }) {
			held = append(held, l)
		}
	}
	e.leaseMu.RUnlock()
	sort.Slice(held, func(i, j int) bool { return held[i].rec.LeaseID < held[j].rec.LeaseID })
	for _, l := range held {
		x := ended(l.rec, lifeline.LeaseExpired, reason, at)
		c.leases = append(c.leases, x)
		c.events = append(c.events, leaseEvent(lifeline.EventLeaseExpired, x, at))
	}
}

// leasesLeft counts the active leases of c's agent that c does not end. Requires c.a.mu.
func (e *Engine) leasesLeft(c *change) int {
	e.leaseMu.RLock()
	defer e.leaseMu.RUnlock()
	n := 0
	for id, l := range e.leases.byAgent[c.a.id] {
		if l.pending {
			continue
		}
		if !slices.ContainsFunc(c.leases, func(x *lifeline.Lease) bool { return x.LeaseID == id && x.Status != lifeline.LeaseActive }) {
			n++
		}
	}
	return n
}

// applyLeases installs committed lease records: active ones are added or updated,
// ended ones removed.
func (e *Engine) applyLeases(recs []*lifeline.Lease) {
	e.leaseMu.Lock()
	defer e.leaseMu.Unlock()
	for _, rec := range recs {
		l := e.leases.byID[rec.LeaseID]
		if l == nil {
			l = e.leases.byScope[rec.Scope]
			if l == nil || l.rec.LeaseID != rec.LeaseID {
				l = &lease{index: -1}
			}
		}
		if rec.Status != lifeline.LeaseActive {
			if l.rec != nil {
				e.leases.remove(l)
			}
			continue
		}
		l.rec, l.expires, l.pending = rec, e.monoOf(rec.ExpiresAt), false
		e.leases.add(l)
	}
}

// maxLeaseTTL is the largest ttl_seconds a lease may ask for.
func (e *Engine) maxLeaseTTL() int {
	if e.cfg.MaxLeaseTTL > 0 {
		return int(e.cfg.MaxLeaseTTL / time.Second)
	}
	return lifeline.DefaultMaxLeaseTTL
}

func (e *Engine) leaseTTL(ttl *int, def int) (int, error) {
	if ttl == nil {
		return def, nil
	}
	if max := e.maxLeaseTTL(); *ttl < 1 || *ttl > max {
		return 0, lifeline.Errorf(lifeline.EInvalid, "ttl_seconds must be an integer from 1 to %d", max)
	}
	return *ttl, nil
}

// AcquireLease takes scope for an agent (RFC-0016 §9). An agent key acquires only for
// its own agents; coordinators and admins assign work to any agent. Returns conflict
// naming the holder, gone for a dead or deregistered agent, agent_draining for a
// draining one (§9.3); unhealthy agents may acquire (§9.2).
func (e *Engine) AcquireLease(ctx context.Context, r *lifeline.LeaseRequest) (*lifeline.Lease, error) {
	if err := lifeline.ValidateID("scope", r.Scope); err != nil {
		return nil, err
	}
	if err := lifeline.ValidateID("agent_id", r.AgentID); err != nil {
		return nil, err
	}
	ttl, err := e.leaseTTL(r.TTLSeconds, lifeline.DefaultLeaseTTLSeconds)
	if err != nil {
		return nil, err
	}
	a, err := e.lookup(r.AgentID)
	if err != nil {
		return nil, err
	}
	if err := authorize(ctx, a.rec.Load()); err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	switch st := a.rec.Load().Status; st {
	case lifeline.StatusDead, lifeline.StatusDeregistered:
		return nil, lifeline.Errorf(lifeline.EGone, "agent %q is %s; it must register again", r.AgentID, st)
	case lifeline.StatusDraining:
		return nil, lifeline.Errorf(lifeline.EAgentDraining, "agent %q is draining and takes no new work", r.AgentID)
	}
	nowM := e.mono()
	now := e.wall(nowM)

	e.leaseMu.Lock()
	if held := e.leases.byScope[r.Scope]; held != nil {
		err := heldError(held)
		e.leaseMu.Unlock()
		return nil, err
	}
	fence := e.leases.fences[r.Scope] + 1
	e.leases.fences[r.Scope] = fence // fences only grow, even if this commit fails
	rec := &lifeline.Lease{
		LeaseID: "lease_" + ulid.Make().String(), Scope: r.Scope, AgentID: r.AgentID, Fence: fence,
		Status: lifeline.LeaseActive, AcquiredAt: now, ExpiresAt: now.Add(time.Duration(ttl) * time.Second), TTLSeconds: ttl,
	}
	reserved := &lease{rec: rec, pending: true, index: -1}
	e.leases.byScope[r.Scope] = reserved
	e.leaseMu.Unlock()

	c := &change{a: a, leases: []*lifeline.Lease{rec}, events: []lifeline.Event{leaseEvent(lifeline.EventLeaseAcquired, rec, now)}}
	if err := e.commitChanges(ctx, c); err != nil {
		e.leaseMu.Lock()
		if e.leases.byScope[r.Scope] == reserved {
			delete(e.leases.byScope, r.Scope)
		}
		e.leaseMu.Unlock()
		return nil, err
	}
	out := *rec
	return &out, nil
}

func heldError(held *lease) error {
	if held.pending {
		return &lifeline.Error{Code: lifeline.EConflict, Message: "scope " + held.rec.Scope + " is being acquired by agent " + held.rec.AgentID,
			Extra: map[string]any{"holder": held.rec.AgentID}}
	}
	return &lifeline.Error{
		Code:    lifeline.EConflict,
		Message: "scope " + held.rec.Scope + " is held by agent " + held.rec.AgentID + " until " + held.rec.ExpiresAt.Format(time.RFC3339Nano),
		Extra:   map[string]any{"holder": held.rec.AgentID, "lease_id": held.rec.LeaseID, "expires_at": held.rec.ExpiresAt},
	}
}

// activeLease finds an active lease and locks its agent. On success the caller must
// unlock a.mu. Returns not_found for an unknown id and gone for a lease that is no
// longer active (an ended lease is never revived).
func (e *Engine) activeLease(ctx context.Context, id string) (*lease, *agent, error) {
	if err := lifeline.ValidateID("lease_id", id); err != nil {
		return nil, nil, err
	}
	e.leaseMu.RLock()
	l := e.leases.byID[id]
	var holder string
	if l != nil {
		holder = l.rec.AgentID
	}
	e.leaseMu.RUnlock()
	if l == nil {
		if _, err := e.store.Lease(ctx, id); err != nil {
			return nil, nil, err
		}
		return nil, nil, lifeline.Errorf(lifeline.EGone, "lease %q is no longer active", id)
	}
	// The fields of l change only under its holder's mu, taken below.
	a := e.agents.get(holder)
	if a == nil {
		return nil, nil, lifeline.Errorf(lifeline.EGone, "lease %q is no longer active", id)
	}
	if err := authorize(ctx, a.rec.Load()); err != nil {
		return nil, nil, err
	}
	a.mu.Lock()
	e.leaseMu.RLock()
	still := e.leases.byID[id] == l
	e.leaseMu.RUnlock()
	if !still || e.mono() >= l.expires {
		a.mu.Unlock()
		return nil, nil, lifeline.Errorf(lifeline.EGone, "lease %q is no longer active", id)
	}
	return l, a, nil
}

// RenewLease gives an active lease a new TTL from now (default: its current TTL).
// Returns gone once the lease has ended or its TTL has run out.
func (e *Engine) RenewLease(ctx context.Context, id string, r *lifeline.LeaseRenewal) (*lifeline.Lease, error) {
	l, a, err := e.activeLease(ctx, id)
	if err != nil {
		return nil, err
	}
	defer a.mu.Unlock()
	ttl, err := e.leaseTTL(r.TTLSeconds, l.rec.TTLSeconds)
	if err != nil {
		return nil, err
	}
	next := *l.rec
	next.TTLSeconds = ttl
	next.ExpiresAt = e.wall(e.mono()).Add(time.Duration(ttl) * time.Second)
	c := &change{a: a, leases: []*lifeline.Lease{&next}}
	if err := e.commitChanges(ctx, c); err != nil {
		return nil, err
	}
	out := next
	return &out, nil
}

// ReleaseLease ends an active lease normally. A draining agent that releases its last
// lease completes its drain (deregistered, drain_completed) in the same commit.
func (e *Engine) ReleaseLease(ctx context.Context, id string) error {
	return e.endLease(ctx, id, lifeline.LeaseReleased, lifeline.LeaseReasonReleased, lifeline.EventLeaseReleased)
}

// RevokeLease ends an active lease by administrative decision (reason revoked). Admins
// only.
func (e *Engine) RevokeLease(ctx context.Context, id string) error {
	if c, ok := lifeline.CallerFrom(ctx); ok && c.Role != lifeline.RoleAdmin {
		return lifeline.Errorf(lifeline.EForbidden, "revoking a lease needs an admin key")
	}
	return e.endLease(ctx, id, lifeline.LeaseRevoked, lifeline.LeaseReasonRevoked, lifeline.EventLeaseExpired)
}

func (e *Engine) endLease(ctx context.Context, id string, status lifeline.LeaseStatus, reason, evType string) error {
	l, a, err := e.activeLease(ctx, id)
	if err != nil {
		return err
	}
	defer a.mu.Unlock()
	at := e.wall(e.mono())
	c := e.begin(a)
	x := ended(l.rec, status, reason, at)
	c.leases = append(c.leases, x)
	c.events = append(c.events, leaseEvent(evType, x, at))
	e.completeDrainIfIdle(c, at)
	return e.commitChanges(ctx, c)
}

// completeDrainIfIdle adds drain completion to c when its agent is draining and c ends
// its last lease; otherwise it leaves the agent record unchanged.
func (e *Engine) completeDrainIfIdle(c *change, at time.Time) {
	if c.rec.Status == lifeline.StatusDraining && !e.holdsWork(c) {
		_, _ = e.fire(c, lifeline.TriggerDrainComplete, at)
	}
	if len(c.events) == 0 || c.events[len(c.events)-1].Type != lifeline.EventAgentLifecycle {
		c.rec = nil // nothing changed on the agent itself
	}
}

// FindLeaseByID returns a lease in any status. Agent keys see only their agents' leases.
func (e *Engine) FindLeaseByID(ctx context.Context, id string) (*lifeline.Lease, error) {
	if err := lifeline.ValidateID("lease_id", id); err != nil {
		return nil, err
	}
	var rec lifeline.Lease
	e.leaseMu.RLock()
	l := e.leases.byID[id]
	if l != nil {
		rec = *l.rec
	}
	e.leaseMu.RUnlock()
	if l == nil {
		stored, err := e.store.Lease(ctx, id)
		if err != nil {
			return nil, err
		}
		rec = *stored
	}
	if err := e.authorizeAgentID(ctx, rec.AgentID); err != nil {
		return nil, err
	}
	return &rec, nil
}

// authorizeAgentID checks that the caller may see the agent with id (its own key, or a
// coordinator or admin).
func (e *Engine) authorizeAgentID(ctx context.Context, id string) error {
	c, ok := lifeline.CallerFrom(ctx)
	if !ok || c.Role.Privileged() {
		return nil
	}
	if a := e.agents.get(id); a != nil {
		if rec := a.rec.Load(); rec != nil && rec.OwnerKeyID == c.KeyID {
			return nil
		}
	}
	return lifeline.Errorf(lifeline.EForbidden, "this key may only see the leases of agents it registered")
}

// FindLeases returns a page of leases in lease_id order and the next cursor. Agent keys
// must name one of their own agents.
func (e *Engine) FindLeases(ctx context.Context, f lifeline.LeaseFilter) ([]*lifeline.Lease, string, error) {
	if err := e.canDiscover(ctx, "listing leases"); err != nil {
		if f.AgentID == "" || e.authorizeAgentID(ctx, f.AgentID) != nil {
			return nil, "", lifeline.Errorf(lifeline.EForbidden, "listing leases needs a coordinator or admin key, or agent_id of an agent this key registered")
		}
	}
	limit := lifeline.PageLimit(f.Limit)
	f.Limit = limit + 1
	ls, err := e.store.Leases(ctx, f)
	if err != nil {
		return nil, "", err
	}
	next := ""
	if len(ls) > limit {
		ls = ls[:limit]
		next = ls[limit-1].LeaseID
	}
	return ls, next, nil
}

// UpdateTask records a task update under a lease (RFC-0016 §4.6 split-brain
// prevention): the lease must be active, on scope taskID and held by the caller's agent
// (or the caller a coordinator or admin); otherwise precondition_failed and nothing is
// written.
func (e *Engine) UpdateTask(ctx context.Context, taskID, leaseID string, u *lifeline.TaskUpdate) (*lifeline.Task, error) {
	if err := lifeline.ValidateID("task_id", taskID); err != nil {
		return nil, err
	}
	if err := validateTaskUpdate(u); err != nil {
		return nil, err
	}
	if leaseID == "" {
		return nil, lifeline.Errorf(lifeline.EPreconditionFailed, "X-Lease-ID is required: only the holder of an active lease on %s may write it", taskID)
	}
	e.leaseMu.RLock()
	l := e.leases.byID[leaseID]
	var scope, holder string
	if l != nil {
		scope, holder = l.rec.Scope, l.rec.AgentID
	}
	e.leaseMu.RUnlock()
	if l == nil || scope != taskID {
		return nil, lifeline.Errorf(lifeline.EPreconditionFailed, "lease %q is not an active lease on %s", leaseID, taskID)
	}
	a := e.agents.get(holder)
	if a == nil || authorize(ctx, a.rec.Load()) != nil {
		return nil, lifeline.Errorf(lifeline.EPreconditionFailed, "lease %q is not held by this key's agent", leaseID)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	e.leaseMu.RLock()
	still := e.leases.byID[leaseID] == l
	e.leaseMu.RUnlock()
	nowM := e.mono()
	if !still || nowM >= l.expires {
		return nil, lifeline.Errorf(lifeline.EPreconditionFailed, "lease %q is not an active lease on %s", leaseID, taskID)
	}
	now := e.wall(nowM)
	t := &lifeline.Task{
		TaskID: taskID, AgentID: l.rec.AgentID, LeaseID: leaseID, Fence: l.rec.Fence, Status: u.Status,
		Message: u.Message, Result: u.Result, Error: u.Error, UpdatedAt: now,
	}
	if u.Progress != nil {
		t.Progress = *u.Progress
	} else if u.Status == lifeline.TaskCompleted {
		t.Progress = 100
	}
	ev := lifeline.Event{Type: lifeline.EventTaskUpdate, AgentID: t.AgentID, LeaseID: leaseID, Scope: taskID, Fence: t.Fence, Timestamp: now, Task: t}
	c := &change{a: a, task: t, events: []lifeline.Event{ev}}
	if err := e.commitChanges(ctx, c); err != nil {
		return nil, err
	}
	out := *t
	return &out, nil
}

func validateTaskUpdate(u *lifeline.TaskUpdate) error {
	switch u.Status {
	case lifeline.TaskRunning, lifeline.TaskCompleted, lifeline.TaskFailed:
	default:
		return lifeline.Errorf(lifeline.EInvalid, "status must be running, completed or failed")
	}
	if u.Progress != nil && (*u.Progress < 0 || *u.Progress > 100) {
		return lifeline.Errorf(lifeline.EInvalid, "progress must be an integer from 0 to 100")
	}
	if len(u.Message) > lifeline.MaxTaskMessageBytes || len(u.Error) > lifeline.MaxTaskMessageBytes {
		return lifeline.Errorf(lifeline.EInvalid, "message and error must be at most %d bytes", lifeline.MaxTaskMessageBytes)
	}
	if len(u.Result) > lifeline.MaxTaskResultBytes {
		return lifeline.Errorf(lifeline.EInvalid, "result must be at most %d bytes", lifeline.MaxTaskResultBytes)
	}
	if len(u.Result) > 0 && !json.Valid(u.Result) {
		return lifeline.Errorf(lifeline.EInvalid, "result must be JSON")
	}
	return nil
}

// FindTask returns the latest accepted state of a task.
func (e *Engine) FindTask(ctx context.Context, taskID string) (*lifeline.Task, error) {
	if err := lifeline.ValidateID("task_id", taskID); err != nil {
		return nil, err
	}
	return e.store.Task(ctx, taskID)
}

// stopTasks returns cmds plus a stop_task command for every task the agent reports in
// progress without holding an active lease on it (RFC-0016 §4.3, §4.6): the partitioned
// agent learns to stop on its first heartbeat back. It allocates only when there is
// something to stop.
func (e *Engine) stopTasks(id string, tasks []string, now int64, cmds []lifeline.Command) []lifeline.Command {
	if len(tasks) == 0 {
		return cmds
	}
	out := cmds
	copied := false
	e.leaseMu.RLock()
	for _, task := range tasks {
		l := e.leases.byScope[task]
		if l != nil && !l.pending && l.rec.AgentID == id && now < l.expires {
			continue
		}
		if !copied {
			out = append(make([]lifeline.Command, 0, len(cmds)+1), cmds...)
			copied = true
		}
		out = append(out, lifeline.Command{Command: lifeline.CommandStopTask, TaskID: task, Reason: "lease_expired"})
	}
	e.leaseMu.RUnlock()
	return out
}

// sweepLeases expires the leases whose TTL has run out (reason ttl_elapsed), one change
// per holder, committed together. A draining holder that loses its last lease this way
// completes its drain.
func (e *Engine) sweepLeases(ctx context.Context, now int64) {
	e.leaseMu.Lock()
	var due []*lease
	byAgent := map[string][]*lease{}
	var order []string
	for len(e.leases.heap) > 0 && len(due) < maxSweep && e.leases.heap[0].expires <= now {
		l := heap.Pop(&e.leases.heap).(*lease)
		due = append(due, l)
		if _, ok := byAgent[l.rec.AgentID]; !ok {
			order = append(order, l.rec.AgentID)
		}
		byAgent[l.rec.AgentID] = append(byAgent[l.rec.AgentID], l)
	}
	e.leaseMu.Unlock()
	if len(due) == 0 {
		return
	}
	at := e.wall(now)
	var cs []*change
	var locked []*agent
	for _, id := range order {
		a := e.agents.get(id)
		if a == nil {
			continue
		}
		a.mu.Lock()
		locked = append(locked, a)
		c := e.begin(a)
		e.leaseMu.Lock()
		for _, l := range byAgent[id] {
			if e.leases.byID[l.rec.LeaseID] != l {
				continue // ended meanwhile
			}
			if l.expires > now {
				if l.index < 0 { // renewed meanwhile; the renewal may have re-tracked it
					heap.Push(&e.leases.heap, l)
				}
				continue
			}
			x := ended(l.rec, lifeline.LeaseExpired, lifeline.LeaseReasonTTLElapsed, at)
			c.leases = append(c.leases, x)
			c.events = append(c.events, leaseEvent(lifeline.EventLeaseExpired, x, at))
		}
		e.leaseMu.Unlock()
		if len(c.leases) == 0 {
			continue
		}
		e.completeDrainIfIdle(c, at)
		cs = append(cs, c)
	}
	if len(cs) > 0 {
		if err := e.commitChanges(ctx, cs...); err != nil {
			e.log.Error("sweep: lease expiry commit failed; will retry", "leases", len(due), "err", err)
			e.leaseMu.Lock()
			for _, c := range cs {
				for _, x := range c.leases {
					if l := e.leases.byID[x.LeaseID]; l != nil && l.index < 0 {
						l.expires = now + int64(time.Second)
						heap.Push(&e.leases.heap, l)
					}
				}
			}
			e.leaseMu.Unlock()
		}
	}
	for _, a := range locked {
		a.mu.Unlock()
	}
}
