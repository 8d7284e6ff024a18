package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/lifeline-dev/lifeline"
	"github.com/lifeline-dev/lifeline/client"
)

const testKey = "ll_test_secret"

// seen is one request as the fake server received it.
type seen struct {
	Method string
	Path   string // escaped path
	Query  url.Values
	Header http.Header
	Body   string
}

// reply is the canned response of the fake server.
type reply struct {
	Status      int
	ContentType string
	Header      map[string]string
	Body        string
}

// fakeServer is an HTTP server on 127.0.0.1 that records every request and answers
// each with the reply currently set. It stands in for the Lifeline API.
type fakeServer struct {
	*httptest.Server
	mu    sync.Mutex
	reqs  []seen
	reply reply
}

func newFakeServer(t *testing.T) *fakeServer {
	t.Helper()
	f := &fakeServer{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.reqs = append(f.reqs, seen{Method: r.Method, Path: r.URL.EscapedPath(), Query: r.URL.Query(), Header: r.Header.Clone(), Body: string(body)})
		rep := f.reply
		f.mu.Unlock()
		for k, v := range rep.Header {
			w.Header().Set(k, v)
		}
		if rep.ContentType != "" {
			w.Header().Set("Content-Type", rep.ContentType)
		}
		if rep.Status == 0 {
			rep.Status = http.StatusOK
		}
		w.WriteHeader(rep.Status)
		io.WriteString(w, rep.Body)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeServer) respond(r reply) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reply = r
	f.reqs = nil
}

func (f *fakeServer) requests() []seen {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]seen(nil), f.reqs...)
}

// closeTracker is a RoundTripper that counts response bodies opened and closed, so
// tests can check the client never leaks one.
type closeTracker struct {
	opened, closed atomic.Int64
}

func (ct *closeTracker) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	ct.opened.Add(1)
	resp.Body = &trackedBody{ReadCloser: resp.Body, ct: ct}
	return resp, nil
}

type trackedBody struct {
	io.ReadCloser
	ct   *closeTracker
	once sync.Once
}

func (b *trackedBody) Close() error {
	b.once.Do(func() { b.ct.closed.Add(1) })
	return b.ReadCloser.Close()
}

// newClient returns a client for f that fails the test if a response body is left open.
func newClient(t *testing.T, f *fakeServer, opts ...client.Option) *client.Client {
	t.Helper()
	ct := &closeTracker{}
	t.Cleanup(func() {
		if o, c := ct.opened.Load(), ct.closed.Load(); o != c {
			t.Errorf("response bodies: %d opened, %d closed", o, c)
		}
	})
	opts = append([]client.Option{client.WithHTTPClient(&http.Client{Transport: ct})}, opts...)
	return client.New(f.URL, testKey, opts...)
}

const agentJSON = `{
  "agent_id": "agent-1",
  "role_id": "billing",
  "name": "Billing worker",
  "capabilities": ["billing", "refunds"],
  "capacity": {"max_concurrent_tasks": 10, "current_load": 3},
  "status": "active",
  "endpoint": "https://agent-1.example/",
  "heartbeat_config": {"interval_seconds": 30, "unhealthy_after_seconds": 90, "dead_after_seconds": 300},
  "metadata": {"region": "eu"},
  "registered_at": "2026-02-08T10:30:00.123Z",
  "last_heartbeat_at": "2026-02-08T10:31:00.5Z",
  "version": 7,
  "some_future_field": true
}`

func wantAgent() *lifeline.Agent {
	return &lifeline.Agent{
		AgentID:         "agent-1",
		RoleID:          "billing",
		Name:            "Billing worker",
		Capabilities:    []string{"billing", "refunds"},
		Capacity:        lifeline.Capacity{MaxConcurrentTasks: 10, CurrentLoad: 3},
		Status:          lifeline.StatusActive,
		Endpoint:        "https://agent-1.example/",
		HeartbeatConfig: lifeline.HeartbeatConfig{IntervalSeconds: 30, UnhealthyAfterSeconds: 90, DeadAfterSeconds: 300},
		Metadata:        json.RawMessage(`{"region": "eu"}`),
		RegisteredAt:    time.Date(2026, 2, 8, 10, 30, 0, 123e6, time.UTC),
		LastHeartbeatAt: time.Date(2026, 2, 8, 10, 31, 0, 500e6, time.UTC),
		Version:         7,
	}
}

