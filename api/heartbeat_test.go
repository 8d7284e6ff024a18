package api_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline"
	"github.com/lifeline-dev/lifeline/api"
	"github.com/lifeline-dev/lifeline/internal/apitest"
	"github.com/lifeline-dev/lifeline/registry"
)

var _ api.Beater = (*registry.Engine)(nil)

// batchResult is one item of a POST /api/v1/heartbeats response: an ack or a problem.
type batchResult struct {
	AgentID         string             `json:"agent_id"`
	Acknowledged    bool               `json:"acknowledged"`
	ServerTimestamp time.Time          `json:"server_timestamp"`
	AgentStatus     lifeline.Status    `json:"agent_status"`
	PendingCommands []lifeline.Command `json:"pending_commands"`
	Status          int                `json:"status"`
	Code            string             `json:"code"`
	Detail          string             `json:"detail"`
}

// item is one heartbeat of a batch: active, now, with extra members as name/value pairs.
func item(id string, extra ...any) map[string]any {
	m := map[string]any{"agent_id": id, "status": "active", "client_timestamp": time.Now().UTC().Format(time.RFC3339Nano)}
	for i := 0; i+1 < len(extra); i += 2 {
		m[extra[i].(string)] = extra[i+1]
	}
	return m
}

// batch sends a batch and decodes its results, failing unless the answer is 200 with
// one result per item.
func (h *harness) batch(t *testing.T, key string, items ...any) []batchResult {
	t.Helper()
	if items == nil {
		items = []any{}
	}
	r := expect(t, h.do("POST", "/api/v1/heartbeats", key, map[string]any{"heartbeats": items}), 200)
	var out struct {
		Results []batchResult `json:"results"`
	}
	r.json(t, &out)
	if len(out.Results) != len(items) {
		t.Fatalf("%d results for %d items: %s", len(out.Results), len(items), r.body)
	}
	return out.Results
}

func wantAck(t *testing.T, r batchResult, id string, status lifeline.Status) {
	t.Helper()
	if !r.Acknowledged || r.AgentID != id || r.AgentStatus != status || r.PendingCommands == nil || r.Code != "" ||
		time.Since(r.ServerTimestamp) > time.Hour && r.ServerTimestamp.Year() != 2026 {
		t.Fatalf("want ack of %s as %s, got %+v", id, status, r)
	}
}

func wantItemProblem(t *testing.T, r batchResult, id string, status int, code string) {
	t.Helper()
	if r.Acknowledged || r.AgentID != id || r.Status != status || r.Code != code || r.Detail == "" {
		t.Fatalf("want %d %s for %q, got %+v", status, code, id, r)
	}
}

