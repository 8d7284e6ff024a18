package api_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline"
	"github.com/lifeline-dev/lifeline/registry"
)

func (h *harness) acquire(key, agent, scope string, ttl int) resp {
	h.t.Helper()
	return h.do("POST", "/api/v1/leases", key, map[string]any{"scope": scope, "agent_id": agent, "ttl_seconds": ttl})
}

func (h *harness) mustAcquire(key, agent, scope string, ttl int) lifeline.Lease {
	h.t.Helper()
	var l lifeline.Lease
	expect(h.t, h.acquire(key, agent, scope, ttl), 201).json(h.t, &l)
	return l
}

func (h *harness) taskUpdate(key, task, lease string, body any) resp {
	h.t.Helper()
	return h.do("POST", "/api/v1/tasks/"+task+"/updates", key, body, "X-Lease-ID", lease)
}

// waitEvent polls the event log until an event matching match arrives.
func (h *harness) waitEvent(query string, match func(lifeline.Event) bool) lifeline.Event {
	h.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		for _, e := range h.events(query) {
			if match(e) {
				return e
			}
		}
		time.Sleep(25 * time.Millisecond)
	}
	h.t.Fatalf("no matching event for %q", query)
	return lifeline.Event{}
}

// TestPartitionStory is RFC-0016 §4.6 end to end over HTTP with the shortest
// thresholds: agent A holds a lease and goes silent, becomes unhealthy then dead, its
// lease expires with agent_dead, agent B takes the task with a higher fence; when A
// comes back its heartbeat is refused (410), it re-registers, its stale write is
// refused (412), its heartbeat tells it to stop the task, and only B's result stands.
func TestPartitionStory(t *testing.T) {
	h := start(t, registry.Config{SweepInterval: 20 * time.Millisecond})
	keyA, keyB := h.newKey(lifeline.RoleAgent), h.newKey(lifeline.RoleAgent)
	h.register(keyA, "agent_a", 1, 2, 4)
	h.register(keyB, "agent_b", 30, 90, 300)
	la := h.mustAcquire(keyA, "agent_a", "task_01H001", 3600)
	if la.Fence != 1 {
		t.Fatalf("%+v", la)
	}
	expect(t, h.taskUpdate(keyA, "task_01H001", la.LeaseID, map[string]any{"status": "running", "progress": 10}), 202)

	// A goes silent: unhealthy, then dead, then its lease expires because it died.
	h.waitEvent("agent_id=agent_a&type=lease.expired", func(e lifeline.Event) bool { return e.LeaseID == la.LeaseID })
	var got []string
	for _, e := range h.events("agent_id=agent_a") {
		got = append(got, e.Type+":"+string(e.NewStatus)+":"+e.Reason)
	}
	want := "agent.lifecycle:active:registered lease.acquired:: task.update:: agent.lifecycle:unhealthy:heartbeat_timeout " +
		"agent.lifecycle:dead:heartbeat_timeout lease.expired::agent_dead"
	if strings.Join(got, " ") != want {
		t.Fatalf("A's events:\n%v\nwant\n%s", got, want)
	}
	var expired lifeline.Lease
	expect(t, h.do("GET", "/api/v1/leases/"+la.LeaseID, keyA, nil), 200).json(t, &expired)
	if expired.Status != "expired" || expired.Reason != "agent_dead" || expired.EndedAt == nil {
		t.Fatalf("%+v", expired)
	}

	// The coordinator gives the task to B, with a higher fence.
	lb := h.mustAcquire(keyB, "agent_b", "task_01H001", 3600)
	if lb.Fence != 2 {
		t.Fatalf("B's fence %d", lb.Fence)
	}
	expect(t, h.taskUpdate(keyB, "task_01H001", lb.LeaseID, map[string]any{"status": "completed", "result": map[string]string{"by": "B"}}), 202)

	// The partition heals. A's heartbeat is refused; it registers again.
	if r := expect(t, h.beat(keyA, "agent_a"), 410); r.problem(t).Code != "gone" {
		t.Fatal(string(r.body))
	}
	h.register(keyA, "agent_a", 1, 2, 4)
	// Its write under the old lease is refused and changes nothing.
	if r := expect(t, h.taskUpdate(keyA, "task_01H001", la.LeaseID, map[string]any{"status": "completed", "result": map[string]string{"by": "A"}}), 412); r.problem(t).Code != "precondition_failed" {
		t.Fatal(string(r.body))
	}
	// Its heartbeat, still listing the task, tells it to stop.
	var ack lifeline.HeartbeatAck
	expect(t, h.beat(keyA, "agent_a", "tasks_in_progress", []string{"task_01H001"}), 200).json(t, &ack)
	if len(ack.PendingCommands) != 1 || ack.PendingCommands[0] != (lifeline.Command{Command: "stop_task", TaskID: "task_01H001", Reason: "lease_expired"}) {
		t.Fatalf("%+v", ack)
	}
	var task lifeline.Task
	expect(t, h.do("GET", "/api/v1/tasks/task_01H001", keyB, nil), 200).json(t, &task)
	if task.AgentID != "agent_b" || task.Fence != 2 || task.Status != "completed" || string(task.Result) != `{"by":"B"}` || task.Progress != 100 {
		t.Fatalf("%+v", task)
	}
}