func ptr[T any](v T) *T { return &v }

// TestRequests checks how every method encodes its request and decodes the answer.
func TestRequests(t *testing.T) {
	ctx := context.Background()
	jsonReply := func(status int, body string) reply {
		return reply{Status: status, ContentType: "application/json", Body: body}
	}

	tests := []struct {
		name  string
		reply reply
		call  func(c *client.Client) (any, error)
		// want* describe the request.
		wantMethod string
		wantPath   string
		wantQuery  url.Values
		wantBody   string // JSON, compared semantically; "" means no body
		wantHeader map[string]string
		noHeader   []string
		// wantResult is compared with the call's result.
		wantResult any
	}{
		{
			name:  "RegisterAgent",
			reply: reply{Status: 201, ContentType: "application/json", Header: map[string]string{"ETag": `"1"`, "Location": "/api/v1/agents/agent-1"}, Body: agentJSON},
			call: func(c *client.Client) (any, error) {
				return c.RegisterAgent(ctx, &lifeline.Registration{
					AgentID:         "agent-1",
					Capabilities:    []string{"billing"},
					Capacity:        &lifeline.RegistrationCapacity{MaxConcurrentTasks: ptr(10)},
					HeartbeatConfig: &lifeline.RegistrationHeartbeat{IntervalSeconds: ptr(10)},
					Metadata:        json.RawMessage(`{"region":"eu"}`),
				})
			},
			wantMethod: "POST",
			wantPath:   "/api/v1/agents",
			wantBody:   `{"agent_id":"agent-1","capabilities":["billing"],"capacity":{"max_concurrent_tasks":10},"heartbeat_config":{"interval_seconds":10},"metadata":{"region":"eu"}}`,
			wantHeader: map[string]string{"Content-Type": "application/json"},
			wantResult: wantAgent(),
		},
		{
			name:       "FindAgentByID",
			reply:      reply{Status: 200, ContentType: "application/json", Header: map[string]string{"ETag": `"7"`}, Body: agentJSON},
			call:       func(c *client.Client) (any, error) { return c.FindAgentByID(ctx, "agent-1") },
			wantMethod: "GET",
			wantPath:   "/api/v1/agents/agent-1",
			noHeader:   []string{"Content-Type", "If-Match"},
			wantResult: wantAgent(),
		},
		{
			name:  "FindAgentByIDEscapesPath",
			reply: jsonReply(200, agentJSON),
			call: func(c *client.Client) (any, error) {
				_, err := c.FindAgentByID(ctx, "a/b c")
				return nil, err
			},
			wantMethod: "GET",
			wantPath:   "/api/v1/agents/a%2Fb%20c",
		},
		{
			name:  "FindAgentsFilter",
			reply: jsonReply(200, `{"agents":[`+agentJSON+`],"total":42,"next_cursor":"agent-1"}`),
			call: func(c *client.Client) (any, error) {
				agents, total, next, err := c.FindAgents(ctx, lifeline.AgentFilter{
					Capabilities:         []string{"billing", "refunds"},
					Statuses:             []lifeline.Status{lifeline.StatusActive, lifeline.StatusDraining},
					RoleID:               "billing",
					MinAvailableCapacity: ptr(2),
					After:                "agent-0",
					Limit:                50,
				})
				return []any{agents, total, next}, err
			},
			wantMethod: "GET",
			wantPath:   "/api/v1/agents",
			wantQuery: url.Values{
				"capabilities":           {"billing,refunds"},
				"status":                 {"active,draining"},
				"role_id":                {"billing"},
				"min_available_capacity": {"2"},
				"limit":                  {"50"},
				"cursor":                 {"agent-0"},
			},
			wantResult: []any{[]*lifeline.Agent{wantAgent()}, 42, "agent-1"},
		},
		{
			name:  "FindAgentsDefaults",
			reply: jsonReply(200, `{"agents":[],"total":0}`),
			call: func(c *client.Client) (any, error) {
				agents, total, next, err := c.FindAgents(ctx, lifeline.AgentFilter{MinAvailableCapacity: ptr(0)})
				return []any{agents, total, next}, err
			},
			wantMethod: "GET",
			wantPath:   "/api/v1/agents",
			// min_available_capacity=0 is a real filter (drop overloaded agents), so it
			// is sent; every zero value without meaning is left to the server's default.
			wantQuery:  url.Values{"min_available_capacity": {"0"}},
			wantResult: []any{[]*lifeline.Agent{}, 0, ""},
		},
		{
			name:  "Heartbeat",
			reply: jsonReply(200, `{"acknowledged":true,"server_timestamp":"2026-02-08T10:31:00.5Z","agent_status":"draining","pending_commands":[{"command":"drain","reason":"deploy","drain_timeout_seconds":60}]}`),
			call: func(c *client.Client) (any, error) {
				return c.Heartbeat(ctx, "agent-1", &lifeline.Heartbeat{
					Status:          lifeline.StatusActive,
					CurrentLoad:     ptr(3),
					TasksInProgress: []string{"t1"},
					ClientTimestamp: time.Date(2026, 2, 8, 10, 31, 0, 0, time.UTC),
				})
			},
			wantMethod: "POST",
			wantPath:   "/api/v1/agents/agent-1/heartbeat",
			wantBody:   `{"status":"active","current_load":3,"tasks_in_progress":["t1"],"client_timestamp":"2026-02-08T10:31:00Z"}`,
			wantResult: &lifeline.HeartbeatAck{
				Acknowledged:    true,
				ServerTimestamp: time.Date(2026, 2, 8, 10, 31, 0, 500e6, time.UTC),
				AgentStatus:     lifeline.StatusDraining,
				PendingCommands: []lifeline.Command{{Command: "drain", Reason: "deploy", DrainTimeoutSeconds: 60}},
			},
		},
		{
			name:  "UpdateStatusSendsIfMatch",
			reply: jsonReply(200, agentJSON),
			call: func(c *client.Client) (any, error) {
				return c.UpdateStatus(ctx, "agent-1", 14, &lifeline.StatusUpdate{Status: lifeline.StatusDraining, DrainTimeoutSeconds: ptr(120)})
			},
			wantMethod: "PATCH",
			wantPath:   "/api/v1/agents/agent-1/status",
			wantBody:   `{"status":"draining","drain_timeout_seconds":120}`,
			wantHeader: map[string]string{"If-Match": `"14"`},
			wantResult: wantAgent(),
		},
		{
			name:  "UpdateStatusAnyVersion",
			reply: jsonReply(200, agentJSON),
			call: func(c *client.Client) (any, error) {
				_, err := c.UpdateStatus(ctx, "agent-1", -1, &lifeline.StatusUpdate{Status: lifeline.StatusDeregistered})
				return nil, err
			},
			wantMethod: "PATCH",
			wantPath:   "/api/v1/agents/agent-1/status",
			wantBody:   `{"status":"deregistered"}`,
			wantHeader: map[string]string{"If-Match": "*"},
		},
		{
			// Version 0 never exists; the server answers precondition_failed, as the
			// in-process service does, rather than precondition_required.
			name:  "UpdateStatusVersionZero",
			reply: jsonReply(200, agentJSON),
			call: func(c *client.Client) (any, error) {
				_, err := c.UpdateStatus(ctx, "agent-1", 0, &lifeline.StatusUpdate{Status: lifeline.StatusDeregistered})
				return nil, err
			},
			wantMethod: "PATCH",
			wantPath:   "/api/v1/agents/agent-1/status",
			wantHeader: map[string]string{"If-Match": `"0"`},
			wantBody:   `{"status":"deregistered"}`,
		},
		{
			name:  "SendCommand",
			reply: jsonReply(202, `{"agent_id":"agent-1","command":{"command":"drain","reason":"deploy"}}`),
			call: func(c *client.Client) (any, error) {
				return c.SendCommand(ctx, "agent-1", &lifeline.Command{Command: "drain", Reason: "deploy"})
			},
			wantMethod: "POST",
			wantPath:   "/api/v1/agents/agent-1/commands",
			wantBody:   `{"command":"drain","reason":"deploy"}`,
			wantResult: &lifeline.Agent{AgentID: "agent-1", PendingCommand: &lifeline.Command{Command: "drain", Reason: "deploy"}},
		},
		{
			name:       "DeregisterAgent",
			reply:      reply{Status: 204},
			call:       func(c *client.Client) (any, error) { return nil, c.DeregisterAgent(ctx, "agent-1") },
			wantMethod: "DELETE",
			wantPath:   "/api/v1/agents/agent-1",
		},
		{
			name:       "Pools",
			reply:      jsonReply(200, `{"pools":[{"role_id":"billing","members":3,"active_members":2,"max_concurrent_tasks":20,"current_load":5,"available_capacity":15}]}`),
			call:       func(c *client.Client) (any, error) { return c.Pools(ctx) },
			wantMethod: "GET",
			wantPath:   "/api/v1/pools",
			wantResult: []*lifeline.Pool{{RoleID: "billing", Members: 3, ActiveMembers: 2, MaxConcurrentTasks: 20, CurrentLoad: 5, AvailableCapacity: 15}},
		},
		{
			name:       "FindPool",
			reply:      jsonReply(200, `{"role_id":"billing","members":1,"active_members":1,"max_concurrent_tasks":4,"current_load":1,"available_capacity":3}`),
			call:       func(c *client.Client) (any, error) { return c.FindPool(ctx, "billing") },
			wantMethod: "GET",
			wantPath:   "/api/v1/pools/billing",
			wantResult: &lifeline.Pool{RoleID: "billing", Members: 1, ActiveMembers: 1, MaxConcurrentTasks: 4, CurrentLoad: 1, AvailableCapacity: 3},
		},
		{
			name:  "FindEvents",
			reply: jsonReply(200, `{"events":[{"seq":6,"type":"agent.lifecycle","agent_id":"agent-1","previous_status":"active","new_status":"unhealthy","reason":"heartbeat_timeout","timestamp":"2026-02-08T10:30:00.123Z"}],"next_after":6}`),
			call: func(c *client.Client) (any, error) {
				events, next, err := c.FindEvents(ctx, lifeline.EventFilter{After: 5, Limit: 10, Types: []string{"agent.lifecycle", "lease.expired"}, AgentID: "agent-1"})
				return []any{events, next}, err
			},
			wantMethod: "GET",
			wantPath:   "/api/v1/events",
			wantQuery:  url.Values{"after": {"5"}, "limit": {"10"}, "type": {"agent.lifecycle,lease.expired"}, "agent_id": {"agent-1"}},
			wantResult: []any{[]lifeline.Event{{
				Seq: 6, Type: "agent.lifecycle", AgentID: "agent-1",
				PreviousStatus: lifeline.StatusActive, NewStatus: lifeline.StatusUnhealthy,
				Reason: "heartbeat_timeout", Timestamp: time.Date(2026, 2, 8, 10, 30, 0, 123e6, time.UTC),
			}}, int64(6)},
		},
		{
			name:  "FindEventsDefaults",
			reply: jsonReply(200, `{"events":[],"next_after":0}`),
			call: func(c *client.Client) (any, error) {
				_, _, err := c.FindEvents(ctx, lifeline.EventFilter{})
				return nil, err
			},
			wantMethod: "GET",
			wantPath:   "/api/v1/events",
			wantQuery:  url.Values{},
		},
		{
			name:  "CreateKey",
			reply: jsonReply(201, `{"id":"key-1","key":"ll_secret","role":"coordinator","name":"ops","created_at":"2026-02-08T10:30:00Z"}`),
			call: func(c *client.Client) (any, error) {
				return c.CreateKey(ctx, &lifeline.KeyRequest{Role: lifeline.RoleCoordinator, Name: "ops"})
			},
			wantMethod: "POST",
			wantPath:   "/api/v1/keys",
			wantBody:   `{"role":"coordinator","name":"ops"}`,
			wantResult: &lifeline.NewKey{
				Key:    lifeline.Key{ID: "key-1", Role: lifeline.RoleCoordinator, Name: "ops", CreatedAt: time.Date(2026, 2, 8, 10, 30, 0, 0, time.UTC)},
				Secret: "ll_secret",
			},
		},
		{
			name:       "Keys",
			reply:      jsonReply(200, `{"keys":[{"id":"key-1","role":"admin","name":"root","created_at":"2026-02-08T10:30:00Z","revoked_at":"2026-02-09T10:30:00Z"}]}`),
			call:       func(c *client.Client) (any, error) { return c.Keys(ctx) },
			wantMethod: "GET",
			wantPath:   "/api/v1/keys",
			wantResult: []*lifeline.Key{{
				ID: "key-1", Role: lifeline.RoleAdmin, Name: "root",
				CreatedAt: time.Date(2026, 2, 8, 10, 30, 0, 0, time.UTC),
				RevokedAt: ptr(time.Date(2026, 2, 9, 10, 30, 0, 0, time.UTC)),
			}},
		},
		{
			name:       "RevokeKey",
			reply:      reply{Status: 204},
			call:       func(c *client.Client) (any, error) { return nil, c.RevokeKey(ctx, "key-1") },
			wantMethod: "DELETE",
			wantPath:   "/api/v1/keys/key-1",
		},
		{
			name:       "Health",
			reply:      jsonReply(200, `{"status":"ok","store":"ok","agents":{"active":2,"draining":1,"unhealthy":0,"dead":0,"deregistered":4},"uptime_seconds":12}`),
			call:       func(c *client.Client) (any, error) { return c.Health(ctx) },
			wantMethod: "GET",
			wantPath:   "/health",
			noHeader:   []string{"X-API-Key"},
			wantResult: &client.Health{Status: "ok", Store: "ok", UptimeSeconds: 12, Agents: map[lifeline.Status]int{
				lifeline.StatusActive: 2, lifeline.StatusDraining: 1, lifeline.StatusUnhealthy: 0, lifeline.StatusDead: 0, lifeline.StatusDeregistered: 4,
			}},
		},
	}

	f := newFakeServer(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.respond(tt.reply)
			c := newClient(t, f, client.WithUserAgent("lifeline-test/1"))
			got, err := tt.call(c)
			if err != nil {
				t.Fatalf("call: %v", err)
			}

			reqs := f.requests()
			if len(reqs) != 1 {
				t.Fatalf("server got %d requests, want 1", len(reqs))
			}
			r := reqs[0]
			if r.Method != tt.wantMethod || r.Path != tt.wantPath {
				t.Errorf("request = %s %s, want %s %s", r.Method, r.Path, tt.wantMethod, tt.wantPath)
			}
			if tt.wantQuery != nil {
				if diff := cmp.Diff(tt.wantQuery, r.Query); diff != "" {
					t.Errorf("query (-want +got):\n%s", diff)
				}
			}
			if tt.wantBody == "" {
				if r.Body != "" {
					t.Errorf("body = %s, want none", r.Body)
				}
			} else {
				var want, gotBody any
				if err := json.Unmarshal([]byte(tt.wantBody), &want); err != nil {
					t.Fatal(err)
				}
				if err := json.Unmarshal([]byte(r.Body), &gotBody); err != nil {
					t.Fatalf("request body %q: %v", r.Body, err)
				}
				if diff := cmp.Diff(want, gotBody); diff != "" {
					t.Errorf("request body (-want +got):\n%s", diff)
				}
			}
			if tt.wantPath != "/health" {
				if k := r.Header.Get("X-API-Key"); k != testKey {
					t.Errorf("X-API-Key = %q, want %q", k, testKey)
				}
			}
			if ua := r.Header.Get("User-Agent"); ua != "lifeline-test/1" {
				t.Errorf("User-Agent = %q", ua)
			}
			for k, v := range tt.wantHeader {
				if got := r.Header.Get(k); got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
			for _, k := range tt.noHeader {
				if v, ok := r.Header[http.CanonicalHeaderKey(k)]; ok {
					t.Errorf("header %s = %q, want none", k, v)
				}
			}
			if tt.wantResult != nil {
				if diff := cmp.Diff(tt.wantResult, got); diff != "" {
					t.Errorf("result (-want +got):\n%s", diff)
				}
			}
		})
	}
}

