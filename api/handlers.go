package api

import (
	"math"
	"net/http"
	"time"

	"github.com/lifeline-dev/lifeline"
)

var probeOK = []byte("{\"status\":\"ok\"}\n")

// handleHeartbeatProbe is the plain liveness probe of the agent-protocol heartbeat
// endpoint: no auth, no I/O.
func (s *Server) handleHeartbeatProbe(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(probeOK)
}

// healthBody is the /health response.
type healthBody struct {
	Status        string         `json:"status"`
	Store         string         `json:"store"`
	Agents        map[string]int `json:"agents"`
	UptimeSeconds int64          `json:"uptime_seconds"`
}

// handleHealth is readiness: the store answers, and how many agents are in each status.
func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	b := healthBody{Status: "ok", Store: "ok", Agents: map[string]int{}, UptimeSeconds: int64(time.Since(s.started) / time.Second)}
	for st, n := range s.cfg.Health.Counts() {
		b.Agents[string(st)] = n
	}
	status := http.StatusOK
	if err := s.cfg.Health.Ping(r.Context()); err != nil {
		b.Status, b.Store, status = "unavailable", err.Error(), http.StatusServiceUnavailable
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, status, b)
}

func (s *Server) handleOpenAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/yaml")
	_, _ = w.Write(OpenAPI)
}

func (s *Server) handleRegister(w http.ResponseWriter, r *http.Request) {
	var reg lifeline.Registration
	if err := s.decode(w, r, &reg); err != nil {
		s.problem(w, r, err)
		return
	}
	a, err := s.cfg.Agents.RegisterAgent(r.Context(), &reg)
	if err != nil {
		s.problem(w, r, err)
		return
	}
	setETag(w, a.Version)
	w.Header().Set("Location", "/api/v1/agents/"+a.AgentID)
	writeJSON(w, http.StatusCreated, a)
}

// agentList is the GET /api/v1/agents response (RFC-0016 §6.1) with a cursor.
type agentList struct {
	Agents     []*lifeline.Agent `json:"agents"`
	Total      int               `json:"total"`
	NextCursor string            `json:"next_cursor,omitempty"`
}

func (s *Server) handleListAgents(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := lifeline.AgentFilter{RoleID: q.Get("role_id"), After: q.Get("cursor")}
	for _, c := range splitList(q.Get("capabilities")) {
		if err := lifeline.ValidateCapability(c); err != nil {
			s.problem(w, r, err)
			return
		}
		f.Capabilities = append(f.Capabilities, c)
	}
	for _, st := range splitList(q.Get("status")) {
		if !lifeline.Status(st).Valid() {
			s.problem(w, r, lifeline.Errorf(lifeline.EInvalid, "unknown status %q", st))
			return
		}
		f.Statuses = append(f.Statuses, lifeline.Status(st))
	}
	if f.RoleID != "" {
		if err := lifeline.ValidateID("role_id", f.RoleID); err != nil {
			s.problem(w, r, err)
			return
		}
	}
	if f.After != "" {
		if err := lifeline.ValidateID("cursor", f.After); err != nil {
			s.problem(w, r, err)
			return
		}
	}
	if n, ok, err := queryInt(r, "min_available_capacity", math.MinInt32, math.MaxInt32); err != nil {
		s.problem(w, r, err)
		return
	} else if ok {
		v := int(n)
		f.MinAvailableCapacity = &v
	}
	n, _, err := queryInt(r, "limit", 1, lifeline.MaxPageSize)
	if err != nil {
		s.problem(w, r, err)
		return
	}
	f.Limit = int(n)
	agents, total, next, err := s.cfg.Agents.FindAgents(r.Context(), f)
	if err != nil {
		s.problem(w, r, err)
		return
	}
	if agents == nil {
		agents = []*lifeline.Agent{}
	}
	writeJSON(w, http.StatusOK, agentList{Agents: agents, Total: total, NextCursor: next})
}

// agentID reads and validates the {agent_id} path segment.
func (s *Server) agentID(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.PathValue("agent_id")
	if err := lifeline.ValidateID("agent_id", id); err != nil {
		s.problem(w, r, err)
		return "", false
	}
	return id, true
}

func (s *Server) handleGetAgent(w http.ResponseWriter, r *http.Request) {
	id, ok := s.agentID(w, r)
	if !ok {
		return
	}
	a, err := s.cfg.Agents.FindAgentByID(r.Context(), id)
	if err != nil {
		s.problem(w, r, err)
		return
	}
	setETag(w, a.Version)
	writeJSON(w, http.StatusOK, a)
}

