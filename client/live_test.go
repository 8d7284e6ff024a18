package client_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline"
	"github.com/lifeline-dev/lifeline/api"
	"github.com/lifeline-dev/lifeline/client"
	"github.com/lifeline-dev/lifeline/registry"
	"github.com/lifeline-dev/lifeline/sqlite"
)

// startServer runs a real Lifeline for the test and returns its URL and admin key.
func startServer(t *testing.T) (string, string) {
	t.Helper()
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "lifeline.db"))
	if err != nil {
		t.Fatal(err)
	}
	e := registry.New(st, registry.Config{})
	if err := e.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	keys, err := registry.NewKeys(context.Background(), st, nil)
	if err != nil {
		t.Fatal(err)
	}
	const admin = "ll_client_live_admin"
	if _, err := keys.Bootstrap(context.Background(), admin); err != nil {
		t.Fatal(err)
	}
	e.Start()
	srv := httptest.NewServer(api.NewServer(api.Config{Agents: e, Events: e, Keys: keys, Leases: e, Tasks: e, Health: e}))
	t.Cleanup(func() {
		srv.Close()
		e.Close()
		st.Close()
	})
	return srv.URL, admin
}

// TestLive runs the client through an agent's whole life against a real server: an
// in-process Lifeline on 127.0.0.1 over SQLite, or, when LIFELINE_TEST_SERVER (base URL)
// and LIFELINE_TEST_ADMIN_KEY are set, a running one:
//
//	LIFELINE_ADMIN_KEY=s3cret-admin-key lifeline serve --listen 127.0.0.1:18080 --data-dir "$(mktemp -d)" &
//	LIFELINE_TEST_SERVER=http://127.0.0.1:18080 LIFELINE_TEST_ADMIN_KEY=s3cret-admin-key go test ./client/ -run Live
func TestLive(t *testing.T) {
	server, adminKey := os.Getenv("LIFELINE_TEST_SERVER"), os.Getenv("LIFELINE_TEST_ADMIN_KEY")
	if server == "" || adminKey == "" {
		server, adminKey = startServer(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	wantCode := func(t *testing.T, err error, code string) {
		t.Helper()
		if got := lifeline.ErrorCode(err); got != code {
			t.Fatalf("err = %v (code %q), want code %q", err, got, code)
		}
	}

	admin := client.New(server, adminKey)
	if h, err := admin.Health(ctx); err != nil || h.Status != "ok" {
		t.Fatalf("Health = %+v, %v", h, err)
	}

	nk, err := admin.CreateKey(ctx, &lifeline.KeyRequest{Role: lifeline.RoleAgent, Name: "client live test"})
	if err != nil {
		t.Fatal(err)
	}
	agent := client.New(server, nk.Secret)

	id := fmt.Sprintf("live-%d", time.Now().UnixNano())
	role := id + "-pool"
	reg := &lifeline.Registration{AgentID: id, RoleID: role, Capabilities: []string{"live-test"},
		Capacity: &lifeline.RegistrationCapacity{MaxConcurrentTasks: ptr(4)}, Metadata: []byte(`{"test":true}`)}
	a, err := agent.RegisterAgent(ctx, reg)
	if err != nil {
		t.Fatal(err)
	}
	if a.AgentID != id || a.Status != lifeline.StatusActive || a.Version != 1 {
		t.Fatalf("registered %+v", a)
	}
	_, err = agent.RegisterAgent(ctx, reg)
	wantCode(t, err, lifeline.EConflict)
	_, err = agent.RegisterAgent(ctx, &lifeline.Registration{AgentID: "bad id!"})
	wantCode(t, err, lifeline.EInvalid)

	ack, err := agent.Heartbeat(ctx, id, &lifeline.Heartbeat{Status: lifeline.StatusActive, CurrentLoad: ptr(1), ClientTimestamp: time.Now()})
	if err != nil || !ack.Acknowledged || ack.AgentStatus != lifeline.StatusActive {
		t.Fatalf("Heartbeat = %+v, %v", ack, err)
	}

	agents, total, next, err := admin.FindAgents(ctx, lifeline.AgentFilter{RoleID: role, Capabilities: []string{"live-test"}, MinAvailableCapacity: ptr(3)})
	if err != nil || total != 1 || next != "" || len(agents) != 1 || agents[0].Capacity.CurrentLoad != 1 {
		t.Fatalf("FindAgents = %v, %d, %q, %v", agents, total, next, err)
	}
	if p, err := admin.FindPool(ctx, role); err != nil || p.Members != 1 {
		t.Fatalf("FindPool = %+v, %v", p, err)
	}
	_, err = admin.FindPool(ctx, id+"-no-such-pool")
	wantCode(t, err, lifeline.ENotFound)

	got, err := admin.SendCommand(ctx, id, &lifeline.Command{Command: lifeline.CommandDrain, Reason: "live test"})
	if err != nil || got.AgentID != id || got.PendingCommand == nil || got.PendingCommand.Command != lifeline.CommandDrain {
		t.Fatalf("SendCommand = %+v, %v", got, err)
	}
	ack, err = agent.Heartbeat(ctx, id, &lifeline.Heartbeat{Status: lifeline.StatusActive, ClientTimestamp: time.Now()})
	if err != nil || len(ack.PendingCommands) != 1 {
		t.Fatalf("Heartbeat after command = %+v, %v", ack, err)
	}

	// Leases and fenced task writes.
	task := id + "-task"
	l, err := agent.AcquireLease(ctx, &lifeline.LeaseRequest{Scope: task, AgentID: id, TTLSeconds: ptr(30)})
	if err != nil || l.Fence != 1 || l.Status != lifeline.LeaseActive {
		t.Fatalf("AcquireLease = %+v, %v", l, err)
	}
	_, err = agent.AcquireLease(ctx, &lifeline.LeaseRequest{Scope: task, AgentID: id})
	wantCode(t, err, lifeline.EConflict)
	if h, ok := client.Holder(err); !ok || h.AgentID != id || h.LeaseID != l.LeaseID || h.ExpiresAt.IsZero() {
		t.Fatalf("Holder = %+v, %v", h, ok)
	}
	if _, err := agent.RenewLease(ctx, l.LeaseID, &lifeline.LeaseRenewal{TTLSeconds: ptr(60)}); err != nil {
		t.Fatal(err)
	}
	tk, err := agent.UpdateTask(ctx, task, l.LeaseID, &lifeline.TaskUpdate{Status: lifeline.TaskCompleted, Result: []byte(`{"ok":true}`)})
	if err != nil || tk.Fence != 1 || tk.Progress != 100 {
		t.Fatalf("UpdateTask = %+v, %v", tk, err)
	}
	_, err = agent.UpdateTask(ctx, task, "lease_wrong", &lifeline.TaskUpdate{Status: lifeline.TaskFailed})
	wantCode(t, err, lifeline.EPreconditionFailed)
	if got, err := agent.FindTask(ctx, task); err != nil || string(got.Result) != `{"ok":true}` {
		t.Fatalf("FindTask = %+v, %v", got, err)
	}
	if ls, _, err := agent.FindLeases(ctx, lifeline.LeaseFilter{AgentID: id}); err != nil || len(ls) != 1 {
		t.Fatalf("FindLeases = %+v, %v", ls, err)
	}
	if err := agent.ReleaseLease(ctx, l.LeaseID); err != nil {
		t.Fatal(err)
	}
	wantCode(t, agent.ReleaseLease(ctx, l.LeaseID), lifeline.EGone)

	cur, err := agent.FindAgentByID(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	_, err = agent.UpdateStatus(ctx, id, cur.Version+100, &lifeline.StatusUpdate{Status: lifeline.StatusDraining})
	wantCode(t, err, lifeline.EPreconditionFailed)
	drained, err := agent.UpdateStatus(ctx, id, cur.Version, &lifeline.StatusUpdate{Status: lifeline.StatusDraining})
	if err != nil || drained.Version <= cur.Version {
		t.Fatalf("UpdateStatus = %+v, %v", drained, err)
	}
	if drained.Status != lifeline.StatusDeregistered {
		if err := agent.DeregisterAgent(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	_, err = agent.UpdateStatus(ctx, id, -1, &lifeline.StatusUpdate{Status: lifeline.StatusDraining})
	wantCode(t, err, lifeline.EConflict)
	_, err = agent.Heartbeat(ctx, id, &lifeline.Heartbeat{Status: lifeline.StatusActive, ClientTimestamp: time.Now()})
	wantCode(t, err, lifeline.EGone)

	events, nextAfter, err := admin.FindEvents(ctx, lifeline.EventFilter{AgentID: id, Types: []string{lifeline.EventAgentLifecycle}})
	if err != nil || len(events) < 2 || nextAfter != events[len(events)-1].Seq {
		t.Fatalf("FindEvents = %+v, %d, %v", events, nextAfter, err)
	}

	keys, err := admin.Keys(ctx)
	if err != nil || !slices.ContainsFunc(keys, func(k *lifeline.Key) bool { return k.ID == nk.ID }) {
		t.Fatalf("Keys = %v, %v", keys, err)
	}
	if err := admin.RevokeKey(ctx, nk.ID); err != nil {
		t.Fatal(err)
	}
	_, err = agent.FindAgentByID(ctx, id)
	wantCode(t, err, lifeline.EUnauthorized)
	wantCode(t, admin.RevokeKey(ctx, "key_no_such_key"), lifeline.ENotFound)
}
