package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lifeline-dev/lifeline"
	"github.com/lifeline-dev/lifeline/api"
	"github.com/lifeline-dev/lifeline/internal/apitest"
	"github.com/lifeline-dev/lifeline/registry"
	"github.com/lifeline-dev/lifeline/sqlite"
)

// harness is a real Lifeline on 127.0.0.1 over a real SQLite file, driven through an
// HTTP client that validates every exchange against openapi.yaml.
type harness struct {
	t      *testing.T
	url    string
	admin  string
	engine *registry.Engine
	keys   *registry.Keys
	store  *sqlite.Store
	srv    *httptest.Server
	c      *http.Client
	path   string
	cfg    registry.Config
}

const adminSecret = "ll_test_admin_secret"

func start(t *testing.T, cfg registry.Config) *harness {
	t.Helper()
	h := &harness{t: t, path: filepath.Join(t.TempDir(), "lifeline.db"), cfg: cfg, c: apitest.Client(t)}
	h.open()
	t.Cleanup(h.close)
	return h
}

func (h *harness) open() {
	t := h.t
	t.Helper()
	st, err := sqlite.Open(h.path)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	cfg := h.cfg
	cfg.Metrics = registry.NewMetrics(reg)
	e := registry.New(st, cfg)
	if err := e.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	reg.MustRegister(registry.NewAgentsCollector(e))
	keys, err := registry.NewKeys(context.Background(), st, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Bootstrap(context.Background(), adminSecret); err != nil {
		t.Fatal(err)
	}
	e.Start()
	srv := httptest.NewUnstartedServer(api.NewServer(api.Config{Agents: e, Events: e, Keys: keys, Leases: e, Tasks: e, Health: e, Registry: reg}))
	if h.url != "" {
		// Reopen on the same address so clients keep their base URL.
		ln, err := net.Listen("tcp", strings.TrimPrefix(h.url, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		srv.Listener.Close()
		srv.Listener = ln
	}
	srv.Start()
	h.url, h.admin, h.engine, h.keys, h.store, h.srv = srv.URL, adminSecret, e, keys, st, srv
}

func (h *harness) close() {
	if h.srv == nil {
		return
	}
	h.srv.Close()
	if err := h.engine.Close(); err != nil {
		h.t.Error(err)
	}
	if err := h.store.Close(); err != nil {
		h.t.Error(err)
	}
	h.srv = nil
}

func (h *harness) restart() {
	h.close()
	h.open()
}

// resp is a response with its body read.
type resp struct {
	*http.Response
	body []byte
}

func (r resp) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

func (r resp) problem(t *testing.T) api.Problem {
	t.Helper()
	if ct := r.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("content type %q for %d: %s", ct, r.StatusCode, r.body)
	}
	var p api.Problem
	r.json(t, &p)
	if p.Status != r.StatusCode || p.Code == "" || p.Detail == "" {
		t.Fatalf("incomplete problem %+v", p)
	}
	return p
}

// do sends a request. body may be nil, a string (sent raw) or a value (JSON-encoded).
func (h *harness) do(method, path, key string, body any, hdr ...string) resp {
	h.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			h.t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, h.url+path, rd)
	if err != nil {
		h.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("X-API-Key", key)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := h.c.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return resp{res, data}
}

// expect fails the test unless r has the given status.
func expect(t *testing.T, r resp, status int) resp {
	t.Helper()
	if r.StatusCode != status {
		t.Fatalf("%s %s: status %d, want %d: %s", r.Request.Method, r.Request.URL.Path, r.StatusCode, status, r.body)
	}
	return r
}

// newKey creates a key with the given role and returns its secret.
func (h *harness) newKey(role lifeline.Role) string {
	h.t.Helper()
	r := expect(h.t, h.do("POST", "/api/v1/keys", h.admin, map[string]any{"role": role, "name": string(role) + "-test"}), 201)
	var k struct {
		Key string `json:"key"`
	}
	r.json(h.t, &k)
	return k.Key
}

// register registers an agent with the given key and heartbeat thresholds.
func (h *harness) register(key, id string, thresholds ...int) lifeline.Agent {
	h.t.Helper()
	body := map[string]any{"agent_id": id}
	if len(thresholds) == 3 {
		body["heartbeat_config"] = map[string]int{"interval_seconds": thresholds[0], "unhealthy_after_seconds": thresholds[1], "dead_after_seconds": thresholds[2]}
	}
	r := expect(h.t, h.do("POST", "/api/v1/agents", key, body), 201)
	var a lifeline.Agent
	r.json(h.t, &a)
	return a
}

func (h *harness) beat(key, id string, extra ...any) resp {
	h.t.Helper()
	body := map[string]any{"status": "active", "client_timestamp": time.Now().UTC().Format(time.RFC3339Nano)}
	for i := 0; i+1 < len(extra); i += 2 {
		body[extra[i].(string)] = extra[i+1]
	}
	return h.do("POST", "/api/v1/agents/"+id+"/heartbeat", key, body)
}

func (h *harness) events(query string) []lifeline.Event {
	h.t.Helper()
	r := expect(h.t, h.do("GET", "/api/v1/events?"+query, h.admin, nil), 200)
	var l struct {
		Events    []lifeline.Event `json:"events"`
		NextAfter int64            `json:"next_after"`
	}
	r.json(h.t, &l)
	return l.Events
}
