// Package registry is Lifeline's engine: it applies the RFC-0016 rules over a Store.
// It keeps the working set in memory (records, hot heartbeat state, an expiry
// structure of deadlines), commits every change to the store before answering, and
// runs the sweeper that turns silence into unhealthy and dead.
package registry

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lifeline-dev/lifeline"
)

// Config configures an Engine. Zero values take the defaults.
type Config struct {
	// Now is the clock. Default time.Now. Lifecycle decisions use only differences of
	// its readings (monotonic when it is time.Now).
	Now func() time.Time
	// SweepInterval is how often the sweeper looks for due deadlines. Default 50 ms.
	SweepInterval time.Duration
	// CheckpointInterval is how often last_heartbeat_at and current_load are saved.
	// Default 30 s.
	CheckpointInterval time.Duration
	// DrainTimeout is the drain_timeout_seconds used when a drain does not name one.
	// Default 120 s.
	DrainTimeout time.Duration
	// OpenDiscovery lets agent keys list agents, pools, leases and events.
	OpenDiscovery bool
	// MaxLeaseTTL caps ttl_seconds of leases. Default 24 h.
	MaxLeaseTTL time.Duration
	// Work reports whether an agent still holds work (leases). Nil means none does, so
	// drains complete at once.
	Work WorkHolder
	// OnCommit is called, in commit order, with the events of every committed batch.
	// It must not block.
	OnCommit func(events []lifeline.Event)
	// Logger receives warnings (drift, store errors). Default slog.Default().
	Logger *slog.Logger
	// Metrics, when set, is updated by the engine.
	Metrics *Metrics
}

// WorkHolder tells the engine whether an agent still holds work it must finish before a
// drain can complete.
type WorkHolder interface {
	HoldsWork(agentID string) bool
}

// Engine implements lifeline.AgentService and lifeline.EventService over a Store.
type Engine struct {
	store lifeline.Store
	cfg   Config
	log   *slog.Logger
	m     *Metrics
	base  time.Time // clock reading that monotonic offsets are measured from
	// baseWall is base without its monotonic reading, for comparing with wall times.
	baseWall  time.Time
	realClock bool // Config.Now is time.Now

	// interned holds the strings that repeat across agent records (role ids, owner
	// key ids, capabilities) and whole capability sets, so that a million agents
	// share them.
	interned interner
	agents   *shards

	trackMu sync.Mutex
	track   tracker

	leaseMu sync.RWMutex
	leases  *leaseTable

	counts [stDeregistered + 1]atomic.Int64 // agents by status

	commits chan *commitReq
	stop    chan struct{}
	wg      sync.WaitGroup // loops
	cwg     sync.WaitGroup // committer
	closed  atomic.Bool
	started atomic.Bool

	sweepBuf []*agent // reused by Sweep; guarded by sweepMu
	sweepMu  sync.Mutex
}

var (
	_ lifeline.AgentService = (*Engine)(nil)
	_ lifeline.EventService = (*Engine)(nil)
	_ lifeline.LeaseService = (*Engine)(nil)
	_ lifeline.TaskService  = (*Engine)(nil)
)

