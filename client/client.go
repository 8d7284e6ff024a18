// Package client is the Go SDK for a Lifeline server: an HTTP client that implements
// the same service interfaces as the in-process registry (lifeline.AgentService,
// EventService, KeyService, LeaseService and TaskService), so callers and tests can
// swap one for the other.
//
// Errors returned by the server are rebuilt as *lifeline.Error from the problem+json
// body, so lifeline.ErrorCode(err) means the same thing locally and remotely. Transport
// failures (connection refused, context cancelled, ...) are returned as they are;
// errors.Is(err, context.Canceled) works on them.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/lifeline-dev/lifeline"
)

// DefaultUserAgent is the User-Agent header sent unless WithUserAgent replaces it.
const DefaultUserAgent = "lifeline-go-client"

// Response body limits. A single record or an error fits in 1 MiB with room to spare
// (an agent's metadata alone is capped at 16 KiB). A list page does not: 1000 agents at
// their maximum size (16 KiB metadata, 64 capabilities of 64 bytes, a 2 KiB endpoint)
// come to about 23 MiB, so pages get a larger cap rather than failing on a valid answer.
const (
	maxResponseBytes     = 1 << 20
	maxPageResponseBytes = 32 << 20
)

// Client is a Lifeline HTTP API client. It is safe for concurrent use.
type Client struct {
	baseURL   string
	apiKey    string
	http      *http.Client
	userAgent string
}

// Interface checks: the client is a drop-in for the in-process services.
var (
	_ lifeline.AgentService = (*Client)(nil)
	_ lifeline.EventService = (*Client)(nil)
	_ lifeline.KeyService   = (*Client)(nil)
)

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient makes the client send its requests through hc instead of
// http.DefaultClient. Use it to set timeouts, proxies or TLS configuration.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) {
		if hc != nil {
			c.http = hc
		}
	}
}

// WithUserAgent sets the User-Agent header of every request.
func WithUserAgent(ua string) Option {
	return func(c *Client) { c.userAgent = ua }
}

