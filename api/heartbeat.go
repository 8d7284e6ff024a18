package api

import (
	"net/http"

	"github.com/lifeline-dev/lifeline"
)

func (s *Server) handleHeartbeat(w http.ResponseWriter, r *http.Request) {
	id, ok := s.agentID(w, r)
	if !ok {
		return
	}
	var hb lifeline.Heartbeat
	if err := s.decode(w, r, &hb); err != nil {
		s.problem(w, r, err)
		return
	}
	if err := hb.Validate(); err != nil {
		s.problem(w, r, err)
		return
	}
	ack, err := s.cfg.Agents.Heartbeat(r.Context(), id, &hb)
	if err != nil {
		s.problem(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ack)
}

// handleBatchHeartbeat is POST /api/v1/heartbeats: many agents' heartbeats in one
// request.
func (s *Server) handleBatchHeartbeat(w http.ResponseWriter, r *http.Request) {
	s.problem(w, r, lifeline.Errorf(lifeline.ENotFound, "batch heartbeats are not available yet"))
}
