package apitest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/lifeline-dev/lifeline"
	"github.com/lifeline-dev/lifeline/api"
	"github.com/lifeline-dev/lifeline/internal/apitest"
)

func TestSpec(t *testing.T) {
	doc := apitest.LoadSpec(t)

	t.Run("Valid", func(t *testing.T) {
		if err := doc.Validate(context.Background()); err != nil {
			t.Fatal(err)
		}
		if !doc.IsOpenAPI31OrLater() {
			t.Fatalf("openapi = %q, want 3.1.x", doc.OpenAPI)
		}
		if doc.Info.Title != "Lifeline" || doc.Info.Version != "0.1.0" {
			t.Errorf("info = %q %q", doc.Info.Title, doc.Info.Version)
		}
	})

	// kin-openapi does not check the 3.1 `examples` of schemas against them.
	t.Run("Examples", func(t *testing.T) {
		n := 0
		for name, ref := range doc.Components.Schemas {
			for i, ex := range ref.Value.Examples {
				n++
				if err := ref.Value.VisitJSON(ex, openapi3.EnableJSONSchema2020()); err != nil {
					t.Errorf("%s example %d: %v", name, i, err)
				}
			}
		}
		if n == 0 {
			t.Error("no schema examples found")
		}
	})

	t.Run("EveryOperationDescribed", func(t *testing.T) {
		for path, item := range doc.Paths.Map() {
			for method, op := range item.Operations() {
				if op.OperationID == "" || op.Summary == "" || op.Description == "" {
					t.Errorf("%s %s: needs operationId, summary and description", method, path)
				}
				if !strings.HasPrefix(path, "/api/v1/") {
					continue
				}
				for _, status := range []int{401, 500, 503} {
					if op.Responses.Status(status) == nil {
						t.Errorf("%s %s: %d is not documented", method, path, status)
					}
				}
				if op.RequestBody != nil && op.Responses.Status(413) == nil {
					t.Errorf("%s %s: takes a body but does not document 413", method, path)
				}
			}
		}
	})

	// The enums of the document are the domain's.
	t.Run("Enums", func(t *testing.T) {
		var statuses []string
		for _, s := range lifeline.Statuses {
			statuses = append(statuses, string(s))
		}
		if got := enum(doc, "AgentStatus"); !slices.Equal(got, statuses) {
			t.Errorf("AgentStatus enum = %v, want %v", got, statuses)
		}
		roles := []string{string(lifeline.RoleAgent), string(lifeline.RoleCoordinator), string(lifeline.RoleAdmin)}
		if got := enum(doc, "Role"); !slices.Equal(got, roles) {
			t.Errorf("Role enum = %v, want %v", got, roles)
		}
	})

	// Every problem response names the code the domain maps to its status.
	t.Run("ProblemCodes", func(t *testing.T) {
		for name, ref := range doc.Components.Responses {
			schema := ref.Value.Content.Get("application/problem+json").Schema.Value
			if len(schema.AllOf) != 2 {
				t.Errorf("%s: want allOf [Problem, {status, code}]", name)
				continue
			}
			props := schema.AllOf[1].Value.Properties
			status := int(props["status"].Value.Enum[0].(float64))
			code := props["code"].Value.Enum[0].(string)
			if code == "method_not_allowed" {
				continue // produced by the mux, not by a domain error
			}
			if got := lifeline.HTTPStatus(code); got != status {
				t.Errorf("%s: code %s has status %d in the domain, %d in the document", name, code, got, status)
			}
		}
	})

	// The schemas have exactly the JSON members of the domain types, and response
	// schemas require exactly the members that are never omitted.
	t.Run("DomainFields", func(t *testing.T) {
		for _, tc := range []struct {
			schema   string
			v        any
			response bool
		}{
			{"Agent", lifeline.Agent{}, true},
			{"Registration", lifeline.Registration{}, false},
			{"Heartbeat", lifeline.Heartbeat{}, false},
			{"HeartbeatAck", lifeline.HeartbeatAck{}, true},
			{"Command", lifeline.Command{}, true},
			{"StatusUpdate", lifeline.StatusUpdate{}, false},
			{"Pool", lifeline.Pool{}, true},
			{"Event", lifeline.Event{}, true},
			{"Key", lifeline.Key{}, true},
			{"NewKey", lifeline.NewKey{}, true},
			{"KeyRequest", lifeline.KeyRequest{}, false},
			{"Capacity", lifeline.Capacity{}, true},
			{"HeartbeatConfig", lifeline.HeartbeatConfig{}, true},
			{"Lease", lifeline.Lease{}, true},
			{"LeaseRequest", lifeline.LeaseRequest{}, false},
			{"LeaseRenewal", lifeline.LeaseRenewal{}, false},
			{"TaskUpdate", lifeline.TaskUpdate{}, false},
			{"Task", lifeline.Task{}, true},
		} {
			s := doc.Components.Schemas[tc.schema].Value
			all, always := jsonFields(reflect.TypeOf(tc.v))
			var props []string
			for name := range s.Properties {
				props = append(props, name)
			}
			slices.Sort(props)
			if !slices.Equal(props, all) {
				t.Errorf("%s: properties %v, domain fields %v", tc.schema, props, all)
			}
			req := slices.Sorted(slices.Values(s.Required))
			if tc.response && !slices.Equal(req, always) {
				t.Errorf("%s: required %v, fields never omitted %v", tc.schema, req, always)
			}
			if tc.response == (s.AdditionalProperties.Has != nil && !*s.AdditionalProperties.Has) {
				t.Errorf("%s: additionalProperties:false belongs on request bodies only", tc.schema)
			}
		}
	})
}

