package stream_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/lifeline-dev/lifeline"
	"github.com/lifeline-dev/lifeline/stream"
)

func TestWebSocketMessages(t *testing.T) {
	h := start(t, stream.Config{BatchInterval: 50 * time.Millisecond})
	key, _ := h.newKey(lifeline.RoleAgent)
	h.register(key, "worker-1")
	c := h.mustDial("worker-1", key)

	// A task update: the first message after a quiet window goes out alone, at once.
	lease := h.lease(key, "worker-1", "task-1")
	h.taskUpdate(key, "task-1", lease, lifeline.TaskRunning, 40, "halfway")
	m := c.next()
	if m.Type != stream.TypeTaskUpdate || m.AgentID != "worker-1" || m.TaskID != "task-1" ||
		m.Status != "running" || m.Progress != 40 || m.Message != "halfway" {
		t.Fatalf("task update: %s", m.raw)
	}
	if _, ok := rawFields(t, m.raw)["message"]; !ok {
		t.Errorf("task_update without message: %s", m.raw)
	}

	// A lifecycle transition carries the latest task update as execution_status.
	time.Sleep(60 * time.Millisecond)
	expect(t, h.do("DELETE", "/api/v1/agents/worker-1", key, nil), 204)
	m = c.next()
	if m.Type != stream.TypeStatusUpdate || m.Status != "deregistered" || m.AgentID != "worker-1" {
		t.Fatalf("status update: %s", m.raw)
	}
	want := stream.ExecutionStatus{State: "running", TaskID: "task-1", Progress: 40, Message: "halfway"}
	if m.ExecutionStatus == nil || *m.ExecutionStatus != want {
		t.Fatalf("execution_status = %+v, want %+v", m.ExecutionStatus, want)
	}
}