func TestLeaseEndpoints(t *testing.T) {
	h := start(t, registry.Config{})
	owner, other := h.newKey(lifeline.RoleAgent), h.newKey(lifeline.RoleAgent)
	coord := h.newKey(lifeline.RoleCoordinator)
	h.register(owner, "a1")
	h.register(other, "b1")
	l := h.mustAcquire(owner, "a1", "task_1", 60)
	r := h.acquire(owner, "a1", "task_1", 60)
	if r.StatusCode != 409 || !strings.Contains(string(r.body), `"holder":"a1"`) || !strings.Contains(string(r.body), `"lease_id":"`+l.LeaseID+`"`) {
		t.Fatalf("%d %s", r.StatusCode, r.body)
	}
	expect(t, h.acquire(other, "a1", "task_2", 60), 403)
	expect(t, h.acquire(coord, "b1", "task_2", 60), 201) // assignment by a coordinator
	expect(t, h.acquire(owner, "ghost", "task_3", 60), 404)
	for _, body := range []string{`{"scope":"t","agent_id":"a1","ttl_seconds":0}`, `{"scope":"bad scope","agent_id":"a1"}`,
		`{"agent_id":"a1"}`, `{"scope":"t","agent_id":"a1","x":1}`, `{"scope":"t","agent_id":"a1","ttl_seconds":86401}`} {
		expect(t, h.do("POST", "/api/v1/leases", owner, body), 400)
	}

	var got lifeline.Lease
	expect(t, h.do("GET", "/api/v1/leases/"+l.LeaseID, owner, nil), 200).json(t, &got)
	if got != l {
		t.Fatalf("%+v != %+v", got, l)
	}
	expect(t, h.do("GET", "/api/v1/leases/"+l.LeaseID, other, nil), 403)
	expect(t, h.do("GET", "/api/v1/leases/lease_nope", owner, nil), 404)

	expect(t, h.do("PATCH", "/api/v1/leases/"+l.LeaseID, owner, map[string]int{"ttl_seconds": 120}), 200).json(t, &got)
	if got.TTLSeconds != 120 || !got.ExpiresAt.After(l.ExpiresAt) {
		t.Fatalf("%+v", got)
	}
	expect(t, h.do("PATCH", "/api/v1/leases/"+l.LeaseID, other, map[string]int{}), 403)

	var list struct {
		Leases []lifeline.Lease `json:"leases"`
		Next   string           `json:"next_cursor"`
	}
	expect(t, h.do("GET", "/api/v1/leases?agent_id=a1", owner, nil), 200).json(t, &list)
	if len(list.Leases) != 1 {
		t.Fatalf("%+v", list)
	}
	expect(t, h.do("GET", "/api/v1/leases", owner, nil), 403)
	expect(t, h.do("GET", "/api/v1/leases?agent_id=b1", owner, nil), 403)
	expect(t, h.do("GET", "/api/v1/leases?status=active&limit=1", coord, nil), 200).json(t, &list)
	if len(list.Leases) != 1 || list.Next == "" {
		t.Fatalf("%+v", list)
	}
	expect(t, h.do("GET", "/api/v1/leases?status=bogus", coord, nil), 400)

	expect(t, h.do("DELETE", "/api/v1/leases/"+l.LeaseID, owner, nil), 204)
	expect(t, h.do("DELETE", "/api/v1/leases/"+l.LeaseID, owner, nil), 410)
	if r := expect(t, h.do("PATCH", "/api/v1/leases/"+l.LeaseID, owner, map[string]int{}), 410); r.problem(t).Code != "gone" {
		t.Fatal(string(r.body))
	}
	ev := h.events("type=lease.released")
	if len(ev) != 1 || ev[0].LeaseID != l.LeaseID || ev[0].Reason != "released" {
		t.Fatalf("%+v", ev)
	}

	l2 := h.mustAcquire(owner, "a1", "task_9", 60)
	expect(t, h.do("POST", "/api/v1/leases/"+l2.LeaseID+"/revoke", coord, nil), 403)
	expect(t, h.do("POST", "/api/v1/leases/"+l2.LeaseID+"/revoke", h.admin, nil), 200).json(t, &got)
	if got.Status != "revoked" || got.Reason != "revoked" {
		t.Fatalf("%+v", got)
	}
}