func enum(doc *openapi3.T, schema string) []string {
	var out []string
	for _, v := range doc.Components.Schemas[schema].Value.Enum {
		out = append(out, v.(string))
	}
	return out
}

// jsonFields returns the sorted JSON member names of struct type t (embedded structs
// flattened) and those of them that encoding/json never omits.
func jsonFields(t reflect.Type) (all, always []string) {
	for f := range t.Fields() {
		tag := f.Tag.Get("json")
		if tag == "-" || !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			a, b := jsonFields(f.Type)
			all, always = append(all, a...), append(always, b...)
			continue
		}
		if name == "" {
			name = f.Name
		}
		all = append(all, name)
		if !strings.Contains(opts, "omitempty") {
			always = append(always, name)
		}
	}
	slices.Sort(all)
	slices.Sort(always)
	return all, always
}

// recorder is a testing.TB that records errors instead of failing the test, so the
// tests can check that the Transport reports what it should.
type recorder struct {
	testing.TB
	mu   sync.Mutex
	errs []string
}

func (r *recorder) Error(args ...any) { r.add(fmt.Sprint(args...)) }

func (r *recorder) Errorf(format string, args ...any) { r.add(fmt.Sprintf(format, args...)) }

func (r *recorder) add(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, s)
}

func (r *recorder) errors() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.errs)
}

func validAgent() map[string]any {
	return map[string]any{
		"agent_id":          "planner-7",
		"role_id":           "planner",
		"capabilities":      []string{"plan"},
		"capacity":          map[string]any{"max_concurrent_tasks": 4, "current_load": 0},
		"status":            "active",
		"heartbeat_config":  map[string]any{"interval_seconds": 30, "unhealthy_after_seconds": 90, "dead_after_seconds": 300},
		"metadata":          map[string]any{},
		"registered_at":     "2026-02-08T10:30:00.123Z",
		"last_heartbeat_at": "2026-02-08T10:30:00.123Z",
		"version":           1,
	}
}

func without(m map[string]any, key string) map[string]any {
	delete(m, key)
	return m
}

func problem(status int, code string) map[string]any {
	return map[string]any{
		"type":     "https://lifeline.dev/problems/" + code,
		"title":    http.StatusText(status),
		"status":   status,
		"detail":   "test",
		"code":     code,
		"instance": "/x",
	}
}

// reply is what the fake server answers.
type reply struct {
	status  int
	ctype   string
	headers map[string]string
	body    any // JSON-encoded unless a string
}

