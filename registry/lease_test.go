package registry_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline"
)

func (v *env) acquire(agent, scope string, ttl int) (*lifeline.Lease, error) {
	return v.e.AcquireLease(context.Background(), &lifeline.LeaseRequest{Scope: scope, AgentID: agent, TTLSeconds: &ttl})
}

func (v *env) mustAcquire(agent, scope string, ttl int) *lifeline.Lease {
	v.t.Helper()
	l, err := v.acquire(agent, scope, ttl)
	if err != nil {
		v.t.Fatal(err)
	}
	return l
}

func (v *env) lease(id string) *lifeline.Lease {
	v.t.Helper()
	l, err := v.e.FindLeaseByID(context.Background(), id)
	if err != nil {
		v.t.Fatal(err)
	}
	return l
}

// log returns "type:status/reason" of every event, in order.
func (v *env) log() []string {
	v.t.Helper()
	evs, _, err := v.e.FindEvents(context.Background(), lifeline.EventFilter{Limit: 1000})
	if err != nil {
		v.t.Fatal(err)
	}
	var out []string
	for _, e := range evs {
		switch e.Type {
		case lifeline.EventAgentLifecycle:
			out = append(out, e.AgentID+":"+string(e.NewStatus)+"/"+e.Reason)
		default:
			out = append(out, e.Type+":"+e.Scope+"/"+e.Reason)
		}
	}
	return out
}

func TestLeaseAcquireReleaseFence(t *testing.T) {
	v := newEnv(t)
	v.register("a1", 10, 20, 40)
	v.register("a2", 10, 20, 40)
	l1 := v.mustAcquire("a1", "task_1", 60)
	if l1.Fence != 1 || l1.Status != lifeline.LeaseActive || l1.ExpiresAt.Sub(l1.AcquiredAt) != time.Minute {
		t.Fatalf("%+v", l1)
	}
	_, err := v.acquire("a2", "task_1", 60)
	le, _ := err.(*lifeline.Error)
	if lifeline.ErrorCode(err) != lifeline.EConflict || le.Extra["holder"] != "a1" || le.Extra["lease_id"] != l1.LeaseID {
		t.Fatalf("contested acquire: %v %+v", err, le)
	}
	if err := v.e.ReleaseLease(context.Background(), l1.LeaseID); err != nil {
		t.Fatal(err)
	}
	if err := v.e.ReleaseLease(context.Background(), l1.LeaseID); lifeline.ErrorCode(err) != lifeline.EGone {
		t.Fatalf("double release: %v", err)
	}
	if got := v.lease(l1.LeaseID); got.Status != lifeline.LeaseReleased || got.Reason != "released" || got.EndedAt == nil {
		t.Fatalf("released lease %+v", got)
	}
	l2 := v.mustAcquire("a2", "task_1", 60)
	if l2.Fence != 2 {
		t.Fatalf("fence %d, want 2", l2.Fence)
	}
	eq(t, v.log()[2:], []string{"lease.acquired:task_1/", "lease.released:task_1/released", "lease.acquired:task_1/"})
}

func TestLeaseAgentStatusRules(t *testing.T) {
	v := newEnv(t)
	v.register("a1", 1, 2, 4)
	v.sweepAt(2500 * time.Millisecond)
	if _, err := v.acquire("a1", "t1", 60); err != nil {
		t.Fatalf("unhealthy agents may acquire (§9.2): %v", err)
	}
	v.register("d1", 10, 20, 40)
	v.work.set("d1", true)
	if _, err := v.e.UpdateStatus(context.Background(), "d1", -1, &lifeline.StatusUpdate{Status: lifeline.StatusDraining}); err != nil {
		t.Fatal(err)
	}
	if _, err := v.acquire("d1", "t2", 60); lifeline.ErrorCode(err) != lifeline.EAgentDraining {
		t.Fatalf("draining agent: %v", err)
	}
	v.register("x1", 10, 20, 40)
	if err := v.e.DeregisterAgent(context.Background(), "x1"); err != nil {
		t.Fatal(err)
	}
	if _, err := v.acquire("x1", "t3", 60); lifeline.ErrorCode(err) != lifeline.EGone {
		t.Fatalf("deregistered agent: %v", err)
	}
	if _, err := v.acquire("ghost", "t4", 60); lifeline.ErrorCode(err) != lifeline.ENotFound {
		t.Fatalf("unknown agent: %v", err)
	}
	for _, ttl := range []int{0, -1, 86401} {
		if _, err := v.acquire("a1", "t5", ttl); lifeline.ErrorCode(err) != lifeline.EInvalid {
			t.Fatalf("ttl %d: %v", ttl, err)
		}
	}
	agentKey := lifeline.WithCaller(context.Background(), lifeline.Caller{KeyID: "other", Role: lifeline.RoleAgent})
	if _, err := v.e.AcquireLease(agentKey, &lifeline.LeaseRequest{Scope: "t6", AgentID: "a1"}); lifeline.ErrorCode(err) != lifeline.EForbidden {
		t.Fatalf("agent key for another agent: %v", err)
	}
}