// rawFields returns the members of a JSON object.
func rawFields(t *testing.T, data []byte) map[string]json.RawMessage {
	t.Helper()
	var f map[string]json.RawMessage
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestWebSocketExecutionStatusFromLog(t *testing.T) {
	h := start(t, stream.Config{})
	key, _ := h.newKey(lifeline.RoleAgent)
	h.register(key, "worker-1")
	lease := h.lease(key, "worker-1", "task-9")
	h.taskUpdate(key, "task-9", lease, lifeline.TaskRunning, 70, "nearly")

	// The first watcher connects after the update, and after a restart: the status
	// comes from the event log.
	h.restart()
	c := h.mustDial("worker-1", key)
	expect(t, h.do("DELETE", "/api/v1/agents/worker-1", key, nil), 204)
	m := c.next()
	want := stream.ExecutionStatus{State: "running", TaskID: "task-9", Progress: 70, Message: "nearly"}
	if m.Type != stream.TypeStatusUpdate || m.ExecutionStatus == nil || *m.ExecutionStatus != want {
		t.Fatalf("status update: %s", m.raw)
	}

	// An agent without task updates has a null execution_status.
	h.register(key, "worker-2")
	c2 := h.mustDial("worker-2", key)
	expect(t, h.do("DELETE", "/api/v1/agents/worker-2", key, nil), 204)
	m = c2.next()
	if f := rawFields(t, m.raw); string(f["execution_status"]) != "null" {
		t.Fatalf("execution_status of an agent without tasks: %s", m.raw)
	}
}

func TestWebSocketBatchingKeepsOrder(t *testing.T) {
	const window = 200 * time.Millisecond
	h := start(t, stream.Config{BatchInterval: window})
	h.register(h.admin, "worker-1")
	c := h.mustDial("worker-1", h.admin)

	const n = 30
	evs := make([]lifeline.Event, n)
	for i := range evs {
		evs[i] = taskEvent("worker-1", int64(1000+i), i)
	}
	// The first message after a quiet window goes out alone and at once...
	h.svc.Publish(evs[:1])
	first := c.next()
	sent := time.Now()
	if first.Type != stream.TypeTaskUpdate || first.Message != "step 0" {
		t.Fatalf("first message: %s", first.raw)
	}
	// ...the ones that follow within the window come together when it ends, in order.
	h.svc.Publish(evs[1:10])
	h.svc.Publish(evs[10:])
	m := c.next()
	if d := time.Since(sent); d < window*3/4 {
		t.Errorf("the batch came %v after the first message, inside the %v window", d, window)
	}
	if m.Type != stream.TypeBatchUpdate || len(m.Updates) != n-1 {
		t.Fatalf("want one batch_update of %d, got %s", n-1, m.raw)
	}
	got, err := c.unpack(m)
	if err != nil {
		t.Fatal(err)
	}
	for i, u := range got {
		if u.Type != stream.TypeTaskUpdate || u.Message != fmt.Sprint("step ", i+1) || u.AgentID != "worker-1" {
			t.Fatalf("batched message %d out of order: %s", i, u.raw)
		}
	}
}

// taskEvent is a committed task.update event as the engine publishes it.
func taskEvent(agent string, seq int64, i int) lifeline.Event {
	now := time.Now().UTC()
	return lifeline.Event{
		Seq: seq, Type: lifeline.EventTaskUpdate, AgentID: agent, Timestamp: now, LeaseID: "lease-x", Scope: "task-x", Fence: 1,
		Task: &lifeline.Task{TaskID: "task-x", AgentID: agent, LeaseID: "lease-x", Fence: 1, Status: lifeline.TaskRunning,
			Progress: i % 101, Message: fmt.Sprint("step ", i), UpdatedAt: now},
	}
}

func TestWebSocketOfflineQueue(t *testing.T) {
	h := start(t, stream.Config{MaxQueueSize: 5, BatchInterval: 20 * time.Millisecond})
	key, _ := h.newKey(lifeline.RoleAgent)
	h.register(key, "worker-1")
	c := h.mustDial("worker-1", key)
	c.ws.Close(websocket.StatusNormalClosure, "")
	eventually(t, "the connection to close", func() bool { return h.stats().ActiveConnections == 0 })

	lease := h.lease(key, "worker-1", "task-1")
	for i := 1; i <= 8; i++ {
		h.taskUpdate(key, "task-1", lease, lifeline.TaskRunning, i*10, fmt.Sprint("update ", i))
	}
	eventually(t, "8 queued updates", func() bool { s := h.stats(); return s.Queued == 5 && s.Dropped == 3 })

	// On connect: connection_established, then the queue as one batch_update holding
	// the newest 5 in order.
	c = h.mustDial("worker-1", key)
	m := c.next()
	if m.Type != stream.TypeBatchUpdate || len(m.Updates) != 5 {
		t.Fatalf("want a batch of 5, got %s", m.raw)
	}
	got, _ := (&wsClient{t: t}).unpack(m)
	for i, u := range got {
		if want := fmt.Sprint("update ", i+4); u.Message != want || u.Type != stream.TypeTaskUpdate {
			t.Fatalf("queued message %d: %s, want %q", i, u.raw, want)
		}
	}
	if s := h.stats(); s.Queued != 0 || s.Dropped != 3 {
		t.Errorf("stats after delivery: %+v", s)
	}

	// A single queued message is also delivered as a batch_update.
	c.ws.Close(websocket.StatusNormalClosure, "")
	eventually(t, "the connection to close", func() bool { return h.stats().ActiveConnections == 0 })
	h.taskUpdate(key, "task-1", lease, lifeline.TaskCompleted, 100, "done")
	eventually(t, "1 queued update", func() bool { return h.stats().Queued == 1 })
	c = h.mustDial("worker-1", key)
	if m := c.next(); m.Type != stream.TypeBatchUpdate || len(m.Updates) != 1 {
		t.Fatalf("want a batch of 1, got %s", m.raw)
	}
}

func (c *wsClient) unpack(m msg) ([]msg, error) {
	var out []msg
	for _, u := range m.Updates {
		var inner msg
		if err := json.Unmarshal(u.Content, &inner); err != nil {
			return nil, err
		}
		inner.raw = u.Content
		out = append(out, inner)
	}
	return out, nil
}

func TestWebSocketMultipleConnections(t *testing.T) {
	h := start(t, stream.Config{})
	key, _ := h.newKey(lifeline.RoleAgent)
	h.register(key, "worker-1")
	cs := []*wsClient{h.mustDial("worker-1", key), h.mustDial("worker-1", key), h.mustDial("worker-1", h.admin)}
	eventually(t, "3 connections", func() bool { return h.stats().ActiveConnections == 3 })
	expect(t, h.do("DELETE", "/api/v1/agents/worker-1", key, nil), 204)
	for i, c := range cs {
		if m := c.next(); m.Type != stream.TypeStatusUpdate || m.Status != "deregistered" {
			t.Errorf("connection %d: %s", i, m.raw)
		}
	}
	// 3 × (connection_established + status_update); the counter may trail the client.
	eventually(t, "6 messages counted", func() bool {
		s := h.stats()
		return s.TotalConnections == 3 && s.ActiveConnections == 3 && s.MessagesSent == 6
	})
	cs[0].ws.Close(websocket.StatusNormalClosure, "")
	eventually(t, "2 connections", func() bool { return h.stats().ActiveConnections == 2 })
}

func TestWebSocketPingPong(t *testing.T) {
	h := start(t, stream.Config{HeartbeatInterval: 100 * time.Millisecond})
	h.register(h.admin, "worker-1")

	// A client that answers every ping stays connected.
	good := h.mustDial("worker-1", h.admin)
	// A silent client reads (so its socket drains) but never answers.
	silent := h.mustDial("worker-1", h.admin)
	silentDone := make(chan error, 1)
	go func() {
		for {
			if _, err := silent.read(10 * time.Second); err != nil {
				silentDone <- err
				return
			}
		}
	}()

	pings := 0
	deadline := time.Now().Add(600 * time.Millisecond)
	for time.Now().Before(deadline) {
		m, err := good.read(time.Second)
		if err != nil {
			t.Fatalf("the answering client was disconnected after %d pings: %v", pings, err)
		}
		if m.Type != stream.TypePing {
			t.Fatalf("unexpected %s", m.raw)
		}
		pings++
		good.send(map[string]string{"type": "pong"})
	}
	if pings < 3 {
		t.Errorf("%d pings in 600 ms at a 100 ms interval", pings)
	}
	select {
	case <-silentDone:
	case <-time.After(2 * time.Second):
		t.Fatal("the silent client is still connected")
	}
	if s := h.stats(); s.Errors < 1 || s.ActiveConnections != 1 {
		t.Errorf("stats %+v: want the silent client counted as an error and gone", s)
	}

	// A client's own ping is answered with a pong.
	good.send(map[string]string{"type": "ping"})
	for {
		m, err := good.read(time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if m.Type == stream.TypePing {
			good.send(map[string]string{"type": "pong"})
			continue
		}
		if m.Type != stream.TypePong {
			t.Fatalf("want a pong, got %s", m.raw)
		}
		break
	}
}

func TestWebSocketAuth(t *testing.T) {
	h := start(t, stream.Config{})
	k1, _ := h.newKey(lifeline.RoleAgent)
	k2, _ := h.newKey(lifeline.RoleAgent)
	coord, _ := h.newKey(lifeline.RoleCoordinator)
	h.register(k1, "agent-1")
	h.register(k2, "agent-2")

	status := func(agent, key string, query ...string) int {
		t.Helper()
		c, res, err := h.dial(agent, key, query...)
		if err == nil {
			c.ws.CloseNow()
			return http.StatusSwitchingProtocols
		}
		if res == nil {
			t.Fatalf("dial %s: %v", agent, err)
		}
		return res.StatusCode
	}
	for _, tt := range []struct {
		name, agent, key string
		want             int
	}{
		{"OwnAgent", "agent-1", k1, 101},
		{"AnotherKeysAgentForbidden", "agent-2", k1, 403},
		{"CoordinatorAnyAgent", "agent-2", coord, 101},
		{"AdminAnyAgent", "agent-1", h.admin, 101},
		{"NoKeyUnauthorized", "agent-1", "", 401},
		{"BadKeyUnauthorized", "agent-1", "ll_nope", 401},
		{"UnknownAgentNotFound", "agent-9", h.admin, 404},
		{"BadAgentIDInvalid", "-bad", h.admin, 400},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := status(tt.agent, tt.key); got != tt.want {
				t.Errorf("status %d, want %d", got, tt.want)
			}
		})
	}

	t.Run("TicketOnce", func(t *testing.T) {
		var tk stream.Ticket
		expect(t, h.do("POST", "/api/v1/stream-tickets", k1, nil), 201).json(t, &tk)
		if !strings.HasPrefix(tk.Ticket, "st_") || time.Until(tk.ExpiresAt) <= 0 {
			t.Fatalf("ticket %+v", tk)
		}
		h.mustDial("agent-1", "", "ticket="+tk.Ticket)
		if got := status("agent-1", "", "ticket="+tk.Ticket); got != 401 {
			t.Errorf("reused ticket: %d, want 401", got)
		}
	})
	t.Run("TicketKeepsOwnership", func(t *testing.T) {
		var tk stream.Ticket
		expect(t, h.do("POST", "/api/v1/stream-tickets", k1, map[string]any{}), 201).json(t, &tk)
		if got := status("agent-2", "", "ticket="+tk.Ticket); got != 403 {
			t.Errorf("agent key's ticket for another agent: %d, want 403", got)
		}
	})
	t.Run("TicketBodyInvalid", func(t *testing.T) {
		r := expect(t, h.do("POST", "/api/v1/stream-tickets", k1, map[string]any{"agent_id": "x"}), 400)
		if code := r.problem(t); code != lifeline.EInvalid {
			t.Errorf("code %q", code)
		}
	})
	t.Run("NotAnUpgradeInvalid", func(t *testing.T) {
		r := expect(t, h.do("GET", "/agents/agent-1/ws", k1, nil), 400)
		if code := r.problem(t); code != lifeline.EInvalid {
			t.Errorf("code %q", code)
		}
	})
	t.Run("ForeignOriginForbidden", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, res, err := websocket.Dial(ctx, h.wsURL("agent-1"), &websocket.DialOptions{
			HTTPClient: h.c, HTTPHeader: http.Header{"X-Api-Key": {k1}, "Origin": {"https://evil.example"}},
		})
		if err == nil || res == nil || res.StatusCode != 403 {
			t.Fatalf("foreign origin: %v %v", res, err)
		}
	})
	t.Run("StatsForbiddenToAgents", func(t *testing.T) {
		expect(t, h.do("GET", "/agents/ws/stats", k1, nil), 403)
		expect(t, h.do("GET", "/agents/ws/stats", coord, nil), 200)
	})
}

