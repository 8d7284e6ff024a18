package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/lifeline-dev/lifeline"
	"github.com/lifeline-dev/lifeline/client"
)

const leaseJSON = `{
  "lease_id": "lease-1",
  "scope": "task-7",
  "agent_id": "agent-1",
  "fence": 3,
  "status": "active",
  "acquired_at": "2026-02-08T10:30:00.123Z",
  "expires_at": "2026-02-08T10:31:00.123Z",
  "ttl_seconds": 60,
  "some_future_field": true
}`

const endedLeaseJSON = `{"lease_id":"lease-0","scope":"task-6","agent_id":"agent-2","fence":2,"status":"expired",` +
	`"acquired_at":"2026-02-08T10:00:00Z","expires_at":"2026-02-08T10:01:00Z","ttl_seconds":60,` +
	`"ended_at":"2026-02-08T10:01:00.05Z","reason":"ttl_elapsed"}`

func wantLease() *lifeline.Lease {
	return &lifeline.Lease{
		LeaseID:    "lease-1",
		Scope:      "task-7",
		AgentID:    "agent-1",
		Fence:      3,
		Status:     lifeline.LeaseActive,
		AcquiredAt: time.Date(2026, 2, 8, 10, 30, 0, 123e6, time.UTC),
		ExpiresAt:  time.Date(2026, 2, 8, 10, 31, 0, 123e6, time.UTC),
		TTLSeconds: 60,
	}
}

func wantEndedLease() *lifeline.Lease {
	return &lifeline.Lease{
		LeaseID:    "lease-0",
		Scope:      "task-6",
		AgentID:    "agent-2",
		Fence:      2,
		Status:     lifeline.LeaseExpired,
		AcquiredAt: time.Date(2026, 2, 8, 10, 0, 0, 0, time.UTC),
		ExpiresAt:  time.Date(2026, 2, 8, 10, 1, 0, 0, time.UTC),
		TTLSeconds: 60,
		EndedAt:    ptr(time.Date(2026, 2, 8, 10, 1, 0, 50e6, time.UTC)),
		Reason:     lifeline.LeaseReasonTTLElapsed,
	}
}

const taskJSON = `{"task_id":"task-7","agent_id":"agent-1","lease_id":"lease-1","fence":3,"status":"completed",` +
	`"progress":100,"message":"done","result":{"rows":42},"updated_at":"2026-02-08T10:30:30Z"}`

func wantTask() *lifeline.Task {
	return &lifeline.Task{
		TaskID:    "task-7",
		AgentID:   "agent-1",
		LeaseID:   "lease-1",
		Fence:     3,
		Status:    lifeline.TaskCompleted,
		Progress:  100,
		Message:   "done",
		Result:    json.RawMessage(`{"rows":42}`),
		UpdatedAt: time.Date(2026, 2, 8, 10, 30, 30, 0, time.UTC),
	}
}

