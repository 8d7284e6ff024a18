package stream

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/lifeline-dev/lifeline"
	"github.com/lifeline-dev/lifeline/api"
)

// framePool holds buffers for encoding batch_update frames.
var framePool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// maxClientMessage caps what a WebSocket client may send in one message; the protocol
// only has clients send {"type":"pong"} (and, as a courtesy, {"type":"ping"}).
const maxClientMessage = 4096

// hub is the WebSocket state of one watched agent. Guarded by Service.wsMu.
type hub struct {
	conns []*wsConn
	// queue is the offline queue, oldest first: messages that arrived while no
	// connection was attached.
	queue        []*wsMessage
	offlineSince time.Time
	// pinned counts connections being set up; a pinned hub is never expired.
	pinned int
	// exec is the agent's latest task update; execKnown once it has been looked up
	// in the log or seen live.
	exec      *ExecutionStatus
	execKnown bool
}

// wsConn is one WebSocket connection. Its reader runs in a goroutine of its own (the
// HTTP handler returns once the connection is set up); its writer runs only while it
// has something to send, so an idle connection costs one parked goroutine.
type wsConn struct {
	s       *Service
	agentID string
	hub     *hub
	ws      *websocket.Conn
	netConn net.Conn // under ws; closing it ends every blocked read and write at once
	ping    *time.Timer
	wake    chan struct{}

	lastPing atomic.Int64 // unix ns of the last ping queued
	lastPong atomic.Int64 // unix ns of the last pong received

	mu         sync.Mutex
	pending    []*wsMessage
	spare      []*wsMessage // an empty slice to take the next pending messages
	forceBatch bool         // the pending messages start with the offline queue
	writing    bool         // a writer goroutine is running
	closed     bool
	pingDue    bool
	pongDue    bool
	lastFlush  time.Time // when the last data frame was taken for writing
}