// TestErrors checks that error responses become *lifeline.Error with the server's code,
// so lifeline.ErrorCode is the same as in process.
func TestErrors(t *testing.T) {
	problem := func(status int, code, detail string, extra string) reply {
		body := `{"type":"https://lifeline.dev/problems/` + code + `","title":"` + http.StatusText(status) + `","status":` + itoa(status) +
			`,"detail":"` + detail + `","code":"` + code + `","instance":"/api/v1/agents/agent-1/status"` + extra + `}`
		return reply{Status: status, ContentType: "application/problem+json", Body: body}
	}
	tests := []struct {
		name        string
		reply       reply
		wantCode    string
		wantMessage string
		wantAllowed []string
	}{
		{"ConflictWithAllowed", problem(409, "conflict", "cannot drain an agent that is dead", `,"allowed":["deregistered"]`), lifeline.EConflict, "cannot drain an agent that is dead", []string{"deregistered"}},
		{"PreconditionFailed", problem(412, "precondition_failed", "version is 15, not 14", ""), lifeline.EPreconditionFailed, "version is 15, not 14", nil},
		{"PreconditionRequired", problem(428, "precondition_required", "If-Match is required", ""), lifeline.EPreconditionRequired, "If-Match is required", nil},
		{"Gone", problem(410, "gone", "agent is dead; it must register again", ""), lifeline.EGone, "agent is dead; it must register again", nil},
		{"Unauthorized", problem(401, "unauthorized", "missing or unknown API key", ""), lifeline.EUnauthorized, "missing or unknown API key", nil},
		{"Forbidden", problem(403, "forbidden", "coordinator or admin key required", ""), lifeline.EForbidden, "coordinator or admin key required", nil},
		// A code this client version does not know is passed through, not remapped.
		{"UnknownCodeKept", problem(409, "agent_draining", "agent is draining", ""), "agent_draining", "agent is draining", nil},
		{"NoCodeFallsBackToStatus", reply{Status: 404, ContentType: "application/problem+json", Body: `{"title":"Not Found","status":404,"detail":"no such agent"}`}, lifeline.ENotFound, "no such agent", nil},
		{"TitleWhenNoDetail", reply{Status: 413, ContentType: "application/problem+json", Body: `{"title":"Request Entity Too Large","status":413}`}, lifeline.EPayloadTooLarge, "Request Entity Too Large", nil},
		{"ProxyTextPage", reply{Status: 502, ContentType: "text/html", Body: `<html>bad gateway</html>`}, lifeline.EInternal, "PATCH /api/v1/agents/agent-1/status: 502 Bad Gateway", nil},
		{"EmptyBody", reply{Status: 503}, lifeline.EUnavailable, "PATCH /api/v1/agents/agent-1/status: 503 Service Unavailable", nil},
	}
	f := newFakeServer(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.respond(tt.reply)
			c := newClient(t, f)
			a, err := c.UpdateStatus(context.Background(), "agent-1", 14, &lifeline.StatusUpdate{Status: lifeline.StatusDraining})
			if err == nil {
				t.Fatalf("UpdateStatus = %+v, want error", a)
			}
			if got := lifeline.ErrorCode(err); got != tt.wantCode {
				t.Errorf("ErrorCode = %q, want %q (err %v)", got, tt.wantCode, err)
			}
			if got := lifeline.ErrorMessage(err); got != tt.wantMessage {
				t.Errorf("ErrorMessage = %q, want %q", got, tt.wantMessage)
			}
			var le *lifeline.Error
			if !errors.As(err, &le) {
				t.Fatalf("error %T is not *lifeline.Error", err)
			}
			if diff := cmp.Diff(tt.wantAllowed, le.Allowed); diff != "" {
				t.Errorf("Allowed (-want +got):\n%s", diff)
			}
		})
	}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func TestHealth(t *testing.T) {
	f := newFakeServer(t)
	t.Run("Unavailable", func(t *testing.T) {
		f.respond(reply{Status: 503, ContentType: "application/json", Body: `{"status":"unavailable","store":"database is locked","agents":{"active":0},"uptime_seconds":3.5}`})
		h, err := newClient(t, f).Health(context.Background())
		if lifeline.ErrorCode(err) != lifeline.EUnavailable {
			t.Fatalf("err = %v, want unavailable", err)
		}
		if !strings.Contains(err.Error(), "database is locked") {
			t.Errorf("err = %v, want the store error text", err)
		}
		if h == nil || h.Status != "unavailable" || h.Store != "database is locked" || h.UptimeSeconds != 3.5 {
			t.Errorf("health = %+v", h)
		}
	})
	t.Run("ProblemOnly", func(t *testing.T) {
		f.respond(reply{Status: 500, ContentType: "application/problem+json", Body: `{"status":500,"code":"internal","detail":"internal error"}`})
		h, err := newClient(t, f).Health(context.Background())
		if lifeline.ErrorCode(err) != lifeline.EInternal || h != nil {
			t.Fatalf("Health = %+v, %v; want nil, internal", h, err)
		}
	})
}