// New returns a client for the server at baseURL (for example "http://127.0.0.1:8080";
// a path prefix is kept) that authenticates with apiKey in the X-API-Key header. An
// empty apiKey sends no header. A malformed baseURL is reported by the first call.
func New(baseURL, apiKey string, opts ...Option) *Client {
	c := &Client{
		baseURL:   strings.TrimRight(baseURL, "/"),
		apiKey:    apiKey,
		http:      http.DefaultClient,
		userAgent: DefaultUserAgent,
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

// RegisterAgent registers an agent (POST /api/v1/agents). Returns invalid for a bad
// registration and conflict if the id is live.
func (c *Client) RegisterAgent(ctx context.Context, r *lifeline.Registration) (*lifeline.Agent, error) {
	var a lifeline.Agent
	if err := c.do(ctx, request{method: http.MethodPost, path: "/api/v1/agents", body: r, out: &a}); err != nil {
		return nil, err
	}
	return &a, nil
}

// FindAgentByID returns one agent (GET /api/v1/agents/{id}). Returns not_found if the
// id is unknown and invalid if it is empty.
func (c *Client) FindAgentByID(ctx context.Context, id string) (*lifeline.Agent, error) {
	if err := required("agent_id", id); err != nil {
		return nil, err
	}
	var a lifeline.Agent
	if err := c.do(ctx, request{method: http.MethodGet, path: "/api/v1/agents/" + url.PathEscape(id), out: &a}); err != nil {
		return nil, err
	}
	return &a, nil
}

// agentPage is the body of GET /api/v1/agents.
type agentPage struct {
	Agents     []*lifeline.Agent `json:"agents"`
	Total      int               `json:"total"`
	NextCursor string            `json:"next_cursor,omitempty"`
}

// FindAgents returns one page of agents matching f (GET /api/v1/agents), the total
// number of matches and the cursor of the next page ("" on the last page). Pass the
// cursor back as f.After to read the next page. Returns forbidden for agent keys unless
// the server opens discovery, invalid for bad filter values.
func (c *Client) FindAgents(ctx context.Context, f lifeline.AgentFilter) ([]*lifeline.Agent, int, string, error) {
	var page agentPage
	err := c.do(ctx, request{method: http.MethodGet, path: "/api/v1/agents", query: agentQuery(f), out: &page, limit: maxPageResponseBytes})
	if err != nil {
		return nil, 0, "", err
	}
	return page.Agents, page.Total, page.NextCursor, nil
}

// agentQuery encodes a filter as the query parameters of GET /api/v1/agents. Zero
// values are left out so the server's defaults apply.
func agentQuery(f lifeline.AgentFilter) url.Values {
	q := url.Values{}
	if len(f.Capabilities) > 0 {
		q.Set("capabilities", strings.Join(f.Capabilities, ","))
	}
	if len(f.Statuses) > 0 {
		s := make([]string, len(f.Statuses))
		for i, st := range f.Statuses {
			s[i] = string(st)
		}
		q.Set("status", strings.Join(s, ","))
	}
	if f.RoleID != "" {
		q.Set("role_id", f.RoleID)
	}
	if f.MinAvailableCapacity != nil {
		q.Set("min_available_capacity", fmt.Sprint(*f.MinAvailableCapacity))
	}
	if f.Limit != 0 {
		q.Set("limit", fmt.Sprint(f.Limit))
	}
	if f.After != "" {
		q.Set("cursor", f.After)
	}
	return q
}

// Heartbeat records a heartbeat (POST /api/v1/agents/{id}/heartbeat). Returns
// not_found for an unknown id, gone for a dead or deregistered agent (register again),
// forbidden for another agent's key, invalid for a bad body.
func (c *Client) Heartbeat(ctx context.Context, id string, hb *lifeline.Heartbeat) (*lifeline.HeartbeatAck, error) {
	if err := required("agent_id", id); err != nil {
		return nil, err
	}
	var ack lifeline.HeartbeatAck
	err := c.do(ctx, request{method: http.MethodPost, path: "/api/v1/agents/" + url.PathEscape(id) + "/heartbeat", body: hb, out: &ack})
	if err != nil {
		return nil, err
	}
	return &ack, nil
}

// UpdateStatus drains or deregisters an agent (PATCH /api/v1/agents/{id}/status) with
// If-Match: "<ifMatch>". A negative ifMatch sends If-Match: * (any version), as the
// in-process service reads it. Returns precondition_failed for a stale version and
// conflict, with Allowed naming the accepted statuses, for a forbidden transition.
func (c *Client) UpdateStatus(ctx context.Context, id string, ifMatch int64, u *lifeline.StatusUpdate) (*lifeline.Agent, error) {
	if err := required("agent_id", id); err != nil {
		return nil, err
	}
	r := request{method: http.MethodPatch, path: "/api/v1/agents/" + url.PathEscape(id) + "/status", body: u}
	r.ifMatch = `"` + strconv.FormatInt(ifMatch, 10) + `"`
	if ifMatch < 0 {
		r.ifMatch = "*"
	}
	var a lifeline.Agent
	r.out = &a
	if err := c.do(ctx, r); err != nil {
		return nil, err
	}
	return &a, nil
}

// commandAccepted is the 202 body of POST /api/v1/agents/{id}/commands.
type commandAccepted struct {
	AgentID string           `json:"agent_id"`
	Command lifeline.Command `json:"command"`
}

// SendCommand queues a command for delivery in the agent's heartbeat responses (POST
// /api/v1/agents/{id}/commands). Coordinators and admins only. Returns conflict if the
// agent is not live.
//
// The HTTP API answers with the agent id and the queued command only, so the returned
// Agent carries just AgentID and PendingCommand; call FindAgentByID for the full record.
func (c *Client) SendCommand(ctx context.Context, id string, cmd *lifeline.Command) (*lifeline.Agent, error) {
	if err := required("agent_id", id); err != nil {
		return nil, err
	}
	var res commandAccepted
	err := c.do(ctx, request{method: http.MethodPost, path: "/api/v1/agents/" + url.PathEscape(id) + "/commands", body: cmd, out: &res})
	if err != nil {
		return nil, err
	}
	if res.AgentID == "" {
		res.AgentID = id
	}
	return &lifeline.Agent{AgentID: res.AgentID, PendingCommand: &res.Command}, nil
}

// DeregisterAgent deregisters an agent at once (DELETE /api/v1/agents/{id}). Returns
// not_found for an unknown id and conflict if it is already deregistered.
func (c *Client) DeregisterAgent(ctx context.Context, id string) error {
	if err := required("agent_id", id); err != nil {
		return err
	}
	return c.do(ctx, request{method: http.MethodDelete, path: "/api/v1/agents/" + url.PathEscape(id)})
}

// Pools returns every pool in role_id order (GET /api/v1/pools). Coordinators and
// admins only.
func (c *Client) Pools(ctx context.Context) ([]*lifeline.Pool, error) {
	var res struct {
		Pools []*lifeline.Pool `json:"pools"`
	}
	if err := c.do(ctx, request{method: http.MethodGet, path: "/api/v1/pools", out: &res, limit: maxPageResponseBytes}); err != nil {
		return nil, err
	}
	return res.Pools, nil
}

// FindPool returns one pool (GET /api/v1/pools/{role_id}). Returns not_found when no
// agent has that role_id.
func (c *Client) FindPool(ctx context.Context, roleID string) (*lifeline.Pool, error) {
	if err := required("role_id", roleID); err != nil {
		return nil, err
	}
	var p lifeline.Pool
	if err := c.do(ctx, request{method: http.MethodGet, path: "/api/v1/pools/" + url.PathEscape(roleID), out: &p}); err != nil {
		return nil, err
	}
	return &p, nil
}

// FindEvents returns the events matching f (GET /api/v1/events) and the seq to pass as
// f.After for the next page (f.After itself when no event was returned). Coordinators
// and admins only.
func (c *Client) FindEvents(ctx context.Context, f lifeline.EventFilter) ([]lifeline.Event, int64, error) {
	q := url.Values{}
	if f.After != 0 {
		q.Set("after", fmt.Sprint(f.After))
	}
	if f.Limit != 0 {
		q.Set("limit", fmt.Sprint(f.Limit))
	}
	if len(f.Types) > 0 {
		q.Set("type", strings.Join(f.Types, ","))
	}
	if f.AgentID != "" {
		q.Set("agent_id", f.AgentID)
	}
	var res struct {
		Events    []lifeline.Event `json:"events"`
		NextAfter int64            `json:"next_after"`
	}
	err := c.do(ctx, request{method: http.MethodGet, path: "/api/v1/events", query: q, out: &res, limit: maxPageResponseBytes})
	if err != nil {
		return nil, 0, err
	}
	return res.Events, res.NextAfter, nil
}

// CreateKey creates an API key (POST /api/v1/keys) and returns it with its secret,
// which the server shows only this once. Admins only.
func (c *Client) CreateKey(ctx context.Context, r *lifeline.KeyRequest) (*lifeline.NewKey, error) {
	var k lifeline.NewKey
	if err := c.do(ctx, request{method: http.MethodPost, path: "/api/v1/keys", body: r, out: &k}); err != nil {
		return nil, err
	}
	return &k, nil
}

// Keys lists every key, without secrets (GET /api/v1/keys). Admins only.
func (c *Client) Keys(ctx context.Context) ([]*lifeline.Key, error) {
	var res struct {
		Keys []*lifeline.Key `json:"keys"`
	}
	if err := c.do(ctx, request{method: http.MethodGet, path: "/api/v1/keys", out: &res, limit: maxPageResponseBytes}); err != nil {
		return nil, err
	}
	return res.Keys, nil
}

// RevokeKey revokes a key at once (DELETE /api/v1/keys/{id}). Admins only. Returns
// not_found for an unknown id.
func (c *Client) RevokeKey(ctx context.Context, id string) error {
	if err := required("id", id); err != nil {
		return err
	}
	return c.do(ctx, request{method: http.MethodDelete, path: "/api/v1/keys/" + url.PathEscape(id)})
}

// Authenticate is part of lifeline.KeyService but has no HTTP endpoint: the server
// authenticates every request itself. It always returns invalid.
func (c *Client) Authenticate(ctx context.Context, secret string) (lifeline.Caller, error) {
	return lifeline.Caller{}, lifeline.Errorf(lifeline.EInvalid, "authenticate is not available over HTTP")
}

// Health is the server's readiness report (GET /health).
type Health struct {
	// Status is "ok", or "unavailable" when the store is unreachable.
	Status string `json:"status"`
	// Store is "ok" or the store's error text.
	Store string `json:"store"`
	// Agents counts the agents in each status.
	Agents map[lifeline.Status]int `json:"agents"`
	// UptimeSeconds is the time since the server started.
	UptimeSeconds float64 `json:"uptime_seconds"`
}

// Health reads the server's readiness report (GET /health, no API key sent). When the
// server reports itself unavailable (503 with a health body) it returns the report
// together with an unavailable error.
func (c *Client) Health(ctx context.Context) (*Health, error) {
	var h Health
	err := c.do(ctx, request{method: http.MethodGet, path: "/health", out: &h, noAuth: true, errorBody: &h})
	if err != nil {
		if h.Status != "" && lifeline.ErrorCode(err) == lifeline.EUnavailable {
			return &h, lifeline.Errorf(lifeline.EUnavailable, "server is %s (store: %s)", h.Status, h.Store)
		}
		return nil, err
	}
	return &h, nil
}

// request describes one API call.
type request struct {
	method  string
	path    string
	query   url.Values
	ifMatch string
	// header holds extra request headers (X-Lease-ID).
	header http.Header
	// body, when not nil, is sent as JSON.
	body any
	// out, when not nil, receives the JSON body of a 2xx response.
	out any
	// limit caps the response body; 0 means maxResponseBytes.
	limit int64
	// noAuth leaves out the X-API-Key header (endpoints outside /api/v1).
	noAuth bool
	// errorBody, when not nil, also receives the JSON of an error response, for
	// endpoints whose errors carry a regular body (GET /health's 503).
	errorBody any
}

// do sends r and decodes the response. Non-2xx responses become *lifeline.Error.
func (c *Client) do(ctx context.Context, r request) error {
	u := c.baseURL + r.path
	if len(r.query) > 0 {
		u += "?" + r.query.Encode()
	}
	var body io.Reader
	if r.body != nil {
		b, err := json.Marshal(r.body)
		if err != nil {
			return fmt.Errorf("lifeline client: encoding %s %s body: %w", r.method, r.path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u, body)
	if err != nil {
		return fmt.Errorf("lifeline client: %w", err)
	}
	req.Header.Set("Accept", "application/json, application/problem+json")
	if r.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.userAgent != "" {
		req.Header.Set("User-Agent", c.userAgent)
	}
	if c.apiKey != "" && !r.noAuth {
		req.Header.Set("X-API-Key", c.apiKey)
	}
	if r.ifMatch != "" {
		req.Header.Set("If-Match", r.ifMatch)
	}
	for k, v := range r.header {
		req.Header[http.CanonicalHeaderKey(k)] = v
	}

	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer func() {
		// Drain a little so the connection can be reused, then always close.
		_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
		resp.Body.Close()
	}()

	limit := r.limit
	if limit <= 0 {
		limit = maxResponseBytes
	}
	data, err := readLimited(resp.Body, limit)
	if err != nil {
		return fmt.Errorf("lifeline client: reading %s %s response: %w", r.method, r.path, err)
	}

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		if r.errorBody != nil && isJSON(resp.Header.Get("Content-Type")) && !isProblem(resp.Header.Get("Content-Type")) {
			_ = json.Unmarshal(data, r.errorBody)
		}
		return decodeError(resp, data)
	}
	if r.out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.Unmarshal(data, r.out); err != nil {
		return fmt.Errorf("lifeline client: decoding %s %s response (status %d): %w", r.method, r.path, resp.StatusCode, err)
	}
	return nil
}

// errBodyTooLarge reports a response body over the read limit.
var errBodyTooLarge = errors.New("response body too large")

// readLimited reads all of rd, failing if it holds more than limit bytes.
func readLimited(rd io.Reader, limit int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(rd, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%w (over %d bytes)", errBodyTooLarge, limit)
	}
	return data, nil
}

// problem is an RFC 9457 problem+json body with Lifeline's extension members.
type problem struct {
	Type    string   `json:"type"`
	Title   string   `json:"title"`
	Status  int      `json:"status"`
	Detail  string   `json:"detail"`
	Code    string   `json:"code"`
	Allowed []string `json:"allowed"`
}

// decodeError rebuilds the server's *lifeline.Error from an error response. The code
// comes from the problem's code member, or from the HTTP status when there is none
// (a proxy's error page, an older server). Extension members (the holder of a
// contested lease) are kept in Extra.
func decodeError(resp *http.Response, data []byte) error {
	var p problem
	var extra map[string]any
	if isJSON(resp.Header.Get("Content-Type")) {
		_ = json.Unmarshal(data, &p)
		extra = problemExtra(data)
	}
	e := &lifeline.Error{Code: p.Code, Message: p.Detail, Allowed: p.Allowed, Extra: extra}
	if e.Code == "" {
		e.Code = lifeline.CodeForHTTPStatus(resp.StatusCode)
	}
	if e.Message == "" {
		e.Message = p.Title
	}
	if e.Message == "" {
		e.Message = fmt.Sprintf("%s %s: %s", resp.Request.Method, resp.Request.URL.Path, resp.Status)
	}
	return e
}

// isJSON reports whether a Content-Type is JSON (application/json, application/*+json).
func isJSON(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return mt == "application/json" || (strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json"))
}

// isProblem reports whether a Content-Type is application/problem+json.
func isProblem(ct string) bool {
	mt, _, _ := mime.ParseMediaType(ct)
	return mt == "application/problem+json"
}

// required returns invalid when an identifier is empty: an empty path segment would
// address another endpoint.
func required(field, v string) error {
	if v == "" {
		return lifeline.Errorf(lifeline.EInvalid, "%s is required", field)
	}
	return nil
}