// handleWebSocket serves GET /agents/{agent_id}/ws.
func (s *Service) handleWebSocket(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("agent_id")
	if err := lifeline.ValidateID("agent_id", id); err != nil {
		api.WriteProblem(w, r, err)
		return
	}
	caller, err := s.authenticate(r)
	if err != nil {
		s.unauthorized(w, r, err)
		return
	}
	a, err := s.cfg.Agents.FindAgentByID(lifeline.WithCaller(r.Context(), caller), id)
	if err != nil {
		s.problem(w, r, err)
		return
	}
	if !caller.Role.Privileged() && a.OwnerKeyID != caller.KeyID {
		api.WriteProblem(w, r, lifeline.Errorf(lifeline.EForbidden, "an agent key may only watch the agents it registered"))
		return
	}
	if !headerHasToken(r.Header, "Connection", "upgrade") || !headerHasToken(r.Header, "Upgrade", "websocket") {
		api.WriteProblem(w, r, lifeline.Errorf(lifeline.EInvalid, "this is a WebSocket endpoint: send Connection: Upgrade and Upgrade: websocket"))
		return
	}
	if !s.originAllowed(r) {
		api.WriteProblem(w, r, lifeline.Errorf(lifeline.EForbidden, "WebSocket connections from origin %q are not allowed", r.Header.Get("Origin")))
		return
	}
	if !s.enter() {
		api.WriteProblem(w, r, lifeline.Errorf(lifeline.EUnavailable, "server is shutting down"))
		return
	}
	defer s.wg.Done()

	h := s.pin(id)
	s.loadExec(r.Context(), h, id)
	hw := &hijackBuffers{ResponseWriter: w}
	ws, err := websocket.Accept(hw, r, &websocket.AcceptOptions{
		OriginPatterns:  s.cfg.OriginPatterns,
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		// Accept has answered the request.
		s.unpin(h)
		s.stats.wsErrors.Add(1)
		return
	}
	ws.SetReadLimit(maxClientMessage)
	c := &wsConn{s: s, agentID: id, hub: h, ws: ws, netConn: hw.conn, wake: make(chan struct{}, 1)}
	s.stats.wsTotal.Add(1)
	s.stats.wsActive.Add(1)

	// The first write on a fresh connection fits its empty socket buffer: it does not
	// block, and needs no deadline (which would stay referenced by the connection).
	hello := mustJSON(ConnectionEstablished{Type: TypeConnectionEstablished, AgentID: id, Timestamp: Timestamp(s.now())})
	if err := c.write(hello); err != nil {
		s.unpin(h)
		c.kill(true)
		ws.CloseNow()
		s.stats.wsActive.Add(-1)
		return
	}
	s.stats.wsSent.Add(1)
	if !s.attach(h, c) {
		c.kill(false)
		ws.CloseNow()
		s.stats.wsActive.Add(-1)
		return
	}
	c.mu.Lock()
	c.ping = time.AfterFunc(s.cfg.HeartbeatInterval, c.onPingTimer)
	c.mu.Unlock()
	// The handler returns and net/http forgets the hijacked connection: its goroutine
	// stack, request and buffers are freed. The reader carries on, owned by the service.
	if !s.goroutine(c.run) {
		c.run()
	}
}

// run reads until the connection ends, then takes it out of its hub.
func (c *wsConn) run() {
	c.readLoop()
	c.mu.Lock()
	c.ping.Stop()
	c.mu.Unlock()
	c.s.detach(c.hub, c)
	c.ws.CloseNow()
	c.s.stats.wsActive.Add(-1)
}

// hijackBuffers gives a hijacked connection smaller buffers than net/http's 4 KiB
// reader and 4 KiB writer: clients send only pongs, and most frames are a few hundred
// bytes (a larger frame costs a second write call). Idle connections are most of a
// fleet's, and this halves their memory.
type hijackBuffers struct {
	http.ResponseWriter
	conn net.Conn
}

// Client and server buffer sizes of a WebSocket connection.
const (
	wsReadBuffer  = 1 << 10
	wsWriteBuffer = 2 << 10
)

// Hijack implements http.Hijacker.
func (h *hijackBuffers) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	var r io.Reader = conn
	if n := brw.Reader.Buffered(); n > 0 {
		// Bytes the client sent right after its handshake.
		pending, _ := brw.Reader.Peek(n)
		r = io.MultiReader(bytes.NewReader(bytes.Clone(pending)), conn)
	}
	h.conn = conn
	return conn, bufio.NewReadWriter(bufio.NewReaderSize(r, wsReadBuffer), bufio.NewWriterSize(conn, wsWriteBuffer)), nil
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (h *hijackBuffers) Unwrap() http.ResponseWriter { return h.ResponseWriter }

// pin returns the hub of agent id, creating it, and keeps it from expiring until the
// connection is attached (or unpinned).
func (s *Service) pin(id string) *hub {
	s.wsMu.Lock()
	defer s.wsMu.Unlock()
	h := s.hubs[id]
	if h == nil {
		h = &hub{offlineSince: time.Now()}
		s.hubs[id] = h
	}
	h.pinned++
	return h
}

func (s *Service) unpin(h *hub) {
	s.wsMu.Lock()
	h.pinned--
	s.wsMu.Unlock()
}

// loadExec looks up the agent's latest task update in the log when the hub does not
// know it yet. A live task update seen meanwhile wins: it is at least as new.
func (s *Service) loadExec(ctx context.Context, h *hub, id string) {
	s.wsMu.Lock()
	known := h.execKnown
	s.wsMu.Unlock()
	if known || s.cfg.Log == nil {
		return
	}
	ev, err := s.cfg.Log.LastAgentEvent(ctx, id, lifeline.EventTaskUpdate)
	if err != nil && lifeline.ErrorCode(err) != lifeline.ENotFound {
		s.log.Warn("stream: execution status look-up failed", "agent_id", id, "err", err)
		return
	}
	s.wsMu.Lock()
	defer s.wsMu.Unlock()
	if h.execKnown {
		return
	}
	h.execKnown = true
	if err == nil && ev.Task != nil {
		h.exec = execStatusOf(ev.Task)
	}
}

// attach makes c a receiver of its agent's messages. The offline queue becomes its
// first message, one batch_update. It reports false when the service is closing.
func (s *Service) attach(h *hub, c *wsConn) bool {
	s.wsMu.Lock()
	defer s.wsMu.Unlock()
	h.pinned--
	select {
	case <-s.closing:
		return false
	default:
	}
	h.conns = append(h.conns, c)
	if len(h.queue) > 0 {
		c.mu.Lock()
		c.pending, c.forceBatch = h.queue, true
		c.startWriterLocked()
		c.mu.Unlock()
		s.stats.wsQueued.Add(-int64(len(h.queue)))
		h.queue = nil
	}
	return true
}

// detach removes c from its hub. When it was the last connection, the messages it
// had not sent start the agent's offline queue.
func (s *Service) detach(h *hub, c *wsConn) {
	s.wsMu.Lock()
	defer s.wsMu.Unlock()
	for i, x := range h.conns {
		if x == c {
			h.conns = append(h.conns[:i], h.conns[i+1:]...)
			break
		}
	}
	c.mu.Lock()
	unsent := c.pending
	c.pending = nil
	c.mu.Unlock()
	if len(h.conns) > 0 {
		s.stats.wsDropped.Add(int64(len(unsent)))
		return
	}
	h.offlineSince = time.Now()
	if len(unsent) > 0 {
		q := make([]*wsMessage, 0, len(unsent)+len(h.queue))
		q = append(append(q, unsent...), h.queue...)
		s.stats.wsQueued.Add(int64(len(unsent)))
		h.queue = q
		s.trimQueueLocked(h)
	}
}

// trimQueueLocked drops the oldest queued messages beyond MaxQueueSize.
func (s *Service) trimQueueLocked(h *hub) {
	if over := len(h.queue) - s.cfg.MaxQueueSize; over > 0 {
		for i := range over {
			h.queue[i] = nil
		}
		h.queue = h.queue[over:]
		s.stats.wsQueued.Add(-int64(over))
		s.stats.wsDropped.Add(int64(over))
	}
}

// dispatchWS turns an event into a protocol message for its agent's connections.
func (s *Service) dispatchWS(ev *lifeline.Event) {
	if ev.AgentID == "" || (ev.Type != lifeline.EventAgentLifecycle && ev.Type != lifeline.EventTaskUpdate) {
		return
	}
	s.wsMu.Lock()
	defer s.wsMu.Unlock()
	h := s.hubs[ev.AgentID]
	if h == nil {
		return
	}
	var m *wsMessage
	if ev.Type == lifeline.EventTaskUpdate {
		if ev.Task == nil {
			return
		}
		h.exec, h.execKnown = execStatusOf(ev.Task), true
		m = taskUpdate(ev)
	} else {
		m = statusUpdate(ev, h.exec)
	}
	accepted := false
	for _, c := range h.conns {
		if c.enqueue(m) {
			accepted = true
		}
	}
	if accepted {
		return
	}
	// Nobody is listening (or every connection is going away): queue it.
	h.queue = append(h.queue, m)
	s.stats.wsQueued.Add(1)
	s.trimQueueLocked(h)
}

// expireQueues forgets hubs whose agent has had no watcher for OfflineQueueTTL.
func (s *Service) expireQueues(now time.Time) {
	s.wsMu.Lock()
	defer s.wsMu.Unlock()
	for id, h := range s.hubs {
		if len(h.conns) == 0 && h.pinned == 0 && now.Sub(h.offlineSince) >= s.cfg.OfflineQueueTTL {
			s.stats.wsQueued.Add(-int64(len(h.queue)))
			s.stats.wsDropped.Add(int64(len(h.queue)))
			delete(s.hubs, id)
		}
	}
}

// enqueue adds m to the connection's send queue. It reports false if the connection
// is closed, or is closed now because the queue is full (a slow consumer).
// Requires Service.wsMu.
func (c *wsConn) enqueue(m *wsMessage) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	if len(c.pending) >= c.s.cfg.SendQueueSize {
		c.s.log.Warn("stream: disconnecting a slow WebSocket client", "agent_id", c.agentID, "queued", len(c.pending))
		c.killLocked(true)
		return false
	}
	c.pending = append(c.pending, m)
	c.startWriterLocked()
	return true
}

