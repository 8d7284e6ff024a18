package registry_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline"
	"github.com/lifeline-dev/lifeline/registry"
	"github.com/lifeline-dev/lifeline/sqlite"
)

// clock is a manual clock for deterministic lifecycle tests.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 2, 8, 10, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// holder is a WorkHolder whose answer the test sets.
type holder struct {
	mu   sync.Mutex
	busy map[string]bool
}

func (h *holder) HoldsWork(id string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.busy[id]
}

func (h *holder) set(id string, v bool) {
	h.mu.Lock()
	if h.busy == nil {
		h.busy = map[string]bool{}
	}
	h.busy[id] = v
	h.mu.Unlock()
}

type env struct {
	t     *testing.T
	path  string
	store *sqlite.Store
	e     *registry.Engine
	clk   *clock
	work  *holder
}

func newEnv(t *testing.T) *env {
	t.Helper()
	v := &env{t: t, path: filepath.Join(t.TempDir(), "lifeline.db"), clk: newClock(), work: &holder{}}
	v.open()
	t.Cleanup(v.close)
	return v
}

func (v *env) open() {
	v.t.Helper()
	st, err := sqlite.Open(v.path)
	if err != nil {
		v.t.Fatal(err)
	}
	v.store = st
	v.e = registry.New(st, registry.Config{Now: v.clk.Now, Work: v.work, DrainTimeout: 60 * time.Second})
	if err := v.e.Open(context.Background()); err != nil {
		v.t.Fatal(err)
	}
}

func (v *env) close() {
	if v.e == nil {
		return
	}
	if err := v.e.Close(); err != nil {
		v.t.Error(err)
	}
	if err := v.store.Close(); err != nil {
		v.t.Error(err)
	}
	v.e = nil
}

func (v *env) restart() {
	v.close()
	v.open()
}

func intp(n int) *int { return &n }

func (v *env) register(id string, interval, unhealthy, dead int) *lifeline.Agent {
	v.t.Helper()
	a, err := v.e.RegisterAgent(context.Background(), &lifeline.Registration{
		AgentID: id,
		HeartbeatConfig: &lifeline.RegistrationHeartbeat{
			IntervalSeconds: intp(interval), UnhealthyAfterSeconds: intp(unhealthy), DeadAfterSeconds: intp(dead),
		},
	})
	if err != nil {
		v.t.Fatal(err)
	}
	return a
}

func (v *env) beat(id string) (*lifeline.HeartbeatAck, error) {
	return v.e.Heartbeat(context.Background(), id, &lifeline.Heartbeat{Status: lifeline.StatusActive, ClientTimestamp: v.clk.Now()})
}

func (v *env) status(id string) lifeline.Status {
	v.t.Helper()
	a, err := v.e.FindAgentByID(context.Background(), id)
	if err != nil {
		v.t.Fatal(err)
	}
	return a.Status
}

func (v *env) reasons(id string) []string {
	v.t.Helper()
	evs, _, err := v.e.FindEvents(context.Background(), lifeline.EventFilter{AgentID: id, Limit: 1000})
	if err != nil {
		v.t.Fatal(err)
	}
	var out []string
	for _, e := range evs {
		out = append(out, string(e.NewStatus)+":"+e.Reason)
	}
	return out
}

func (v *env) sweepAt(d time.Duration) {
	v.clk.Add(d)
	v.e.Sweep(context.Background())
}

func eq(t *testing.T, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
}

func TestSilenceUnhealthyThenDeadNeverEarly(t *testing.T) {
	v := newEnv(t)
	v.register("a1", 1, 2, 4)
	v.sweepAt(2 * time.Second) // exactly at the deadline: not yet
	if s := v.status("a1"); s != lifeline.StatusActive {
		t.Fatalf("at the deadline status = %s, want active", s)
	}
	v.sweepAt(time.Nanosecond)
	if s := v.status("a1"); s != lifeline.StatusUnhealthy {
		t.Fatalf("after the deadline status = %s, want unhealthy", s)
	}
	v.sweepAt(2*time.Second - time.Nanosecond) // exactly 4 s of silence
	if s := v.status("a1"); s != lifeline.StatusUnhealthy {
		t.Fatalf("at the dead deadline status = %s", s)
	}
	v.sweepAt(time.Nanosecond)
	if s := v.status("a1"); s != lifeline.StatusDead {
		t.Fatalf("status = %s, want dead", s)
	}
	if _, err := v.beat("a1"); lifeline.ErrorCode(err) != lifeline.EGone {
		t.Fatalf("heartbeat to dead agent: %v, want gone", err)
	}
	eq(t, v.reasons("a1"), []string{"active:registered", "unhealthy:heartbeat_timeout", "dead:heartbeat_timeout"})
}

