package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/lifeline-dev/lifeline"
)

func newLease(id, scope, agent string, fence int64) *lifeline.Lease {
	return &lifeline.Lease{
		LeaseID: id, Scope: scope, AgentID: agent, Fence: fence, Status: lifeline.LeaseActive,
		AcquiredAt: at(1).UTC(), ExpiresAt: at(61).UTC(), TTLSeconds: 60,
	}
}

func mustLease(t *testing.T, s lifeline.Store, id string) *lifeline.Lease {
	t.Helper()
	l, err := s.Lease(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func testLeaseRoundTrip(t *testing.T, s lifeline.Store) {
	l := newLease("lease_1", "task_1", "a1", 1)
	ev := lifeline.Event{Type: lifeline.EventLeaseAcquired, AgentID: "a1", LeaseID: "lease_1", Scope: "task_1", Fence: 1, Timestamp: at(1).UTC(), ExpiresAt: ptr(at(61).UTC())}
	mustApply(t, s, lifeline.Change{Leases: []*lifeline.Lease{l}, Events: []lifeline.Event{ev}})
	if diff := cmp.Diff(l, mustLease(t, s, "lease_1")); diff != "" {
		t.Fatalf("lease (-want +got):\n%s", diff)
	}
	evs := allEvents(t, s)
	ev.Seq = 1
	if diff := cmp.Diff([]lifeline.Event{ev}, evs); diff != "" {
		t.Fatalf("events (-want +got):\n%s", diff)
	}
	ended := *l
	ended.Status, ended.EndedAt, ended.Reason = lifeline.LeaseExpired, ptr(at(70).UTC()), lifeline.LeaseReasonTTLElapsed
	mustApply(t, s, lifeline.Change{Leases: []*lifeline.Lease{&ended}})
	if diff := cmp.Diff(&ended, mustLease(t, s, "lease_1")); diff != "" {
		t.Fatalf("ended lease (-want +got):\n%s", diff)
	}
	active, err := s.ActiveLeases(context.Background())
	if err != nil || len(active) != 0 {
		t.Fatalf("active after end: %v %v", active, err)
	}
	if _, err := s.Lease(context.Background(), "nope"); lifeline.ErrorCode(err) != lifeline.ENotFound {
		t.Fatalf("unknown lease: %v", err)
	}
}

func testLeaseOneActivePerScope(t *testing.T, s lifeline.Store) {
	mustApply(t, s, lifeline.Change{Leases: []*lifeline.Lease{newLease("lease_1", "task_1", "a1", 1)}})
	err := s.Apply(context.Background(), []lifeline.Change{{Leases: []*lifeline.Lease{newLease("lease_2", "task_1", "a2", 2)}}})
	if lifeline.ErrorCode(err) != lifeline.EConflict {
		t.Fatalf("second active lease on a scope: %v", err)
	}
	// Ending the first and starting the next in one batch is fine.
	ended := newLease("lease_1", "task_1", "a1", 1)
	ended.Status, ended.EndedAt, ended.Reason = lifeline.LeaseReleased, ptr(at(5).UTC()), lifeline.LeaseReasonReleased
	mustApply(t, s, lifeline.Change{Leases: []*lifeline.Lease{ended, newLease("lease_2", "task_1", "a2", 2)}})
	active, err := s.ActiveLeases(context.Background())
	if err != nil || len(active) != 1 || active[0].LeaseID != "lease_2" {
		t.Fatalf("active %v %v", active, err)
	}
}

func testLeaseFencesSurviveEnd(t *testing.T, s lifeline.Store) {
	l1 := newLease("lease_1", "task_1", "a1", 1)
	l1.Status, l1.EndedAt, l1.Reason = lifeline.LeaseExpired, ptr(at(9).UTC()), lifeline.LeaseReasonAgentDead
	mustApply(t, s, lifeline.Change{Leases: []*lifeline.Lease{l1, newLease("lease_2", "task_2", "a1", 7)}})
	f, err := s.LeaseFences(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]int64{"task_1": 1, "task_2": 7}, f); diff != "" {
		t.Fatalf("fences (-want +got):\n%s", diff)
	}
}

func testLeasesFilterAndPage(t *testing.T, s lifeline.Store) {
	var ls []*lifeline.Lease
	for i, agent := range []string{"a1", "a2", "a1", "a1"} {
		l := newLease("lease_"+string(rune('a'+i)), "task_"+string(rune('a'+i)), agent, 1)
		if i == 2 {
			l.Status, l.EndedAt, l.Reason = lifeline.LeaseReleased, ptr(at(3).UTC()), lifeline.LeaseReasonReleased
		}
		ls = append(ls, l)
	}
	mustApply(t, s, lifeline.Change{Leases: ls})
	ids := func(f lifeline.LeaseFilter) []string {
		got, err := s.Leases(context.Background(), f)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, l := range got {
			out = append(out, l.LeaseID)
		}
		return out
	}
	for _, tc := range []struct {
		f    lifeline.LeaseFilter
		want []string
	}{
		{lifeline.LeaseFilter{}, []string{"lease_a", "lease_b", "lease_c", "lease_d"}},
		{lifeline.LeaseFilter{AgentID: "a1"}, []string{"lease_a", "lease_c", "lease_d"}},
		{lifeline.LeaseFilter{AgentID: "a1", Statuses: []lifeline.LeaseStatus{lifeline.LeaseActive}}, []string{"lease_a", "lease_d"}},
		{lifeline.LeaseFilter{Scope: "task_c"}, []string{"lease_c"}},
		{lifeline.LeaseFilter{After: "lease_b", Limit: 1}, []string{"lease_c"}},
	} {
		if diff := cmp.Diff(tc.want, ids(tc.f)); diff != "" {
			t.Errorf("%+v (-want +got):\n%s", tc.f, diff)
		}
	}
}

func testTaskRoundTrip(t *testing.T, s lifeline.Store) {
	if _, err := s.Task(context.Background(), "task_1"); lifeline.ErrorCode(err) != lifeline.ENotFound {
		t.Fatalf("unknown task: %v", err)
	}
	task := &lifeline.Task{TaskID: "task_1", AgentID: "a1", LeaseID: "lease_1", Fence: 3, Status: lifeline.TaskRunning,
		Progress: 40, Message: "halfway", UpdatedAt: at(2).UTC()}
	mustApply(t, s, lifeline.Change{Task: task})
	got, err := s.Task(context.Background(), "task_1")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(task, got); diff != "" {
		t.Fatalf("task (-want +got):\n%s", diff)
	}
	done := *task
	done.Status, done.Progress, done.Result, done.UpdatedAt = lifeline.TaskCompleted, 100, []byte(`{"invoice":"INV-1"}`), at(3).Add(time.Second).UTC()
	mustApply(t, s, lifeline.Change{Task: &done})
	got, err = s.Task(context.Background(), "task_1")
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Result) != `{"invoice":"INV-1"}` || got.Status != lifeline.TaskCompleted {
		t.Fatalf("%+v", got)
	}
}

func testApplyStatusOnly(t *testing.T, s lifeline.Store) {
	a := newAgent("a1")
	mustApply(t, s, lifeline.Change{Agent: a})
	next := *a
	next.Status, next.Version = lifeline.StatusUnhealthy, a.Version+1
	next.Name = "not written" // only lifecycle fields are written
	mustApply(t, s, lifeline.Change{Agent: &next, StatusOnly: true})
	got := mustAgents(t, s)[0]
	if got.Status != lifeline.StatusUnhealthy || got.Version != a.Version+1 || got.Name != a.Name {
		t.Fatalf("%+v", got)
	}
	ghost := newAgent("ghost")
	if err := s.Apply(context.Background(), []lifeline.Change{{Agent: ghost, StatusOnly: true}}); lifeline.ErrorCode(err) != lifeline.ENotFound {
		t.Fatalf("status-only write of an unknown agent: %v", err)
	}
}
