package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var lease1 = `{"lease_id":"lease-1","scope":"task-7","agent_id":"agent-1","fence":3,"status":"active",` +
	`"acquired_at":"2026-02-08T10:30:45Z","expires_at":"2026-02-08T10:31:45Z","ttl_seconds":60}`

var lease2 = `{"lease_id":"lease-2","scope":"task-8","agent_id":"agent-2","fence":12,"status":"expired",` +
	`"acquired_at":"2026-02-08T10:27:00Z","expires_at":"2026-02-08T10:28:00Z","ttl_seconds":60,` +
	`"ended_at":"2026-02-08T10:28:00.04Z","reason":"ttl_elapsed"}`

var task7 = `{"task_id":"task-7","agent_id":"agent-1","lease_id":"lease-1","fence":3,"status":"running",` +
	`"progress":40,"message":"copying","result":{"rows":42},"updated_at":"2026-02-08T10:31:00Z"}`

// newLeaseAPI is a stand-in Lifeline server on 127.0.0.1 with two leases, served one per
// page, and one task. Like newFakeAPI it records requests and checks the API key.
func newLeaseAPI(t *testing.T) *fakeAPI {
	t.Helper()
	f := &fakeAPI{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/leases", func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Query().Get("cursor") {
		case "":
			io.WriteString(w, `{"leases":[`+lease1+`],"next_cursor":"lease-1"}`)
		case "lease-1":
			io.WriteString(w, `{"leases":[`+lease2+`]}`)
		default:
			problem(w, 400, "invalid", "bad cursor")
		}
	})
	mux.HandleFunc("GET /api/v1/leases/{id}", func(w http.ResponseWriter, r *http.Request) {
		switch r.PathValue("id") {
		case "lease-1":
			io.WriteString(w, lease1)
		case "lease-2":
			io.WriteString(w, lease2)
		default:
			problem(w, 404, "not_found", `lease "`+r.PathValue("id")+`" not found`)
		}
	})
	mux.HandleFunc("GET /api/v1/tasks/{id}", func(w http.ResponseWriter, r *http.Request) {
		switch r.PathValue("id") {
		case "task-7":
			io.WriteString(w, task7)
		case "task-8":
			io.WriteString(w, `{"task_id":"task-8","status":"failed","progress":0,"error":"disk full","updated_at":"2026-02-08T10:20:00Z"}`)
		default:
			problem(w, 404, "not_found", `task "`+r.PathValue("id")+`" not found`)
		}
	})
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.reqs = append(f.reqs, r.Clone(context.Background()))
		f.mu.Unlock()
		if r.Header.Get("X-API-Key") != testKey {
			problem(w, 401, "unauthorized", "missing or unknown API key")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(f.Close)
	return f
}

// jsonEqual fails the test unless got and want hold the same JSON value.
func jsonEqual(t *testing.T, got, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal([]byte(got), &g); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, got)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(w, g); diff != "" {
		t.Errorf("output (-want +got):\n%s", diff)
	}
}

func TestLeasesList(t *testing.T) {
	t.Run("Table", func(t *testing.T) {
		f := newLeaseAPI(t)
		stdout, stderr, code := run(t, f, "leases", "ls", "--all")
		if code != 0 {
			t.Fatalf("exit %d, stderr %s", code, stderr)
		}
		want := "" +
			"LEASE_ID  SCOPE   AGENT    FENCE  STATUS   EXPIRES  REASON\n" +
			"lease-1   task-7  agent-1  3      active   in 42s   -\n" +
			"lease-2   task-8  agent-2  12     expired  3m ago   ttl_elapsed\n"
		if stdout != want {
			t.Errorf("stdout:\n%s\nwant:\n%s", stdout, want)
		}
		if stderr != "" {
			t.Errorf("stderr = %q, want none after --all", stderr)
		}
		q := f.queries()
		if len(q) != 2 || q[0].Get("cursor") != "" || q[1].Get("cursor") != "lease-1" {
			t.Errorf("queries = %v", q)
		}
	})
	t.Run("FirstPageOnly", func(t *testing.T) {
		f := newLeaseAPI(t)
		stdout, stderr, code := run(t, f, "leases", "ls")
		if code != 0 {
			t.Fatalf("exit %d, stderr %s", code, stderr)
		}
		if n := strings.Count(stdout, "\n"); n != 2 {
			t.Errorf("stdout has %d lines, want header + 1:\n%s", n, stdout)
		}
		if !strings.Contains(stderr, "Showing 1 leases") || !strings.Contains(stderr, "--cursor lease-1") {
			t.Errorf("stderr = %q", stderr)
		}
	})
	t.Run("FilterJSON", func(t *testing.T) {
		f := newLeaseAPI(t)
		stdout, stderr, code := run(t, f, "leases", "list", "--json", "--agent", "agent-1", "--scope", "task-7",
			"--status", "active,expired", "--limit", "1", "--cursor", "lease-1")
		if code != 0 {
			t.Fatalf("exit %d, stderr %s", code, stderr)
		}
		jsonEqual(t, stdout, `{"leases":[`+lease2+`]}`)
		wantQuery := url.Values{"agent_id": {"agent-1"}, "scope": {"task-7"}, "status": {"active,expired"}, "limit": {"1"}, "cursor": {"lease-1"}}
		if diff := cmp.Diff([]url.Values{wantQuery}, f.queries()); diff != "" {
			t.Errorf("queries (-want +got):\n%s", diff)
		}
	})
	t.Run("AllPagesJSON", func(t *testing.T) {
		f := newLeaseAPI(t)
		stdout, stderr, code := run(t, f, "leases", "ls", "--all", "--json", "--status=all")
		if code != 0 {
			t.Fatalf("exit %d, stderr %s", code, stderr)
		}
		jsonEqual(t, stdout, `{"leases":[`+lease1+`,`+lease2+`]}`)
		q := f.queries()
		if len(q) != 2 || q[0].Get("status") != "active,released,expired,revoked" {
			t.Errorf("queries = %v", q)
		}
	})
	t.Run("ServerError", func(t *testing.T) {
		f := newLeaseAPI(t)
		_, stderr, code := run(t, f, "leases", "ls", "--cursor", "bogus")
		if code != 1 || stderr != "lifeline: invalid: bad cursor\n" {
			t.Errorf("exit %d, stderr %q", code, stderr)
		}
	})
}