// manualClock is a clock the test moves by hand.
type manualClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *manualClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestBatchHeartbeat(t *testing.T) {
	h := start(t, registry.Config{})
	owner := h.newKey(lifeline.RoleAgent)
	other := h.newKey(lifeline.RoleAgent)
	coord := h.newKey(lifeline.RoleCoordinator)
	h.register(owner, "b1")
	h.register(owner, "b2")
	h.register(other, "c1")

	t.Run("OK", func(t *testing.T) {
		res := h.batch(t, owner, item("b1", "current_load", 4, "tasks_in_progress", []string{"task_1", "task_2"}), item("b2"))
		wantAck(t, res[0], "b1", lifeline.StatusActive)
		wantAck(t, res[1], "b2", lifeline.StatusActive)
		var a lifeline.Agent
		expect(t, h.do("GET", "/api/v1/agents/b1", owner, nil), 200).json(t, &a)
		if a.Capacity.CurrentLoad != 4 || a.Version != 1 {
			t.Fatalf("%+v", a)
		}
	})
	t.Run("Empty", func(t *testing.T) {
		if res := h.batch(t, owner); len(res) != 0 {
			t.Fatal(res)
		}
	})
	t.Run("MixedValidAndInvalidItems", func(t *testing.T) {
		res := h.batch(t, owner,
			item("b1"),
			item("ghost"),                      // unknown agent
			item("c1"),                         // another key's agent
			item("b2", "status", "unhealthy"),  // not a status an agent reports
			item("b1", "current_load", -1),     // out of range
			item("b2", "surprise", true),       // unknown member
			item("b2", "current_load", "many"), // wrong type
			map[string]any{"status": "active", "client_timestamp": "2026-02-08T10:30:00Z"}, // no agent_id
			item("bad id"),
			item("b2", "client_timestamp", "yesterday"),
			42,
			item("b2"),
		)
		wantAck(t, res[0], "b1", lifeline.StatusActive)
		wantItemProblem(t, res[1], "ghost", 404, "not_found")
		wantItemProblem(t, res[2], "c1", 403, "forbidden")
		wantItemProblem(t, res[3], "b2", 400, "invalid")
		wantItemProblem(t, res[4], "b1", 400, "invalid")
		wantItemProblem(t, res[5], "b2", 400, "invalid")
		if !strings.Contains(res[5].Detail, "surprise") {
			t.Errorf("detail %q does not name the unknown field", res[5].Detail)
		}
		wantItemProblem(t, res[6], "b2", 400, "invalid")
		if !strings.Contains(res[6].Detail, "current_load") {
			t.Errorf("detail %q does not name the field", res[6].Detail)
		}
		wantItemProblem(t, res[7], "", 400, "invalid")
		wantItemProblem(t, res[8], "bad id", 400, "invalid")
		wantItemProblem(t, res[9], "b2", 400, "invalid")
		wantItemProblem(t, res[10], "", 400, "invalid")
		wantAck(t, res[11], "b2", lifeline.StatusActive)
	})
	t.Run("SameRulesAsSingleHeartbeat", func(t *testing.T) {
		// Every item answers what the single heartbeat answers for the same body.
		bodies := []map[string]any{item("b1"), item("ghost"), item("c1"), item("b1", "status", "unhealthy"), item("b1", "extra", 1)}
		res := h.batch(t, owner, anys(bodies)...)
		for i, b := range bodies {
			id := b["agent_id"].(string)
			delete(b, "agent_id")
			single := h.do("POST", "/api/v1/agents/"+id+"/heartbeat", owner, b)
			if res[i].Acknowledged != (single.StatusCode == 200) || (!res[i].Acknowledged && res[i].Status != single.StatusCode) {
				t.Errorf("item %d: batch %+v, single %d %s", i, res[i], single.StatusCode, single.body)
			}
			if !res[i].Acknowledged && res[i].Detail != single.problem(t).Detail {
				t.Errorf("item %d: detail %q, single %q", i, res[i].Detail, single.problem(t).Detail)
			}
		}
	})
	t.Run("CoordinatorMayBeatAnyAgent", func(t *testing.T) {
		res := h.batch(t, coord, item("b1"), item("c1"))
		wantAck(t, res[0], "b1", lifeline.StatusActive)
		wantAck(t, res[1], "c1", lifeline.StatusActive)
	})
	t.Run("AdminMayBeatAnyAgent", func(t *testing.T) {
		wantAck(t, h.batch(t, h.admin, item("c1"))[0], "c1", lifeline.StatusActive)
	})
	t.Run("GoneAfterDelete", func(t *testing.T) {
		h.register(owner, "b3")
		expect(t, h.do("DELETE", "/api/v1/agents/b3", owner, nil), 204)
		res := h.batch(t, owner, item("b3"), item("b1"))
		wantItemProblem(t, res[0], "b3", 410, "gone")
		wantAck(t, res[1], "b1", lifeline.StatusActive)
	})
	t.Run("DrainingViaBatch", func(t *testing.T) {
		h.register(owner, "b4")
		res := h.batch(t, owner, item("b4", "status", "draining"), item("b1"))
		if !res[0].Acknowledged || (res[0].AgentStatus != lifeline.StatusDraining && res[0].AgentStatus != lifeline.StatusDeregistered) {
			t.Fatalf("%+v", res[0])
		}
		wantAck(t, res[1], "b1", lifeline.StatusActive)
		evs := h.events("agent_id=b4&type=agent.lifecycle")
		if len(evs) < 2 || evs[1].NewStatus != lifeline.StatusDraining || evs[1].Reason != lifeline.ReasonDrainInitiated {
			t.Fatalf("%+v", evs)
		}
	})
	t.Run("PendingCommandDelivered", func(t *testing.T) {
		h.register(owner, "b5")
		expect(t, h.do("POST", "/api/v1/agents/b5/commands", coord, map[string]any{"command": "drain", "reason": "deploy <v2> & more"}), 202)
		res := h.batch(t, owner, item("b5"))
		if !res[0].Acknowledged || len(res[0].PendingCommands) != 1 || res[0].PendingCommands[0].Reason != "deploy <v2> & more" {
			t.Fatalf("%+v", res[0])
		}
	})
	t.Run("RepeatedIDInOneBatch", func(t *testing.T) {
		res := h.batch(t, owner, item("b1", "current_load", 1), item("b1", "current_load", 2), item("b1", "current_load", 3))
		for _, r := range res {
			wantAck(t, r, "b1", lifeline.StatusActive)
		}
		var a lifeline.Agent
		expect(t, h.do("GET", "/api/v1/agents/b1", owner, nil), 200).json(t, &a)
		if a.Capacity.CurrentLoad != 3 {
			t.Fatalf("load %d: items of one agent must apply in order", a.Capacity.CurrentLoad)
		}
	})
	t.Run("LargeBatchInOrder", func(t *testing.T) {
		// Past batchLaneMin the items are worked on by several lanes; results keep the
		// request's order, and one agent's items keep theirs.
		var items []any
		for i := 0; i < 300; i++ {
			switch i % 3 {
			case 0:
				items = append(items, item("b1", "current_load", i))
			case 1:
				items = append(items, item(fmt.Sprintf("ghost-%d", i)))
			default:
				items = append(items, item("b2"))
			}
		}
		res := h.batch(t, owner, items...)
		for i, r := range res {
			switch i % 3 {
			case 0:
				wantAck(t, r, "b1", lifeline.StatusActive)
			case 1:
				wantItemProblem(t, r, fmt.Sprintf("ghost-%d", i), 404, "not_found")
			default:
				wantAck(t, r, "b2", lifeline.StatusActive)
			}
		}
		var a lifeline.Agent
		expect(t, h.do("GET", "/api/v1/agents/b1", owner, nil), 200).json(t, &a)
		if a.Capacity.CurrentLoad != 297 {
			t.Fatalf("load %d, want the last item's 297", a.Capacity.CurrentLoad)
		}
	})
	t.Run("Cap", func(t *testing.T) {
		items := make([]any, api.MaxBatchHeartbeats)
		for i := range items {
			items[i] = item("b1")
		}
		if res := h.batch(t, owner, items...); !res[len(res)-1].Acknowledged {
			t.Fatalf("%+v", res[len(res)-1])
		}
		items = append(items, item("b1"))
		r := expect(t, h.do("POST", "/api/v1/heartbeats", owner, map[string]any{"heartbeats": items}), 413)
		if p := r.problem(t); p.Code != "payload_too_large" || !strings.Contains(p.Detail, "1000") {
			t.Fatalf("%+v", p)
		}
	})
	t.Run("ErrPayloadTooLargeBody", func(t *testing.T) {
		body := `{"heartbeats":[` + strings.Repeat(" ", api.DefaultMaxBodyBytes) + `]}`
		if r := expect(t, h.do("POST", "/api/v1/heartbeats", owner, body), 413); r.problem(t).Code != "payload_too_large" {
			t.Fatal(string(r.body))
		}
	})
	for name, body := range map[string]string{
		"NotJSON":            `{"heartbeats":[`,
		"Empty":              ``,
		"Null":               `null`,
		"MissingHeartbeats":  `{}`,
		"HeartbeatsNull":     `{"heartbeats":null}`,
		"HeartbeatsNotArray": `{"heartbeats":{"agent_id":"b1"}}`,
		"UnknownTopLevel":    `{"heartbeats":[],"agent_id":"b1"}`,
		"TrailingData":       `{"heartbeats":[]} {}`,
		"NotAnObject":        `[{"agent_id":"b1"}]`,
		"BrokenItemIsBroken": `{"heartbeats":[{"agent_id":"b1",}]}`,
		"DuplicateWrongType": `{"heartbeats":[],"heartbeats":{}}`,
	} {
		t.Run("ErrInvalid/"+name, func(t *testing.T) {
			r := expect(t, h.do("POST", "/api/v1/heartbeats", owner, body), 400)
			if r.problem(t).Code != "invalid" {
				t.Fatal(string(r.body))
			}
		})
	}
	t.Run("ErrUnauthorized", func(t *testing.T) {
		expect(t, h.do("POST", "/api/v1/heartbeats", "", map[string]any{"heartbeats": []any{item("b1")}}), 401)
		expect(t, h.do("POST", "/api/v1/heartbeats", "ll_nope", map[string]any{"heartbeats": []any{item("b1")}}), 401)
	})
}

