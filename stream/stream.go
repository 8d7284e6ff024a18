// Package stream is Lifeline's real-time plane: an in-process event bus fed by the
// registry engine after every commit, the per-agent WebSocket protocol of
// spec/websocket-protocol.md, the fleet-wide Server-Sent Events stream with resume, and
// signed webhooks.
//
// The engine hands committed events to Service.Publish, which only appends them to an
// inbox and never blocks. One dispatcher goroutine takes them from there, in commit
// order, and fans them out: to every SSE subscription's bounded buffer, to the
// WebSocket connections (or offline queue) of the event's agent, and to the bounded
// queue of every matching webhook. A consumer that cannot keep up is cut off, never
// waited for: an SSE subscription that overflows falls back to reading the durable log,
// a WebSocket connection whose send queue overflows is disconnected (its unsent
// messages go to the agent's offline queue), and a webhook whose queue is full drops
// the event and records the drop. Every such loss is counted.
package stream

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lifeline-dev/lifeline"
	"github.com/lifeline-dev/lifeline/api"
)

// Defaults of Config.
const (
	DefaultHeartbeatInterval  = 30 * time.Second
	DefaultMaxQueueSize       = 100
	DefaultBatchInterval      = 100 * time.Millisecond
	DefaultSendQueueSize      = 256
	DefaultWriteTimeout       = 10 * time.Second
	DefaultOfflineQueueTTL    = time.Hour
	DefaultSSEKeepAlive       = 15 * time.Second
	DefaultSSEBufferSize      = 1024
	DefaultEventRetention     = 7 * 24 * time.Hour
	DefaultPruneInterval      = time.Minute
	DefaultTicketTTL          = time.Minute
	DefaultMaxTickets         = 10000
	DefaultWebhookQueueSize   = 1000
	DefaultWebhookMaxAttempts = 6
	DefaultWebhookTimeout     = 5 * time.Second
	DefaultWebhookBackoff     = time.Second
	DefaultWebhookMaxBackoff  = time.Minute
	DefaultWebhookHistory     = 100
)

// maxInbox bounds the events waiting for the dispatcher. It is only reached if the
// dispatcher is starved of CPU for a long time; see Publish.
const maxInbox = 1 << 16

// EventLog is the part of the durable event log the stream needs besides the engine's
// EventService: where the retained log starts (a resume point older than that answers
// 410), pruning by age and by count, and an agent's latest event of a type (the
// execution status of an agent whose first watcher connects). *sqlite.Store implements
// it.
type EventLog interface {
	// FirstEventSeq returns the oldest stored seq, LastEventSeq+1 when none is stored.
	FirstEventSeq(ctx context.Context) (int64, error)
	// LastEventSeq returns the highest committed seq, 0 when the log is empty.
	LastEventSeq(ctx context.Context) (int64, error)
	// PruneEvents deletes the prefix of the log older than olderThan.
	PruneEvents(ctx context.Context, olderThan time.Time) (int64, error)
	// TrimEvents deletes the oldest events so that at most keep remain.
	TrimEvents(ctx context.Context, keep int64) (int64, error)
	// LastAgentEvent returns the newest event of a type for an agent, not_found if none.
	LastAgentEvent(ctx context.Context, agentID, typ string) (*lifeline.Event, error)
}

// WebhookStore keeps webhook registrations, secrets included. *sqlite.Store implements
// it.
type WebhookStore interface {
	CreateWebhook(ctx context.Context, w *lifeline.Webhook) error
	Webhooks(ctx context.Context) ([]*lifeline.Webhook, error)
	DeleteWebhook(ctx context.Context, id string) error
}