func TestLeasesGet(t *testing.T) {
	f := newLeaseAPI(t)
	t.Run("Text", func(t *testing.T) {
		stdout, stderr, code := run(t, f, "leases", "get", "lease-2")
		if code != 0 {
			t.Fatalf("exit %d, stderr %s", code, stderr)
		}
		want := "" +
			"lease_id:    lease-2\n" +
			"scope:       task-8\n" +
			"agent_id:    agent-2\n" +
			"fence:       12\n" +
			"status:      expired\n" +
			"acquired_at: 2026-02-08T10:27:00.000Z (4m ago)\n" +
			"expires_at:  2026-02-08T10:28:00.000Z (3m ago)\n" +
			"ttl_seconds: 60\n" +
			"ended_at:    2026-02-08T10:28:00.040Z (3m ago)\n" +
			"reason:      ttl_elapsed\n"
		if stdout != want {
			t.Errorf("stdout:\n%s\nwant:\n%s", stdout, want)
		}
	})
	t.Run("TextActive", func(t *testing.T) {
		stdout, _, code := run(t, f, "leases", "get", "lease-1")
		if code != 0 || !strings.Contains(stdout, "expires_at:  2026-02-08T10:31:45.000Z (in 42s)\n") || strings.Contains(stdout, "ended_at") {
			t.Errorf("exit %d, stdout:\n%s", code, stdout)
		}
	})
	t.Run("JSON", func(t *testing.T) {
		// Flags may follow the positional argument.
		stdout, stderr, code := run(t, f, "leases", "get", "lease-1", "--json")
		if code != 0 {
			t.Fatalf("exit %d, stderr %s", code, stderr)
		}
		jsonEqual(t, stdout, lease1)
	})
	t.Run("NotFound", func(t *testing.T) {
		_, stderr, code := run(t, f, "leases", "get", "nope")
		if code != 1 || stderr != "lifeline: not_found: lease \"nope\" not found\n" {
			t.Errorf("exit %d, stderr %q", code, stderr)
		}
	})
	t.Run("MissingID", func(t *testing.T) {
		_, stderr, code := run(t, f, "leases", "get")
		if code != 2 || !strings.Contains(stderr, "missing argument") || !strings.Contains(stderr, "Usage: lifeline leases get ID") {
			t.Errorf("exit %d, stderr %q", code, stderr)
		}
	})
}

func TestTasksGet(t *testing.T) {
	f := newLeaseAPI(t)
	t.Run("Text", func(t *testing.T) {
		stdout, stderr, code := run(t, f, "tasks", "get", "task-7")
		if code != 0 {
			t.Fatalf("exit %d, stderr %s", code, stderr)
		}
		want := "" +
			"task_id:    task-7\n" +
			"status:     running\n" +
			"progress:   40%\n" +
			"agent_id:   agent-1\n" +
			"lease_id:   lease-1\n" +
			"fence:      3\n" +
			"message:    copying\n" +
			"error:      -\n" +
			"result:     {\"rows\":42}\n" +
			"updated_at: 2026-02-08T10:31:00.000Z (3s ago)\n"
		if stdout != want {
			t.Errorf("stdout:\n%s\nwant:\n%s", stdout, want)
		}
	})
	t.Run("TextFailedNoResult", func(t *testing.T) {
		stdout, _, code := run(t, f, "tasks", "get", "task-8")
		if code != 0 || !strings.Contains(stdout, "error:      disk full\n") || !strings.Contains(stdout, "result:     -\n") {
			t.Errorf("exit %d, stdout:\n%s", code, stdout)
		}
	})
	t.Run("JSON", func(t *testing.T) {
		stdout, stderr, code := run(t, f, "tasks", "get", "--json", "task-7")
		if code != 0 {
			t.Fatalf("exit %d, stderr %s", code, stderr)
		}
		jsonEqual(t, stdout, task7)
	})
	t.Run("NotFound", func(t *testing.T) {
		_, stderr, code := run(t, f, "tasks", "get", "task-9")
		if code != 1 || stderr != "lifeline: not_found: task \"task-9\" not found\n" {
			t.Errorf("exit %d, stderr %q", code, stderr)
		}
	})
	t.Run("ExtraArgument", func(t *testing.T) {
		_, stderr, code := run(t, f, "tasks", "get", "a", "b")
		if code != 2 || !strings.Contains(stderr, `unexpected argument "b"`) || !strings.Contains(stderr, "Usage: lifeline tasks get TASK_ID") {
			t.Errorf("exit %d, stderr %q", code, stderr)
		}
	})
}

func TestLeasesUsage(t *testing.T) {
	stdout, _, code := run(t, nil, "leases", "--help")
	if code != 0 || !strings.Contains(stdout, "leases ls") || !strings.Contains(stdout, "leases get") || !strings.Contains(stdout, "--scope") {
		t.Errorf("exit %d, stdout %q", code, stdout)
	}
	_, stderr, code := run(t, nil, "tasks")
	if code != 2 || !strings.Contains(stderr, "tasks: missing subcommand") || !strings.Contains(stderr, "tasks get TASK_ID") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}