func TestEmptyIDNotSent(t *testing.T) {
	f := newFakeServer(t)
	c := newClient(t, f)
	ctx := context.Background()
	calls := map[string]func() error{
		"FindAgentByID":   func() error { _, err := c.FindAgentByID(ctx, ""); return err },
		"Heartbeat":       func() error { _, err := c.Heartbeat(ctx, "", &lifeline.Heartbeat{}); return err },
		"UpdateStatus":    func() error { _, err := c.UpdateStatus(ctx, "", 1, &lifeline.StatusUpdate{}); return err },
		"SendCommand":     func() error { _, err := c.SendCommand(ctx, "", &lifeline.Command{}); return err },
		"DeregisterAgent": func() error { return c.DeregisterAgent(ctx, "") },
		"FindPool":        func() error { _, err := c.FindPool(ctx, ""); return err },
		"RevokeKey":       func() error { return c.RevokeKey(ctx, "") },
	}
	for name, call := range calls {
		if err := call(); lifeline.ErrorCode(err) != lifeline.EInvalid {
			t.Errorf("%s: err = %v, want invalid", name, err)
		}
	}
	if n := len(f.requests()); n != 0 {
		t.Errorf("server got %d requests, want 0", n)
	}
}

func TestAuthenticateNotAvailable(t *testing.T) {
	_, err := client.New("http://127.0.0.1:1", testKey).Authenticate(context.Background(), "x")
	if lifeline.ErrorCode(err) != lifeline.EInvalid {
		t.Fatalf("err = %v, want invalid", err)
	}
}