func TestLeaseTTLExpiryNeverEarly(t *testing.T) {
	v := newEnv(t)
	v.register("a1", 10, 20, 40)
	l := v.mustAcquire("a1", "task_1", 5)
	v.sweepAt(5*time.Second - time.Nanosecond)
	if got := v.lease(l.LeaseID); got.Status != lifeline.LeaseActive {
		t.Fatalf("before expiry: %+v", got)
	}
	if _, err := v.e.RenewLease(context.Background(), l.LeaseID, &lifeline.LeaseRenewal{}); err != nil {
		t.Fatal(err)
	}
	v.sweepAt(5 * time.Second)
	if got := v.lease(l.LeaseID); got.Status != lifeline.LeaseExpired || got.Reason != "ttl_elapsed" {
		t.Fatalf("after renewed expiry: %+v", got)
	}
	if _, err := v.e.RenewLease(context.Background(), l.LeaseID, &lifeline.LeaseRenewal{}); lifeline.ErrorCode(err) != lifeline.EGone {
		t.Fatalf("renew after expiry: %v", err)
	}
	if s := v.status("a1"); s != lifeline.StatusActive {
		t.Fatalf("a lease expiring does not touch its agent (§9.1): %s", s)
	}
}

func TestLeaseExpiresWhenTTLPassesBeforeSweep(t *testing.T) {
	v := newEnv(t)
	v.register("a1", 10, 20, 40)
	l := v.mustAcquire("a1", "task_1", 5)
	v.clk.Add(5 * time.Second) // no sweep yet: still the lease must not be usable
	if _, err := v.e.RenewLease(context.Background(), l.LeaseID, &lifeline.LeaseRenewal{}); lifeline.ErrorCode(err) != lifeline.EGone {
		t.Fatalf("renew at expiry: %v", err)
	}
	if _, err := v.e.UpdateTask(context.Background(), "task_1", l.LeaseID, &lifeline.TaskUpdate{Status: "running"}); lifeline.ErrorCode(err) != lifeline.EPreconditionFailed {
		t.Fatalf("write at expiry: %v", err)
	}
}

func TestDeathExpiresLeases(t *testing.T) {
	v := newEnv(t)
	v.register("a1", 1, 2, 4)
	v.mustAcquire("a1", "task_1", 3600)
	v.mustAcquire("a1", "task_2", 3600)
	v.sweepAt(4100 * time.Millisecond)
	eq(t, v.log(), []string{"a1:active/registered", "lease.acquired:task_1/", "lease.acquired:task_2/",
		"a1:unhealthy/heartbeat_timeout", "a1:dead/heartbeat_timeout",
		"lease.expired:task_1/agent_dead", "lease.expired:task_2/agent_dead"})
	v.register("b1", 10, 20, 40)
	if l := v.mustAcquire("b1", "task_1", 60); l.Fence != 2 {
		t.Fatalf("fence %d", l.Fence)
	}
}

func TestDeregisterExpiresLeases(t *testing.T) {
	v := newEnv(t)
	v.register("a1", 10, 20, 40)
	l := v.mustAcquire("a1", "task_1", 60)
	if err := v.e.DeregisterAgent(context.Background(), "a1"); err != nil {
		t.Fatal(err)
	}
	if got := v.lease(l.LeaseID); got.Status != lifeline.LeaseExpired || got.Reason != "agent_deregistered" {
		t.Fatalf("%+v", got)
	}
}

func TestRevokeLease(t *testing.T) {
	v := newEnv(t)
	v.register("a1", 10, 20, 40)
	l := v.mustAcquire("a1", "task_1", 60)
	coord := lifeline.WithCaller(context.Background(), lifeline.Caller{KeyID: "c", Role: lifeline.RoleCoordinator})
	if err := v.e.RevokeLease(coord, l.LeaseID); lifeline.ErrorCode(err) != lifeline.EForbidden {
		t.Fatalf("coordinator revoke: %v", err)
	}
	if err := v.e.RevokeLease(context.Background(), l.LeaseID); err != nil {
		t.Fatal(err)
	}
	if got := v.lease(l.LeaseID); got.Status != lifeline.LeaseRevoked || got.Reason != "revoked" {
		t.Fatalf("%+v", got)
	}
	eq(t, v.log()[1:], []string{"lease.acquired:task_1/", "lease.expired:task_1/revoked"})
}

