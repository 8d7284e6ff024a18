package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/lifeline-dev/lifeline"
)

const testKey = "ll_cli_test"

// now is the fixed clock of the tests.
var now = time.Date(2026, 2, 8, 10, 31, 3, 0, time.UTC)

var agent1 = `{"agent_id":"agent-1","role_id":"billing","capabilities":["billing","refunds"],` +
	`"capacity":{"max_concurrent_tasks":10,"current_load":3},"status":"active",` +
	`"heartbeat_config":{"interval_seconds":30,"unhealthy_after_seconds":90,"dead_after_seconds":300},` +
	`"metadata":{"region":"eu"},"registered_at":"2026-02-08T10:00:00Z","last_heartbeat_at":"2026-02-08T10:31:00Z","version":7}`

var agent2 = `{"agent_id":"agent-2","capabilities":[],"capacity":{"max_concurrent_tasks":0,"current_load":0},"status":"draining",` +
	`"endpoint":"https://agent-2.example/",` +
	`"heartbeat_config":{"interval_seconds":10,"unhealthy_after_seconds":20,"dead_after_seconds":40},` +
	`"metadata":{},"registered_at":"2026-02-08T09:00:00Z","last_heartbeat_at":"2026-02-08T10:25:03Z","version":3,` +
	`"drain_deadline":"2026-02-08T10:33:03Z"}`

// fakeAPI is a stand-in Lifeline server on 127.0.0.1 with two agents, served one per
// page, and canned answers for the other endpoints the CLI calls.
type fakeAPI struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []*http.Request
}

func newFakeAPI(t *testing.T) *fakeAPI {
	t.Helper()
	f := &fakeAPI{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/agents", func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Query().Get("cursor") {
		case "":
			io.WriteString(w, `{"agents":[`+agent1+`],"total":2,"next_cursor":"agent-1"}`)
		case "agent-1":
			io.WriteString(w, `{"agents":[`+agent2+`],"total":2}`)
		default:
			problem(w, 400, "invalid", "bad cursor")
		}
	})
	mux.HandleFunc("GET /api/v1/agents/{id}", func(w http.ResponseWriter, r *http.Request) {
		switch r.PathValue("id") {
		case "agent-1":
			io.WriteString(w, agent1)
		case "agent-2":
			io.WriteString(w, agent2)
		default:
			problem(w, 404, "not_found", `agent "`+r.PathValue("id")+`" not found`)
		}
	})
	mux.HandleFunc("GET /api/v1/events", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"events":[{"seq":4,"type":"agent.lifecycle","agent_id":"agent-1","previous_status":"unhealthy","new_status":"active","reason":"heartbeat_resumed","timestamp":"2026-02-08T10:30:00.123Z"}],"next_after":4}`)
	})
	mux.HandleFunc("POST /api/v1/keys", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(201)
		io.WriteString(w, `{"id":"key-2","key":"ll_new_secret","role":"coordinator","name":"ops","created_at":"2026-02-08T10:00:00Z"}`)
	})
	mux.HandleFunc("GET /api/v1/keys", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"keys":[{"id":"key-1","role":"admin","name":"root","created_at":"2026-02-08T09:00:00Z"},{"id":"key-2","role":"agent","name":"","created_at":"2026-02-08T09:30:00Z","revoked_at":"2026-02-08T10:00:00Z"}]}`)
	})
	mux.HandleFunc("DELETE /api/v1/keys/{id}", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(204)
	})
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(503)
		io.WriteString(w, `{"status":"unavailable","store":"disk full","agents":{"active":1,"draining":1,"unhealthy":0,"dead":0,"deregistered":0},"uptime_seconds":65}`)
	})
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.reqs = append(f.reqs, r.Clone(context.Background()))
		f.mu.Unlock()
		if r.URL.Path != "/health" && r.Header.Get("X-API-Key") != testKey {
			problem(w, 401, "unauthorized", "missing or unknown API key")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(f.Close)
	return f
}

func problem(w http.ResponseWriter, status int, code, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"type": "https://lifeline.dev/problems/" + code, "title": http.StatusText(status), "status": status, "code": code, "detail": detail})
}

func (f *fakeAPI) queries() []url.Values {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []url.Values
	for _, r := range f.reqs {
		out = append(out, r.URL.Query())
	}
	return out
}

