// Package api is Lifeline's HTTP interface: the RFC-0016 REST API under /api/v1, the
// unauthenticated probes (/heartbeat, /health, /metrics) and the embedded OpenAPI
// document. Handlers decode and validate, call the services of the root package, and
// write JSON or RFC 9457 problem+json.
package api

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/lifeline-dev/lifeline"
)

// DefaultMaxBodyBytes caps request bodies.
const DefaultMaxBodyBytes = 1 << 20

// Health is what /health reports on.
type Health interface {
	Ping(ctx context.Context) error
	Counts() map[lifeline.Status]int
}

// Config wires a Server to its services.
type Config struct {
	Agents lifeline.AgentService
	Events lifeline.EventService
	Keys   lifeline.KeyService
	Leases lifeline.LeaseService
	Tasks  lifeline.TaskService
	Health Health
	// Registry receives the HTTP metrics and is served at /metrics. Nil: a new one.
	Registry *prometheus.Registry
	// MaxBodyBytes caps request bodies; default DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// Routes are extra endpoints mounted by other transports (streams, webhooks).
	Routes []Route
	Logger *slog.Logger
}

// Route is an extra endpoint: a ServeMux pattern ("GET /api/v1/events/stream") and its
// handler. With Auth, the handler runs only for a valid X-API-Key and finds the caller
// in the request context (lifeline.CallerFrom); without, it authenticates by itself.
type Route struct {
	Pattern string
	Handler http.Handler
	Auth    bool
}

// Server is the HTTP handler of Lifeline.
type Server struct {
	cfg     Config
	log     *slog.Logger
	mux     *http.ServeMux
	started time.Time
	latency *prometheus.HistogramVec
	// observers caches latency's per-(route, method, code) observers: looking one up
	// by labels hashes them and formats the code on every request.
	observers sync.Map // latencyKey → prometheus.Observer
}

type latencyKey struct {
	route, method string
	code          int
}

// observer returns the latency observer of a request.
func (s *Server) observer(route, method string, code int) prometheus.Observer {
	if route == "" || route == "/" {
		route = "unmatched"
	}
	switch method {
	case http.MethodGet, http.MethodPost, http.MethodPatch, http.MethodDelete, http.MethodPut, http.MethodHead, http.MethodOptions:
	default:
		method = "other" // clients choose methods; keep the label set bounded
	}
	k := latencyKey{route, method, code}
	if o, ok := s.observers.Load(k); ok {
		return o.(prometheus.Observer)
	}
	o, _ := s.observers.LoadOrStore(k, s.latency.WithLabelValues(route, method, strconv.Itoa(code)))
	return o.(prometheus.Observer)
}

// NewServer returns a Server with every route registered.
func NewServer(cfg Config) *Server {
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	s := &Server{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux(), started: time.Now()}
	s.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "lifeline_http_request_duration_seconds",
		Help:    "HTTP request latency by route, method and status code.",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
	}, []string{"route", "method", "code"})
	cfg.Registry.MustRegister(s.latency)
	s.routes()
	return s
}