func TestBaseURLPrefix(t *testing.T) {
	f := newFakeServer(t)
	f.respond(reply{Status: 204})
	c := client.New(f.URL+"/lifeline/", testKey)
	if err := c.DeregisterAgent(context.Background(), "agent-1"); err != nil {
		t.Fatal(err)
	}
	if got := f.requests()[0].Path; got != "/lifeline/api/v1/agents/agent-1" {
		t.Errorf("path = %q", got)
	}
}

func TestNoKeyNoHeader(t *testing.T) {
	f := newFakeServer(t)
	f.respond(reply{Status: 204})
	if err := client.New(f.URL, "").RevokeKey(context.Background(), "k"); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.requests()[0].Header["X-Api-Key"]; ok {
		t.Error("X-API-Key sent without a key")
	}
}

func TestResponseTooLarge(t *testing.T) {
	f := newFakeServer(t)
	big := `{"agent_id":"a","name":"` + strings.Repeat("x", 1<<20) + `"}`
	f.respond(reply{Status: 200, ContentType: "application/json", Body: big})
	_, err := newClient(t, f).FindAgentByID(context.Background(), "a")
	if err == nil || !strings.Contains(err.Error(), "too large") {
		t.Fatalf("err = %v, want too large", err)
	}

	// A list page may be bigger than a single record.
	page := `{"agents":[` + strings.Repeat(`{"agent_id":"a","metadata":{"pad":"`+strings.Repeat("x", 16000)+`"}},`, 99) + `{"agent_id":"b"}],"total":100}`
	f.respond(reply{Status: 200, ContentType: "application/json", Body: page})
	agents, _, _, err := newClient(t, f).FindAgents(context.Background(), lifeline.AgentFilter{})
	if err != nil || len(agents) != 100 {
		t.Fatalf("FindAgents = %d agents, %v", len(agents), err)
	}
}

func TestBadJSON(t *testing.T) {
	f := newFakeServer(t)
	f.respond(reply{Status: 200, ContentType: "application/json", Body: `{"agent_id":`})
	if _, err := newClient(t, f).FindAgentByID(context.Background(), "a"); err == nil {
		t.Fatal("want a decoding error")
	}
}

func TestContextCancelled(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := client.New(srv.URL, testKey).FindAgentByID(ctx, "a")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want context.DeadlineExceeded", err)
	}
}