func TestHeartbeatsKeepActiveAndResume(t *testing.T) {
	v := newEnv(t)
	v.register("a1", 1, 2, 4)
	for range 10 {
		v.sweepAt(1500 * time.Millisecond)
		if _, err := v.beat("a1"); err != nil {
			t.Fatal(err)
		}
	}
	if s := v.status("a1"); s != lifeline.StatusActive {
		t.Fatalf("status = %s", s)
	}
	v.sweepAt(3 * time.Second)
	if s := v.status("a1"); s != lifeline.StatusUnhealthy {
		t.Fatalf("status = %s", s)
	}
	ack, err := v.beat("a1")
	if err != nil || ack.AgentStatus != lifeline.StatusActive || !ack.Acknowledged {
		t.Fatalf("ack %+v err %v", ack, err)
	}
	eq(t, v.reasons("a1"), []string{"active:registered", "unhealthy:heartbeat_timeout", "active:heartbeat_resumed"})
	a, _ := v.e.FindAgentByID(context.Background(), "a1")
	if a.Version != 3 {
		t.Fatalf("version = %d, want 3 (registered, unhealthy, resumed)", a.Version)
	}
}

func TestLongStallChainsTransitions(t *testing.T) {
	v := newEnv(t)
	v.register("a1", 1, 2, 4)
	v.sweepAt(10 * time.Second)
	eq(t, v.reasons("a1"), []string{"active:registered", "unhealthy:heartbeat_timeout", "dead:heartbeat_timeout"})
	evs, _, _ := v.e.FindEvents(context.Background(), lifeline.EventFilter{AgentID: "a1"})
	// Both transitions are made, and stamped, when the sweeper finds them due.
	if got := evs[2].Timestamp.Sub(evs[0].Timestamp); got != 10*time.Second || !evs[1].Timestamp.Equal(evs[2].Timestamp) {
		t.Fatalf("stamps %v %v %v", evs[0].Timestamp, evs[1].Timestamp, evs[2].Timestamp)
	}
}

func TestReRegisterResetsVersion(t *testing.T) {
	v := newEnv(t)
	v.register("a1", 1, 2, 4)
	if _, err := v.e.RegisterAgent(context.Background(), &lifeline.Registration{AgentID: "a1"}); lifeline.ErrorCode(err) != lifeline.EConflict {
		t.Fatalf("live re-registration: %v", err)
	}
	v.sweepAt(5 * time.Second)
	a := v.register("a1", 1, 2, 4)
	if a.Version != 1 || a.Status != lifeline.StatusActive {
		t.Fatalf("re-registered %+v", a)
	}
	eq(t, v.reasons("a1"), []string{"active:registered", "unhealthy:heartbeat_timeout", "dead:heartbeat_timeout", "active:reregistered"})
}

func TestDrainWithoutWorkCompletesAtOnce(t *testing.T) {
	v := newEnv(t)
	a := v.register("a1", 1, 2, 4)
	got, err := v.e.UpdateStatus(context.Background(), "a1", a.Version, &lifeline.StatusUpdate{Status: lifeline.StatusDraining})
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != lifeline.StatusDeregistered {
		t.Fatalf("status %s", got.Status)
	}
	eq(t, v.reasons("a1"), []string{"active:registered", "draining:drain_initiated", "deregistered:drain_completed"})
}