// TestLeaseRequests checks how every lease and task method encodes its request and
// decodes the answer.
func TestLeaseRequests(t *testing.T) {
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
			name:  "AcquireLease",
			reply: reply{Status: 201, ContentType: "application/json", Header: map[string]string{"Location": "/api/v1/leases/lease-1"}, Body: leaseJSON},
			call: func(c *client.Client) (any, error) {
				return c.AcquireLease(ctx, &lifeline.LeaseRequest{Scope: "task-7", AgentID: "agent-1", TTLSeconds: ptr(60)})
			},
			wantMethod: "POST",
			wantPath:   "/api/v1/leases",
			wantBody:   `{"scope":"task-7","agent_id":"agent-1","ttl_seconds":60}`,
			wantHeader: map[string]string{"Content-Type": "application/json"},
			noHeader:   []string{"X-Lease-ID"},
			wantResult: wantLease(),
		},
		{
			name:  "AcquireLeaseDefaultTTL",
			reply: jsonReply(201, leaseJSON),
			call: func(c *client.Client) (any, error) {
				_, err := c.AcquireLease(ctx, &lifeline.LeaseRequest{Scope: "task-7", AgentID: "agent-1"})
				return nil, err
			},
			wantMethod: "POST",
			wantPath:   "/api/v1/leases",
			wantBody:   `{"scope":"task-7","agent_id":"agent-1"}`,
		},
		{
			name:  "RenewLease",
			reply: jsonReply(200, leaseJSON),
			call: func(c *client.Client) (any, error) {
				return c.RenewLease(ctx, "lease-1", &lifeline.LeaseRenewal{TTLSeconds: ptr(120)})
			},
			wantMethod: "PATCH",
			wantPath:   "/api/v1/leases/lease-1",
			wantBody:   `{"ttl_seconds":120}`,
			noHeader:   []string{"If-Match"},
			wantResult: wantLease(),
		},
		{
			// The server reads a JSON object; nil keeps the lease's TTL.
			name:  "RenewLeaseNil",
			reply: jsonReply(200, leaseJSON),
			call: func(c *client.Client) (any, error) {
				_, err := c.RenewLease(ctx, "lease-1", nil)
				return nil, err
			},
			wantMethod: "PATCH",
			wantPath:   "/api/v1/leases/lease-1",
			wantBody:   `{}`,
		},
		{
			name:       "ReleaseLease",
			reply:      reply{Status: 204},
			call:       func(c *client.Client) (any, error) { return nil, c.ReleaseLease(ctx, "lease-1") },
			wantMethod: "DELETE",
			wantPath:   "/api/v1/leases/lease-1",
			noHeader:   []string{"Content-Type"},
		},
		{
			name:       "RevokeLease",
			reply:      jsonReply(200, `{"lease_id":"lease-1","status":"revoked","reason":"revoked"}`),
			call:       func(c *client.Client) (any, error) { return nil, c.RevokeLease(ctx, "lease-1") },
			wantMethod: "POST",
			wantPath:   "/api/v1/leases/lease-1/revoke",
			noHeader:   []string{"Content-Type"},
		},
		{
			name:       "FindLeaseByID",
			reply:      jsonReply(200, endedLeaseJSON),
			call:       func(c *client.Client) (any, error) { return c.FindLeaseByID(ctx, "lease-0") },
			wantMethod: "GET",
			wantPath:   "/api/v1/leases/lease-0",
			noHeader:   []string{"Content-Type"},
			wantResult: wantEndedLease(),
		},
		{
			name:  "FindLeaseByIDEscapesPath",
			reply: jsonReply(200, leaseJSON),
			call: func(c *client.Client) (any, error) {
				_, err := c.FindLeaseByID(ctx, "a/b c")
				return nil, err
			},
			wantMethod: "GET",
			wantPath:   "/api/v1/leases/a%2Fb%20c",
		},
		{
			name:  "FindLeasesFilter",
			reply: jsonReply(200, `{"leases":[`+endedLeaseJSON+`,`+leaseJSON+`],"next_cursor":"lease-1"}`),
			call: func(c *client.Client) (any, error) {
				leases, next, err := c.FindLeases(ctx, lifeline.LeaseFilter{
					AgentID:  "agent-1",
					Scope:    "task-7",
					Statuses: []lifeline.LeaseStatus{lifeline.LeaseActive, lifeline.LeaseExpired},
					After:    "lease-00",
					Limit:    2,
				})
				return []any{leases, next}, err
			},
			wantMethod: "GET",
			wantPath:   "/api/v1/leases",
			wantQuery: url.Values{
				"agent_id": {"agent-1"},
				"scope":    {"task-7"},
				"status":   {"active,expired"},
				"limit":    {"2"},
				"cursor":   {"lease-00"},
			},
			wantResult: []any{[]*lifeline.Lease{wantEndedLease(), wantLease()}, "lease-1"},
		},
		{
			name:  "FindLeasesDefaults",
			reply: jsonReply(200, `{"leases":[]}`),
			call: func(c *client.Client) (any, error) {
				leases, next, err := c.FindLeases(ctx, lifeline.LeaseFilter{})
				return []any{leases, next}, err
			},
			wantMethod: "GET",
			wantPath:   "/api/v1/leases",
			wantQuery:  url.Values{},
			wantResult: []any{[]*lifeline.Lease{}, ""},
		},
		{
			name:  "UpdateTask",
			reply: jsonReply(202, taskJSON),
			call: func(c *client.Client) (any, error) {
				return c.UpdateTask(ctx, "task-7", "lease-1", &lifeline.TaskUpdate{
					Status:   lifeline.TaskCompleted,
					Progress: ptr(100),
					Message:  "done",
					Result:   json.RawMessage(`{"rows":42}`),
				})
			},
			wantMethod: "POST",
			wantPath:   "/api/v1/tasks/task-7/updates",
			wantBody:   `{"status":"completed","progress":100,"message":"done","result":{"rows":42}}`,
			wantHeader: map[string]string{"X-Lease-ID": "lease-1", "Content-Type": "application/json"},
			wantResult: wantTask(),
		},
		{
			name:  "UpdateTaskFailed",
			reply: jsonReply(202, `{"task_id":"task/7","status":"failed","error":"disk full"}`),
			call: func(c *client.Client) (any, error) {
				return c.UpdateTask(ctx, "task/7", "lease-1", &lifeline.TaskUpdate{Status: lifeline.TaskFailed, Error: "disk full"})
			},
			wantMethod: "POST",
			wantPath:   "/api/v1/tasks/task%2F7/updates",
			wantBody:   `{"status":"failed","error":"disk full"}`,
			wantHeader: map[string]string{"X-Lease-ID": "lease-1"},
			wantResult: &lifeline.Task{TaskID: "task/7", Status: lifeline.TaskFailed, Error: "disk full"},
		},
		{
			// Without a lease there is no header; the server says what that means.
			name:  "UpdateTaskNoLease",
			reply: jsonReply(202, taskJSON),
			call: func(c *client.Client) (any, error) {
				_, err := c.UpdateTask(ctx, "task-7", "", &lifeline.TaskUpdate{Status: lifeline.TaskRunning})
				return nil, err
			},
			wantMethod: "POST",
			wantPath:   "/api/v1/tasks/task-7/updates",
			wantBody:   `{"status":"running"}`,
			noHeader:   []string{"X-Lease-ID"},
		},
		{
			name:       "FindTask",
			reply:      jsonReply(200, taskJSON),
			call:       func(c *client.Client) (any, error) { return c.FindTask(ctx, "task-7") },
			wantMethod: "GET",
			wantPath:   "/api/v1/tasks/task-7",
			noHeader:   []string{"Content-Type", "X-Lease-ID"},
			wantResult: wantTask(),
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
			if k := r.Header.Get("X-API-Key"); k != testKey {
				t.Errorf("X-API-Key = %q, want %q", k, testKey)
			}
			if ua := r.Header.Get("User-Agent"); ua != "lifeline-test/1" {
				t.Errorf("User-Agent = %q", ua)
			}
			if a := r.Header.Get("Accept"); a != "application/json, application/problem+json" {
				t.Errorf("Accept = %q", a)
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

// TestLeaseErrors checks that lease and task errors become *lifeline.Error with the
// server's code and keep the problem's extension members.
func TestLeaseErrors(t *testing.T) {
	ctx := context.Background()
	problem := func(status int, code, detail, extra string) reply {
		body := `{"type":"https://lifeline.dev/problems/` + code + `","title":"` + http.StatusText(status) + `","status":` + itoa(status) +
			`,"detail":"` + detail + `","code":"` + code + `","instance":"/api/v1/leases"` + extra + `}`
		return reply{Status: status, ContentType: "application/problem+json", Body: body}
	}
	acquire := func(c *client.Client) error {
		_, err := c.AcquireLease(ctx, &lifeline.LeaseRequest{Scope: "task-7", AgentID: "agent-2"})
		return err
	}
	tests := []struct {
		name        string
		reply       reply
		call        func(c *client.Client) error
		wantCode    string
		wantMessage string
		wantExtra   map[string]any
	}{
		{
			name:        "ConflictNamesHolder",
			reply:       problem(409, "conflict", "scope task-7 is held by agent-1", `,"holder":"agent-1","lease_id":"lease-1","expires_at":"2026-02-08T10:31:00.123Z"`),
			call:        acquire,
			wantCode:    lifeline.EConflict,
			wantMessage: "scope task-7 is held by agent-1",
			wantExtra:   map[string]any{"holder": "agent-1", "lease_id": "lease-1", "expires_at": "2026-02-08T10:31:00.123Z"},
		},
		{
			// agent_draining shares 409 with conflict; the code member tells them apart.
			name:        "AgentDraining",
			reply:       problem(409, "agent_draining", "agent agent-2 is draining", ""),
			call:        acquire,
			wantCode:    "agent_draining",
			wantMessage: "agent agent-2 is draining",
		},
		{
			name:        "ExtensionValuesKeepTheirJSONTypes",
			reply:       problem(409, "conflict", "held", `,"holder":"agent-1","fence":7,"ids":["a"],"at":{"x":null}`),
			call:        acquire,
			wantCode:    lifeline.EConflict,
			wantMessage: "held",
			wantExtra:   map[string]any{"holder": "agent-1", "fence": float64(7), "ids": []any{"a"}, "at": map[string]any{"x": nil}},
		},
		{
			name:        "GoneAfterDead",
			reply:       problem(410, "gone", "agent agent-2 is dead", ""),
			call:        acquire,
			wantCode:    lifeline.EGone,
			wantMessage: "agent agent-2 is dead",
		},
		{
			name:        "ForbiddenOtherAgent",
			reply:       problem(403, "forbidden", "an agent key acquires for its own agent only", ""),
			call:        acquire,
			wantCode:    lifeline.EForbidden,
			wantMessage: "an agent key acquires for its own agent only",
		},
		{
			name:        "RenewGone",
			reply:       problem(410, "gone", "lease lease-1 is expired", ""),
			call:        func(c *client.Client) error { _, err := c.RenewLease(ctx, "lease-1", nil); return err },
			wantCode:    lifeline.EGone,
			wantMessage: "lease lease-1 is expired",
		},
		{
			name:        "ReleaseGone",
			reply:       problem(410, "gone", "lease lease-1 is released", ""),
			call:        func(c *client.Client) error { return c.ReleaseLease(ctx, "lease-1") },
			wantCode:    lifeline.EGone,
			wantMessage: "lease lease-1 is released",
		},
		{
			name:        "RevokeForbidden",
			reply:       problem(403, "forbidden", "admin key required", ""),
			call:        func(c *client.Client) error { return c.RevokeLease(ctx, "lease-1") },
			wantCode:    lifeline.EForbidden,
			wantMessage: "admin key required",
		},
		{
			name:        "FindLeaseNotFound",
			reply:       problem(404, "not_found", "lease nope not found", ""),
			call:        func(c *client.Client) error { _, err := c.FindLeaseByID(ctx, "nope"); return err },
			wantCode:    lifeline.ENotFound,
			wantMessage: "lease nope not found",
		},
		{
			name:  "UpdateTaskPreconditionFailed",
			reply: problem(412, "precondition_failed", "lease lease-0 is not active", ""),
			call: func(c *client.Client) error {
				_, err := c.UpdateTask(ctx, "task-7", "lease-0", &lifeline.TaskUpdate{Status: lifeline.TaskRunning})
				return err
			},
			wantCode:    lifeline.EPreconditionFailed,
			wantMessage: "lease lease-0 is not active",
		},
		{
			name:        "FindTaskNotFound",
			reply:       problem(404, "not_found", "task task-9 not found", ""),
			call:        func(c *client.Client) error { _, err := c.FindTask(ctx, "task-9"); return err },
			wantCode:    lifeline.ENotFound,
			wantMessage: "task task-9 not found",
		},
		{
			name:        "NoCodeFallsBackToStatus",
			reply:       reply{Status: 409, ContentType: "application/problem+json", Body: `{"title":"Conflict","status":409}`},
			call:        acquire,
			wantCode:    lifeline.EConflict,
			wantMessage: "Conflict",
		},
		{
			name:        "ProxyTextPage",
			reply:       reply{Status: 502, ContentType: "text/html", Body: `<html>bad gateway</html>`},
			call:        acquire,
			wantCode:    lifeline.EInternal,
			wantMessage: "POST /api/v1/leases: 502 Bad Gateway",
		},
	}
	f := newFakeServer(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.respond(tt.reply)
			err := tt.call(newClient(t, f))
			if err == nil {
				t.Fatal("err = nil, want an error")
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
			if diff := cmp.Diff(tt.wantExtra, le.Extra); diff != "" {
				t.Errorf("Extra (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHolder(t *testing.T) {
	expires := time.Date(2026, 2, 8, 10, 31, 0, 123e6, time.UTC)
	t.Run("FromServer", func(t *testing.T) {
		f := newFakeServer(t)
		f.respond(reply{Status: 409, ContentType: "application/problem+json",
			Body: `{"status":409,"code":"conflict","detail":"held","holder":"agent-1","lease_id":"lease-1","expires_at":"2026-02-08T10:31:00.123Z"}`})
		_, err := newClient(t, f).AcquireLease(context.Background(), &lifeline.LeaseRequest{Scope: "task-7", AgentID: "agent-2"})
		h, ok := client.Holder(err)
		if !ok {
			t.Fatalf("Holder(%v) = false", err)
		}
		if want := (client.LeaseHolder{AgentID: "agent-1", LeaseID: "lease-1", ExpiresAt: expires}); h != want {
			t.Errorf("Holder = %+v, want %+v", h, want)
		}
	})
	t.Run("InProcess", func(t *testing.T) {
		err := &lifeline.Error{Code: lifeline.EConflict, Message: "held", Extra: map[string]any{"holder": "agent-1", "lease_id": "lease-1", "expires_at": expires}}
		h, ok := client.Holder(err)
		if want := (client.LeaseHolder{AgentID: "agent-1", LeaseID: "lease-1", ExpiresAt: expires}); !ok || h != want {
			t.Errorf("Holder = %+v, %v; want %+v", h, ok, want)
		}
	})
	t.Run("NoHolder", func(t *testing.T) {
		for _, err := range []error{
			nil,
			errors.New("boom"),
			lifeline.Errorf(lifeline.EConflict, "held"),
			&lifeline.Error{Code: lifeline.EGone, Extra: map[string]any{"holder": "agent-1"}},
		} {
			if h, ok := client.Holder(err); ok {
				t.Errorf("Holder(%v) = %+v, true; want false", err, h)
			}
		}
	})
}

func TestLeaseEmptyIDNotSent(t *testing.T) {
	f := newFakeServer(t)
	c := newClient(t, f)
	ctx := context.Background()
	calls := map[string]func() error{
		"RenewLease":    func() error { _, err := c.RenewLease(ctx, "", nil); return err },
		"ReleaseLease":  func() error { return c.ReleaseLease(ctx, "") },
		"RevokeLease":   func() error { return c.RevokeLease(ctx, "") },
		"FindLeaseByID": func() error { _, err := c.FindLeaseByID(ctx, ""); return err },
		"UpdateTask":    func() error { _, err := c.UpdateTask(ctx, "", "lease-1", &lifeline.TaskUpdate{}); return err },
		"FindTask":      func() error { _, err := c.FindTask(ctx, ""); return err },
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

func TestLeaseContextCancelled(t *testing.T) {
	f := newFakeServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := newClient(t, f).FindLeaseByID(ctx, "lease-1")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}
