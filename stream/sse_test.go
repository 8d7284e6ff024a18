package stream_test

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lifeline-dev/lifeline"
	"github.com/lifeline-dev/lifeline/stream"
)

// seqs reads n events and returns their ids.
func (c *sseClient) seqs(n int) []int64 {
	c.t.Helper()
	var out []int64
	for range n {
		out = append(out, c.mustNext().id)
	}
	return out
}

func wantSeqs(t *testing.T, got []int64, from, to int64) {
	t.Helper()
	var want []int64
	for s := from; s <= to; s++ {
		want = append(want, s)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("seqs %v, want %v", got, want)
	}
}

func TestSSELiveAndFilters(t *testing.T) {
	h := start(t, stream.Config{})
	all, _ := h.openSSE("", h.admin)
	one, _ := h.openSSE("type=agent.lifecycle,lease.acquired&agent_id=a2", h.admin)
	h.register(h.admin, "a1")
	h.register(h.admin, "a2")
	h.lease(h.admin, "a1", "task-1")
	wantSeqs(t, all.seqs(3), 1, 3)

	ev := one.mustNext()
	if ev.id != 2 || ev.event != lifeline.EventAgentLifecycle {
		t.Fatalf("filtered stream: %+v", ev)
	}
	h.lease(h.admin, "a2", "task-2")
	if ev := one.mustNext(); ev.id != 4 || ev.event != lifeline.EventLeaseAcquired {
		t.Fatalf("filtered stream: %+v", ev)
	}
}

func TestSSEResumeAcrossRestart(t *testing.T) {
	h := start(t, stream.Config{})
	for i := 1; i <= 3; i++ {
		h.register(h.admin, fmt.Sprint("a", i))
	}
	c, _ := h.openSSE("after=0", h.admin)
	wantSeqs(t, c.seqs(3), 1, 3)

	// The server restarts under the stream; the stream ends.
	h.restart()
	if _, err := c.next(5 * time.Second); err == nil {
		t.Fatal("the stream survived the restart")
	}
	h.register(h.admin, "a4")

	// Reconnect as a browser does: the original URL, and the last id seen.
	c, _ = h.openSSE("after=0", h.admin, "Last-Event-ID", "3")
	wantSeqs(t, c.seqs(1), 4, 4)
	h.register(h.admin, "a5")
	h.register(h.admin, "a6")
	wantSeqs(t, c.seqs(2), 5, 6)

	// ?after= alone resumes too, mid-log.
	c, _ = h.openSSE("after=2", h.admin)
	wantSeqs(t, c.seqs(4), 3, 6)
}

func TestSSEResumeWhileCommitting(t *testing.T) {
	h := start(t, stream.Config{})
	for i := range 50 {
		h.register(h.admin, fmt.Sprint("a", i))
	}
	// Events keep coming while the stream reads its backlog: no gap, no duplicate.
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 50; i < 100; i++ {
			expect(t, h.do("POST", "/api/v1/agents", h.admin, map[string]any{"agent_id": fmt.Sprint("a", i)}), 201)
		}
	}()
	c, _ := h.openSSE("", h.admin, "Last-Event-ID", "10")
	wantSeqs(t, c.seqs(90), 11, 100)
	<-done
}

func TestSSEGoneAfterRetention(t *testing.T) {
	now := time.Now()
	var clock struct{ offset time.Duration }
	h := start(t, stream.Config{EventRetentionMax: 2, Now: func() time.Time { return now.Add(clock.offset) }})
	for i := 1; i <= 5; i++ {
		h.register(h.admin, fmt.Sprint("a", i))
	}
	if n, err := h.svc.Prune(context.Background()); err != nil || n != 3 {
		t.Fatalf("Prune: %d, %v; want 3 deleted", n, err)
	}
	for _, after := range []string{"1", "2", "99"} {
		_, r := h.openSSE("after="+after, h.admin)
		expect(t, r, 410)
		if code := r.problem(t); code != lifeline.EGone {
			t.Errorf("after=%s: code %q", after, code)
		}
	}
	_, r := h.openSSE("", h.admin, "Last-Event-ID", "0")
	expect(t, r, 410)

	// The oldest retained resume point still works.
	c, _ := h.openSSE("after=3", h.admin)
	wantSeqs(t, c.seqs(2), 4, 5)

	// By age: 8 days on, every event is past the 7-day default retention.
	clock.offset = 8 * 24 * time.Hour
	if n, err := h.svc.Prune(context.Background()); err != nil || n != 2 {
		t.Fatalf("Prune by age: %d, %v; want 2 deleted", n, err)
	}
	_, r = h.openSSE("after=4", h.admin)
	expect(t, r, 410)
	// The end of an emptied log is a valid resume point: new events follow it.
	c, _ = h.openSSE("after=5", h.admin)
	h.register(h.admin, "a6")
	wantSeqs(t, c.seqs(1), 6, 6)
}