func TestTransport(t *testing.T) {
	for _, tc := range []struct {
		name   string
		method string
		path   string
		key    string // X-API-Key; empty sends none
		header map[string]string
		body   string
		reply  reply
		want   string // substring of the one expected error; empty wants none
	}{
		{
			name: "GetAgentOK", method: "GET", path: "/api/v1/agents/planner-7", key: "k",
			reply: reply{status: 200, headers: map[string]string{"ETag": `"1"`}, body: validAgent()},
		},
		{
			name: "AgentWithoutStatus", method: "GET", path: "/api/v1/agents/planner-7", key: "k",
			reply: reply{status: 200, headers: map[string]string{"ETag": `"1"`}, body: without(validAgent(), "status")},
			want:  `"status"`,
		},
		{
			name: "AgentWithUnknownStatus", method: "GET", path: "/api/v1/agents/planner-7", key: "k",
			reply: reply{status: 200, headers: map[string]string{"ETag": `"1"`}, body: func() map[string]any {
				a := validAgent()
				a["status"] = "sleeping"
				return a
			}()},
			want: "sleeping",
		},
		{
			name: "AgentWithNullCapabilities", method: "GET", path: "/api/v1/agents/planner-7", key: "k",
			reply: reply{status: 200, headers: map[string]string{"ETag": `"1"`}, body: func() map[string]any {
				a := validAgent()
				a["capabilities"] = nil
				return a
			}()},
			want: "capabilities",
		},
		{
			name: "AgentWithNewMember", method: "GET", path: "/api/v1/agents/planner-7", key: "k",
			reply: reply{status: 200, headers: map[string]string{"ETag": `"1"`}, body: func() map[string]any {
				a := validAgent()
				a["added_in_v2"] = true // responses are open for forward compatibility
				return a
			}()},
		},
		{
			name: "AgentWithoutETag", method: "GET", path: "/api/v1/agents/planner-7", key: "k",
			reply: reply{status: 200, body: validAgent()},
			want:  `"ETag" missing`,
		},
		{
			name: "AgentWithBadTimestamp", method: "GET", path: "/api/v1/agents/planner-7", key: "k",
			reply: reply{status: 200, headers: map[string]string{"ETag": `"1"`}, body: func() map[string]any {
				a := validAgent()
				a["registered_at"] = "yesterday"
				return a
			}()},
			want: "registered_at",
		},
		{
			name: "UndocumentedStatus", method: "GET", path: "/api/v1/agents/planner-7", key: "k",
			reply: reply{status: http.StatusTeapot, ctype: "application/problem+json", body: problem(418, "invalid")},
			want:  "status is not supported",
		},
		{
			name: "NotFoundOK", method: "GET", path: "/api/v1/agents/planner-7", key: "k",
			reply: reply{status: 404, ctype: "application/problem+json", body: problem(404, "not_found")},
		},
		{
			name: "NotFoundWithWrongCode", method: "GET", path: "/api/v1/agents/planner-7", key: "k",
			reply: reply{status: 404, ctype: "application/problem+json", body: problem(404, "conflict")},
			want:  "conflict",
		},
		{
			name: "ProblemAsPlainJSON", method: "GET", path: "/api/v1/agents/planner-7", key: "k",
			reply: reply{status: 404, ctype: "application/json", body: problem(404, "not_found")},
			want:  "application/json",
		},
		{
			name: "ConflictWithAllowed", method: "PATCH", path: "/api/v1/agents/planner-7/status", key: "k",
			header: map[string]string{"If-Match": `"3"`}, body: `{"status":"draining"}`,
			reply: reply{status: 409, ctype: "application/problem+json", body: func() map[string]any {
				p := problem(409, "conflict")
				p["allowed"] = []string{"deregistered"}
				return p
			}()},
		},
		{
			name: "UndocumentedPath", method: "GET", path: "/api/v1/agents/planner-7/ws", key: "k",
			reply: reply{status: 200, body: map[string]any{}},
			want:  "undocumented path",
		},
		{
			name: "MethodNotAllowedAnswered405", method: "PUT", path: "/api/v1/agents/planner-7", key: "k",
			reply: reply{status: 405, ctype: "application/problem+json", body: problem(405, "method_not_allowed")},
		},
		{
			name: "UndocumentedMethodAccepted", method: "PUT", path: "/api/v1/agents/planner-7", key: "k",
			reply: reply{status: 200, body: validAgent()},
			want:  "undocumented method",
		},
		{
			name: "RegisterOK", method: "POST", path: "/api/v1/agents", key: "k",
			body:  `{"agent_id":"planner-7","capabilities":["plan"],"metadata":null,"heartbeat_config":{"interval_seconds":10}}`,
			reply: reply{status: 201, headers: map[string]string{"ETag": `"1"`, "Location": "/api/v1/agents/planner-7"}, body: validAgent()},
		},
		{
			name: "RegisterWithStringMetadataAccepted", method: "POST", path: "/api/v1/agents", key: "k",
			body:  `{"metadata":"x"}`,
			reply: reply{status: 201, headers: map[string]string{"ETag": `"1"`, "Location": "/api/v1/agents/planner-7"}, body: validAgent()},
			want:  "metadata",
		},
		{
			name: "PatchStatusOK", method: "PATCH", path: "/api/v1/agents/planner-7/status", key: "k",
			header: map[string]string{"If-Match": `W/"3"`}, body: `{"status":"draining","drain_timeout_seconds":600}`,
			reply: reply{status: 200, headers: map[string]string{"ETag": `"4"`}, body: func() map[string]any {
				a := validAgent()
				a["status"], a["version"], a["drain_deadline"] = "draining", 4, "2026-02-08T10:40:00Z"
				return a
			}()},
		},
		{
			name: "PatchStatusWithoutIfMatchAccepted", method: "PATCH", path: "/api/v1/agents/planner-7/status", key: "k",
			body:  `{"status":"deregistered"}`,
			reply: reply{status: 200, headers: map[string]string{"ETag": `"4"`}, body: validAgent()},
			want:  "If-Match",
		},
		{
			name: "CommandOK", method: "POST", path: "/api/v1/agents/planner-7/commands", key: "k",
			body: `{"command":"drain","reason":"scale down"}`,
			reply: reply{status: 202, body: map[string]any{
				"agent_id": "planner-7", "command": map[string]any{"command": "drain", "reason": "scale down"},
			}},
		},
		{
			name: "HeartbeatOK", method: "POST", path: "/api/v1/agents/planner-7/heartbeat", key: "k",
			body: `{"status":"active","current_load":2,"tasks_in_progress":["t-1","t-2"],"client_timestamp":"2026-02-08T10:30:00.123Z"}`,
			reply: reply{status: 200, body: map[string]any{
				"acknowledged": true, "server_timestamp": "2026-02-08T10:30:00.125Z", "agent_status": "active",
				"pending_commands": []any{map[string]any{"command": "drain", "drain_timeout_seconds": 60}},
			}},
		},
		{
			name: "EventsOK", method: "GET", path: "/api/v1/events?after=0&limit=2&type=agent.lifecycle", key: "k",
			reply: reply{status: 200, body: map[string]any{"next_after": 1, "events": []any{map[string]any{
				"seq": 1, "type": "agent.lifecycle", "agent_id": "planner-7", "previous_status": "registering",
				"new_status": "active", "reason": "registered", "timestamp": "2026-02-08T10:30:00.123Z",
			}}}},
		},
		{
			name: "CreateKeyOK", method: "POST", path: "/api/v1/keys", key: "k",
			body: `{"role":"agent","name":"planner"}`,
			reply: reply{status: 201, body: map[string]any{
				"id": "01J0", "key": "ll_secret", "role": "agent", "name": "planner", "created_at": "2026-02-08T10:30:00Z",
			}},
		},
		{
			name: "ListKeysOK", method: "GET", path: "/api/v1/keys", key: "k",
			reply: reply{status: 200, body: map[string]any{"keys": []any{map[string]any{
				"id": "01J0", "role": "admin", "name": "", "created_at": "2026-02-08T10:30:00Z", "revoked_at": "2026-02-09T10:30:00Z",
			}}}},
		},
		{
			name: "PoolOK", method: "GET", path: "/api/v1/pools/planner", key: "k",
			reply: reply{status: 200, body: map[string]any{
				"role_id": "planner", "members": 3, "active_members": 2, "max_concurrent_tasks": 8, "current_load": 3, "available_capacity": 5,
			}},
		},
		{
			name: "OpenAPIOK", method: "GET", path: "/openapi.yaml",
			reply: reply{status: 200, ctype: "application/yaml", body: string(api.OpenAPI)},
		},
		{
			name: "HealthOK", method: "GET", path: "/health",
			reply: reply{status: 200, body: map[string]any{
				"status": "ok", "store": "ok", "uptime_seconds": 3,
				"agents": map[string]any{"active": 1, "draining": 0, "unhealthy": 0, "dead": 0, "deregistered": 0},
			}},
		},
		{
			name: "RegisterWithoutLocation", method: "POST", path: "/api/v1/agents", key: "k",
			body:  `{}`,
			reply: reply{status: 201, headers: map[string]string{"ETag": `"1"`}, body: validAgent()},
			want:  `"Location" missing`,
		},
		{
			// Tests send invalid requests on purpose; a 4xx answer to one is fine.
			name: "InvalidRequestRejected", method: "POST", path: "/api/v1/agents", key: "k",
			body:  `{"agent_id":"planner-7","colour":"blue"}`,
			reply: reply{status: 400, ctype: "application/problem+json", body: problem(400, "invalid")},
		},
		{
			name: "InvalidRequestAccepted", method: "POST", path: "/api/v1/agents", key: "k",
			body:  `{"agent_id":"planner-7","colour":"blue"}`,
			reply: reply{status: 201, headers: map[string]string{"ETag": `"1"`, "Location": "/api/v1/agents/planner-7"}, body: validAgent()},
			want:  "colour",
		},
		{
			name: "HeartbeatWithoutTimestampAccepted", method: "POST", path: "/api/v1/agents/planner-7/heartbeat", key: "k",
			body: `{"status":"active"}`,
			reply: reply{status: 200, body: map[string]any{
				"acknowledged": true, "server_timestamp": "2026-02-08T10:30:00.123Z",
				"agent_status": "active", "pending_commands": []any{},
			}},
			want: "client_timestamp",
		},
		{
			name: "MissingKeyRejected", method: "GET", path: "/api/v1/pools",
			reply: reply{status: 401, ctype: "application/problem+json", body: problem(401, "unauthorized")},
		},
		{
			name: "MissingKeyAccepted", method: "GET", path: "/api/v1/pools",
			reply: reply{status: 200, body: map[string]any{"pools": []any{}}},
			want:  "X-API-Key",
		},
		{
			name: "ListAgentsQueryOK", method: "GET", path: "/api/v1/agents?capabilities=plan,code:go&status=active,draining&limit=10", key: "k",
			reply: reply{status: 200, body: map[string]any{"agents": []any{validAgent()}, "total": 1}},
		},
		{
			name: "ListAgentsBadLimitAccepted", method: "GET", path: "/api/v1/agents?limit=5000", key: "k",
			reply: reply{status: 200, body: map[string]any{"agents": []any{}, "total": 0}},
			want:  "limit",
		},
		{
			name: "DeleteOK", method: "DELETE", path: "/api/v1/agents/planner-7", key: "k",
			reply: reply{status: 204},
		},
		{
			name: "ServerHeartbeatOK", method: "GET", path: "/heartbeat",
			reply: reply{status: 200, body: map[string]any{"status": "ok"}},
		},
		{
			name: "HealthUnavailable", method: "GET", path: "/health",
			reply: reply{status: 503, body: map[string]any{
				"status": "unavailable", "store": "database is locked", "uptime_seconds": 3,
				"agents": map[string]any{"active": 0, "draining": 0, "unhealthy": 0, "dead": 0, "deregistered": 0},
			}},
		},
		{
			name: "MetricsOK", method: "GET", path: "/metrics",
			reply: reply{status: 200, ctype: "text/plain; version=0.0.4; charset=utf-8", body: "up 1\n"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var gotBody string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				gotBody = string(b)
				for k, v := range tc.reply.headers {
					w.Header().Set(k, v)
				}
				var out []byte
				switch body := tc.reply.body.(type) {
				case nil:
				case string:
					out = []byte(body)
				default:
					out, _ = json.Marshal(body)
					if tc.reply.ctype == "" {
						tc.reply.ctype = "application/json"
					}
				}
				if tc.reply.ctype != "" {
					w.Header().Set("Content-Type", tc.reply.ctype)
				}
				w.WriteHeader(tc.reply.status)
				w.Write(out)
			}))
			defer srv.Close()

			rec := &recorder{TB: t}
			client := apitest.Client(rec)
			var body io.Reader
			if tc.body != "" {
				body = strings.NewReader(tc.body)
			}
			req, err := http.NewRequest(tc.method, srv.URL+tc.path, body)
			if err != nil {
				t.Fatal(err)
			}
			if tc.body != "" {
				req.Header.Set("Content-Type", "application/json")
			}
			if tc.key != "" {
				req.Header.Set("X-API-Key", tc.key)
			}
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			respBody, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}

			// The exchange is untouched: the server got the whole request body and
			// the caller gets the whole response.
			if gotBody != tc.body {
				t.Errorf("server got body %q, want %q", gotBody, tc.body)
			}
			if resp.StatusCode != tc.reply.status {
				t.Errorf("status = %d, want %d", resp.StatusCode, tc.reply.status)
			}
			if tc.reply.body != nil && len(respBody) == 0 {
				t.Error("response body was not restored for the caller")
			}

			errs := rec.errors()
			for _, e := range errs {
				t.Logf("recorded: %s", e)
			}
			switch {
			case tc.want == "" && len(errs) > 0:
				t.Errorf("unexpected validation errors:\n%s", strings.Join(errs, "\n"))
			case tc.want != "" && len(errs) != 1:
				t.Errorf("got %d validation errors, want 1 mentioning %q:\n%s", len(errs), tc.want, strings.Join(errs, "\n"))
			case tc.want != "" && !strings.Contains(errs[0], tc.want):
				t.Errorf("validation error does not mention %q:\n%s", tc.want, errs[0])
			}
			for _, e := range errs {
				if !strings.Contains(e, tc.method+" ") || !strings.Contains(e, strings.SplitN(tc.path, "?", 2)[0]) {
					t.Errorf("error does not name the request: %s", e)
				}
			}
		})
	}
}