func TestDrainWithWork(t *testing.T) {
	t.Run("CompletesOnRelease", func(t *testing.T) {
		v := newEnv(t)
		a := v.register("a1", 1, 2, 4)
		v.work.set("a1", true)
		got, err := v.e.UpdateStatus(context.Background(), "a1", a.Version, &lifeline.StatusUpdate{Status: lifeline.StatusDraining, DrainTimeoutSeconds: intp(30)})
		if err != nil || got.Status != lifeline.StatusDraining || got.DrainDeadline == nil {
			t.Fatalf("%+v %v", got, err)
		}
		// Draining agents keep beating; silence past unhealthy_after does not matter.
		v.sweepAt(1 * time.Second)
		if _, err := v.beat("a1"); err != nil {
			t.Fatal(err)
		}
		v.sweepAt(3 * time.Second)
		if s := v.status("a1"); s != lifeline.StatusDraining {
			t.Fatalf("status %s", s)
		}
		v.work.set("a1", false)
		if err := v.e.WorkReleased(context.Background(), "a1"); err != nil {
			t.Fatal(err)
		}
		eq(t, v.reasons("a1"), []string{"active:registered", "draining:drain_initiated", "deregistered:drain_completed"})
	})
	t.Run("TimeoutIsDead", func(t *testing.T) {
		v := newEnv(t)
		a := v.register("a1", 10, 20, 400)
		v.work.set("a1", true)
		if _, err := v.e.UpdateStatus(context.Background(), "a1", a.Version, &lifeline.StatusUpdate{Status: lifeline.StatusDraining, DrainTimeoutSeconds: intp(30)}); err != nil {
			t.Fatal(err)
		}
		v.sweepAt(30 * time.Second)
		if s := v.status("a1"); s != lifeline.StatusDraining {
			t.Fatalf("at the drain deadline: %s", s)
		}
		v.sweepAt(time.Millisecond)
		eq(t, v.reasons("a1"), []string{"active:registered", "draining:drain_initiated", "dead:drain_timeout"})
	})
	t.Run("SurvivesRestart", func(t *testing.T) {
		v := newEnv(t)
		a := v.register("a1", 10, 20, 400)
		v.work.set("a1", true)
		if _, err := v.e.UpdateStatus(context.Background(), "a1", a.Version, &lifeline.StatusUpdate{Status: lifeline.StatusDraining, DrainTimeoutSeconds: intp(30)}); err != nil {
			t.Fatal(err)
		}
		v.clk.Add(10 * time.Second)
		v.restart()
		v.sweepAt(19 * time.Second)
		if s := v.status("a1"); s != lifeline.StatusDraining {
			t.Fatalf("before the drain deadline: %s", s)
		}
		v.sweepAt(2 * time.Second)
		eq(t, v.reasons("a1"), []string{"active:registered", "draining:drain_initiated", "dead:drain_timeout"})
	})
}

func TestHeartbeatDrainingStartsDrain(t *testing.T) {
	v := newEnv(t)
	v.register("a1", 1, 2, 4)
	v.work.set("a1", true)
	ack, err := v.e.Heartbeat(context.Background(), "a1", &lifeline.Heartbeat{Status: lifeline.StatusDraining, ClientTimestamp: v.clk.Now()})
	if err != nil || ack.AgentStatus != lifeline.StatusDraining {
		t.Fatalf("%+v %v", ack, err)
	}
	eq(t, v.reasons("a1"), []string{"active:registered", "draining:drain_initiated"})
}

func TestDrainCommandStaysUntilDrained(t *testing.T) {
	v := newEnv(t)
	v.register("a1", 1, 2, 4)
	v.work.set("a1", true)
	if _, err := v.e.SendCommand(context.Background(), "a1", &lifeline.Command{Command: "drain", Reason: "maintenance_window", DrainTimeoutSeconds: 45}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		ack, err := v.beat("a1")
		if err != nil || len(ack.PendingCommands) != 1 || ack.PendingCommands[0].Reason != "maintenance_window" {
			t.Fatalf("%+v %v", ack, err)
		}
	}
	v.restart() // the command is durable
	ack, err := v.e.Heartbeat(context.Background(), "a1", &lifeline.Heartbeat{Status: lifeline.StatusDraining, ClientTimestamp: v.clk.Now()})
	if err != nil || ack.AgentStatus != lifeline.StatusDraining || len(ack.PendingCommands) != 0 {
		t.Fatalf("%+v %v", ack, err)
	}
	a, _ := v.e.FindAgentByID(context.Background(), "a1")
	if a.DrainDeadline == nil || a.DrainDeadline.Sub(v.clk.Now()) != 45*time.Second {
		t.Fatalf("drain deadline %v, want now+45s from the command", a.DrainDeadline)
	}
}

func TestIfMatch(t *testing.T) {
	v := newEnv(t)
	v.register("a1", 1, 2, 4)
	_, err := v.e.UpdateStatus(context.Background(), "a1", 7, &lifeline.StatusUpdate{Status: lifeline.StatusDeregistered})
	if lifeline.ErrorCode(err) != lifeline.EPreconditionFailed {
		t.Fatalf("stale If-Match: %v", err)
	}
	if _, err := v.e.UpdateStatus(context.Background(), "a1", 1, &lifeline.StatusUpdate{Status: lifeline.StatusDeregistered}); err != nil {
		t.Fatal(err)
	}
	_, err = v.e.UpdateStatus(context.Background(), "a1", 2, &lifeline.StatusUpdate{Status: lifeline.StatusDraining})
	var le *lifeline.Error
	if lifeline.ErrorCode(err) != lifeline.EConflict {
		t.Fatalf("drain a deregistered agent: %v", err)
	}
	le = err.(*lifeline.Error)
	if len(le.Allowed) != 0 {
		t.Fatalf("allowed %v", le.Allowed)
	}
}