func TestLeaseDrainHTTP(t *testing.T) {
	h := start(t, registry.Config{SweepInterval: 20 * time.Millisecond})
	key := h.newKey(lifeline.RoleAgent)
	h.register(key, "d1")
	l := h.mustAcquire(key, "d1", "task_1", 60)
	var a lifeline.Agent
	expect(t, h.do("PATCH", "/api/v1/agents/d1/status", key, map[string]any{"status": "draining", "drain_timeout_seconds": 60}, "If-Match", `"1"`), 200).json(t, &a)
	if a.Status != "draining" || a.DrainDeadline == nil {
		t.Fatalf("%+v", a)
	}
	if r := expect(t, h.acquire(key, "d1", "task_2", 60), 409); r.problem(t).Code != "agent_draining" {
		t.Fatal(string(r.body))
	}
	expect(t, h.do("PATCH", "/api/v1/leases/"+l.LeaseID, key, map[string]int{"ttl_seconds": 30}), 200)
	expect(t, h.do("DELETE", "/api/v1/leases/"+l.LeaseID, key, nil), 204)
	expect(t, h.do("GET", "/api/v1/agents/d1", key, nil), 200).json(t, &a)
	if a.Status != "deregistered" {
		t.Fatalf("%+v", a)
	}
	// Drain timeout with work held: dead, lease expired with drain_timeout.
	h.register(key, "d2")
	l = h.mustAcquire(key, "d2", "task_3", 600)
	expect(t, h.do("PATCH", "/api/v1/agents/d2/status", key, map[string]any{"status": "draining", "drain_timeout_seconds": 1}, "If-Match", `"1"`), 200)
	e := h.waitEvent("type=lease.expired&agent_id=d2", func(e lifeline.Event) bool { return true })
	if e.Reason != "drain_timeout" {
		t.Fatalf("%+v", e)
	}
	expect(t, h.do("GET", "/api/v1/agents/d2", key, nil), 200).json(t, &a)
	if a.Status != "dead" {
		t.Fatalf("%+v", a)
	}
}

func TestTaskUpdatesHTTP(t *testing.T) {
	h := start(t, registry.Config{})
	owner, other := h.newKey(lifeline.RoleAgent), h.newKey(lifeline.RoleAgent)
	h.register(owner, "a1")
	h.register(other, "b1")
	l := h.mustAcquire(owner, "a1", "task_1", 60)
	lb := h.mustAcquire(other, "b1", "task_2", 60)
	var task lifeline.Task
	expect(t, h.taskUpdate(owner, "task_1", l.LeaseID, map[string]any{"status": "running", "progress": 50, "message": "half"}), 202).json(t, &task)
	if task.Progress != 50 || task.LeaseID != l.LeaseID || task.Fence != 1 {
		t.Fatalf("%+v", task)
	}
	for name, c := range map[string]struct{ key, task, lease string }{
		"OtherKey":       {other, "task_1", l.LeaseID},
		"WrongTask":      {owner, "task_2", l.LeaseID},
		"SomeoneElses":   {owner, "task_2", lb.LeaseID},
		"UnknownLease":   {owner, "task_1", "lease_x"},
		"MissingLeaseID": {owner, "task_1", ""},
	} {
		t.Run(name, func(t *testing.T) {
			expect(t, h.taskUpdate(c.key, c.task, c.lease, map[string]any{"status": "failed"}), 412)
		})
	}
	expect(t, h.taskUpdate(owner, "task_1", l.LeaseID, map[string]any{"status": "paused"}), 400)
	expect(t, h.taskUpdate(owner, "task_1", l.LeaseID, map[string]any{"status": "running", "progress": 101}), 400)
	expect(t, h.do("GET", "/api/v1/tasks/task_1", owner, nil), 200).json(t, &task)
	if task.Message != "half" || task.Status != "running" {
		t.Fatalf("nothing written on 412/400: %+v", task)
	}
	expect(t, h.do("GET", "/api/v1/tasks/task_none", owner, nil), 404)
	if ev := h.events("type=task.update"); len(ev) != 1 || ev[0].Task == nil || ev[0].Task.Progress != 50 {
		t.Fatalf("%+v", ev)
	}
}

func TestConcurrentAcquireHTTP(t *testing.T) {
	h := start(t, registry.Config{})
	const n = 24
	for i := range n {
		h.register(h.admin, fmt.Sprintf("w%02d", i))
	}
	var wg sync.WaitGroup
	codes := make([]int, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i] = h.acquire(h.admin, fmt.Sprintf("w%02d", i), "task_hot", 60).StatusCode
		}()
	}
	wg.Wait()
	wins := 0
	for _, c := range codes {
		switch c {
		case 201:
			wins++
		case 409:
		default:
			t.Fatalf("status %d", c)
		}
	}
	if wins != 1 {
		t.Fatalf("%d winners", wins)
	}
}

func TestLeaseRestartHTTP(t *testing.T) {
	h := start(t, registry.Config{})
	h.register(h.admin, "a1")
	l := h.mustAcquire(h.admin, "a1", "task_1", 2)
	keep := h.mustAcquire(h.admin, "a1", "task_2", 600)
	h.close()
	time.Sleep(2100 * time.Millisecond) // task_1's TTL passes while the server is down
	h.open()
	h.waitEvent("type=lease.expired", func(e lifeline.Event) bool { return e.LeaseID == l.LeaseID && e.Reason == "ttl_elapsed" })
	var got lifeline.Lease
	expect(t, h.do("GET", "/api/v1/leases/"+keep.LeaseID, h.admin, nil), 200).json(t, &got)
	if got.Status != "active" || got.Fence != 1 {
		t.Fatalf("%+v", got)
	}
	if l2 := h.mustAcquire(h.admin, "a1", "task_1", 60); l2.Fence != 2 {
		t.Fatalf("fence %d", l2.Fence)
	}
}