func anys[T any](s []T) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

// TestBatchHeartbeatTransitions drives agents through unhealthy and dead with a manual
// clock and checks what batch items answer in each status.
func TestBatchHeartbeatTransitions(t *testing.T) {
	clk := &manualClock{t: time.Date(2026, 2, 8, 10, 0, 0, 0, time.UTC)}
	h := start(t, registry.Config{Now: clk.Now, SweepInterval: time.Hour})
	owner := h.newKey(lifeline.RoleAgent)
	h.register(owner, "u1", 1, 2, 4)
	h.register(owner, "d1", 1, 2, 4)
	h.register(owner, "ok", 1, 2, 100)
	// Items carry the manual clock's time, so that no drift is reported.
	item := func(id string) map[string]any {
		return item(id, "client_timestamp", clk.Now().Format(time.RFC3339Nano))
	}

	clk.Add(3 * time.Second) // past unhealthy_after (2 s) for everyone
	h.engine.Sweep(context.Background())
	t.Run("UnhealthyResumes", func(t *testing.T) {
		res := h.batch(t, owner, item("u1"), item("ok"))
		wantAck(t, res[0], "u1", lifeline.StatusActive)
		wantAck(t, res[1], "ok", lifeline.StatusActive)
		evs := h.events("agent_id=u1&type=agent.lifecycle")
		if last := evs[len(evs)-1]; last.NewStatus != lifeline.StatusActive || last.Reason != lifeline.ReasonHeartbeatResumed {
			t.Fatalf("%+v", last)
		}
	})
	clk.Add(2 * time.Second) // d1 silent 5 s: past dead_after (4 s)
	h.engine.Sweep(context.Background())
	t.Run("DeadIsGone", func(t *testing.T) {
		res := h.batch(t, owner, item("d1"), item("u1"))
		wantItemProblem(t, res[0], "d1", 410, "gone")
		wantAck(t, res[1], "u1", lifeline.StatusActive)
	})
	t.Run("ManyResumeAtOnce", func(t *testing.T) {
		// Resuming agents commit a transition each; a large batch still answers all.
		for i := 0; i < 100; i++ {
			h.register(owner, fmt.Sprintf("m%03d", i), 1, 2, 100)
		}
		clk.Add(3 * time.Second)
		h.engine.Sweep(context.Background())
		var items []any
		for i := 0; i < 100; i++ {
			items = append(items, item(fmt.Sprintf("m%03d", i)))
		}
		for i, r := range h.batch(t, owner, items...) {
			wantAck(t, r, fmt.Sprintf("m%03d", i), lifeline.StatusActive)
		}
		if n := len(h.events("type=agent.lifecycle&limit=1000")); n < 300 {
			t.Fatalf("%d events", n)
		}
	})
}