// Config configures a Service. Zero values take the defaults.
type Config struct {
	// Keys authenticates X-API-Key headers. Required.
	Keys lifeline.KeyService
	// Agents finds the agent a WebSocket watches (existence and owner). Required.
	Agents lifeline.AgentService
	// Events reads the event log for SSE catch-up. It must enforce who may read
	// events (the registry engine does: coordinators and admins, agent keys only with
	// open discovery). Required.
	Events lifeline.EventService
	// Log is the durable log: retention, 410 on resume points that fell out of it,
	// and execution status look-back. Nil disables those (no pruning, no 410).
	Log EventLog
	// Webhooks stores webhooks. Nil disables the webhook endpoints.
	Webhooks WebhookStore

	// HeartbeatInterval is how often each WebSocket connection is pinged; a
	// connection that has not answered the previous ping by the next one is closed.
	// Default 30 s (the spec's heartbeat_interval).
	HeartbeatInterval time.Duration
	// MaxQueueSize caps each agent's offline queue; beyond it the oldest message is
	// dropped and counted. Default 100 (the spec's max_queue_size).
	MaxQueueSize int
	// BatchInterval is the batching window (the spec's batch_interval, default 0.1 s):
	// a message to a connection that sent nothing during the last window goes out at
	// once; messages that follow within the window are sent together, in order, as one
	// batch_update when it ends. Negative turns batching off (messages still coalesce
	// while a write is in progress).
	BatchInterval time.Duration
	// SendQueueSize caps the messages waiting to be written to one connection; a
	// connection that falls that far behind is disconnected. Default 256.
	SendQueueSize int
	// WriteTimeout bounds one SSE write. WebSocket writes are bounded by the
	// heartbeat instead (a client that does not read misses its pong and is closed)
	// and by SendQueueSize. Default 10 s.
	WriteTimeout time.Duration
	// OfflineQueueTTL is how long an agent's offline queue is kept after its last
	// watcher disconnected. Default 1 h.
	OfflineQueueTTL time.Duration
	// OriginPatterns are the browser origins (host patterns, as in
	// websocket.AcceptOptions) allowed to open WebSockets besides the server's own.
	OriginPatterns []string

	// SSEKeepAlive is the interval of ": keep-alive" comments on idle streams.
	// Default 15 s.
	SSEKeepAlive time.Duration
	// SSEBufferSize is the live buffer of one SSE stream; a stream that overflows it
	// catches up from the durable log. Default 1024 events.
	SSEBufferSize int

	// EventRetention is how long events are kept. Default 7 days; negative keeps
	// them forever.
	EventRetention time.Duration
	// EventRetentionMax, when positive, also caps the number of events kept.
	EventRetentionMax int64
	// PruneInterval is how often retention is applied. Default 1 min.
	PruneInterval time.Duration

	// TicketTTL is the lifetime of a stream ticket. Default 1 min.
	TicketTTL time.Duration
	// MaxTickets caps unredeemed tickets. Default 10,000.
	MaxTickets int

	// WebhookQueueSize caps the events waiting for one webhook. Default 1000.
	WebhookQueueSize int
	// WebhookMaxAttempts bounds the attempts of one delivery. Default 6.
	WebhookMaxAttempts int
	// WebhookTimeout bounds one delivery attempt. Default 5 s.
	WebhookTimeout time.Duration
	// WebhookBackoff is the delay before the first retry; it doubles with every
	// attempt (with jitter) up to WebhookMaxBackoff. Defaults 1 s and 1 min.
	WebhookBackoff    time.Duration
	WebhookMaxBackoff time.Duration
	// WebhookHistory is how many recent attempts are kept per webhook. Default 100.
	WebhookHistory int
	// WebhookClient sends deliveries. Default: a client that does not follow
	// redirects.
	WebhookClient *http.Client

	// MaxBodyBytes caps request bodies. Default api.DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger receives warnings. Default slog.Default().
	Logger *slog.Logger
	// Registry, when set, receives the stream's metrics.
	Registry prometheus.Registerer
}