// startWriterLocked makes sure a writer runs (or wakes a waiting one). Requires c.mu.
func (c *wsConn) startWriterLocked() {
	if c.writing {
		select {
		case c.wake <- struct{}{}:
		default:
		}
		return
	}
	c.writing = c.s.goroutine(c.writeLoop)
}

// writeLoop writes until nothing is left to send. Pongs and pings go out at once;
// data messages follow the batching window.
func (c *wsConn) writeLoop() {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		var (
			frame []byte
			msgs  []*wsMessage
			force bool
		)
		c.mu.Lock()
		switch {
		case c.closed:
			c.writing = false
			c.mu.Unlock()
			return
		case c.pongDue:
			c.pongDue = false
			frame = pongFrame
		case c.pingDue:
			c.pingDue = false
			frame = pingFrame(c.s.now())
		case len(c.pending) == 0:
			c.writing = false
			c.mu.Unlock()
			return
		default:
			now := time.Now()
			if wait := c.lastFlush.Add(c.s.cfg.BatchInterval).Sub(now); wait > 0 {
				// Wait for the window to end (or a ping, pong or kill to wake us).
				c.mu.Unlock()
				if timer == nil {
					timer = time.NewTimer(wait)
				} else {
					timer.Reset(wait)
				}
				select {
				case <-timer.C:
				case <-c.wake:
					timer.Stop()
				}
				continue
			}
			msgs, force = c.pending, c.forceBatch
			c.pending, c.spare = c.spare, nil
			c.forceBatch, c.lastFlush = false, now
		}
		c.mu.Unlock()
		var buf *bytes.Buffer
		if msgs != nil {
			buf = framePool.Get().(*bytes.Buffer)
			frame = encodeFrame(buf, msgs, force, c.s.now())
		}
		err := c.write(frame)
		if buf != nil && buf.Cap() <= 64<<10 {
			framePool.Put(buf)
		}
		if msgs != nil && cap(msgs) <= 64 {
			// Keep the slice for the next messages: no allocation per message.
			clear(msgs)
			c.mu.Lock()
			if c.spare == nil {
				c.spare = msgs[:0]
			}
			c.mu.Unlock()
		}
		if err != nil {
			c.mu.Lock()
			c.killLocked(true)
			c.writing = false
			c.mu.Unlock()
			return
		}
		c.s.stats.wsSent.Add(1)
	}
}