// plainService hides the engine's Beat method: the handlers must then use Heartbeat.
type plainService struct{ lifeline.AgentService }

func TestHeartbeatWithoutBeater(t *testing.T) {
	h := start(t, registry.Config{})
	owner := h.newKey(lifeline.RoleAgent)
	h.register(owner, "p1")
	srv := httptest.NewServer(api.NewServer(api.Config{Agents: plainService{h.engine}, Events: h.engine, Keys: h.keys, Health: h.engine}))
	t.Cleanup(srv.Close)
	h2 := &harness{t: t, url: srv.URL, admin: h.admin, c: apitest.Client(t)}
	r := expect(t, h2.beat(owner, "p1", "current_load", 7), 200)
	var ack lifeline.HeartbeatAck
	r.json(t, &ack)
	if !ack.Acknowledged || ack.AgentStatus != lifeline.StatusActive {
		t.Fatal(string(r.body))
	}
	res := h2.batch(t, owner, item("p1", "current_load", 8), item("nobody"))
	wantAck(t, res[0], "p1", lifeline.StatusActive)
	wantItemProblem(t, res[1], "nobody", 404, "not_found")
	a, err := h.engine.FindAgentByID(context.Background(), "p1")
	if err != nil || a.Capacity.CurrentLoad != 8 {
		t.Fatal(a, err)
	}
}