// run runs the CLI with args against f (through the environment, as a user would set
// it up) and returns stdout, stderr and the exit status main would use.
func run(t *testing.T, f *fakeAPI, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	env := map[string]string{}
	if f != nil {
		env = map[string]string{EnvServer: f.URL, EnvKey: testKey}
	}
	m := &CLI{Env: Env{
		Stdout: &out, Stderr: &errOut,
		Getenv: func(k string) string { return env[k] },
		Now:    func() time.Time { return now },
	}}
	err := m.Run(context.Background(), args)
	code = exitCode(err, &errOut)
	return out.String(), errOut.String(), code
}

func TestAgentsListJSON(t *testing.T) {
	f := newFakeAPI(t)
	stdout, stderr, code := run(t, f, "agents", "ls", "--json", "--status", "active,draining", "--capability", "billing", "--capability", "refunds",
		"--role", "billing", "--min-available", "0", "--limit", "1")
	if code != 0 {
		t.Fatalf("exit %d, stderr %s", code, stderr)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, stdout)
	}
	var want map[string]any
	json.Unmarshal([]byte(`{"agents":[`+agent1+`],"total":2,"next_cursor":"agent-1"}`), &want)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("output (-want +got):\n%s", diff)
	}
	wantQuery := url.Values{"status": {"active,draining"}, "capabilities": {"billing,refunds"}, "role_id": {"billing"}, "min_available_capacity": {"0"}, "limit": {"1"}}
	if diff := cmp.Diff([]url.Values{wantQuery}, f.queries()); diff != "" {
		t.Errorf("queries (-want +got):\n%s", diff)
	}
}

func TestAgentsListAllJSON(t *testing.T) {
	f := newFakeAPI(t)
	stdout, stderr, code := run(t, f, "agents", "list", "--all", "--json", "--status=all")
	if code != 0 {
		t.Fatalf("exit %d, stderr %s", code, stderr)
	}
	var got, want map[string]any
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, stdout)
	}
	json.Unmarshal([]byte(`{"agents":[`+agent1+`,`+agent2+`],"total":2}`), &want)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("output (-want +got):\n%s", diff)
	}
	q := f.queries()
	if len(q) != 2 || q[1].Get("cursor") != "agent-1" || q[0].Get("status") != "active,draining,unhealthy,dead,deregistered" {
		t.Errorf("queries = %v", q)
	}
}

func TestAgentsListTable(t *testing.T) {
	f := newFakeAPI(t)
	stdout, stderr, code := run(t, f, "agents", "ls", "--all")
	if code != 0 {
		t.Fatalf("exit %d, stderr %s", code, stderr)
	}
	want := "" +
		"AGENT_ID  ROLE     STATUS    LOAD  CAPABILITIES     LAST_HEARTBEAT\n" +
		"agent-1   billing  active    3/10  billing,refunds  3s ago\n" +
		"agent-2   -        draining  0/0   -                6m ago\n"
	if stdout != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", stdout, want)
	}
	if stderr != "" {
		t.Errorf("stderr = %q, want none after --all", stderr)
	}

	// Without --all, the first page only, and a note on stderr about the rest.
	stdout, stderr, _ = run(t, f, "agents", "ls")
	if n := strings.Count(stdout, "\n"); n != 2 {
		t.Errorf("stdout has %d lines, want header + 1:\n%s", n, stdout)
	}
	if !strings.Contains(stderr, "Showing 1 of 2 agents") || !strings.Contains(stderr, "--cursor agent-1") {
		t.Errorf("stderr = %q", stderr)
	}
}