func (s *Server) routes() {
	m := s.mux
	m.HandleFunc("GET /heartbeat", s.handleHeartbeatProbe)
	m.HandleFunc("GET /health", s.handleHealth)
	m.Handle("GET /metrics", promhttp.HandlerFor(s.cfg.Registry, promhttp.HandlerOpts{}))
	m.HandleFunc("GET /openapi.yaml", s.handleOpenAPI)

	m.HandleFunc("POST /api/v1/agents", s.auth(s.handleRegister))
	m.HandleFunc("GET /api/v1/agents", s.auth(s.handleListAgents))
	m.HandleFunc("GET /api/v1/agents/{agent_id}", s.auth(s.handleGetAgent))
	m.HandleFunc("DELETE /api/v1/agents/{agent_id}", s.auth(s.handleDeregister))
	m.HandleFunc("POST /api/v1/agents/{agent_id}/heartbeat", s.auth(s.handleHeartbeat))
	m.HandleFunc("PATCH /api/v1/agents/{agent_id}/status", s.auth(s.handleUpdateStatus))
	m.HandleFunc("POST /api/v1/agents/{agent_id}/commands", s.auth(s.handleCommand))
	m.HandleFunc("GET /api/v1/pools", s.auth(s.handleListPools))
	m.HandleFunc("GET /api/v1/pools/{role_id}", s.auth(s.handleGetPool))
	m.HandleFunc("GET /api/v1/events", s.auth(s.handleListEvents))
	m.HandleFunc("POST /api/v1/keys", s.auth(s.handleCreateKey))
	m.HandleFunc("GET /api/v1/keys", s.auth(s.handleListKeys))
	m.HandleFunc("DELETE /api/v1/keys/{key_id}", s.auth(s.handleRevokeKey))
	m.HandleFunc("POST /api/v1/heartbeats", s.auth(s.handleBatchHeartbeat))
	m.HandleFunc("POST /api/v1/leases", s.auth(s.handleAcquireLease))
	m.HandleFunc("GET /api/v1/leases", s.auth(s.handleListLeases))
	m.HandleFunc("GET /api/v1/leases/{lease_id}", s.auth(s.handleGetLease))
	m.HandleFunc("PATCH /api/v1/leases/{lease_id}", s.auth(s.handleRenewLease))
	m.HandleFunc("DELETE /api/v1/leases/{lease_id}", s.auth(s.handleReleaseLease))
	m.HandleFunc("POST /api/v1/leases/{lease_id}/revoke", s.auth(s.handleRevokeLease))
	m.HandleFunc("POST /api/v1/tasks/{task_id}/updates", s.auth(s.handleTaskUpdate))
	m.HandleFunc("GET /api/v1/tasks/{task_id}", s.auth(s.handleGetTask))

	for _, rt := range s.cfg.Routes {
		if rt.Auth {
			m.HandleFunc(rt.Pattern, s.auth(rt.Handler.ServeHTTP))
		} else {
			m.Handle(rt.Pattern, rt.Handler)
		}
	}

	m.HandleFunc("/", s.handleNoRoute)
}

// ServeHTTP implements http.Handler, recording latency per route.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.log.Error("handler panic", "method", r.Method, "path", r.URL.Path, "panic", v)
			if !sw.wrote {
				s.problem(sw, r, lifeline.Errorf(lifeline.EInternal, "internal error"))
			}
		}
		s.observer(r.Pattern, r.Method, sw.code).Observe(time.Since(start).Seconds())
	}()
	s.mux.ServeHTTP(sw, r)
}

// auth requires a valid X-API-Key and puts the caller in the request context.
func (s *Server) auth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := s.cfg.Keys.Authenticate(r.Context(), r.Header.Get("X-API-Key"))
		if err != nil {
			w.Header().Set("WWW-Authenticate", `APIKey header="X-API-Key"`)
			s.problem(w, r, err)
			return
		}
		h(w, r.WithContext(lifeline.WithCaller(r.Context(), c)))
	}
}

// handleNoRoute answers 405 for a known path with another method, 404 otherwise.
func (s *Server) handleNoRoute(w http.ResponseWriter, r *http.Request) {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPatch, http.MethodDelete, http.MethodPut} {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, p := s.mux.Handler(probe); p != "" && p != "/" {
			allow = append(allow, m)
		}
	}
	if len(allow) > 0 {
		for _, m := range allow {
			w.Header().Add("Allow", m)
		}
		s.problem(w, r, lifeline.Errorf(lifeline.EMethodNotAllowed, "%s is not allowed on %s", r.Method, r.URL.Path))
		return
	}
	s.problem(w, r, lifeline.Errorf(lifeline.ENotFound, "no such endpoint: %s %s", r.Method, r.URL.Path))
}

// statusWriter records the status code written.
type statusWriter struct {
	http.ResponseWriter
	code  int
	wrote bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.code, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer (flushing streams).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