// New returns an engine over store. Call Open before use.
func New(store lifeline.Store, cfg Config) *Engine {
	realClock := cfg.Now == nil
	if realClock {
		cfg.Now = time.Now
	}
	if cfg.SweepInterval <= 0 {
		cfg.SweepInterval = 50 * time.Millisecond
	}
	if cfg.CheckpointInterval <= 0 {
		cfg.CheckpointInterval = 30 * time.Second
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 120 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m := cfg.Metrics
	if m == nil {
		m = NewMetrics(nil)
	}
	e := &Engine{
		store:   store,
		cfg:     cfg,
		log:     cfg.Logger,
		m:       m,
		base:    cfg.Now(),
		agents:  newShards(),
		leases:  newLeaseTable(),
		commits: make(chan *commitReq, 1024),
		stop:    make(chan struct{}),
	}
	e.baseWall = e.base.Round(0)
	e.realClock = realClock
	return e
}

// mono returns the engine clock as nanoseconds since the engine was created.
func (e *Engine) mono() int64 {
	if e.realClock {
		return int64(time.Since(e.base)) // one monotonic clock read, no wall clock
	}
	return int64(e.cfg.Now().Sub(e.base))
}

// wall converts an engine clock reading to a UTC wall time.
func (e *Engine) wall(m int64) time.Time {
	return e.base.Add(time.Duration(m)).Round(0).UTC()
}

// monoOf converts a wall time to the engine clock.
func (e *Engine) monoOf(t time.Time) int64 { return int64(t.Sub(e.baseWall)) }

// Open loads every agent from the store and starts the committer. Every live agent's
// silence timer starts now: the server's own downtime never counts as an agent's
// silence. A small per-agent spread (up to a tenth of unhealthy_after) keeps a large
// fleet from coming due in the same instant after a restart.
func (e *Engine) Open(ctx context.Context) error {
	recs, err := e.store.Agents(ctx)
	if err != nil {
		return err
	}
	now := e.mono()
	for _, rec := range recs {
		a := newAgent(rec.AgentID)
		a.lastSeen.Store(e.monoOf(rec.LastHeartbeatAt))
		a.load.Store(int64(rec.Capacity.CurrentLoad))
		a.graceFrom = now + spread(rec.AgentID, rec.HeartbeatConfig.UnhealthyAfter()/10)
		if rec.DrainDeadline != nil {
			a.drainDeadline = e.monoOf(*rec.DrainDeadline)
		}
		rec.AgentID = a.id // the bytes kept inside the agent
		e.interned.record(rec)
		e.install(a, rec)
		sh, h := e.agents.of(rec.AgentID)
		sh.insertLocked(h, a) // no one else sees the table yet
		e.counts[statusCode(rec.Status)].Add(1)
	}
	if err := e.loadLeases(ctx); err != nil {
		return err
	}
	e.cwg.Add(1)
	go e.committer()
	return nil
}

// spread returns a stable pseudo-random duration in [0, max) for id.
func spread(id string, max time.Duration) int64 {
	if max <= 0 {
		return 0
	}
	var h uint64 = 14695981039346656037
	for i := 0; i < len(id); i++ {
		h ^= uint64(id[i])
		h *= 1099511628211
	}
	return int64(h % uint64(max))
}

// Start runs the sweeper and the checkpointer until Close.
func (e *Engine) Start() {
	if !e.started.CompareAndSwap(false, true) {
		return
	}
	e.wg.Add(2)
	go e.loop(e.cfg.SweepInterval, func() { e.Sweep(context.Background()) })
	go e.loop(e.cfg.CheckpointInterval, func() {
		if err := e.Checkpoint(context.Background()); err != nil {
			e.log.Error("checkpoint failed", "err", err)
		}
	})
}

func (e *Engine) loop(every time.Duration, fn func()) {
	defer e.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-e.stop:
			return
		case <-t.C:
			fn()
		}
	}
}

// Close stops the loops, writes a last checkpoint and stops the committer. It does not
// close the store.
func (e *Engine) Close() error {
	if !e.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(e.stop)
	e.wg.Wait()
	err := e.Checkpoint(context.Background())
	close(e.commits)
	e.cwg.Wait()
	return err
}

// install makes rec the committed record of a and updates the hot state derived from
// it. Requires a.mu (or exclusive ownership of a).
func (e *Engine) install(a *agent, rec *lifeline.Agent) {
	a.driftLimit.Store(int64(2 * rec.HeartbeatConfig.Interval()))
	a.owner.Store(e.interned.ptr(rec.OwnerKeyID))
	a.rec.Store(rec)
	a.status.Store(statusCode(rec.Status))
	if rec.PendingCommand != nil {
		cmds := []lifeline.Command{*rec.PendingCommand}
		a.cmds.Store(&cmds)
	} else {
		a.cmds.Store(nil)
	}
	e.schedule(a, rec.Status)
}

// schedule puts a in the tracker at its next deadline, or takes it out when its status
// has no deadline. Requires a.mu.
func (e *Engine) schedule(a *agent, st lifeline.Status) {
	d, ok := e.deadlineLocked(a, st)
	e.trackMu.Lock()
	if ok {
		e.track.set(a, d)
	} else {
		e.track.remove(a)
	}
	e.trackMu.Unlock()
}

// deadlineLocked returns the next moment at which a in status st may need a transition.
func (e *Engine) deadlineLocked(a *agent, st lifeline.Status) (int64, bool) {
	rec := a.rec.Load()
	base := a.silenceBaseLocked()
	switch st {
	case lifeline.StatusActive:
		return base + int64(rec.HeartbeatConfig.UnhealthyAfter()), true
	case lifeline.StatusUnhealthy:
		return base + int64(rec.HeartbeatConfig.DeadAfter()), true
	case lifeline.StatusDraining:
		d := base + int64(rec.HeartbeatConfig.DeadAfter())
		if a.drainDeadline != 0 && a.drainDeadline < d {
			d = a.drainDeadline
		}
		return d, true
	}
	return 0, false
}

// commitReq is one request to the committer: a batch of changes, or a checkpoint.
type commitReq struct {
	changes []lifeline.Change
	hbs     []lifeline.HeartbeatCheckpoint
	done    chan error
}