func TestDrainWithLeases(t *testing.T) {
	t.Run("LastReleaseCompletes", func(t *testing.T) {
		v := newEnv(t)
		v.register("a1", 10, 20, 40)
		l1 := v.mustAcquire("a1", "task_1", 600)
		l2 := v.mustAcquire("a1", "task_2", 600)
		got, err := v.e.UpdateStatus(context.Background(), "a1", 1, &lifeline.StatusUpdate{Status: lifeline.StatusDraining})
		if err != nil || got.Status != lifeline.StatusDraining {
			t.Fatalf("%+v %v", got, err)
		}
		// A draining agent keeps and renews its leases.
		if _, err := v.e.RenewLease(context.Background(), l1.LeaseID, &lifeline.LeaseRenewal{}); err != nil {
			t.Fatal(err)
		}
		if err := v.e.ReleaseLease(context.Background(), l1.LeaseID); err != nil {
			t.Fatal(err)
		}
		if s := v.status("a1"); s != lifeline.StatusDraining {
			t.Fatalf("one lease left: %s", s)
		}
		if err := v.e.ReleaseLease(context.Background(), l2.LeaseID); err != nil {
			t.Fatal(err)
		}
		eq(t, v.log()[3:], []string{"a1:draining/drain_initiated", "lease.released:task_1/released",
			"lease.released:task_2/released", "a1:deregistered/drain_completed"})
	})
	t.Run("TTLExpiryOfLastLeaseCompletes", func(t *testing.T) {
		v := newEnv(t)
		v.register("a1", 10, 20, 40)
		v.mustAcquire("a1", "task_1", 5)
		if _, err := v.e.UpdateStatus(context.Background(), "a1", 1, &lifeline.StatusUpdate{Status: lifeline.StatusDraining}); err != nil {
			t.Fatal(err)
		}
		v.sweepAt(5 * time.Second)
		eq(t, v.log()[2:], []string{"a1:draining/drain_initiated", "lease.expired:task_1/ttl_elapsed", "a1:deregistered/drain_completed"})
	})
	t.Run("TimeoutIsDeadAndExpires", func(t *testing.T) {
		v := newEnv(t)
		v.register("a1", 10, 20, 400)
		l := v.mustAcquire("a1", "task_1", 3600)
		if _, err := v.e.UpdateStatus(context.Background(), "a1", 1, &lifeline.StatusUpdate{Status: lifeline.StatusDraining, DrainTimeoutSeconds: intp(30)}); err != nil {
			t.Fatal(err)
		}
		v.sweepAt(15 * time.Second)
		if _, err := v.beat("a1"); err != nil {
			t.Fatal(err)
		}
		v.sweepAt(15*time.Second + time.Millisecond)
		eq(t, v.log()[2:], []string{"a1:draining/drain_initiated", "a1:dead/drain_timeout", "lease.expired:task_1/drain_timeout"})
		if got := v.lease(l.LeaseID); got.Reason != "drain_timeout" {
			t.Fatalf("%+v", got)
		}
	})
}