func TestAgentsGet(t *testing.T) {
	f := newFakeAPI(t)
	t.Run("JSON", func(t *testing.T) {
		// Flags may follow the positional argument.
		stdout, stderr, code := run(t, f, "agents", "get", "agent-1", "--json")
		if code != 0 {
			t.Fatalf("exit %d, stderr %s", code, stderr)
		}
		var got, want map[string]any
		if err := json.Unmarshal([]byte(stdout), &got); err != nil {
			t.Fatalf("stdout is not JSON: %v\n%s", err, stdout)
		}
		json.Unmarshal([]byte(agent1), &want)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("output (-want +got):\n%s", diff)
		}
	})
	t.Run("Text", func(t *testing.T) {
		stdout, stderr, code := run(t, f, "agents", "get", "agent-2")
		if code != 0 {
			t.Fatalf("exit %d, stderr %s", code, stderr)
		}
		want := "" +
			"agent_id:          agent-2\n" +
			"role_id:           -\n" +
			"name:              -\n" +
			"status:            draining\n" +
			"drain_deadline:    2026-02-08T10:33:03.000Z (in 2m)\n" +
			"capabilities:      -\n" +
			"capacity:          0/0 tasks (0 available)\n" +
			"endpoint:          https://agent-2.example/\n" +
			"heartbeat_config:  interval 10s, unhealthy after 20s, dead after 40s\n" +
			"last_heartbeat_at: 2026-02-08T10:25:03.000Z (6m ago)\n" +
			"registered_at:     2026-02-08T09:00:00.000Z\n" +
			"version:           3\n" +
			"metadata:          {}\n"
		if stdout != want {
			t.Errorf("stdout:\n%s\nwant:\n%s", stdout, want)
		}
	})
	t.Run("NotFound", func(t *testing.T) {
		_, stderr, code := run(t, f, "agents", "get", "nope")
		if code != 1 || stderr != "lifeline: not_found: agent \"nope\" not found\n" {
			t.Errorf("exit %d, stderr %q", code, stderr)
		}
	})
	t.Run("MissingID", func(t *testing.T) {
		_, stderr, code := run(t, f, "agents", "get")
		if code != 2 || !strings.Contains(stderr, "missing argument") || !strings.Contains(stderr, "Usage: lifeline agents get ID") {
			t.Errorf("exit %d, stderr %q", code, stderr)
		}
	})
}

