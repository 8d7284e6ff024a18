package registry

import (
	"hash/maphash"
	"sync"
	"sync/atomic"

	"github.com/lifeline-dev/lifeline"
)

// Status codes held in agent.status. The busy bit marks an agent whose transition is
// being decided or committed; a heartbeat that sees it takes the locked slow path.
const (
	stRegistering uint32 = iota
	stActive
	stDraining
	stUnhealthy
	stDead
	stDeregistered
	busy uint32 = 1 << 8
)

var statusNames = [...]lifeline.Status{
	stRegistering:  lifeline.StatusRegistering,
	stActive:       lifeline.StatusActive,
	stDraining:     lifeline.StatusDraining,
	stUnhealthy:    lifeline.StatusUnhealthy,
	stDead:         lifeline.StatusDead,
	stDeregistered: lifeline.StatusDeregistered,
}

func statusCode(s lifeline.Status) uint32 {
	for i, n := range statusNames {
		if n == s {
			return uint32(i)
		}
	}
	return stRegistering
}

// agent is the in-memory state of one agent. The hot heartbeat state (lastSeen, load,
// status) is kept apart from the descriptive record, which is an immutable snapshot
// replaced on every committed change, so readers never lock.
type agent struct {
	// Hot state: everything a heartbeat reads or writes, in the first 64 bytes so that
	// a heartbeat touches one cache line of the agent. Written without locks.
	status     atomic.Uint32 // status code, possibly | busy
	dirty      atomic.Bool   // heartbeat state changed since the last checkpoint
	lastSeen   atomic.Int64  // monotonic ns (engine clock) of the last heartbeat
	load       atomic.Int64  // current_load reported by heartbeats
	driftLimit atomic.Int64  // 2 × heartbeat interval in ns, copied from the record
	// cmds is the pending_commands slice delivered with every heartbeat response; it is
	// built once per change so the heartbeat path does not allocate.
	cmds atomic.Pointer[[]lifeline.Command]
	id   string

	lastWarn atomic.Int64 // monotonic ns of the last drift warning logged
	// rec is the descriptive record as last committed. It is never mutated in place.
	rec atomic.Pointer[lifeline.Agent]

	// mu serialises changes to this agent. Guarded by mu:
	mu            sync.Mutex
	graceFrom     int64 // monotonic ns before which silence does not count (boot)
	drainDeadline int64 // monotonic ns; 0 when not draining

	// Guarded by Engine.trackMu.
	deadline int64
	index    int
}

func newAgent(id string) *agent {
	return &agent{id: id, index: -1}
}

// silenceBase is the moment silence is measured from: the last heartbeat, or the boot
// grace point when that is later. Requires mu.
func (a *agent) silenceBaseLocked() int64 {
	if ls := a.lastSeen.Load(); ls > a.graceFrom {
		return ls
	}
	return a.graceFrom
}

const shardCount = 64

// shards is the agent table: a fixed number of independently locked maps, so that
// heartbeats for different agents rarely contend.
type shards struct {
	seed maphash.Seed
	s    [shardCount]shard
}

type shard struct {
	mu sync.RWMutex
	m  map[string]*agent
	// beats counts heartbeats to this shard's agents: one counter per shard instead of
	// one for the process, so concurrent heartbeats do not fight over a cache line.
	beats atomic.Uint64
	_     [32]byte // keep neighbouring shards on separate cache lines
}

func newShards() *shards {
	t := &shards{seed: maphash.MakeSeed()}
	for i := range t.s {
		t.s[i].m = make(map[string]*agent)
	}
	return t
}

func (t *shards) of(id string) *shard {
	return &t.s[maphash.String(t.seed, id)%shardCount]
}

func (t *shards) get(id string) *agent {
	a, _ := t.getCounted(id, false)
	return a
}

// getCounted is get that also counts a heartbeat on the agent's shard.
func (t *shards) getCounted(id string, count bool) (*agent, *shard) {
	sh := t.of(id)
	sh.mu.RLock()
	a := sh.m[id]
	sh.mu.RUnlock()
	if count && a != nil {
		sh.beats.Add(1)
	}
	return a, sh
}

// beats returns the number of heartbeats counted over all shards.
func (t *shards) beats() uint64 {
	var n uint64
	for i := range t.s {
		n += t.s[i].beats.Load()
	}
	return n
}

// each calls fn for every agent, shard by shard, without holding any lock during fn.
func (t *shards) each(fn func(a *agent)) {
	var buf []*agent
	for i := range t.s {
		sh := &t.s[i]
		sh.mu.RLock()
		buf = buf[:0]
		for _, a := range sh.m {
			buf = append(buf, a)
		}
		sh.mu.RUnlock()
		for _, a := range buf {
			fn(a)
		}
	}
}