func TestConcurrentAcquireOneWinner(t *testing.T) {
	v := newEnv(t)
	const n = 32
	for i := range n {
		v.register(agentName(i), 10, 20, 40)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins, conflicts := 0, 0
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, err := v.acquire(agentName(i), "task_hot", 60)
			mu.Lock()
			defer mu.Unlock()
			switch lifeline.ErrorCode(err) {
			case "":
				wins++
			case lifeline.EConflict:
				conflicts++
			default:
				t.Error(err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if wins != 1 || conflicts != n-1 {
		t.Fatalf("wins %d conflicts %d", wins, conflicts)
	}
	active, _, err := v.e.FindLeases(context.Background(), lifeline.LeaseFilter{Scope: "task_hot"})
	if err != nil || len(active) != 1 {
		t.Fatalf("%v %v", active, err)
	}
}

func agentName(i int) string { return "agent_" + string(rune('a'+i%26)) + string(rune('a'+i/26)) }

func TestLeasesSurviveRestart(t *testing.T) {
	v := newEnv(t)
	v.register("a1", 10, 20, 40)
	short := v.mustAcquire("a1", "task_short", 30)
	long := v.mustAcquire("a1", "task_long", 3600)
	if err := v.e.ReleaseLease(context.Background(), long.LeaseID); err != nil {
		t.Fatal(err)
	}
	long = v.mustAcquire("a1", "task_long", 3600) // fence 2
	v.clk.Add(time.Minute)                        // down for a minute: task_short's TTL passes
	v.restart()
	if s := v.status("a1"); s != lifeline.StatusActive {
		t.Fatalf("agent after restart: %s", s)
	}
	// Before any sweep, the elapsed lease already protects nothing.
	if _, err := v.e.UpdateTask(context.Background(), "task_short", short.LeaseID, &lifeline.TaskUpdate{Status: "running"}); lifeline.ErrorCode(err) != lifeline.EPreconditionFailed {
		t.Fatalf("write under elapsed lease: %v", err)
	}
	v.e.Sweep(context.Background())
	if got := v.lease(short.LeaseID); got.Status != lifeline.LeaseExpired || got.Reason != "ttl_elapsed" {
		t.Fatalf("elapsed lease after restart: %+v", got)
	}
	if got := v.lease(long.LeaseID); got.Status != lifeline.LeaseActive || got.Fence != 2 {
		t.Fatalf("long lease after restart: %+v", got)
	}
	if _, err := v.acquire("a1", "task_long", 60); lifeline.ErrorCode(err) != lifeline.EConflict {
		t.Fatalf("scope still held after restart: %v", err)
	}
	if l := v.mustAcquire("a1", "task_short", 60); l.Fence != 2 {
		t.Fatalf("fence after restart %d, want 2", l.Fence)
	}
}

func TestTaskUpdatesFencedByLease(t *testing.T) {
	v := newEnv(t)
	owner := lifeline.WithCaller(context.Background(), lifeline.Caller{KeyID: "ka", Role: lifeline.RoleAgent})
	other := lifeline.WithCaller(context.Background(), lifeline.Caller{KeyID: "kb", Role: lifeline.RoleAgent})
	if _, err := v.e.RegisterAgent(owner, &lifeline.Registration{AgentID: "a1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := v.e.RegisterAgent(other, &lifeline.Registration{AgentID: "b1"}); err != nil {
		t.Fatal(err)
	}
	l, err := v.e.AcquireLease(owner, &lifeline.LeaseRequest{Scope: "task_1", AgentID: "a1"})
	if err != nil {
		t.Fatal(err)
	}
	lb, err := v.e.AcquireLease(other, &lifeline.LeaseRequest{Scope: "task_2", AgentID: "b1"})
	if err != nil {
		t.Fatal(err)
	}
	p := 40
	task, err := v.e.UpdateTask(owner, "task_1", l.LeaseID, &lifeline.TaskUpdate{Status: "running", Progress: &p, Message: "half"})
	if err != nil || task.Fence != 1 || task.AgentID != "a1" || task.Progress != 40 {
		t.Fatalf("%+v %v", task, err)
	}
	for name, tc := range map[string]struct {
		ctx   context.Context
		task  string
		lease string
	}{
		"OtherAgentsKey":     {other, "task_1", l.LeaseID},
		"LeaseOnAnotherTask": {owner, "task_2", l.LeaseID},
		"SomeoneElsesLease":  {owner, "task_2", lb.LeaseID},
		"UnknownLease":       {owner, "task_1", "lease_nope"},
		"NoLease":            {owner, "task_1", ""},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := v.e.UpdateTask(tc.ctx, tc.task, tc.lease, &lifeline.TaskUpdate{Status: "completed"}); lifeline.ErrorCode(err) != lifeline.EPreconditionFailed {
				t.Fatalf("%v", err)
			}
		})
	}
	got, err := v.e.FindTask(context.Background(), "task_1")
	if err != nil || got.Status != "running" || got.Message != "half" {
		t.Fatalf("nothing is written on 412: %+v %v", got, err)
	}
	if _, err := v.e.UpdateTask(owner, "task_1", l.LeaseID, &lifeline.TaskUpdate{Status: "bogus"}); lifeline.ErrorCode(err) != lifeline.EInvalid {
		t.Fatalf("bad status: %v", err)
	}
}

func TestHeartbeatStopTask(t *testing.T) {
	v := newEnv(t)
	v.register("a1", 10, 20, 40)
	v.register("b1", 10, 20, 40)
	v.mustAcquire("a1", "task_mine", 60)
	v.mustAcquire("b1", "task_theirs", 60)
	ack, err := v.e.Heartbeat(context.Background(), "a1", &lifeline.Heartbeat{Status: lifeline.StatusActive, ClientTimestamp: v.clk.Now(),
		TasksInProgress: []string{"task_mine", "task_theirs", "task_nobody"}})
	if err != nil {
		t.Fatal(err)
	}
	want := []lifeline.Command{
		{Command: "stop_task", TaskID: "task_theirs", Reason: "lease_expired"},
		{Command: "stop_task", TaskID: "task_nobody", Reason: "lease_expired"},
	}
	if len(ack.PendingCommands) != 2 || ack.PendingCommands[0] != want[0] || ack.PendingCommands[1] != want[1] {
		t.Fatalf("%+v", ack.PendingCommands)
	}
	ack, err = v.e.Heartbeat(context.Background(), "a1", &lifeline.Heartbeat{Status: lifeline.StatusActive, ClientTimestamp: v.clk.Now(), TasksInProgress: []string{"task_mine"}})
	if err != nil || len(ack.PendingCommands) != 0 {
		t.Fatalf("%+v %v", ack, err)
	}
}