// stalledConn opens a WebSocket that completes the handshake and then never reads,
// with a small receive buffer so that the server's writes back up quickly.
func stalledConn(t *testing.T, h *harness, agent string) net.Conn {
	t.Helper()
	conn := h.stalledConnNoCleanup(agent)
	t.Cleanup(func() { conn.Close() })
	return conn
}

// stalledConnNoCleanup is stalledConn; the connection lives until the server closes it.
func (h *harness) stalledConnNoCleanup(agent string) net.Conn {
	t := h.t
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	conn, err := d.Dial("tcp", strings.TrimPrefix(h.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "GET /agents/%s/ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nX-API-Key: %s\r\n\r\n",
		agent, strings.TrimPrefix(h.url, "http://"), h.admin)
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil || res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("stalled client handshake: %v %v", res, err)
	}
	return conn
}

func TestWebSocketSlowSubscriberDoesNotHoldOthers(t *testing.T) {
	h := start(t, stream.Config{SendQueueSize: 128, BatchInterval: -1})
	h.register(h.admin, "worker-1")
	stalledConn(t, h, "worker-1")
	fast := h.mustDial("worker-1", h.admin)
	eventually(t, "2 connections", func() bool { return h.stats().ActiveConnections == 2 })

	// 800 updates of 16 KiB each: far more than the stalled client's socket buffers.
	result := json.RawMessage(`"` + strings.Repeat("x", 16<<10-2) + `"`)
	const n = 800
	start := time.Now()
	go func() {
		for i := range n {
			ev := taskEvent("worker-1", int64(i+1), i)
			ev.Task.Result = result
			h.svc.Publish([]lifeline.Event{ev})
			time.Sleep(2 * time.Millisecond)
		}
	}()
	got, _ := fast.flat(n)
	for i, m := range got {
		if m.Message != fmt.Sprint("step ", i) {
			t.Fatalf("message %d: %q", i, m.Message)
		}
	}
	t.Logf("the fast client got %d × 16 KiB in %v", n, time.Since(start))
	eventually(t, "the stalled client to be disconnected", func() bool {
		s := h.stats()
		return s.ActiveConnections == 1 && s.Errors >= 1 && s.Dropped > 0
	})
}