func TestRestartGivesFreshGrace(t *testing.T) {
	v := newEnv(t)
	v.register("a1", 1, 2, 4)
	v.register("a2", 1, 2, 4)
	v.sweepAt(2500 * time.Millisecond) // both unhealthy
	if _, err := v.beat("a2"); err != nil {
		t.Fatal(err)
	}
	v.clk.Add(time.Hour) // the server is down for an hour
	v.restart()
	v.sweepAt(time.Second)
	if s := v.status("a1"); s != lifeline.StatusUnhealthy {
		t.Fatalf("a1 after restart: %s", s)
	}
	if s := v.status("a2"); s != lifeline.StatusActive {
		t.Fatalf("a2 after restart: %s", s)
	}
	// Grace is counted from boot: at most dead_after (+ a spread of up to a tenth of
	// unhealthy_after) later, both are dead.
	v.sweepAt(3 * time.Second)
	v.sweepAt(2 * time.Second)
	if s := v.status("a1"); s != lifeline.StatusDead {
		t.Fatalf("a1: %s", s)
	}
	if s := v.status("a2"); s != lifeline.StatusDead {
		t.Fatalf("a2: %s", s)
	}
}

func TestCheckpointKeepsLastHeartbeat(t *testing.T) {
	v := newEnv(t)
	v.register("a1", 10, 20, 40)
	v.clk.Add(5 * time.Second)
	load := 3
	if _, err := v.e.Heartbeat(context.Background(), "a1", &lifeline.Heartbeat{Status: lifeline.StatusActive, CurrentLoad: &load, ClientTimestamp: v.clk.Now()}); err != nil {
		t.Fatal(err)
	}
	want := v.clk.Now()
	v.restart() // Close checkpoints
	a, err := v.e.FindAgentByID(context.Background(), "a1")
	if err != nil {
		t.Fatal(err)
	}
	if !a.LastHeartbeatAt.Equal(want) || a.Capacity.CurrentLoad != 3 {
		t.Fatalf("last_heartbeat_at %v load %d, want %v 3", a.LastHeartbeatAt, a.Capacity.CurrentLoad, want)
	}
}

func TestOwnership(t *testing.T) {
	v := newEnv(t)
	owner := lifeline.WithCaller(context.Background(), lifeline.Caller{KeyID: "k1", Role: lifeline.RoleAgent})
	other := lifeline.WithCaller(context.Background(), lifeline.Caller{KeyID: "k2", Role: lifeline.RoleAgent})
	coord := lifeline.WithCaller(context.Background(), lifeline.Caller{KeyID: "k3", Role: lifeline.RoleCoordinator})
	if _, err := v.e.RegisterAgent(owner, &lifeline.Registration{AgentID: "a1"}); err != nil {
		t.Fatal(err)
	}
	hb := &lifeline.Heartbeat{Status: lifeline.StatusActive, ClientTimestamp: v.clk.Now()}
	if _, err := v.e.Heartbeat(other, "a1", hb); lifeline.ErrorCode(err) != lifeline.EForbidden {
		t.Fatalf("other key heartbeat: %v", err)
	}
	if err := v.e.DeregisterAgent(other, "a1"); lifeline.ErrorCode(err) != lifeline.EForbidden {
		t.Fatalf("other key delete: %v", err)
	}
	if _, _, _, err := v.e.FindAgents(other, lifeline.AgentFilter{}); lifeline.ErrorCode(err) != lifeline.EForbidden {
		t.Fatalf("agent key list: %v", err)
	}
	if _, err := v.e.SendCommand(owner, "a1", &lifeline.Command{Command: "drain"}); lifeline.ErrorCode(err) != lifeline.EForbidden {
		t.Fatalf("agent key command: %v", err)
	}
	if _, err := v.e.Heartbeat(owner, "a1", hb); err != nil {
		t.Fatal(err)
	}
	if _, err := v.e.Heartbeat(coord, "a1", hb); err != nil {
		t.Fatal(err)
	}
	if err := v.e.DeregisterAgent(coord, "a1"); err != nil {
		t.Fatal(err)
	}
	if _, err := v.e.RegisterAgent(other, &lifeline.Registration{AgentID: "a1"}); lifeline.ErrorCode(err) != lifeline.EForbidden {
		t.Fatalf("re-registration by another agent key: %v", err)
	}
}