// TestTransportStream checks that an event stream is passed through unread: the
// Transport must not wait for a stream to end.
func TestTransportStream(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("ETag", `"1"`)
		w.WriteHeader(http.StatusOK)
		fmt.Fprint(w, "id: 1\ndata: {}\n\n")
		http.NewResponseController(w).Flush()
		<-release
	}))
	defer srv.Close()
	defer close(release)

	rec := &recorder{TB: t}
	client := apitest.Client(rec)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/api/v1/agents/planner-7", nil)
	req.Header.Set("X-API-Key", "k")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 4)
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "id: " {
		t.Fatalf("read stream: %q, %v", buf, err)
	}
	// The operation documents application/json only, so the stream is reported.
	if errs := rec.errors(); len(errs) != 1 || !strings.Contains(errs[0], "text/event-stream") {
		t.Errorf("errors = %q, want one about the undocumented content type", errs)
	}
}

// roundTripFunc fakes a server at the transport level, for answers net/http servers
// refuse to produce.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestTransportBodyWhereNoneDocumented(t *testing.T) {
	rec := &recorder{TB: t}
	client := &http.Client{Transport: &apitest.Transport{T: rec, Base: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		return &http.Response{
			StatusCode: http.StatusNoContent,
			Header:     http.Header{"Content-Type": {"text/plain"}},
			Body:       io.NopCloser(strings.NewReader("oops")),
			Request:    r,
		}, nil
	})}}
	req, _ := http.NewRequest("DELETE", "http://127.0.0.1:1/api/v1/agents/planner-7", nil)
	req.Header.Set("X-API-Key", "k")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "oops" {
		t.Errorf("body = %q, want it restored", b)
	}
	if errs := rec.errors(); len(errs) != 1 || !strings.Contains(errs[0], "documents none") {
		t.Errorf("errors = %q, want one about the undocumented body", errs)
	}
}