// TestHeartbeatDecodingMatchesEncodingJSON sends bodies that the fast decoder handles
// and bodies it hands to encoding/json: the answers are the same as before.
func TestHeartbeatDecodingMatchesEncodingJSON(t *testing.T) {
	h := start(t, registry.Config{})
	owner := h.newKey(lifeline.RoleAgent)
	h.register(owner, "a1")
	for name, tc := range map[string]struct {
		body   string
		status int
	}{
		"Plain":            {`{"status":"active","current_load":2,"client_timestamp":"2026-02-08T10:30:00Z"}`, 200},
		"Spaces":           {" \n{ \"status\" : \"active\" ,\t\"client_timestamp\" : \"2026-02-08T10:30:00.123456789+02:00\" } \r\n", 200},
		"Escaped":          {`{"status":"act\u0069ve","client_timestamp":"2026-02-08T10:30:00Z"}`, 200},
		"DuplicateKey":     {`{"status":"draining","status":"active","client_timestamp":"2026-02-08T10:30:00Z"}`, 200},
		"NullStatus":       {`{"status":null,"client_timestamp":"2026-02-08T10:30:00Z"}`, 400},
		"Exponent":         {`{"status":"active","current_load":1e2,"client_timestamp":"2026-02-08T10:30:00Z"}`, 400},
		"LeadingZero":      {`{"status":"active","current_load":01,"client_timestamp":"2026-02-08T10:30:00Z"}`, 400},
		"HugeLoad":         {`{"status":"active","current_load":99999999999999999999,"client_timestamp":"2026-02-08T10:30:00Z"}`, 400},
		"TwoValues":        {`{"status":"active","client_timestamp":"2026-02-08T10:30:00Z"}{}`, 400},
		"TrailingComma":    {`{"status":"active","client_timestamp":"2026-02-08T10:30:00Z",}`, 400},
		"TimestampEscaped": {`{"status":"active","client_timestamp":"2026-02-08T10:30:00\u005a"}`, 400},
		"Array":            {`[]`, 400},
		"Empty":            {``, 400},
	} {
		t.Run(name, func(t *testing.T) {
			r := expect(t, h.do("POST", "/api/v1/agents/a1/heartbeat", owner, tc.body), tc.status)
			if tc.status != 200 {
				r.problem(t)
			}
		})
	}
	// encoding/json matches member names without regard to case and takes null for
	// current_load; openapi.yaml allows neither, but the server always has, so these
	// go through a client that does not check the contract.
	plain := *h
	plain.c = &http.Client{}
	for name, body := range map[string]string{
		"KeyCase":  `{"STATUS":"active","Client_Timestamp":"2026-02-08T10:30:00Z"}`,
		"NullLoad": `{"status":"active","current_load":null,"client_timestamp":"2026-02-08T10:30:00Z"}`,
	} {
		t.Run(name, func(t *testing.T) { expect(t, plain.do("POST", "/api/v1/agents/a1/heartbeat", owner, body), 200) })
	}
}