func TestSSEKeepAlive(t *testing.T) {
	h := start(t, stream.Config{SSEKeepAlive: 20 * time.Millisecond})
	c, _ := h.openSSE("", h.admin)
	time.Sleep(100 * time.Millisecond)
	h.register(h.admin, "a1")
	c.mustNext()
	if c.kept < 2 {
		t.Errorf("%d keep-alive comments in 100 ms at a 20 ms interval", c.kept)
	}
}

func TestSSEAuth(t *testing.T) {
	h := start(t, stream.Config{})
	agent, _ := h.newKey(lifeline.RoleAgent)
	coord, _ := h.newKey(lifeline.RoleCoordinator)
	for _, tt := range []struct {
		name, query, key string
		hdr              []string
		status           int
		code             string
	}{
		{name: "NoKeyUnauthorized", status: 401, code: lifeline.EUnauthorized},
		{name: "AgentKeyForbidden", key: agent, status: 403, code: lifeline.EForbidden},
		{name: "BadTicketUnauthorized", query: "ticket=st_nope", status: 401, code: lifeline.EUnauthorized},
		{name: "BadLastEventIDInvalid", key: coord, hdr: []string{"Last-Event-ID", "x"}, status: 400, code: lifeline.EInvalid},
		{name: "BadAfterInvalid", key: coord, query: "after=-1", status: 400, code: lifeline.EInvalid},
		{name: "BadTypeInvalid", key: coord, query: "type=a%20b", status: 400, code: lifeline.EInvalid},
		{name: "BadAgentIDInvalid", key: coord, query: "agent_id=-x", status: 400, code: lifeline.EInvalid},
		{name: "CoordinatorOK", key: coord, status: 200},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, r := h.openSSE(tt.query, tt.key, tt.hdr...)
			if c != nil {
				c.close()
			}
			expect(t, r, tt.status)
			if tt.code != "" {
				if code := r.problem(t); code != tt.code {
					t.Errorf("code %q, want %q", code, tt.code)
				}
			}
		})
	}
	t.Run("TicketOK", func(t *testing.T) {
		var tk stream.Ticket
		expect(t, h.do("POST", "/api/v1/stream-tickets", coord, nil), 201).json(t, &tk)
		c, r := h.openSSE("ticket="+tk.Ticket, "")
		expect(t, r, 200)
		h.register(h.admin, "a1")
		c.mustNext()
	})
	t.Run("AgentTicketForbidden", func(t *testing.T) {
		var tk stream.Ticket
		expect(t, h.do("POST", "/api/v1/stream-tickets", agent, nil), 201).json(t, &tk)
		_, r := h.openSSE("ticket="+tk.Ticket, "")
		expect(t, r, 403)
	})
}

func TestSSELaggingStreamCatchesUpFromLog(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := start(t, stream.Config{SSEBufferSize: 2, Registry: reg})
	// The stream subscribes before it answers 200.
	c, _ := h.openSSE("", h.admin)
	const n = 300
	evs := make([]lifeline.Event, n)
	for i := range evs {
		evs[i] = lifeline.Event{Type: "test.burst", AgentID: "a" + strconv.Itoa(i), Timestamp: time.Now()}
	}
	// Commit a burst the way the engine does (store, then Publish), far faster than
	// the 2-event buffer can take.
	if err := h.store.Apply(context.Background(), []lifeline.Change{{Events: evs}}); err != nil {
		t.Fatal(err)
	}
	h.svc.Publish(evs)
	wantSeqs(t, c.seqs(n), 1, n)
	if lagged := counterValue(t, reg, "lifeline_sse_lagged_total"); lagged < 1 {
		t.Errorf("lifeline_sse_lagged_total = %v: the stream never fell behind, the test proves nothing", lagged)
	}
	// And it is live again afterwards.
	h.register(h.admin, "late")
	wantSeqs(t, c.seqs(1), n+1, n+1)
}

// counterValue returns the sum of a metric's samples.
func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var v float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				v += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return v
}

func TestSSEEndsOnClose(t *testing.T) {
	h := start(t, stream.Config{})
	c, _ := h.openSSE("", h.admin)
	if err := h.svc.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.next(5 * time.Second); err != io.EOF && err != io.ErrUnexpectedEOF {
		t.Fatalf("stream after Close: %v, want EOF", err)
	}
	// Publishing after Close is ignored.
	h.svc.Publish([]lifeline.Event{{Seq: 1, Type: lifeline.EventAgentLifecycle}})
}