// commit hands changes to the committer and waits until they are durable.
func (e *Engine) commit(ctx context.Context, changes []lifeline.Change) error {
	return e.submit(ctx, &commitReq{changes: changes, done: make(chan error, 1)})
}

func (e *Engine) submit(ctx context.Context, r *commitReq) (err error) {
	if e.closed.Load() && r.hbs == nil {
		return lifeline.Errorf(lifeline.EUnavailable, "server is shutting down")
	}
	defer func() {
		// A send on the closed channel during shutdown.
		if recover() != nil {
			err = lifeline.Errorf(lifeline.EUnavailable, "server is shutting down")
		}
	}()
	select {
	case e.commits <- r:
	case <-ctx.Done():
		return ctx.Err()
	}
	// Once queued, the change is committed or failed as a whole; wait for the verdict
	// even if the caller gives up, so memory and store never disagree.
	return <-r.done
}

// maxGroup bounds how many changes one transaction carries.
const maxGroup = 4096

// committer is the single writer: it drains the queue, groups what is waiting into one
// transaction (group commit), and reports to every waiter. Events are published in
// commit order.
func (e *Engine) committer() {
	defer e.cwg.Done()
	var group []*commitReq
	var changes []lifeline.Change
	for r := range e.commits {
		if r.hbs != nil {
			r.done <- e.store.SaveHeartbeats(context.Background(), r.hbs)
			continue
		}
		group = append(group[:0], r)
		changes = append(changes[:0], r.changes...)
	gather:
		for len(changes) < maxGroup {
			select {
			case r2, ok := <-e.commits:
				if !ok {
					break gather
				}
				if r2.hbs != nil {
					// Checkpoints are rare; commit what we have first to keep order.
					e.flush(group, changes)
					group, changes = group[:0], changes[:0]
					r2.done <- e.store.SaveHeartbeats(context.Background(), r2.hbs)
					continue
				}
				group = append(group, r2)
				changes = append(changes, r2.changes...)
			default:
				break gather
			}
		}
		e.flush(group, changes)
	}
}

func (e *Engine) flush(group []*commitReq, changes []lifeline.Change) {
	if len(group) == 0 {
		return
	}
	err := e.store.Apply(context.Background(), changes)
	if err == nil {
		// Seqs were written into the requests' own Event slices.
		e.m.observeBatch(len(changes))
		for _, r := range group {
			r.done <- nil
		}
		e.publish(changes)
		return
	}
	if len(group) == 1 {
		e.m.storeErrors.Inc()
		group[0].done <- err
		return
	}
	// One bad request must not fail its neighbours: retry each on its own.
	for _, r := range group {
		err := e.store.Apply(context.Background(), r.changes)
		if err != nil {
			e.m.storeErrors.Inc()
		} else {
			e.publish(r.changes)
		}
		r.done <- err
	}
}

func (e *Engine) publish(changes []lifeline.Change) {
	if e.cfg.OnCommit == nil {
		return
	}
	var evs []lifeline.Event
	for _, c := range changes {
		evs = append(evs, c.Events...)
	}
	if len(evs) > 0 {
		e.cfg.OnCommit(evs)
	}
}

// Checkpoint saves last_heartbeat_at and current_load of every agent that heartbeated
// since the last checkpoint.
func (e *Engine) Checkpoint(ctx context.Context) error {
	var hbs []lifeline.HeartbeatCheckpoint
	e.agents.each(func(a *agent) {
		if a.dirty.Swap(false) {
			hbs = append(hbs, lifeline.HeartbeatCheckpoint{
				AgentID:         a.id,
				LastHeartbeatAt: e.wall(a.lastSeen.Load()),
				CurrentLoad:     int(a.load.Load()),
			})
		}
	})
	if len(hbs) == 0 {
		return nil
	}
	err := e.submit(ctx, &commitReq{hbs: hbs, done: make(chan error, 1)})
	if err != nil {
		// Try again next time.
		for _, hb := range hbs {
			if a := e.agents.get(hb.AgentID); a != nil {
				a.dirty.Store(true)
			}
		}
	}
	return err
}

// Counts returns the number of agents in each status.
func (e *Engine) Counts() map[lifeline.Status]int {
	out := make(map[lifeline.Status]int, len(statusNames)-1)
	for code := stActive; code <= stDeregistered; code++ {
		out[statusNames[code]] = int(e.counts[code].Load())
	}
	return out
}

// Ping checks that the store is reachable.
func (e *Engine) Ping(ctx context.Context) error { return e.store.Ping(ctx) }
