package client_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline"
	"github.com/lifeline-dev/lifeline/client"
)

// TestLive runs the client through an agent's whole life against a running server. It
// is skipped unless LIFELINE_TEST_SERVER (base URL) and LIFELINE_TEST_ADMIN_KEY are set:
//
//	LIFELINE_ADMIN_KEY=s3cret-admin-key lifeline serve --listen 127.0.0.1:18080 --data-dir "$(mktemp -d)" &
//	LIFELINE_TEST_SERVER=http://127.0.0.1:18080 LIFELINE_TEST_ADMIN_KEY=s3cret-admin-key go test ./client/ -run Live
func TestLive(t *testing.T) {
	server, adminKey := os.Getenv("LIFELINE_TEST_SERVER"), os.Getenv("LIFELINE_TEST_ADMIN_KEY")
	if server == "" || adminKey == "" {
		t.Skip("LIFELINE_TEST_SERVER and LIFELINE_TEST_ADMIN_KEY not set")
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
