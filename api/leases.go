package api

import (
	"net/http"

	"github.com/lifeline-dev/lifeline"
)

func (s *Server) handleAcquireLease(w http.ResponseWriter, r *http.Request) {
	var req lifeline.LeaseRequest
	if err := s.decode(w, r, &req); err != nil {
		s.problem(w, r, err)
		return
	}
	l, err := s.cfg.Leases.AcquireLease(r.Context(), &req)
	if err != nil {
		s.problem(w, r, err)
		return
	}
	w.Header().Set("Location", "/api/v1/leases/"+l.LeaseID)
	writeJSON(w, http.StatusCreated, l)
}

// leaseList is the GET /api/v1/leases response.
type leaseList struct {
	Leases     []*lifeline.Lease `json:"leases"`
	NextCursor string            `json:"next_cursor,omitempty"`
}

func (s *Server) handleListLeases(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := lifeline.LeaseFilter{AgentID: q.Get("agent_id"), Scope: q.Get("scope"), After: q.Get("cursor")}
	for name, v := range map[string]string{"agent_id": f.AgentID, "scope": f.Scope, "cursor": f.After} {
		if v != "" {
			if err := lifeline.ValidateID(name, v); err != nil {
				s.problem(w, r, err)
				return
			}
		}
	}
	for _, st := range splitList(q.Get("status")) {
		if !lifeline.LeaseStatus(st).Valid() {
			s.problem(w, r, lifeline.Errorf(lifeline.EInvalid, "unknown lease status %q", st))
			return
		}
		f.Statuses = append(f.Statuses, lifeline.LeaseStatus(st))
	}
	n, _, err := queryInt(r, "limit", 1, lifeline.MaxPageSize)
	if err != nil {
		s.problem(w, r, err)
		return
	}
	f.Limit = int(n)
	ls, next, err := s.cfg.Leases.FindLeases(r.Context(), f)
	if err != nil {
		s.problem(w, r, err)
		return
	}
	if ls == nil {
		ls = []*lifeline.Lease{}
	}
	writeJSON(w, http.StatusOK, leaseList{Leases: ls, NextCursor: next})
}

func (s *Server) leaseID(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.PathValue("lease_id")
	if err := lifeline.ValidateID("lease_id", id); err != nil {
		s.problem(w, r, err)
		return "", false
	}
	return id, true
}

func (s *Server) handleGetLease(w http.ResponseWriter, r *http.Request) {
	id, ok := s.leaseID(w, r)
	if !ok {
		return
	}
	l, err := s.cfg.Leases.FindLeaseByID(r.Context(), id)
	if err != nil {
		s.problem(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, l)
}

func (s *Server) handleRenewLease(w http.ResponseWriter, r *http.Request) {
	id, ok := s.leaseID(w, r)
	if !ok {
		return
	}
	var req lifeline.LeaseRenewal
	if r.ContentLength != 0 {
		if err := s.decode(w, r, &req); err != nil {
			s.problem(w, r, err)
			return
		}
	}
	l, err := s.cfg.Leases.RenewLease(r.Context(), id, &req)
	if err != nil {
		s.problem(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, l)
}

func (s *Server) handleReleaseLease(w http.ResponseWriter, r *http.Request) {
	id, ok := s.leaseID(w, r)
	if !ok {
		return
	}
	if err := s.cfg.Leases.ReleaseLease(r.Context(), id); err != nil {
		s.problem(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleRevokeLease(w http.ResponseWriter, r *http.Request) {
	id, ok := s.leaseID(w, r)
	if !ok {
		return
	}
	if err := s.cfg.Leases.RevokeLease(r.Context(), id); err != nil {
		s.problem(w, r, err)
		return
	}
	l, err := s.cfg.Leases.FindLeaseByID(r.Context(), id)
	if err != nil {
		s.problem(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, l)
}

func (s *Server) taskID(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.PathValue("task_id")
	if err := lifeline.ValidateID("task_id", id); err != nil {
		s.problem(w, r, err)
		return "", false
	}
	return id, true
}

func (s *Server) handleTaskUpdate(w http.ResponseWriter, r *http.Request) {
	id, ok := s.taskID(w, r)
	if !ok {
		return
	}
	var u lifeline.TaskUpdate
	if err := s.decode(w, r, &u); err != nil {
		s.problem(w, r, err)
		return
	}
	t, err := s.cfg.Tasks.UpdateTask(r.Context(), id, r.Header.Get("X-Lease-ID"), &u)
	if err != nil {
		s.problem(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, t)
}

func (s *Server) handleGetTask(w http.ResponseWriter, r *http.Request) {
	id, ok := s.taskID(w, r)
	if !ok {
		return
	}
	t, err := s.cfg.Tasks.FindTask(r.Context(), id)
	if err != nil {
		s.problem(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, t)
}
