package stream_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/lifeline-dev/lifeline"
	"github.com/lifeline-dev/lifeline/api"
	"github.com/lifeline-dev/lifeline/internal/apitest"
	"github.com/lifeline-dev/lifeline/registry"
	"github.com/lifeline-dev/lifeline/sqlite"
	"github.com/lifeline-dev/lifeline/stream"
)

// harness is a real Lifeline on 127.0.0.1: SQLite in a temporary directory, the
// registry engine publishing into the stream service, and the API server with the
// stream routes mounted. REST calls go through the contract-checking apitest client.
type harness struct {
	t      testing.TB
	cfg    stream.Config
	path   string
	url    string
	admin  string
	store  *sqlite.Store
	engine *registry.Engine
	keys   *registry.Keys
	svc    *stream.Service
	srv    *httptest.Server
	c      *http.Client
}

const adminSecret = "ll_stream_test_admin"

// start runs a harness with cfg (Keys, Agents, Events, Log and Webhooks are filled in).
func start(t testing.TB, cfg stream.Config) *harness {
	t.Helper()
	h := &harness{t: t, cfg: cfg, path: filepath.Join(t.TempDir(), "lifeline.db"), admin: adminSecret, c: apitest.Client(t)}
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
	var svc *stream.Service
	e := registry.New(st, registry.Config{
		SweepInterval: 10 * time.Millisecond,
		// The service exists before anything commits: the engine commits only once
		// started or asked to.
		OnCommit: func(evs []lifeline.Event) { svc.Publish(evs) },
	})
	if err := e.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	keys, err := registry.NewKeys(context.Background(), st, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Bootstrap(context.Background(), adminSecret); err != nil {
		t.Fatal(err)
	}
	cfg := h.cfg
	cfg.Keys, cfg.Agents, cfg.Events, cfg.Log, cfg.Webhooks = keys, e, e, st, st
	svc, err = stream.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.Start()
	srv := httptest.NewUnstartedServer(api.NewServer(api.Config{
		Agents: e, Events: e, Keys: keys, Leases: e, Tasks: e, Health: e, Routes: svc.Routes(),
	}))
	if h.url != "" {
		// Reopen on the same address so that clients keep their URLs.
		ln, err := net.Listen("tcp", strings.TrimPrefix(h.url, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		srv.Listener.Close()
		srv.Listener = ln
	}
	srv.Start()
	h.url, h.store, h.engine, h.keys, h.svc, h.srv = srv.URL, st, e, keys, svc, srv
}

func (h *harness) close() {
	if h.srv == nil {
		return
	}
	if err := h.svc.Close(); err != nil {
		h.t.Error(err)
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

func (r resp) json(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

// problem returns the code of a problem+json answer.
func (r resp) problem(t testing.TB) string {
	t.Helper()
	if ct := r.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("content type %q for %d: %s", ct, r.StatusCode, r.body)
	}
	var p api.Problem
	r.json(t, &p)
	return p.Code
}

// do sends a REST request through the contract-checking client.
func (h *harness) do(method, path, key string, body any) resp {
	h.t.Helper()
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
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

func expect(t testing.TB, r resp, status int) resp {
	t.Helper()
	if r.StatusCode != status {
		t.Fatalf("%s %s: status %d, want %d: %s", r.Request.Method, r.Request.URL.Path, r.StatusCode, status, r.body)
	}
	return r
}

// newKey creates a key with the given role and returns its secret and id.
func (h *harness) newKey(role lifeline.Role) (secret, id string) {
	h.t.Helper()
	r := expect(h.t, h.do("POST", "/api/v1/keys", h.admin, map[string]any{"role": role, "name": string(role)}), 201)
	var k struct {
		Key string `json:"key"`
		ID  string `json:"id"`
	}
	r.json(h.t, &k)
	return k.Key, k.ID
}

// register registers agent id with key.
func (h *harness) register(key, id string) {
	h.t.Helper()
	expect(h.t, h.do("POST", "/api/v1/agents", key, map[string]any{"agent_id": id}), 201)
}

// ctxAs returns a context acting as the key's caller, for in-process engine calls.
func (h *harness) ctxAs(key string) context.Context {
	h.t.Helper()
	c, err := h.keys.Authenticate(context.Background(), key)
	if err != nil {
		h.t.Fatal(err)
	}
	return lifeline.WithCaller(context.Background(), c)
}

// lease acquires a lease on task for agent through the engine.
func (h *harness) lease(key, agent, task string) string {
	h.t.Helper()
	l, err := h.engine.AcquireLease(h.ctxAs(key), &lifeline.LeaseRequest{Scope: task, AgentID: agent})
	if err != nil {
		h.t.Fatal(err)
	}
	return l.LeaseID
}

// taskUpdate records a task update through the engine.
func (h *harness) taskUpdate(key, task, leaseID, status string, progress int, msg string) {
	h.t.Helper()
	if _, err := h.engine.UpdateTask(h.ctxAs(key), task, leaseID, &lifeline.TaskUpdate{Status: status, Progress: &progress, Message: msg}); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) wsURL(agent string) string {
	return "ws" + strings.TrimPrefix(h.url, "http") + "/agents/" + agent + "/ws"
}

// dial opens a WebSocket to agent's stream with key (or, with an empty key, the URL
// as given). The handshake goes through the contract-checking client.
func (h *harness) dial(agent, key string, query ...string) (*wsClient, *http.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	u := h.wsURL(agent)
	if len(query) > 0 {
		u += "?" + strings.Join(query, "&")
	}
	opts := &websocket.DialOptions{HTTPClient: h.c, HTTPHeader: http.Header{}}
	if key != "" {
		opts.HTTPHeader.Set("X-API-Key", key)
	}
	ws, res, err := websocket.Dial(ctx, u, opts)
	if err != nil {
		return nil, res, err
	}
	ws.SetReadLimit(64 << 20)
	c := &wsClient{t: h.t, ws: ws}
	h.t.Cleanup(func() { ws.CloseNow() })
	return c, res, nil
}

// mustDial dials and reads connection_established.
func (h *harness) mustDial(agent, key string, query ...string) *wsClient {
	h.t.Helper()
	c, res, err := h.dial(agent, key, query...)
	if err != nil {
		status := 0
		if res != nil {
			status = res.StatusCode
		}
		h.t.Fatalf("dial %s: %v (status %d)", agent, err, status)
	}
	m := c.next()
	if m.Type != stream.TypeConnectionEstablished || m.AgentID != agent || m.Timestamp == "" {
		h.t.Fatalf("first message %+v, want connection_established for %s", m, agent)
	}
	return c
}

// wsClient reads protocol messages from a WebSocket.
type wsClient struct {
	t  testing.TB
	ws *websocket.Conn
}

// msg is any protocol message, decoded loosely.
type msg struct {
	Type            string                  `json:"type"`
	AgentID         string                  `json:"agent_id"`
	Status          string                  `json:"status"`
	ExecutionStatus *stream.ExecutionStatus `json:"execution_status"`
	TaskID          string                  `json:"task_id"`
	Progress        int                     `json:"progress"`
	Message         string                  `json:"message"`
	Result          json.RawMessage         `json:"result"`
	Error           string                  `json:"error"`
	Timestamp       string                  `json:"timestamp"`
	Updates         []struct {
		Type    string          `json:"type"`
		Content json.RawMessage `json:"content"`
	} `json:"updates"`
	raw []byte
}

// read returns the next message or an error (the connection ended).
func (c *wsClient) read(timeout time.Duration) (msg, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	typ, data, err := c.ws.Read(ctx)
	if err != nil {
		return msg{}, err
	}
	if typ != websocket.MessageText {
		c.t.Fatalf("message of type %v", typ)
	}
	var m msg
	if err := json.Unmarshal(data, &m); err != nil {
		c.t.Fatalf("message %s: %v", data, err)
	}
	m.raw = data
	if _, err := time.Parse(time.RFC3339Nano, m.Timestamp); m.Type != stream.TypePong && err != nil {
		c.t.Fatalf("message %s: timestamp is not ISO-8601: %v", data, err)
	}
	return m, nil
}

// next returns the next message that is not a ping, failing the test on error.
func (c *wsClient) next() msg {
	c.t.Helper()
	for {
		m, err := c.read(5 * time.Second)
		if err != nil {
			c.t.Fatalf("read: %v", err)
		}
		if m.Type != stream.TypePing {
			return m
		}
	}
}

// flat reads messages until n data messages (batches unpacked) have arrived and
// returns them with the number of WebSocket messages they came in.
func (c *wsClient) flat(n int) ([]msg, int) {
	c.t.Helper()
	var out []msg
	frames := 0
	for len(out) < n {
		m := c.next()
		frames++
		if m.Type != stream.TypeBatchUpdate {
			out = append(out, m)
			continue
		}
		for _, u := range m.Updates {
			var inner msg
			if err := json.Unmarshal(u.Content, &inner); err != nil {
				c.t.Fatal(err)
			}
			if inner.Type != u.Type {
				c.t.Fatalf("batch item type %q holds a %q", u.Type, inner.Type)
			}
			inner.raw = u.Content
			out = append(out, inner)
		}
	}
	return out, frames
}

func (c *wsClient) send(v any) {
	c.t.Helper()
	data, _ := json.Marshal(v)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.ws.Write(ctx, websocket.MessageText, data); err != nil {
		c.t.Fatal(err)
	}
}

// sseEvent is one frame of an SSE stream.
type sseEvent struct {
	id    int64
	event string
	data  string
}

// sseClient reads an SSE stream.
type sseClient struct {
	t    testing.TB
	res  *http.Response
	r    *bufio.Reader
	kept int // keep-alive comments seen
	done chan struct{}
}

// openSSE opens the fleet stream. hdr are header name/value pairs.
func (h *harness) openSSE(query, key string, hdr ...string) (*sseClient, resp) {
	h.t.Helper()
	req, err := http.NewRequest("GET", h.url+"/api/v1/events/stream?"+query, nil)
	if err != nil {
		h.t.Fatal(err)
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
	if res.StatusCode != http.StatusOK {
		defer res.Body.Close()
		data, _ := io.ReadAll(res.Body)
		return nil, resp{res, data}
	}
	if ct := res.Header.Get("Content-Type"); ct != "text/event-stream" {
		h.t.Fatalf("content type %q", ct)
	}
	c := &sseClient{t: h.t, res: res, r: bufio.NewReader(res.Body)}
	h.t.Cleanup(func() { res.Body.Close() })
	return c, resp{Response: res}
}

// next returns the next event, counting keep-alive comments on the way. It fails the
// test if none arrives within timeout.
func (c *sseClient) next(timeout time.Duration) (sseEvent, error) {
	timer := time.AfterFunc(timeout, func() { c.res.Body.Close() })
	defer timer.Stop()
	var ev sseEvent
	fields := 0
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			return ev, err
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if fields > 0 {
				return ev, nil
			}
		case line == ": keep-alive":
			c.kept++
		case strings.HasPrefix(line, "id: "):
			ev.id, err = strconv.ParseInt(strings.TrimPrefix(line, "id: "), 10, 64)
			if err != nil {
				c.t.Fatalf("bad id line %q", line)
			}
			fields++
		case strings.HasPrefix(line, "event: "):
			ev.event = strings.TrimPrefix(line, "event: ")
			fields++
		case strings.HasPrefix(line, "data: "):
			ev.data = strings.TrimPrefix(line, "data: ")
			fields++
		default:
			c.t.Fatalf("unexpected SSE line %q", line)
		}
	}
}

func (c *sseClient) mustNext() sseEvent {
	c.t.Helper()
	ev, err := c.next(5 * time.Second)
	if err != nil {
		c.t.Fatalf("SSE read: %v", err)
	}
	var e lifeline.Event
	if err := json.Unmarshal([]byte(ev.data), &e); err != nil {
		c.t.Fatalf("SSE data %q: %v", ev.data, err)
	}
	if e.Seq != ev.id || e.Type != ev.event {
		c.t.Fatalf("frame id %d event %q carries event seq %d type %q", ev.id, ev.event, e.Seq, e.Type)
	}
	return ev
}

func (c *sseClient) close() { c.res.Body.Close() }

// eventually polls cond every 10 ms until it holds or 5 s pass.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stats reads GET /agents/ws/stats.
func (h *harness) stats() stream.Stats {
	h.t.Helper()
	var s stream.Stats
	expect(h.t, h.do("GET", "/agents/ws/stats", h.admin, nil), 200).json(h.t, &s)
	return s
}
