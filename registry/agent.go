package registry

import (
	"hash/maphash"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

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
	// id is the agent id. For ids of up to len(idBuf) bytes its bytes live in idBuf,
	// inside the agent itself, so the lookup that compares it touches no other memory.
	id    string
	idBuf [32]byte

	// Hot state: what a heartbeat reads or writes, right after the id so that a
	// heartbeat touches as few cache lines as possible. Written without locks.
	status     atomic.Uint32 // status code, possibly | busy
	dirty      atomic.Bool   // heartbeat state changed since the last checkpoint
	lastSeen   atomic.Int64  // monotonic ns (engine clock) of the last heartbeat
	load       atomic.Int64  // current_load reported by heartbeats
	driftLimit atomic.Int64  // 2 × heartbeat interval in ns, copied from the record
	// cmds is the pending_commands slice delivered with every heartbeat response; it is
	// built once per change so the heartbeat path does not allocate.
	cmds atomic.Pointer[[]lifeline.Command]
	// owner is the interned id of the key that registered the agent (rec.OwnerKeyID),
	// kept here so an agent key's heartbeat need not read the record.
	owner atomic.Pointer[string]

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
	a := &agent{index: -1}
	if len(id) <= len(a.idBuf) && len(id) > 0 {
		n := copy(a.idBuf[:], id)
		a.id = unsafe.String(&a.idBuf[0], n)
	} else {
		a.id = strings.Clone(id)
	}
	return a
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

// shards is the agent table: a fixed number of independently locked hash tables, so
// that heartbeats for different agents rarely contend. Each id is hashed once; the low
// bits pick the shard and the rest the slot.
type shards struct {
	seed maphash.Seed
	s    [shardCount]shard
}

// shard is an open-addressing hash table with linear probing. Slots hold the id's
// hash next to the agent pointer, so a lookup reads one slot and then the agent, whose
// id it compares: no second hashing and no separate key to fetch.
type shard struct {
	mu    sync.RWMutex
	slots []slot // len is a power of two; guarded by mu
	n     int    // occupied slots; guarded by mu
	// beats counts heartbeats to this shard's agents: one counter per shard instead of
	// one for the process, so concurrent heartbeats do not fight over a cache line.
	beats atomic.Uint64
	_     [16]byte // keep neighbouring shards on separate cache lines
}

type slot struct {
	h uint64
	a *agent // nil: empty
}

func newShards() *shards {
	t := &shards{seed: maphash.MakeSeed()}
	for i := range t.s {
		t.s[i].slots = make([]slot, 16)
	}
	return t
}

func (t *shards) hash(id string) uint64 { return maphash.String(t.seed, id) }

// of returns the shard of id and the id's hash.
func (t *shards) of(id string) (*shard, uint64) {
	h := t.hash(id)
	return &t.s[h%shardCount], h
}

// lookupLocked finds id. Requires sh.mu (read or write).
func (sh *shard) lookupLocked(h uint64, id string) *agent {
	mask := uint64(len(sh.slots) - 1)
	for i := (h / shardCount) & mask; ; i = (i + 1) & mask {
		sl := &sh.slots[i]
		if sl.a == nil {
			return nil
		}
		if sl.h == h && sl.a.id == id {
			return sl.a
		}
	}
}

// insertLocked adds a, whose id is not in the shard. Requires sh.mu for writing.
func (sh *shard) insertLocked(h uint64, a *agent) {
	if 2*(sh.n+1) > len(sh.slots) {
		old := sh.slots
		sh.slots = make([]slot, 2*len(old))
		sh.n = 0
		for _, sl := range old {
			if sl.a != nil {
				sh.insertLocked(sl.h, sl.a)
			}
		}
	}
	mask := uint64(len(sh.slots) - 1)
	i := (h / shardCount) & mask
	for sh.slots[i].a != nil {
		i = (i + 1) & mask
	}
	sh.slots[i] = slot{h: h, a: a}
	sh.n++
}

// deleteLocked removes id, shifting later entries of its probe run back so lookups
// never stop early. Requires sh.mu for writing.
func (sh *shard) deleteLocked(h uint64, id string) {
	mask := uint64(len(sh.slots) - 1)
	i := (h / shardCount) & mask
	for {
		sl := sh.slots[i]
		if sl.a == nil {
			return
		}
		if sl.h == h && sl.a.id == id {
			break
		}
		i = (i + 1) & mask
	}
	sh.slots[i] = slot{}
	sh.n--
	for j := (i + 1) & mask; sh.slots[j].a != nil; j = (j + 1) & mask {
		home := (sh.slots[j].h / shardCount) & mask
		// Move j back to the hole at i unless its home lies cyclically in (i, j].
		if (j > i && (home <= i || home > j)) || (j < i && home <= i && home > j) {
			sh.slots[i], sh.slots[j] = sh.slots[j], slot{}
			i = j
		}
	}
}

func (t *shards) get(id string) *agent {
	a, _ := t.getCounted(id, false)
	return a
}

// getCounted is get that also counts a heartbeat on the agent's shard.
func (t *shards) getCounted(id string, count bool) (*agent, *shard) {
	sh, h := t.of(id)
	sh.mu.RLock()
	a := sh.lookupLocked(h, id)
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
		for _, sl := range sh.slots {
			if sl.a != nil {
				buf = append(buf, sl.a)
			}
		}
		sh.mu.RUnlock()
		for _, a := range buf {
			fn(a)
		}
	}
}