func TestClientFlags(t *testing.T) {
	f := newFakeAPI(t)
	t.Run("FlagsOverrideEnvironment", func(t *testing.T) {
		var out, errOut bytes.Buffer
		m := &CLI{Env: Env{Stdout: &out, Stderr: &errOut, Getenv: func(k string) string {
			return map[string]string{EnvServer: "http://127.0.0.1:1", EnvKey: "wrong"}[k]
		}}}
		err := m.Run(context.Background(), []string{"agents", "get", "--server", f.URL, "--key", testKey, "agent-1"})
		if err != nil {
			t.Fatal(err)
		}
	})
	t.Run("WrongKey", func(t *testing.T) {
		var errOut bytes.Buffer
		m := &CLI{Env: Env{Stdout: io.Discard, Stderr: &errOut}}
		err := m.Run(context.Background(), []string{"agents", "get", "--server", f.URL, "--key", "wrong", "agent-1"})
		if lifeline.ErrorCode(err) != lifeline.EUnauthorized || exitCode(err, &errOut) != 1 {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("NoKey", func(t *testing.T) {
		m := &CLI{Env: Env{Stdout: io.Discard, Stderr: io.Discard}}
		err := m.Run(context.Background(), []string{"agents", "ls", "--server", f.URL})
		if exitCode(err, io.Discard) != 2 || !strings.Contains(err.Error(), "LIFELINE_KEY") {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestEventsList(t *testing.T) {
	f := newFakeAPI(t)
	stdout, stderr, code := run(t, f, "events", "ls", "--after", "3", "--limit", "10", "--type", "agent.lifecycle", "--agent", "agent-1")
	if code != 0 {
		t.Fatalf("exit %d, stderr %s", code, stderr)
	}
	want := "" +
		"SEQ  TIMESTAMP                 TYPE             AGENT_ID  TRANSITION           REASON\n" +
		"4    2026-02-08T10:30:00.123Z  agent.lifecycle  agent-1   unhealthy -> active  heartbeat_resumed\n"
	if stdout != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", stdout, want)
	}
	wantQuery := url.Values{"after": {"3"}, "limit": {"10"}, "type": {"agent.lifecycle"}, "agent_id": {"agent-1"}}
	if diff := cmp.Diff([]url.Values{wantQuery}, f.queries()); diff != "" {
		t.Errorf("queries (-want +got):\n%s", diff)
	}

	stdout, _, _ = run(t, f, "events", "ls", "--json")
	var page struct {
		Events    []lifeline.Event `json:"events"`
		NextAfter int64            `json:"next_after"`
	}
	if err := json.Unmarshal([]byte(stdout), &page); err != nil || len(page.Events) != 1 || page.NextAfter != 4 {
		t.Errorf("--json = %s (%v)", stdout, err)
	}
}

func TestKeys(t *testing.T) {
	f := newFakeAPI(t)
	t.Run("Create", func(t *testing.T) {
		stdout, stderr, code := run(t, f, "keys", "create", "--role", "coordinator", "--name", "ops")
		if code != 0 {
			t.Fatalf("exit %d, stderr %s", code, stderr)
		}
		if !strings.Contains(stdout, "key:        ll_new_secret\n") || !strings.Contains(stderr, "Store the key now") {
			t.Errorf("stdout %q, stderr %q", stdout, stderr)
		}
	})
	t.Run("CreateJSON", func(t *testing.T) {
		stdout, _, code := run(t, f, "keys", "create", "--role", "coordinator", "--name", "ops", "--json")
		var got, want map[string]any
		json.Unmarshal([]byte(stdout), &got)
		json.Unmarshal([]byte(`{"id":"key-2","key":"ll_new_secret","role":"coordinator","name":"ops","created_at":"2026-02-08T10:00:00Z"}`), &want)
		if diff := cmp.Diff(want, got); code != 0 || diff != "" {
			t.Errorf("exit %d, output (-want +got):\n%s", code, diff)
		}
	})
	t.Run("CreateNeedsRole", func(t *testing.T) {
		_, stderr, code := run(t, f, "keys", "create", "--name", "ops")
		if code != 2 || !strings.Contains(stderr, "--role is required") {
			t.Errorf("exit %d, stderr %q", code, stderr)
		}
	})
	t.Run("List", func(t *testing.T) {
		stdout, _, code := run(t, f, "keys", "ls")
		want := "" +
			"ID     ROLE   NAME  CREATED_AT                REVOKED_AT\n" +
			"key-1  admin  root  2026-02-08T09:00:00.000Z  -\n" +
			"key-2  agent  -     2026-02-08T09:30:00.000Z  2026-02-08T10:00:00.000Z\n"
		if code != 0 || stdout != want {
			t.Errorf("exit %d, stdout:\n%s\nwant:\n%s", code, stdout, want)
		}
	})
	t.Run("Revoke", func(t *testing.T) {
		stdout, _, code := run(t, f, "keys", "revoke", "key-2")
		if code != 0 || stdout != "revoked key key-2\n" {
			t.Errorf("exit %d, stdout %q", code, stdout)
		}
	})
}

func TestHealthUnavailable(t *testing.T) {
	f := newFakeAPI(t)
	stdout, stderr, code := run(t, f, "health")
	if code != 1 || !strings.Contains(stderr, "disk full") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
	want := "" +
		"status: unavailable\n" +
		"store:  disk full\n" +
		"uptime: 1m5s\n" +
		"agents: active=1 draining=1 unhealthy=0 dead=0 deregistered=0\n"
	if stdout != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", stdout, want)
	}
}

func TestVersion(t *testing.T) {
	stdout, _, code := run(t, nil, "version")
	re := regexp.MustCompile(`^lifeline \S+ \(` + regexp.QuoteMeta(runtime.Version()) + `, ` + runtime.GOOS + `/` + runtime.GOARCH + `\)\n$`)
	if code != 0 || !re.MatchString(stdout) {
		t.Errorf("exit %d, stdout %q", code, stdout)
	}
	_, _, code = run(t, nil, "version", "extra")
	if code != 2 {
		t.Errorf("version extra: exit %d, want 2", code)
	}
}

func TestResolveVersion(t *testing.T) {
	bi := func(main string, settings ...string) *debug.BuildInfo {
		b := &debug.BuildInfo{Main: debug.Module{Path: "github.com/lifeline-dev/lifeline", Version: main}}
		for i := 0; i+1 < len(settings); i += 2 {
			b.Settings = append(b.Settings, debug.BuildSetting{Key: settings[i], Value: settings[i+1]})
		}
		return b
	}
	tests := []struct {
		name    string
		version string
		bi      *debug.BuildInfo
		want    string
	}{
		{"Ldflags", "v1.2.3", bi("v0.0.0-x"), "v1.2.3"},
		{"ModuleVersion", "dev", bi("v1.4.0"), "v1.4.0"},
		{"VCSRevision", "dev", bi("(devel)", "vcs.revision", "0123456789abcdef0123", "vcs.modified", "false"), "dev-0123456789ab"},
		{"VCSDirty", "dev", bi("(devel)", "vcs.revision", "abc123", "vcs.modified", "true"), "dev-abc123-dirty"},
		{"Nothing", "dev", bi("(devel)"), "dev"},
		{"NoBuildInfo", "dev", nil, "dev"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := resolveVersion(tt.version, tt.bi, tt.bi != nil); got != tt.want {
				t.Errorf("resolveVersion = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestUsage(t *testing.T) {
	t.Run("HelpListsEverything", func(t *testing.T) {
		for _, args := range [][]string{{"help"}, {"--help"}, {"-h"}} {
			stdout, stderr, code := run(t, nil, args...)
			if code != 0 || stderr != "" {
				t.Fatalf("%v: exit %d, stderr %q", args, code, stderr)
			}
			for _, c := range commands {
				if !strings.Contains(stdout, "  "+c.name) {
					t.Errorf("%v: usage lacks command %q", args, c.name)
				}
				if c.new == nil {
					continue
				}
				c.new(Env{}).FlagSet().VisitAll(func(fl *flag.Flag) {
					if !strings.Contains(stdout, "--"+fl.Name) {
						t.Errorf("%v: usage lacks flag --%s of %s", args, fl.Name, c.name)
					}
				})
			}
		}
	})
	t.Run("CommandHelp", func(t *testing.T) {
		for _, args := range [][]string{{"agents", "ls", "--help"}, {"help", "agents", "ls"}, {"agents", "ls", "-h"}} {
			stdout, stderr, code := run(t, nil, args...)
			if code != 0 || stderr != "" || !strings.HasPrefix(stdout, "Usage: lifeline agents ls") || !strings.Contains(stdout, "--min-available") {
				t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, stdout, stderr)
			}
		}
	})
	t.Run("GroupHelp", func(t *testing.T) {
		stdout, _, code := run(t, nil, "keys", "--help")
		if code != 0 || !strings.Contains(stdout, "keys create") || !strings.Contains(stdout, "keys revoke") {
			t.Errorf("exit %d, stdout %q", code, stdout)
		}
	})
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"NoCommand", nil, "no command given"},
		{"UnknownCommand", []string{"frobnicate"}, `unknown command "frobnicate"`},
		{"UnknownSubcommand", []string{"agents", "frob"}, `unknown command "agents frob"`},
		{"MissingSubcommand", []string{"events"}, "events: missing subcommand"},
		{"UnknownFlag", []string{"agents", "ls", "--bogus"}, "flag provided but not defined: -bogus"},
		{"BadInt", []string{"agents", "ls", "--min-available", "x"}, "not an integer"},
		{"ExtraArgument", []string{"keys", "revoke", "a", "b"}, `unexpected argument "b"`},
		{"HelpUnknown", []string{"help", "frob"}, `unknown command "frob"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, code := run(t, nil, tt.args...)
			if code != 2 {
				t.Errorf("exit %d, want 2", code)
			}
			if stdout != "" {
				t.Errorf("stdout = %q, want usage on stderr only", stdout)
			}
			if !strings.Contains(stderr, tt.want) || !strings.Contains(stderr, "Usage: lifeline") {
				t.Errorf("stderr = %q, want %q and the usage", stderr, tt.want)
			}
		})
	}
}

func TestDoubleDashEndsFlags(t *testing.T) {
	f := newFakeAPI(t)
	// "--" makes "--json" the agent id, not a flag.
	_, stderr, code := run(t, f, "agents", "get", "--", "--json")
	if code != 1 || !strings.Contains(stderr, `not_found: agent "--json" not found`) {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}

func TestAge(t *testing.T) {
	tests := []struct {
		ago  time.Duration
		want string
	}{
		{0, "0s ago"},
		{-5 * time.Second, "0s ago"},
		{59 * time.Second, "59s ago"},
		{61 * time.Second, "1m ago"},
		{90 * time.Minute, "1h ago"},
		{47 * time.Hour, "47h ago"},
		{72 * time.Hour, "3d ago"},
	}
	for _, tt := range tests {
		if got := age(now, now.Add(-tt.ago)); got != tt.want {
			t.Errorf("age(%v) = %q, want %q", tt.ago, got, tt.want)
		}
	}
	if got := age(now, time.Time{}); got != "never" {
		t.Errorf("age(zero) = %q", got)
	}
}