func (s *Server) handleDeregister(w http.ResponseWriter, r *http.Request) {
	id, ok := s.agentID(w, r)
	if !ok {
		return
	}
	if err := s.cfg.Agents.DeregisterAgent(r.Context(), id); err != nil {
		s.problem(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleUpdateStatus(w http.ResponseWriter, r *http.Request) {
	id, ok := s.agentID(w, r)
	if !ok {
		return
	}
	var u lifeline.StatusUpdate
	if err := s.decode(w, r, &u); err != nil {
		s.problem(w, r, err)
		return
	}
	if err := u.Validate(); err != nil {
		s.problem(w, r, err)
		return
	}
	version, err := parseIfMatch(r)
	if err != nil {
		s.problem(w, r, err)
		return
	}
	a, err := s.cfg.Agents.UpdateStatus(r.Context(), id, version, &u)
	if err != nil {
		s.problem(w, r, err)
		return
	}
	setETag(w, a.Version)
	writeJSON(w, http.StatusOK, a)
}

// commandAccepted is the 202 response of POST /api/v1/agents/{id}/commands.
type commandAccepted struct {
	AgentID string            `json:"agent_id"`
	Command *lifeline.Command `json:"command"`
}

func (s *Server) handleCommand(w http.ResponseWriter, r *http.Request) {
	id, ok := s.agentID(w, r)
	if !ok {
		return
	}
	var c lifeline.Command
	if err := s.decode(w, r, &c); err != nil {
		s.problem(w, r, err)
		return
	}
	a, err := s.cfg.Agents.SendCommand(r.Context(), id, &c)
	if err != nil {
		s.problem(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, commandAccepted{AgentID: a.AgentID, Command: a.PendingCommand})
}

type poolList struct {
	Pools []*lifeline.Pool `json:"pools"`
}

func (s *Server) handleListPools(w http.ResponseWriter, r *http.Request) {
	pools, err := s.cfg.Agents.Pools(r.Context())
	if err != nil {
		s.problem(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, poolList{Pools: pools})
}

func (s *Server) handleGetPool(w http.ResponseWriter, r *http.Request) {
	role := r.PathValue("role_id")
	if err := lifeline.ValidateID("role_id", role); err != nil {
		s.problem(w, r, err)
		return
	}
	p, err := s.cfg.Agents.FindPool(r.Context(), role)
	if err != nil {
		s.problem(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, p)
}

type eventList struct {
	Events    []lifeline.Event `json:"events"`
	NextAfter int64            `json:"next_after"`
}

func (s *Server) handleListEvents(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := lifeline.EventFilter{Types: splitList(q.Get("type")), AgentID: q.Get("agent_id")}
	after, _, err := queryInt(r, "after", 0, math.MaxInt64)
	if err != nil {
		s.problem(w, r, err)
		return
	}
	limit, _, err := queryInt(r, "limit", 1, lifeline.MaxPageSize)
	if err != nil {
		s.problem(w, r, err)
		return
	}
	f.After, f.Limit = after, int(limit)
	if f.AgentID != "" {
		if err := lifeline.ValidateID("agent_id", f.AgentID); err != nil {
			s.problem(w, r, err)
			return
		}
	}
	for _, t := range f.Types {
		if err := lifeline.ValidateCapability(t); err != nil {
			s.problem(w, r, lifeline.Errorf(lifeline.EInvalid, "unknown event type %q", t))
			return
		}
	}
	evs, next, err := s.cfg.Events.FindEvents(r.Context(), f)
	if err != nil {
		s.problem(w, r, err)
		return
	}
	if evs == nil {
		evs = []lifeline.Event{}
	}
	writeJSON(w, http.StatusOK, eventList{Events: evs, NextAfter: next})
}

func (s *Server) handleCreateKey(w http.ResponseWriter, r *http.Request) {
	var kr lifeline.KeyRequest
	if err := s.decode(w, r, &kr); err != nil {
		s.problem(w, r, err)
		return
	}
	k, err := s.cfg.Keys.CreateKey(r.Context(), &kr)
	if err != nil {
		s.problem(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, k)
}

type keyList struct {
	Keys []*lifeline.Key `json:"keys"`
}

func (s *Server) handleListKeys(w http.ResponseWriter, r *http.Request) {
	ks, err := s.cfg.Keys.Keys(r.Context())
	if err != nil {
		s.problem(w, r, err)
		return
	}
	if ks == nil {
		ks = []*lifeline.Key{}
	}
	writeJSON(w, http.StatusOK, keyList{Keys: ks})
}

func (s *Server) handleRevokeKey(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("key_id")
	if err := lifeline.ValidateID("key_id", id); err != nil {
		s.problem(w, r, err)
		return
	}
	if err := s.cfg.Keys.RevokeKey(r.Context(), id); err != nil {
		s.problem(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
