package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lifeline-dev/lifeline/api"
	"github.com/lifeline-dev/lifeline/registry"
	"github.com/lifeline-dev/lifeline/sqlite"
)

// fuzzServer is a real server handler over SQLite, called without a network so the
// fuzzer can run many inputs per second.
func fuzzServer(f *testing.F) http.Handler {
	st, err := sqlite.Open(filepath.Join(f.TempDir(), "lifeline.db"))
	if err != nil {
		f.Fatal(err)
	}
	e := registry.New(st, registry.Config{})
	if err := e.Open(context.Background()); err != nil {
		f.Fatal(err)
	}
	keys, err := registry.NewKeys(context.Background(), st, nil)
	if err != nil {
		f.Fatal(err)
	}
	if _, err := keys.Bootstrap(context.Background(), adminSecret); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { e.Close(); st.Close() })
	return api.NewServer(api.Config{Agents: e, Events: e, Keys: keys, Leases: e, Tasks: e, Health: e})
}

// FuzzWrites sends arbitrary bodies and paths to every write endpoint: no input may
// produce a 5xx, and every answer is JSON.
func FuzzWrites(f *testing.F) {
	srv := fuzzServer(f)
	for _, seed := range []struct{ route, body string }{
		{"agents", `{"agent_id":"a1","capabilities":["x"],"heartbeat_config":{"interval_seconds":1,"unhealthy_after_seconds":2,"dead_after_seconds":4}}`},
		{"agents", `{"metadata":{"a":[1,{"b":null}]},"capacity":{"max_concurrent_tasks":9007199254740993}}`},
		{"heartbeat", `{"status":"draining","current_load":3,"tasks_in_progress":["t1"],"client_timestamp":"2026-02-08T10:30:00Z"}`},
		{"heartbeat", `{"status":"active","client_timestamp":"2026-02-30T25:61:00Z"}`},
		{"status", `{"status":"draining","drain_timeout_seconds":1e99}`},
		{"commands", `{"command":"drain","reason":"\u0000","drain_timeout_seconds":-1}`},
		{"keys", `{"role":"admin","name":"` + strings.Repeat("n", 300) + `"}`},
		{"agents", "\xff\xfe{"},
	} {
		f.Add(seed.route, "a1", seed.body)
	}
	f.Fuzz(func(t *testing.T, route, id, body string) {
		var method, path string
		switch route {
		case "agents":
			method, path = "POST", "/api/v1/agents"
		case "heartbeat":
			method, path = "POST", "/api/v1/agents/"+id+"/heartbeat"
		case "status":
			method, path = "PATCH", "/api/v1/agents/"+id+"/status"
		case "commands":
			method, path = "POST", "/api/v1/agents/"+id+"/commands"
		case "keys":
			method, path = "POST", "/api/v1/keys"
		default:
			method, path = "DELETE", "/api/v1/agents/"+id
		}
		req, err := http.NewRequest(method, "http://lifeline"+path, strings.NewReader(body))
		if err != nil {
			return // not a valid URL: never reaches a server
		}
		req.Header.Set("X-API-Key", adminSecret)
		req.Header.Set("If-Match", `"1"`)
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %s %q → %d %s", method, path, body, rec.Code, rec.Body)
		}
		// ServeMux answers unclean paths (/./, /../) with a redirect to the clean one.
		if rec.Code != http.StatusNoContent && (rec.Code < 300 || rec.Code >= 400) && !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("%s %s → %d non-JSON %q", method, path, rec.Code, rec.Body)
		}
	})
}
