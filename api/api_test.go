package api_test

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline"
	"github.com/lifeline-dev/lifeline/registry"
)

func TestProbes(t *testing.T) {
	h := start(t, registry.Config{})
	r := expect(t, h.do("GET", "/heartbeat", "", nil), 200)
	if strings.TrimSpace(string(r.body)) != `{"status":"ok"}` {
		t.Fatalf("body %s", r.body)
	}
	h.register(h.admin, "a1")
	r = expect(t, h.do("GET", "/health", "", nil), 200)
	var health struct {
		Status string         `json:"status"`
		Agents map[string]int `json:"agents"`
	}
	r.json(t, &health)
	if health.Status != "ok" || health.Agents["active"] != 1 {
		t.Fatalf("health %s", r.body)
	}
	h.beat(h.admin, "a1")
	r = expect(t, h.do("GET", "/metrics", "", nil), 200)
	for _, want := range []string{`lifeline_agents{status="active"} 1`, "lifeline_heartbeats_total 1",
		`lifeline_transitions_total{reason="registered",status="active"} 1`, "lifeline_http_request_duration_seconds_bucket", "lifeline_sweep_lag_seconds"} {
		if !strings.Contains(string(r.body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	r = expect(t, h.do("GET", "/openapi.yaml", "", nil), 200)
	if !strings.HasPrefix(string(r.body), "openapi: 3.1") {
		t.Fatalf("openapi.yaml starts %q", r.body[:20])
	}
}

func TestNoRoute(t *testing.T) {
	h := start(t, registry.Config{})
	h.c = http.DefaultClient // the path is deliberately not in openapi.yaml
	r := h.do("GET", "/api/v1/nothing", h.admin, nil)
	if r.StatusCode != 404 || r.problem(t).Code != "not_found" {
		t.Fatalf("%d %s", r.StatusCode, r.body)
	}
	r = h.do("PUT", "/api/v1/agents", h.admin, nil)
	if r.StatusCode != 405 || r.problem(t).Code != "method_not_allowed" || !strings.Contains(strings.Join(r.Header.Values("Allow"), ","), "POST") {
		t.Fatalf("%d %v %s", r.StatusCode, r.Header, r.body)
	}
}

func TestAuth(t *testing.T) {
	h := start(t, registry.Config{})
	t.Run("MissingKey", func(t *testing.T) {
		r := expect(t, h.do("GET", "/api/v1/agents", "", nil), 401)
		if r.problem(t).Code != "unauthorized" {
			t.Fatal(string(r.body))
		}
	})
	t.Run("UnknownKey", func(t *testing.T) {
		expect(t, h.do("GET", "/api/v1/agents", "ll_nope", nil), 401)
	})
	t.Run("AgentKeyCannotDiscover", func(t *testing.T) {
		k := h.newKey(lifeline.RoleAgent)
		for _, p := range []string{"/api/v1/agents", "/api/v1/pools", "/api/v1/pools/x", "/api/v1/events", "/api/v1/keys"} {
			if r := expect(t, h.do("GET", p, k, nil), 403); r.problem(t).Code != "forbidden" {
				t.Fatal(string(r.body))
			}
		}
		expect(t, h.do("POST", "/api/v1/keys", k, map[string]string{"role": "admin"}), 403)
	})
	t.Run("CoordinatorCanDiscoverNotManageKeys", func(t *testing.T) {
		k := h.newKey(lifeline.RoleCoordinator)
		expect(t, h.do("GET", "/api/v1/agents", k, nil), 200)
		expect(t, h.do("GET", "/api/v1/pools", k, nil), 200)
		expect(t, h.do("GET", "/api/v1/events", k, nil), 200)
		expect(t, h.do("GET", "/api/v1/keys", k, nil), 403)
	})
	t.Run("RevokedKeyStopsAtOnce", func(t *testing.T) {
		r := expect(t, h.do("POST", "/api/v1/keys", h.admin, map[string]string{"role": "coordinator", "name": "ci"}), 201)
		var k lifeline.NewKey
		r.json(t, &k)
		if !strings.HasPrefix(k.Secret, "ll_") || k.ID == "" || k.Role != "coordinator" || k.Name != "ci" || k.CreatedAt.IsZero() {
			t.Fatalf("new key %s", r.body)
		}
		expect(t, h.do("GET", "/api/v1/agents", k.Secret, nil), 200)
		expect(t, h.do("DELETE", "/api/v1/keys/"+k.ID, h.admin, nil), 204)
		expect(t, h.do("GET", "/api/v1/agents", k.Secret, nil), 401)
		expect(t, h.do("DELETE", "/api/v1/keys/key_unknown", h.admin, nil), 404)
		r = expect(t, h.do("GET", "/api/v1/keys", h.admin, nil), 200)
		if strings.Contains(string(r.body), k.Secret) || !strings.Contains(string(r.body), `"revoked_at"`) {
			t.Fatalf("key list %s", r.body)
		}
	})
	t.Run("OpenDiscovery", func(t *testing.T) {
		h := start(t, registry.Config{OpenDiscovery: true})
		expect(t, h.do("GET", "/api/v1/agents", h.newKey(lifeline.RoleAgent), nil), 200)
	})
}

func TestRegister(t *testing.T) {
	h := start(t, registry.Config{})
	t.Run("OK", func(t *testing.T) {
		r := expect(t, h.do("POST", "/api/v1/agents", h.admin, map[string]any{
			"agent_id": "agent_billing_01", "role_id": "billing-processor", "name": "Billing Processor",
			"capabilities": []string{"billing", "invoicing", "stripe-integration"},
			"capacity":     map[string]int{"max_concurrent_tasks": 5},
			"endpoint":     "https://billing-agent.example.com/webhook",
			"metadata":     map[string]string{"version": "1.2.0", "runtime": "python-3.11"},
		}), 201)
		if r.Header.Get("ETag") != `"1"` || r.Header.Get("Location") != "/api/v1/agents/agent_billing_01" {
			t.Fatalf("headers %v", r.Header)
		}
		var a lifeline.Agent
		r.json(t, &a)
		if a.Status != "active" || a.Version != 1 || a.Capacity != (lifeline.Capacity{MaxConcurrentTasks: 5}) ||
			a.HeartbeatConfig != (lifeline.HeartbeatConfig{IntervalSeconds: 30, UnhealthyAfterSeconds: 90, DeadAfterSeconds: 300}) || string(a.Metadata) != `{"runtime":"python-3.11","version":"1.2.0"}` ||
			a.RegisteredAt.IsZero() || !a.LastHeartbeatAt.Equal(a.RegisteredAt) {
			t.Fatalf("agent %s", r.body)
		}
		r = expect(t, h.do("GET", "/api/v1/agents/agent_billing_01", h.admin, nil), 200)
		if r.Header.Get("ETag") != `"1"` {
			t.Fatal(r.Header)
		}
	})
	t.Run("GeneratedID", func(t *testing.T) {
		r := expect(t, h.do("POST", "/api/v1/agents", h.admin, map[string]any{}), 201)
		var a lifeline.Agent
		r.json(t, &a)
		if !regexp.MustCompile(`^agent_[0-9A-HJKMNP-TV-Z]{26}$`).MatchString(a.AgentID) {
			t.Fatalf("generated id %q", a.AgentID)
		}
		if string(a.Metadata) != "{}" || a.Capabilities == nil {
			t.Fatalf("empty fields %s", r.body)
		}
	})
	t.Run("ErrConflictWhenLive", func(t *testing.T) {
		h.register(h.admin, "dup")
		r := expect(t, h.do("POST", "/api/v1/agents", h.admin, map[string]any{"agent_id": "dup"}), 409)
		if r.problem(t).Code != "conflict" {
			t.Fatal(string(r.body))
		}
	})
	t.Run("ReregisterAfterDeregister", func(t *testing.T) {
		h.register(h.admin, "again")
		expect(t, h.do("DELETE", "/api/v1/agents/again", h.admin, nil), 204)
		a := h.register(h.admin, "again")
		if a.Version != 1 || a.Status != "active" {
			t.Fatalf("%+v", a)
		}
	})
	bad := map[string]string{
		"UnhealthyBelowTwiceInterval": `{"heartbeat_config":{"interval_seconds":30,"unhealthy_after_seconds":59}}`,
		"DeadBelowTwiceUnhealthy":     `{"heartbeat_config":{"interval_seconds":1,"unhealthy_after_seconds":2,"dead_after_seconds":3}}`,
		"ZeroInterval":                `{"heartbeat_config":{"interval_seconds":0}}`,
		"FractionalInterval":          `{"heartbeat_config":{"interval_seconds":1.5}}`,
		"StringInterval":              `{"heartbeat_config":{"interval_seconds":"30"}}`,
		"NegativeCapacity":            `{"capacity":{"max_concurrent_tasks":-1}}`,
		"CurrentLoadNotAccepted":      `{"capacity":{"current_load":3}}`,
		"UnknownField":                `{"agent_id":"x","colour":"blue"}`,
		"BadID":                       `{"agent_id":"has space"}`,
		"LongID":                      `{"agent_id":"` + strings.Repeat("a", 129) + `"}`,
		"BadCapability":               `{"capabilities":["a,b"]}`,
		"BadEndpoint":                 `{"endpoint":"ftp://x"}`,
		"MetadataNotObject":           `{"metadata":[1,2]}`,
		"NotJSON":                     `{"agent_id":`,
		"TrailingData":                `{} {}`,
		"Empty":                       ``,
		"Array":                       `[]`,
	}
	for name, body := range bad {
		t.Run("ErrInvalid/"+name, func(t *testing.T) {
			r := expect(t, h.do("POST", "/api/v1/agents", h.admin, body), 400)
			if r.problem(t).Code != "invalid" {
				t.Fatal(string(r.body))
			}
		})
	}
	t.Run("ErrPayloadTooLarge", func(t *testing.T) {
		body := `{"metadata":{"x":"` + strings.Repeat("a", 2<<20) + `"}}`
		r := expect(t, h.do("POST", "/api/v1/agents", h.admin, body), 413)
		if r.problem(t).Code != "payload_too_large" {
			t.Fatal(string(r.body))
		}
	})
	t.Run("ShortThresholdsAccepted", func(t *testing.T) {
		a := h.register(h.admin, "fast", 1, 2, 4)
		if a.HeartbeatConfig != (lifeline.HeartbeatConfig{IntervalSeconds: 1, UnhealthyAfterSeconds: 2, DeadAfterSeconds: 4}) {
			t.Fatalf("%+v", a.HeartbeatConfig)
		}
	})
}

func TestGetAgent(t *testing.T) {
	h := start(t, registry.Config{})
	expect(t, h.do("GET", "/api/v1/agents/nobody", h.admin, nil), 404)
	expect(t, h.do("GET", "/api/v1/agents/bad%20id", h.admin, nil), 400)
}

func TestHeartbeat(t *testing.T) {
	h := start(t, registry.Config{})
	owner := h.newKey(lifeline.RoleAgent)
	other := h.newKey(lifeline.RoleAgent)
	coord := h.newKey(lifeline.RoleCoordinator)
	h.register(owner, "a1")
	t.Run("OK", func(t *testing.T) {
		r := expect(t, h.beat(owner, "a1", "current_load", 3, "tasks_in_progress", []string{"task_01H001"}), 200)
		var ack lifeline.HeartbeatAck
		r.json(t, &ack)
		// The agent holds no lease on the task it reports, so it is told to stop it.
		stop := lifeline.Command{Command: "stop_task", TaskID: "task_01H001", Reason: "lease_expired"}
		if !ack.Acknowledged || ack.AgentStatus != "active" || len(ack.PendingCommands) != 1 || ack.PendingCommands[0] != stop ||
			time.Since(ack.ServerTimestamp) > time.Minute {
			t.Fatalf("%s", r.body)
		}
		var a lifeline.Agent
		expect(t, h.do("GET", "/api/v1/agents/a1", owner, nil), 200).json(t, &a)
		if a.Capacity.CurrentLoad != 3 || a.Version != 1 {
			t.Fatalf("%+v", a)
		}
	})
	t.Run("CoordinatorMayBeat", func(t *testing.T) { expect(t, h.beat(coord, "a1"), 200) })
	t.Run("ErrForbiddenOtherAgentKey", func(t *testing.T) {
		if r := expect(t, h.beat(other, "a1"), 403); r.problem(t).Code != "forbidden" {
			t.Fatal(string(r.body))
		}
	})
	t.Run("ErrNotFound", func(t *testing.T) { expect(t, h.beat(owner, "ghost"), 404) })
	for name, body := range map[string]string{
		"MissingTimestamp":  `{"status":"active"}`,
		"BadTimestamp":      `{"status":"active","client_timestamp":"yesterday"}`,
		"MissingStatus":     `{"client_timestamp":"2026-02-08T10:30:00Z"}`,
		"StatusUnhealthy":   `{"status":"unhealthy","client_timestamp":"2026-02-08T10:30:00Z"}`,
		"NegativeLoad":      `{"status":"active","current_load":-1,"client_timestamp":"2026-02-08T10:30:00Z"}`,
		"BadTaskID":         `{"status":"active","tasks_in_progress":["a b"],"client_timestamp":"2026-02-08T10:30:00Z"}`,
		"UnknownField":      `{"status":"active","client_timestamp":"2026-02-08T10:30:00Z","x":1}`,
		"TasksNotAnArray":   `{"status":"active","tasks_in_progress":"t1","client_timestamp":"2026-02-08T10:30:00Z"}`,
		"LoadNotAnInteger":  `{"status":"active","current_load":1.5,"client_timestamp":"2026-02-08T10:30:00Z"}`,
		"NullBody":          `null`,
		"TimestampAsNumber": `{"status":"active","client_timestamp":12}`,
	} {
		t.Run("ErrInvalid/"+name, func(t *testing.T) {
			expect(t, h.do("POST", "/api/v1/agents/a1/heartbeat", owner, body), 400)
		})
	}
	t.Run("DriftIsCountedNotActedOn", func(t *testing.T) {
		r := expect(t, h.do("POST", "/api/v1/agents/a1/heartbeat", owner, `{"status":"active","client_timestamp":"2001-01-01T00:00:00Z"}`), 200)
		var ack lifeline.HeartbeatAck
		r.json(t, &ack)
		if ack.AgentStatus != "active" {
			t.Fatal(string(r.body))
		}
		m := expect(t, h.do("GET", "/metrics", "", nil), 200)
		if !strings.Contains(string(m.body), "lifeline_heartbeat_clock_drift_total 1") {
			t.Fatal("drift not counted")
		}
	})
	t.Run("ErrGoneAfterDelete", func(t *testing.T) {
		h.register(owner, "a2")
		expect(t, h.do("DELETE", "/api/v1/agents/a2", owner, nil), 204)
		if r := expect(t, h.beat(owner, "a2"), 410); r.problem(t).Code != "gone" {
			t.Fatal(string(r.body))
		}
	})
}

func TestStatusPatch(t *testing.T) {
	h := start(t, registry.Config{})
	owner := h.newKey(lifeline.RoleAgent)
	other := h.newKey(lifeline.RoleAgent)
	drain := map[string]any{"status": "draining", "drain_timeout_seconds": 120}
	t.Run("ErrPreconditionRequired", func(t *testing.T) {
		h.register(owner, "p1")
		if r := expect(t, h.do("PATCH", "/api/v1/agents/p1/status", owner, drain), 428); r.problem(t).Code != "precondition_required" {
			t.Fatal(string(r.body))
		}
	})
	t.Run("ErrPreconditionFailed", func(t *testing.T) {
		if r := expect(t, h.do("PATCH", "/api/v1/agents/p1/status", owner, drain, "If-Match", `"14"`), 412); r.problem(t).Code != "precondition_failed" {
			t.Fatal(string(r.body))
		}
	})
	t.Run("ErrForbiddenOtherKey", func(t *testing.T) {
		expect(t, h.do("PATCH", "/api/v1/agents/p1/status", other, drain, "If-Match", `"1"`), 403)
	})
	for i, form := range []string{`"1"`, `1`, `W/"1"`} {
		t.Run("IfMatchForm/"+form, func(t *testing.T) {
			id := fmt.Sprintf("form%d", i)
			h.register(owner, id)
			r := expect(t, h.do("PATCH", "/api/v1/agents/"+id+"/status", owner, drain, "If-Match", form), 200)
			var a lifeline.Agent
			r.json(t, &a)
			// No leases are held, so the drain completes at once.
			if a.Status != "deregistered" || a.Version != 3 || r.Header.Get("ETag") != `"3"` {
				t.Fatalf("%s %v", r.body, r.Header)
			}
		})
	}
	t.Run("DrainEventsInOrder", func(t *testing.T) {
		var got []string
		for _, e := range h.events("agent_id=form0") {
			got = append(got, string(e.PreviousStatus)+">"+string(e.NewStatus)+":"+e.Reason)
		}
		want := "registering>active:registered active>draining:drain_initiated draining>deregistered:drain_completed"
		if strings.Join(got, " ") != want {
			t.Fatalf("events %v", got)
		}
	})
	t.Run("ErrConflictNamesAllowed", func(t *testing.T) {
		r := expect(t, h.do("PATCH", "/api/v1/agents/form0/status", owner, drain, "If-Match", `"3"`), 409)
		p := r.problem(t)
		if p.Code != "conflict" || p.Allowed == nil || len(p.Allowed) != 0 {
			t.Fatalf("%s", r.body)
		}
		h.register(owner, "dead1", 1, 2, 4)
		// A dead agent may only be deregistered.
		if err := h.engine.DeregisterAgent(t.Context(), "dead1"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("Deregister", func(t *testing.T) {
		h.register(owner, "p2")
		r := expect(t, h.do("PATCH", "/api/v1/agents/p2/status", owner, map[string]any{"status": "deregistered"}, "If-Match", `"1"`), 200)
		var a lifeline.Agent
		r.json(t, &a)
		if a.Status != "deregistered" {
			t.Fatal(string(r.body))
		}
	})
	for name, body := range map[string]string{
		"StatusActive":         `{"status":"active"}`,
		"ZeroTimeout":          `{"status":"draining","drain_timeout_seconds":0}`,
		"TimeoutOnDeregister":  `{"status":"deregistered","drain_timeout_seconds":5}`,
		"UnknownField":         `{"status":"draining","force":true}`,
		"BadIfMatchNotNumeric": ``,
	} {
		t.Run("ErrInvalid/"+name, func(t *testing.T) {
			h.register(owner, "inv-"+strings.ToLower(name))
			hdr := `"1"`
			if body == "" {
				body, hdr = `{"status":"draining"}`, `"abc"`
			}
			expect(t, h.do("PATCH", "/api/v1/agents/inv-"+strings.ToLower(name)+"/status", owner, body, "If-Match", hdr), 400)
		})
	}
}

func TestCommands(t *testing.T) {
	h := start(t, registry.Config{})
	owner := h.newKey(lifeline.RoleAgent)
	coord := h.newKey(lifeline.RoleCoordinator)
	h.register(owner, "c1")
	cmd := map[string]any{"command": "drain", "reason": "maintenance_window", "drain_timeout_seconds": 120}
	expect(t, h.do("POST", "/api/v1/agents/c1/commands", owner, cmd), 403)
	expect(t, h.do("POST", "/api/v1/agents/ghost/commands", coord, cmd), 404)
	expect(t, h.do("POST", "/api/v1/agents/c1/commands", coord, map[string]any{"command": "reboot"}), 400)
	r := expect(t, h.do("POST", "/api/v1/agents/c1/commands", coord, cmd), 202)
	if !strings.Contains(string(r.body), `"maintenance_window"`) {
		t.Fatal(string(r.body))
	}
	var ack lifeline.HeartbeatAck
	expect(t, h.beat(owner, "c1"), 200).json(t, &ack)
	if len(ack.PendingCommands) != 1 || ack.PendingCommands[0] != (lifeline.Command{Command: "drain", Reason: "maintenance_window", DrainTimeoutSeconds: 120}) {
		t.Fatalf("%+v", ack)
	}
	expect(t, h.beat(owner, "c1", "status", "draining"), 200).json(t, &ack)
	if ack.AgentStatus != "deregistered" || len(ack.PendingCommands) != 0 {
		t.Fatalf("after draining heartbeat: %+v", ack)
	}
	expect(t, h.do("POST", "/api/v1/agents/c1/commands", coord, cmd), 409)
}

func TestDelete(t *testing.T) {
	h := start(t, registry.Config{})
	owner := h.newKey(lifeline.RoleAgent)
	other := h.newKey(lifeline.RoleAgent)
	h.register(owner, "d1")
	expect(t, h.do("DELETE", "/api/v1/agents/d1", other, nil), 403)
	expect(t, h.do("DELETE", "/api/v1/agents/d1", owner, nil), 204)
	var a lifeline.Agent
	expect(t, h.do("GET", "/api/v1/agents/d1", owner, nil), 200).json(t, &a)
	if a.Status != "deregistered" {
		t.Fatalf("%+v", a)
	}
	expect(t, h.do("DELETE", "/api/v1/agents/d1", owner, nil), 409)
	expect(t, h.do("DELETE", "/api/v1/agents/ghost", owner, nil), 404)
}

func TestListAndPools(t *testing.T) {
	h := start(t, registry.Config{})
	for i := range 25 {
		role := "even"
		if i%2 == 1 {
			role = "odd"
		}
		expect(t, h.do("POST", "/api/v1/agents", h.admin, map[string]any{
			"agent_id": fmt.Sprintf("ag%02d", i), "role_id": role, "capabilities": []string{role, fmt.Sprintf("c%d", i%3)},
			"capacity": map[string]int{"max_concurrent_tasks": 4},
		}), 201)
	}
	expect(t, h.beat(h.admin, "ag00", "current_load", 4), 200)
	expect(t, h.do("DELETE", "/api/v1/agents/ag01", h.admin, nil), 204)
	type list struct {
		Agents []lifeline.Agent `json:"agents"`
		Total  int              `json:"total"`
		Next   string           `json:"next_cursor"`
	}
	get := func(q string) list {
		var l list
		expect(t, h.do("GET", "/api/v1/agents?"+q, h.admin, nil), 200).json(t, &l)
		return l
	}
	if l := get(""); l.Total != 24 || len(l.Agents) != 24 {
		t.Fatalf("default list: total %d len %d", l.Total, len(l.Agents))
	}
	if l := get("status=deregistered"); l.Total != 1 || l.Agents[0].AgentID != "ag01" {
		t.Fatalf("%+v", l)
	}
	if l := get("status=active,deregistered"); l.Total != 25 {
		t.Fatalf("%+v", l.Total)
	}
	if l := get("role_id=odd"); l.Total != 11 {
		t.Fatalf("odd %d", l.Total)
	}
	if l := get("capabilities=c0,odd"); l.Total != 9+11-4+1-1 {
		// c0: i%3==0 → 0,3,...,24 (9 agents, 4 of them odd); odd: 11 live; union 16.
		t.Fatalf("ANY match total %d", l.Total)
	}
	if l := get("min_available_capacity=1&role_id=even"); l.Total != 12 {
		t.Fatalf("capacity filter %d", l.Total)
	}
	var seen []string
	cursor := ""
	for page := 0; ; page++ {
		q := "limit=10"
		if cursor != "" {
			q += "&cursor=" + cursor
		}
		l := get(q)
		for _, a := range l.Agents {
			seen = append(seen, a.AgentID)
		}
		if l.Next == "" {
			break
		}
		cursor = l.Next
		if page > 5 {
			t.Fatal("pagination does not end")
		}
	}
	if len(seen) != 24 || seen[0] != "ag00" || seen[23] != "ag24" {
		t.Fatalf("paged %v", seen)
	}
	for _, q := range []string{"status=bogus", "limit=0", "limit=1001", "limit=x", "min_available_capacity=x", "capabilities=a%20b", "cursor=bad%20cursor"} {
		expect(t, h.do("GET", "/api/v1/agents?"+q, h.admin, nil), 400)
	}
	var pools struct {
		Pools []lifeline.Pool `json:"pools"`
	}
	expect(t, h.do("GET", "/api/v1/pools", h.admin, nil), 200).json(t, &pools)
	if len(pools.Pools) != 2 || pools.Pools[0] != (lifeline.Pool{RoleID: "even", Members: 13, ActiveMembers: 13, MaxConcurrentTasks: 52, CurrentLoad: 4, AvailableCapacity: 48}) {
		t.Fatalf("%+v", pools)
	}
	var p lifeline.Pool
	expect(t, h.do("GET", "/api/v1/pools/odd", h.admin, nil), 200).json(t, &p)
	if p.Members != 11 || p.AvailableCapacity != 44 {
		t.Fatalf("%+v", p)
	}
	expect(t, h.do("GET", "/api/v1/pools/none", h.admin, nil), 404)
}

func TestEvents(t *testing.T) {
	h := start(t, registry.Config{})
	for i := range 5 {
		h.register(h.admin, fmt.Sprintf("e%d", i))
	}
	expect(t, h.do("DELETE", "/api/v1/agents/e0", h.admin, nil), 204)
	all := h.events("")
	if len(all) != 6 {
		t.Fatalf("%d events", len(all))
	}
	for i, e := range all {
		if e.Seq != int64(i+1) || e.Type != "agent.lifecycle" || e.Timestamp.IsZero() {
			t.Fatalf("event %d: %+v", i, e)
		}
	}
	page := h.events("after=2&limit=2")
	if len(page) != 2 || page[0].Seq != 3 || page[1].Seq != 4 {
		t.Fatalf("%+v", page)
	}
	r := expect(t, h.do("GET", "/api/v1/events?after=6", h.admin, nil), 200)
	if !strings.Contains(string(r.body), `"next_after":6`) || !strings.Contains(string(r.body), `"events":[]`) {
		t.Fatal(string(r.body))
	}
	if ev := h.events("agent_id=e0"); len(ev) != 2 || ev[1].Reason != "deregistered" {
		t.Fatalf("%+v", ev)
	}
	if ev := h.events("type=agent.lifecycle&limit=1"); len(ev) != 1 {
		t.Fatalf("%+v", ev)
	}
	if ev := h.events("type=lease.expired"); len(ev) != 0 {
		t.Fatalf("%+v", ev)
	}
	for _, q := range []string{"after=-1", "after=x", "limit=0", "agent_id=a%20b"} {
		expect(t, h.do("GET", "/api/v1/events?"+q, h.admin, nil), 400)
	}
}

// TestLiveTimings runs the real sweeper with the shortest thresholds a client may ask
// for (1/2/4 s) and checks, through the event log, that unhealthy and dead come after
// their deadlines and not much later.
func TestLiveTimings(t *testing.T) {
	h := start(t, registry.Config{SweepInterval: 20 * time.Millisecond})
	a := h.register(h.admin, "quick", 1, 2, 4)
	deadline := time.Now().Add(8 * time.Second)
	var evs []lifeline.Event
	for time.Now().Before(deadline) {
		evs = h.events("agent_id=quick")
		if len(evs) >= 3 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(evs) != 3 || evs[1].NewStatus != "unhealthy" || evs[2].NewStatus != "dead" {
		t.Fatalf("events %+v", evs)
	}
	// Never before the deadline. The upper bound is only a sanity check on a shared
	// machine; the 250 ms target is measured by the bench command, not here.
	if d := evs[1].Timestamp.Sub(a.LastHeartbeatAt); d <= 2*time.Second || d > 3*time.Second {
		t.Fatalf("unhealthy at +%v", d)
	}
	if d := evs[2].Timestamp.Sub(a.LastHeartbeatAt); d <= 4*time.Second || d > 5*time.Second {
		t.Fatalf("dead at +%v", d)
	}
	var got lifeline.Agent
	expect(t, h.do("GET", "/api/v1/agents/quick", h.admin, nil), 200).json(t, &got)
	if got.Status != "dead" {
		t.Fatalf("%+v", got)
	}
	expect(t, h.beat(h.admin, "quick"), 410)
}

func TestRestartKeepsEverything(t *testing.T) {
	h := start(t, registry.Config{})
	coord := h.newKey(lifeline.RoleCoordinator)
	h.register(coord, "r1", 1, 2, 4)
	h.register(coord, "r2")
	expect(t, h.do("DELETE", "/api/v1/agents/r2", coord, nil), 204)
	before := h.events("")
	h.restart()
	var a lifeline.Agent
	expect(t, h.do("GET", "/api/v1/agents/r1", coord, nil), 200).json(t, &a)
	if a.Status != "active" {
		t.Fatalf("r1 after restart %+v", a)
	}
	expect(t, h.do("GET", "/api/v1/agents/r2", coord, nil), 200).json(t, &a)
	if a.Status != "deregistered" {
		t.Fatalf("r2 after restart %+v", a)
	}
	after := h.events("")
	if len(after) != len(before) {
		t.Fatalf("events %d → %d", len(before), len(after))
	}
	expect(t, h.beat(coord, "r1"), 200)
}

func TestMethodNotAllowedOnKnownPath(t *testing.T) {
	h := start(t, registry.Config{})
	r := h.do("POST", "/heartbeat", "", nil)
	if r.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("%d", r.StatusCode)
	}
}
