package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/lifeline-dev/lifeline"
)

// Interface checks: leases and fenced task updates, as in process.
var (
	_ lifeline.LeaseService = (*Client)(nil)
	_ lifeline.TaskService  = (*Client)(nil)
)

// AcquireLease takes a scope for an agent (POST /api/v1/leases). Returns conflict if the
// scope is held (see Holder for who holds it), agent_draining if the agent is draining,
// gone if it is dead or deregistered, not_found for an unknown agent, forbidden if an
// agent key acquires for another agent, invalid for a bad request.
func (c *Client) AcquireLease(ctx context.Context, r *lifeline.LeaseRequest) (*lifeline.Lease, error) {
	var l lifeline.Lease
	if err := c.do(ctx, request{method: http.MethodPost, path: "/api/v1/leases", body: r, out: &l}); err != nil {
		return nil, err
	}
	return &l, nil
}

// RenewLease extends an active lease by a new TTL from now (PATCH /api/v1/leases/{id});
// a nil r or a nil TTLSeconds keeps the lease's TTL. Returns gone if the lease is no
// longer active and not_found if it is unknown.
func (c *Client) RenewLease(ctx context.Context, id string, r *lifeline.LeaseRenewal) (*lifeline.Lease, error) {
	if err := required("lease_id", id); err != nil {
		return nil, err
	}
	if r == nil {
		// The server wants a JSON object, even an empty one.
		r = &lifeline.LeaseRenewal{}
	}
	var l lifeline.Lease
	if err := c.do(ctx, request{method: http.MethodPatch, path: leasePath(id), body: r, out: &l}); err != nil {
		return nil, err
	}
	return &l, nil
}

// ReleaseLease ends an active lease (DELETE /api/v1/leases/{id}). Returns gone if it is
// no longer active and not_found if it is unknown.
func (c *Client) ReleaseLease(ctx context.Context, id string) error {
	if err := required("lease_id", id); err != nil {
		return err
	}
	return c.do(ctx, request{method: http.MethodDelete, path: leasePath(id)})
}

// RevokeLease ends an active lease by administrative decision (POST
// /api/v1/leases/{id}/revoke). Admins only. Returns gone if it is no longer active. The
// server answers with the revoked lease, which lifeline.LeaseService has no place for;
// call FindLeaseByID to read it.
func (c *Client) RevokeLease(ctx context.Context, id string) error {
	if err := required("lease_id", id); err != nil {
		return err
	}
	return c.do(ctx, request{method: http.MethodPost, path: leasePath(id) + "/revoke"})
}

// FindLeaseByID returns a lease in any status (GET /api/v1/leases/{id}). Returns
// not_found if it is unknown.
func (c *Client) FindLeaseByID(ctx context.Context, id string) (*lifeline.Lease, error) {
	if err := required("lease_id", id); err != nil {
		return nil, err
	}
	var l lifeline.Lease
	if err := c.do(ctx, request{method: http.MethodGet, path: leasePath(id), out: &l}); err != nil {
		return nil, err
	}
	return &l, nil
}

// leasePage is the body of GET /api/v1/leases.
type leasePage struct {
	Leases     []*lifeline.Lease `json:"leases"`
	NextCursor string            `json:"next_cursor,omitempty"`
}

// FindLeases returns one page of leases matching f (GET /api/v1/leases) and the cursor
// of the next page ("" on the last page). Pass the cursor back as f.After to read the
// next page. Returns invalid for bad filter values.
func (c *Client) FindLeases(ctx context.Context, f lifeline.LeaseFilter) ([]*lifeline.Lease, string, error) {
	var page leasePage
	err := c.do(ctx, request{method: http.MethodGet, path: "/api/v1/leases", query: leaseQuery(f), out: &page, limit: maxPageResponseBytes})
	if err != nil {
		return nil, "", err
	}
	return page.Leases, page.NextCursor, nil
}