// write sends one text message. It takes no deadline: a per-write timer would cost
// more than the write on the fan-out path. A write that blocks is ended by kill, which
// closes the connection under it, and kill comes when the client misses a pong (a
// client that does not read sees no ping) or when its send queue overflows.
func (c *wsConn) write(p []byte) error {
	return c.ws.Write(context.Background(), websocket.MessageText, p)
}

// onPingTimer runs every HeartbeatInterval: a connection that has not answered the
// previous ping is closed; otherwise it is pinged again.
func (c *wsConn) onPingTimer() {
	if c.lastPong.Load() < c.lastPing.Load() {
		c.s.log.Info("stream: disconnecting a WebSocket client that missed a pong", "agent_id", c.agentID)
		c.kill(true)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.lastPing.Store(time.Now().UnixNano())
	c.pingDue = true
	c.startWriterLocked()
	c.ping.Reset(c.s.cfg.HeartbeatInterval)
}

// readLoop reads client messages until the connection ends.
func (c *wsConn) readLoop() {
	for {
		typ, data, err := c.ws.Read(context.Background())
		if err != nil {
			c.mu.Lock()
			ours := c.closed
			c.mu.Unlock()
			switch websocket.CloseStatus(err) {
			case websocket.StatusNormalClosure, websocket.StatusGoingAway:
			default:
				if !ours {
					c.s.stats.wsErrors.Add(1)
				}
			}
			c.kill(false)
			return
		}
		if typ != websocket.MessageText {
			continue
		}
		var m struct {
			Type string `json:"type"`
		}
		if json.Unmarshal(data, &m) != nil {
			continue
		}
		switch m.Type {
		case TypePong:
			c.lastPong.Store(time.Now().UnixNano())
		case TypePing:
			c.mu.Lock()
			if !c.closed {
				c.pongDue = true
				c.startWriterLocked()
			}
			c.mu.Unlock()
		}
	}
}

// kill closes the connection at once, without a close handshake; isErr counts it as
// an error.
func (c *wsConn) kill(isErr bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.killLocked(isErr)
}

func (c *wsConn) killLocked(isErr bool) {
	if !c.closed && isErr {
		c.s.stats.wsErrors.Add(1)
	}
	c.closed = true
	// Closing the network connection ends the reader's Read and any blocked write;
	// the wake ends a writer waiting for its batching window.
	c.netConn.Close()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// closeGracefully sends a 1001 close frame and waits (up to 10 s) for the client's
// answer.
func (c *wsConn) closeGracefully() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.ws.Close(websocket.StatusGoingAway, "server shutting down")
}

// handleStats serves GET /agents/ws/stats.
func (s *Service) handleStats(w http.ResponseWriter, r *http.Request) {
	if c, ok := lifeline.CallerFrom(r.Context()); ok && !c.Role.Privileged() {
		api.WriteProblem(w, r, lifeline.Errorf(lifeline.EForbidden, "WebSocket statistics need a coordinator or admin key"))
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	api.WriteJSON(w, http.StatusOK, s.Stats())
}

// originAllowed applies the browser origin rule of websocket.Accept (no Origin, the
// server's own host, or a host or scheme://host matching OriginPatterns) before it, so that a refusal
// is a problem document like every other error.
func (s *Service) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	for _, p := range s.cfg.OriginPatterns {
		target := u.Host
		if strings.Contains(p, "://") {
			target = u.Scheme + "://" + u.Host
		}
		if ok, _ := path.Match(strings.ToLower(p), strings.ToLower(target)); ok {
			return true
		}
	}
	return false
}

// headerHasToken reports whether a comma-separated header holds token (any case).
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}