func TestFindAgentsAndPools(t *testing.T) {
	v := newEnv(t)
	ctx := context.Background()
	reg := func(id, role string, caps []string, max int) {
		if _, err := v.e.RegisterAgent(ctx, &lifeline.Registration{AgentID: id, RoleID: role, Capabilities: caps,
			Capacity: &lifeline.RegistrationCapacity{MaxConcurrentTasks: intp(max)}}); err != nil {
			t.Fatal(err)
		}
	}
	reg("b1", "billing", []string{"billing", "invoicing"}, 5)
	reg("b2", "billing", []string{"billing"}, 5)
	reg("c1", "review", []string{"code-review"}, 3)
	load := 4
	if _, err := v.e.Heartbeat(ctx, "b2", &lifeline.Heartbeat{Status: lifeline.StatusActive, CurrentLoad: &load, ClientTimestamp: v.clk.Now()}); err != nil {
		t.Fatal(err)
	}
	ids := func(f lifeline.AgentFilter) ([]string, int, string) {
		as, total, next, err := v.e.FindAgents(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, a := range as {
			out = append(out, a.AgentID)
		}
		return out, total, next
	}
	got, total, _ := ids(lifeline.AgentFilter{Capabilities: []string{"invoicing", "code-review"}})
	eq(t, got, []string{"b1", "c1"})
	if total != 2 {
		t.Fatalf("total %d", total)
	}
	got, _, _ = ids(lifeline.AgentFilter{MinAvailableCapacity: intp(2)})
	eq(t, got, []string{"b1", "c1"})
	got, total, next := ids(lifeline.AgentFilter{Limit: 2})
	eq(t, got, []string{"b1", "b2"})
	if total != 3 || next != "b2" {
		t.Fatalf("total %d next %q", total, next)
	}
	got, _, next = ids(lifeline.AgentFilter{Limit: 2, After: next})
	eq(t, got, []string{"c1"})
	if next != "" {
		t.Fatalf("next %q", next)
	}
	if err := v.e.DeregisterAgent(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	got, _, _ = ids(lifeline.AgentFilter{Statuses: []lifeline.Status{lifeline.StatusDeregistered}})
	eq(t, got, []string{"c1"})
	p, err := v.e.FindPool(ctx, "billing")
	if err != nil {
		t.Fatal(err)
	}
	if *p != (lifeline.Pool{RoleID: "billing", Members: 2, ActiveMembers: 2, MaxConcurrentTasks: 10, CurrentLoad: 4, AvailableCapacity: 6}) {
		t.Fatalf("pool %+v", p)
	}
	if _, err := v.e.FindPool(ctx, "review"); lifeline.ErrorCode(err) != lifeline.ENotFound {
		t.Fatalf("empty pool: %v", err)
	}
}

// TestHeartbeatRacesSweep hammers one agent with heartbeats while the sweeper runs at
// its deadline: a heartbeat that was acknowledged as active must never be followed by
// the agent staying unhealthy.
func TestHeartbeatRacesSweep(t *testing.T) {
	v := newEnv(t)
	v.register("a1", 1, 2, 4)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				v.e.Sweep(context.Background())
			}
		}
	}()
	for range 200 {
		v.clk.Add(2100 * time.Millisecond) // every heartbeat lands after the deadline
		ack, err := v.beat("a1")
		if err != nil {
			t.Fatal(err)
		}
		if ack.AgentStatus != lifeline.StatusActive {
			t.Fatalf("ack status %s", ack.AgentStatus)
		}
	}
	close(stop)
	wg.Wait()
	v.e.Sweep(context.Background())
	if s := v.status("a1"); s != lifeline.StatusActive {
		t.Fatalf("status %s after acknowledged heartbeat", s)
	}
}

func TestBeatDoesNotAllocate(t *testing.T) {
	v := newEnv(t)
	v.register("a1", 30, 90, 300)
	hb := &lifeline.Heartbeat{Status: lifeline.StatusActive, ClientTimestamp: v.clk.Now()}
	var ack lifeline.HeartbeatAck
	ctx := lifeline.WithCaller(context.Background(), lifeline.Caller{KeyID: "", Role: lifeline.RoleAdmin})
	allocs := testing.AllocsPerRun(1000, func() {
		if err := v.e.Beat(ctx, "a1", hb, &ack); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("Beat allocates %v times per call", allocs)
	}
}