// leaseQuery encodes a filter as the query parameters of GET /api/v1/leases. Zero
// values are left out so the server's defaults apply.
func leaseQuery(f lifeline.LeaseFilter) url.Values {
	q := url.Values{}
	if f.AgentID != "" {
		q.Set("agent_id", f.AgentID)
	}
	if f.Scope != "" {
		q.Set("scope", f.Scope)
	}
	if len(f.Statuses) > 0 {
		s := make([]string, len(f.Statuses))
		for i, st := range f.Statuses {
			s[i] = string(st)
		}
		q.Set("status", strings.Join(s, ","))
	}
	if f.Limit != 0 {
		q.Set("limit", fmt.Sprint(f.Limit))
	}
	if f.After != "" {
		q.Set("cursor", f.After)
	}
	return q
}

func leasePath(id string) string { return "/api/v1/leases/" + url.PathEscape(id) }

func taskPath(id string) string { return "/api/v1/tasks/" + url.PathEscape(id) }

// UpdateTask records an update of a task under a lease (POST
// /api/v1/tasks/{task_id}/updates with X-Lease-ID: leaseID). Returns
// precondition_failed, and nothing is written, unless the lease is active, on scope
// taskID and held by the caller's agent; invalid for a bad update.
func (c *Client) UpdateTask(ctx context.Context, taskID, leaseID string, u *lifeline.TaskUpdate) (*lifeline.Task, error) {
	if err := required("task_id", taskID); err != nil {
		return nil, err
	}
	// An empty leaseID is sent as no header at all: the server, not the client, says
	// what a missing lease means, so the error code is the same as in process.
	var h http.Header
	if leaseID != "" {
		h = http.Header{"X-Lease-Id": {leaseID}}
	}
	var t lifeline.Task
	if err := c.do(ctx, request{method: http.MethodPost, path: taskPath(taskID) + "/updates", body: u, out: &t, header: h}); err != nil {
		return nil, err
	}
	return &t, nil
}

// FindTask returns the latest accepted state of a task (GET /api/v1/tasks/{task_id}).
// Returns not_found if no update was ever accepted.
func (c *Client) FindTask(ctx context.Context, taskID string) (*lifeline.Task, error) {
	if err := required("task_id", taskID); err != nil {
		return nil, err
	}
	var t lifeline.Task
	if err := c.do(ctx, request{method: http.MethodGet, path: taskPath(taskID), out: &t}); err != nil {
		return nil, err
	}
	return &t, nil
}

// LeaseHolder is the active lease that made AcquireLease fail with conflict, as the
// error names it.
type LeaseHolder struct {
	// AgentID is the agent holding the scope (the problem's "holder" member).
	AgentID string
	// LeaseID is the holder's lease.
	LeaseID string
	// ExpiresAt is when the holder's lease expires unless renewed; zero if not given.
	ExpiresAt time.Time
}

// Holder returns the holder named by a conflict error of AcquireLease, read from the
// error's extension members, and false when err names none. It accepts the error of the
// in-process service too, whose expires_at is a time.Time rather than a string.
func Holder(err error) (LeaseHolder, bool) {
	var e *lifeline.Error
	if !errors.As(err, &e) || e.Code != lifeline.EConflict {
		return LeaseHolder{}, false
	}
	agent, _ := e.Extra["holder"].(string)
	if agent == "" {
		return LeaseHolder{}, false
	}
	h := LeaseHolder{AgentID: agent}
	h.LeaseID, _ = e.Extra["lease_id"].(string)
	switch v := e.Extra["expires_at"].(type) {
	case time.Time:
		h.ExpiresAt = v
	case string:
		h.ExpiresAt, _ = time.Parse(time.RFC3339Nano, v)
	}
	return h, true
}

// problemMembers are the members of a problem body that have a place of their own in
// lifeline.Error, or none at all; every other member is an extension member.
var problemMembers = map[string]bool{
	"type": true, "title": true, "status": true, "detail": true, "instance": true,
	"code": true, "allowed": true,
}

// problemExtra returns the extension members of a problem body, nil if it has none or
// is not a JSON object. Values are decoded as encoding/json decodes into any (strings,
// float64, maps, slices).
func problemExtra(data []byte) map[string]any {
	var members map[string]json.RawMessage
	if json.Unmarshal(data, &members) != nil {
		return nil
	}
	var extra map[string]any
	for k, raw := range members {
		if problemMembers[k] {
			continue
		}
		var v any
		if json.Unmarshal(raw, &v) != nil {
			continue
		}
		if extra == nil {
			extra = map[string]any{}
		}
		extra[k] = v
	}
	return extra
}