func (c *Config) setDefaults() error {
	switch {
	case c.Keys == nil:
		return errors.New("stream: Config.Keys is required")
	case c.Agents == nil:
		return errors.New("stream: Config.Agents is required")
	case c.Events == nil:
		return errors.New("stream: Config.Events is required")
	}
	for _, v := range []struct {
		name string
		val  int64
	}{
		{"HeartbeatInterval", int64(c.HeartbeatInterval)}, {"MaxQueueSize", int64(c.MaxQueueSize)},
		{"SendQueueSize", int64(c.SendQueueSize)}, {"WriteTimeout", int64(c.WriteTimeout)},
		{"OfflineQueueTTL", int64(c.OfflineQueueTTL)}, {"SSEKeepAlive", int64(c.SSEKeepAlive)},
		{"SSEBufferSize", int64(c.SSEBufferSize)}, {"EventRetentionMax", c.EventRetentionMax},
		{"PruneInterval", int64(c.PruneInterval)}, {"TicketTTL", int64(c.TicketTTL)},
		{"MaxTickets", int64(c.MaxTickets)}, {"WebhookQueueSize", int64(c.WebhookQueueSize)},
		{"WebhookMaxAttempts", int64(c.WebhookMaxAttempts)}, {"WebhookTimeout", int64(c.WebhookTimeout)},
		{"WebhookBackoff", int64(c.WebhookBackoff)}, {"WebhookMaxBackoff", int64(c.WebhookMaxBackoff)},
		{"WebhookHistory", int64(c.WebhookHistory)}, {"MaxBodyBytes", c.MaxBodyBytes},
	} {
		if v.val < 0 {
			return errors.New("stream: Config." + v.name + " must not be negative")
		}
	}
	def := func(p *time.Duration, d time.Duration) {
		if *p == 0 {
			*p = d
		}
	}
	defInt := func(p *int, d int) {
		if *p == 0 {
			*p = d
		}
	}
	def(&c.HeartbeatInterval, DefaultHeartbeatInterval)
	def(&c.BatchInterval, DefaultBatchInterval)
	def(&c.WriteTimeout, DefaultWriteTimeout)
	def(&c.OfflineQueueTTL, DefaultOfflineQueueTTL)
	def(&c.SSEKeepAlive, DefaultSSEKeepAlive)
	def(&c.EventRetention, DefaultEventRetention)
	def(&c.PruneInterval, DefaultPruneInterval)
	def(&c.TicketTTL, DefaultTicketTTL)
	def(&c.WebhookTimeout, DefaultWebhookTimeout)
	def(&c.WebhookBackoff, DefaultWebhookBackoff)
	def(&c.WebhookMaxBackoff, DefaultWebhookMaxBackoff)
	defInt(&c.MaxQueueSize, DefaultMaxQueueSize)
	defInt(&c.SendQueueSize, DefaultSendQueueSize)
	defInt(&c.SSEBufferSize, DefaultSSEBufferSize)
	defInt(&c.MaxTickets, DefaultMaxTickets)
	defInt(&c.WebhookQueueSize, DefaultWebhookQueueSize)
	defInt(&c.WebhookMaxAttempts, DefaultWebhookMaxAttempts)
	defInt(&c.WebhookHistory, DefaultWebhookHistory)
	if c.BatchInterval < 0 {
		c.BatchInterval = 0
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = api.DefaultMaxBodyBytes
	}
	if c.WebhookClient == nil {
		c.WebhookClient = &http.Client{
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Stats are the counters of GET /agents/ws/stats: the spec's four, plus the messages
// waiting in offline queues and every message dropped (offline queue overflow,
// disconnected slow connections, events lost before dispatch).
type Stats struct {
	TotalConnections  int64 `json:"total_connections"`
	ActiveConnections int64 `json:"active_connections"`
	MessagesSent      int64 `json:"messages_sent"`
	Errors            int64 `json:"errors"`
	Queued            int64 `json:"queued"`
	Dropped           int64 `json:"dropped"`
}

// counters are the service's statistics, updated atomically.
type counters struct {
	wsTotal, wsActive, wsSent, wsErrors, wsQueued, wsDropped atomic.Int64
	sseActive, sseLagged                                     atomic.Int64
	eventsLost                                               atomic.Int64
	hookDelivered, hookFailed, hookDropped                   atomic.Int64
}

// Service is the real-time plane. Create it with New, feed it with Publish, mount
// Routes, stop it with Close.
type Service struct {
	cfg Config
	log *slog.Logger
	now func() time.Time

	// The inbox: events published and not yet dispatched.
	inMu  sync.Mutex
	inbox []*lifeline.Event
	spare []*lifeline.Event
	lost  bool // events were dropped since the last dispatch
	wake  chan struct{}

	subsMu sync.RWMutex
	subs   map[*subscription]struct{}

	// wsMu guards hubs, every hub's fields, and the membership of connections in them.
	wsMu sync.Mutex
	hubs map[string]*hub

	hooksMu sync.RWMutex
	hooks   map[string]*endpoint

	tickets tickets
	stats   counters

	// ctx is cancelled at the end of Close: it aborts webhook requests in flight.
	ctx    context.Context
	cancel context.CancelFunc

	// lifeMu orders goroutine starts (wg.Add) before Close's wg.Wait.
	lifeMu  sync.Mutex
	closed  bool
	stopped atomic.Bool // closed, readable without lifeMu
	closing chan struct{}
	wg      sync.WaitGroup
}

var _ lifeline.WebhookService = (*Service)(nil)

// New returns a running Service: its dispatcher, its maintenance loop (retention,
// expired tickets and offline queues) and a delivery worker per stored webhook.
func New(cfg Config) (*Service, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	s := &Service{
		cfg:     cfg,
		log:     cfg.Logger,
		now:     cfg.Now,
		wake:    make(chan struct{}, 1),
		subs:    make(map[*subscription]struct{}),
		hubs:    make(map[string]*hub),
		hooks:   make(map[string]*endpoint),
		closing: make(chan struct{}),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.tickets.init(cfg.TicketTTL, cfg.MaxTickets)
	if cfg.Webhooks != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		hooks, err := cfg.Webhooks.Webhooks(ctx)
		cancel()
		if err != nil {
			s.cancel()
			return nil, err
		}
		for _, w := range hooks {
			s.startEndpoint(w)
		}
	}
	if cfg.Registry != nil {
		if err := s.register(cfg.Registry); err != nil {
			s.Close()
			return nil, err
		}
	}
	s.wg.Add(2)
	go s.dispatcher()
	go s.maintain()
	return s, nil
}

// goroutine runs fn in a goroutine owned by the service, unless it is closed. It
// reports whether fn was started.
func (s *Service) goroutine(fn func()) bool {
	s.lifeMu.Lock()
	defer s.lifeMu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		fn()
	}()
	return true
}

// enter registers a request handler (WebSocket, SSE) as running; it must call
// s.wg.Done when it returns. It reports false once the service is closed.
func (s *Service) enter() bool {
	s.lifeMu.Lock()
	defer s.lifeMu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

// Publish hands committed events to the service. It is registry.Config.OnCommit: it
// is called in commit order and never blocks — it copies the events into the inbox
// and wakes the dispatcher. Should the dispatcher fall more than 65,536 events
// behind, further events are dropped and counted; SSE streams then recover them from
// the durable log.
func (s *Service) Publish(events []lifeline.Event) {
	if len(events) == 0 || s.stopped.Load() {
		return
	}
	evs := make([]lifeline.Event, len(events))
	copy(evs, events)
	s.inMu.Lock()
	for i := range evs {
		if len(s.inbox) >= maxInbox {
			s.lost = true
			s.stats.eventsLost.Add(int64(len(evs) - i))
			break
		}
		s.inbox = append(s.inbox, &evs[i])
	}
	s.inMu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// dispatcher fans events out in publication order.
func (s *Service) dispatcher() {
	defer s.wg.Done()
	for {
		select {
		case <-s.closing:
			return
		case <-s.wake:
		}
		s.inMu.Lock()
		batch, lost := s.inbox, s.lost
		s.inbox, s.spare, s.lost = s.spare[:0], nil, false
		s.inMu.Unlock()
		if lost {
			s.dispatchLoss()
		}
		for i, ev := range batch {
			s.dispatch(ev)
			batch[i] = nil
		}
		s.inMu.Lock()
		if s.spare == nil && cap(batch) <= 4096 {
			s.spare = batch[:0]
		}
		s.inMu.Unlock()
	}
}

func (s *Service) dispatch(ev *lifeline.Event) {
	s.dispatchSSE(ev)
	s.dispatchWS(ev)
	s.dispatchWebhooks(ev)
}

// dispatchLoss handles events dropped before dispatch: every SSE stream catches up
// from the log, which has them.
func (s *Service) dispatchLoss() {
	s.subsMu.RLock()
	defer s.subsMu.RUnlock()
	for sub := range s.subs {
		sub.lag()
	}
}

// Stats returns the WebSocket statistics.
func (s *Service) Stats() Stats {
	return Stats{
		TotalConnections:  s.stats.wsTotal.Load(),
		ActiveConnections: s.stats.wsActive.Load(),
		MessagesSent:      s.stats.wsSent.Load(),
		Errors:            s.stats.wsErrors.Load(),
		Queued:            s.stats.wsQueued.Load(),
		Dropped:           s.stats.wsDropped.Load() + s.stats.eventsLost.Load(),
	}
}

// Routes returns the endpoints to mount on the API server (api.Config.Routes).
func (s *Service) Routes() []api.Route {
	rs := []api.Route{
		{Pattern: "GET /agents/{agent_id}/ws", Handler: http.HandlerFunc(s.handleWebSocket)},
		{Pattern: "GET /agents/ws/stats", Handler: http.HandlerFunc(s.handleStats), Auth: true},
		{Pattern: "GET /api/v1/events/stream", Handler: http.HandlerFunc(s.handleSSE)},
		{Pattern: "POST /api/v1/stream-tickets", Handler: http.HandlerFunc(s.handleCreateTicket), Auth: true},
	}
	if s.cfg.Webhooks != nil {
		rs = append(rs,
			api.Route{Pattern: "POST /api/v1/webhooks", Handler: http.HandlerFunc(s.handleCreateWebhook), Auth: true},
			api.Route{Pattern: "GET /api/v1/webhooks", Handler: http.HandlerFunc(s.handleListWebhooks), Auth: true},
			api.Route{Pattern: "GET /api/v1/webhooks/{webhook_id}", Handler: http.HandlerFunc(s.handleGetWebhook), Auth: true},
			api.Route{Pattern: "DELETE /api/v1/webhooks/{webhook_id}", Handler: http.HandlerFunc(s.handleDeleteWebhook), Auth: true},
			api.Route{Pattern: "GET /api/v1/webhooks/{webhook_id}/deliveries", Handler: http.HandlerFunc(s.handleListDeliveries), Auth: true},
		)
	}
	return rs
}

// closeGrace is how long Close lets WebSocket clients answer the close handshake.
const closeGrace = time.Second

// Close stops the service: WebSocket connections are closed with 1001 (going away),
// SSE streams end (clients resume with Last-Event-ID), queued webhook deliveries are
// abandoned, and every goroutine of the service has returned when Close does. Events
// published afterwards are ignored. Call it before shutting the HTTP server down, so
// that streams do not hold the shutdown up.
func (s *Service) Close() error {
	s.lifeMu.Lock()
	if s.closed {
		s.lifeMu.Unlock()
		return nil
	}
	s.closed = true
	s.stopped.Store(true)
	close(s.closing)
	s.lifeMu.Unlock()

	s.wsMu.Lock()
	var conns []*wsConn
	for _, h := range s.hubs {
		conns = append(conns, h.conns...)
	}
	s.wsMu.Unlock()
	var closers sync.WaitGroup
	for _, c := range conns {
		closers.Add(1)
		go func() {
			defer closers.Done()
			c.closeGracefully()
		}()
	}
	done := make(chan struct{})
	go func() { closers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(closeGrace):
		for _, c := range conns {
			c.kill(false)
		}
	}
	s.cancel()
	<-done
	s.wg.Wait()
	return nil
}
