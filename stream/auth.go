package stream

import (
	"crypto/rand"
	"encoding/base32"
	"net/http"
	"sync"
	"time"

	"github.com/lifeline-dev/lifeline"
	"github.com/lifeline-dev/lifeline/api"
)

// Stream tickets let browsers, which cannot set headers on WebSocket and EventSource
// requests, authenticate without putting a long-lived API key in a URL: a client with
// a key asks POST /api/v1/stream-tickets for a ticket and passes it as ?ticket=. A
// ticket stands for the key that created it, is valid once, and expires after
// Config.TicketTTL (one minute by default).

// authenticate returns the caller of a stream request: the X-API-Key header, or a
// stream ticket in the ticket query parameter, which is used up.
func (s *Service) authenticate(r *http.Request) (lifeline.Caller, error) {
	if key := r.Header.Get("X-API-Key"); key != "" {
		return s.cfg.Keys.Authenticate(r.Context(), key)
	}
	if t := r.URL.Query().Get("ticket"); t != "" {
		return s.tickets.redeem(t, s.now())
	}
	return lifeline.Caller{}, lifeline.Errorf(lifeline.EUnauthorized, "missing X-API-Key header (browsers: a ticket parameter from POST /api/v1/stream-tickets)")
}

// unauthorized writes a 401 problem with the authentication challenge.
func (s *Service) unauthorized(w http.ResponseWriter, r *http.Request, err error) {
	w.Header().Set("WWW-Authenticate", `APIKey header="X-API-Key"`)
	s.problem(w, r, err)
}

// problem writes err as problem+json, logging internal errors.
func (s *Service) problem(w http.ResponseWriter, r *http.Request, err error) {
	if lifeline.ErrorCode(err) == lifeline.EInternal {
		s.log.Error("internal error", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	api.WriteProblem(w, r, err)
}

// Ticket is a short-lived, single-use credential for one stream request.
type Ticket struct {
	Ticket    string    `json:"ticket"`
	ExpiresAt time.Time `json:"expires_at"`
}

type ticket struct {
	caller  lifeline.Caller
	expires time.Time
}

// tickets holds the unredeemed tickets by the hash of their secret.
type tickets struct {
	mu  sync.Mutex
	m   map[string]ticket
	ttl time.Duration
	max int
}

func (ts *tickets) init(ttl time.Duration, max int) {
	ts.m, ts.ttl, ts.max = make(map[string]ticket), ttl, max
}

// create issues a ticket for caller. Returns unavailable when too many are
// outstanding.
func (ts *tickets) create(caller lifeline.Caller, now time.Time) (*Ticket, error) {
	var b [20]byte
	_, _ = rand.Read(b[:])
	secret := "st_" + base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:])
	t := ticket{caller: caller, expires: now.Add(ts.ttl)}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if len(ts.m) >= ts.max {
		ts.purgeLocked(now)
		if len(ts.m) >= ts.max {
			return nil, lifeline.Errorf(lifeline.EUnavailable, "too many unredeemed stream tickets; retry later")
		}
	}
	ts.m[lifeline.HashSecret(secret)] = t
	return &Ticket{Ticket: secret, ExpiresAt: t.expires.Round(0).UTC()}, nil
}

// redeem uses a ticket up and returns the caller it stands for.
func (ts *tickets) redeem(secret string, now time.Time) (lifeline.Caller, error) {
	h := lifeline.HashSecret(secret)
	ts.mu.Lock()
	t, ok := ts.m[h]
	delete(ts.m, h)
	ts.mu.Unlock()
	if !ok || !now.Before(t.expires) {
		return lifeline.Caller{}, lifeline.Errorf(lifeline.EUnauthorized, "unknown, used or expired stream ticket")
	}
	return t.caller, nil
}

func (ts *tickets) purge(now time.Time) {
	ts.mu.Lock()
	ts.purgeLocked(now)
	ts.mu.Unlock()
}

func (ts *tickets) purgeLocked(now time.Time) {
	for h, t := range ts.m {
		if !now.Before(t.expires) {
			delete(ts.m, h)
		}
	}
}

// handleCreateTicket serves POST /api/v1/stream-tickets. The body is empty or {}.
func (s *Service) handleCreateTicket(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength != 0 {
		var empty struct{}
		if err := api.DecodeJSON(w, r, &empty, s.cfg.MaxBodyBytes); err != nil {
			api.WriteProblem(w, r, err)
			return
		}
	}
	caller, _ := lifeline.CallerFrom(r.Context())
	t, err := s.tickets.create(caller, s.now())
	if err != nil {
		s.problem(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	api.WriteJSON(w, http.StatusCreated, t)
}
