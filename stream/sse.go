package stream

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lifeline-dev/lifeline"
	"github.com/lifeline-dev/lifeline/api"
)

// ssePage is the page size of catch-up reads from the log.
const ssePage = lifeline.MaxPageSize

// keepAliveFrame is the comment written on idle streams so that proxies keep them open.
var keepAliveFrame = []byte(": keep-alive\n\n")

// subscription is one SSE stream's interest in live events. The dispatcher offers it
// every matching event without ever waiting: when ch is full the subscription is
// marked lagged and offered nothing more, and the stream catches up from the log.
type subscription struct {
	types   []string
	agentID string
	ch      chan sseItem
	// firstSeq is the seq of the first event offered, 0 before any.
	firstSeq atomic.Int64
	lagged   chan struct{}
	lagOnce  sync.Once
}

// sseItem is one encoded event.
type sseItem struct {
	seq   int64
	frame []byte
}

func (sub *subscription) match(ev *lifeline.Event) bool {
	if sub.agentID != "" && ev.AgentID != sub.agentID {
		return false
	}
	if len(sub.types) == 0 {
		return true
	}
	for _, t := range sub.types {
		if t == ev.Type {
			return true
		}
	}
	return false
}

func (sub *subscription) lag() { sub.lagOnce.Do(func() { close(sub.lagged) }) }

func (s *Service) subscribe(types []string, agentID string) *subscription {
	sub := &subscription{types: types, agentID: agentID, ch: make(chan sseItem, s.cfg.SSEBufferSize), lagged: make(chan struct{})}
	s.subsMu.Lock()
	s.subs[sub] = struct{}{}
	s.subsMu.Unlock()
	return sub
}

func (s *Service) unsubscribe(sub *subscription) {
	s.subsMu.Lock()
	delete(s.subs, sub)
	s.subsMu.Unlock()
}

// dispatchSSE offers ev to every matching subscription. The frame is encoded once.
func (s *Service) dispatchSSE(ev *lifeline.Event) {
	s.subsMu.RLock()
	defer s.subsMu.RUnlock()
	var item sseItem
	for sub := range s.subs {
		if !sub.match(ev) {
			continue
		}
		select {
		case <-sub.lagged:
			continue
		default:
		}
		if item.frame == nil {
			item = sseItem{seq: ev.Seq, frame: sseFrame(ev)}
		}
		sub.firstSeq.CompareAndSwap(0, ev.Seq)
		select {
		case sub.ch <- item:
		default:
			s.stats.sseLagged.Add(1)
			sub.lag()
		}
	}
}

// sseFrame encodes one event: "id: <seq>\nevent: <type>\ndata: <event JSON>\n\n".
func sseFrame(ev *lifeline.Event) []byte {
	data, err := json.Marshal(ev)
	if err != nil {
		panic("stream: encode event: " + err.Error())
	}
	b := make([]byte, 0, len(data)+len(ev.Type)+40)
	b = append(b, "id: "...)
	b = strconv.AppendInt(b, ev.Seq, 10)
	b = append(b, "\nevent: "...)
	b = append(b, ev.Type...)
	b = append(b, "\ndata: "...)
	b = append(b, data...) // json.Marshal output holds no raw newline
	return append(b, "\n\n"...)
}

// sseRequest is a parsed GET /api/v1/events/stream.
type sseRequest struct {
	types   []string
	agentID string
	// after is the resume point when resume is set: every event up to it was seen.
	after  int64
	resume bool
}

func parseSSERequest(r *http.Request) (sseRequest, error) {
	q := r.URL.Query()
	var p sseRequest
	for _, t := range strings.Split(q.Get("type"), ",") {
		if t = strings.TrimSpace(t); t == "" {
			continue
		}
		if err := lifeline.ValidateCapability(t); err != nil {
			return p, lifeline.Errorf(lifeline.EInvalid, "unknown event type %q", t)
		}
		p.types = append(p.types, t)
	}
	if p.agentID = q.Get("agent_id"); p.agentID != "" {
		if err := lifeline.ValidateID("agent_id", p.agentID); err != nil {
			return p, err
		}
	}
	// Last-Event-ID wins: a browser reconnecting sends it along with the URL it first
	// used, whose ?after= is older.
	name, v := "Last-Event-ID", strings.TrimSpace(r.Header.Get("Last-Event-ID"))
	if v == "" {
		name, v = "after", q.Get("after")
	}
	if v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return p, lifeline.Errorf(lifeline.EInvalid, "%s must be an event seq (an integer ≥ 0)", name)
		}
		p.after, p.resume = n, true
	}
	return p, nil
}

// handleSSE serves GET /api/v1/events/stream.
func (s *Service) handleSSE(w http.ResponseWriter, r *http.Request) {
	caller, err := s.authenticate(r)
	if err != nil {
		s.unauthorized(w, r, err)
		return
	}
	ctx := lifeline.WithCaller(r.Context(), caller)
	p, err := parseSSERequest(r)
	if err != nil {
		api.WriteProblem(w, r, err)
		return
	}
	// Who may read events is the event service's decision; ask it with a read that
	// returns nothing.
	if _, _, err := s.cfg.Events.FindEvents(ctx, lifeline.EventFilter{After: math.MaxInt64, Limit: 1}); err != nil {
		s.problem(w, r, err)
		return
	}
	if p.resume {
		if err := s.checkResume(ctx, p.after); err != nil {
			s.problem(w, r, err)
			return
		}
	}
	if !s.enter() {
		api.WriteProblem(w, r, lifeline.Errorf(lifeline.EUnavailable, "server is shutting down"))
		return
	}
	defer s.wg.Done()
	s.stats.sseActive.Add(1)
	defer s.stats.sseActive.Add(-1)

	// Subscribe before reading the backlog: an event committed meanwhile is then in
	// the backlog, in the subscription, or both — never in neither. Duplicates are
	// dropped by seq.
	sub := s.subscribe(p.types, p.agentID)
	defer func() { s.unsubscribe(sub) }()

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	st := &sseWriter{w: w, rc: http.NewResponseController(w), timeout: s.cfg.WriteTimeout}
	if st.flush() != nil {
		return
	}

	// cursor: every matching event with seq ≤ cursor has been sent (or precedes the
	// stream); -1 while a live-only stream has sent nothing.
	cursor, catchUp := int64(-1), p.resume
	if p.resume {
		cursor = p.after
	}
	keepAlive := time.NewTicker(s.cfg.SSEKeepAlive)
	defer keepAlive.Stop()
	for {
		if catchUp {
			var ok bool
			if cursor, ok = s.catchUp(ctx, st, p, cursor); !ok {
				return
			}
			catchUp = false
		}
		select {
		case it := <-sub.ch:
			// Write what else is waiting too, then flush once.
			for {
				if it.seq > cursor {
					st.write(it.frame)
					cursor = it.seq
				}
				if st.buffered() >= 64<<10 || len(sub.ch) == 0 {
					break
				}
				it = <-sub.ch
			}
			if st.flush() != nil {
				return
			}
		case <-sub.lagged:
			// The stream fell behind the live bus: continue from the log, which has
			// everything, under a fresh subscription taken before reading it.
			if cursor < 0 {
				cursor = sub.firstSeq.Load() - 1
			}
			s.unsubscribe(sub)
			sub = s.subscribe(p.types, p.agentID)
			catchUp = true
		case <-keepAlive.C:
			st.write(keepAliveFrame)
			if st.flush() != nil {
				return
			}
		case <-ctx.Done():
			return
		case <-s.closing:
			return
		}
	}
}

// checkResume answers gone when events after the resume point are no longer retained
// (or the point lies beyond the log): the client must re-list and start afresh.
func (s *Service) checkResume(ctx context.Context, after int64) error {
	if s.cfg.Log == nil {
		return nil
	}
	first, err := s.cfg.Log.FirstEventSeq(ctx)
	if err != nil {
		return err
	}
	if after < first-1 {
		return lifeline.Errorf(lifeline.EGone, "events after seq %d are no longer retained (the log starts at seq %d); re-list with GET /api/v1/events and stream from its next_after", after, first)
	}
	last, err := s.cfg.Log.LastEventSeq(ctx)
	if err != nil {
		return err
	}
	if after > last {
		return lifeline.Errorf(lifeline.EGone, "seq %d is beyond the end of the log (seq %d); re-list with GET /api/v1/events", after, last)
	}
	return nil
}

// catchUp sends the logged events after cursor, page by page, and returns the new
// cursor. It reports false when the stream must end: a write failed, the log could
// not be read, or events after the cursor were pruned meanwhile (the client's
// reconnect then gets 410).
func (s *Service) catchUp(ctx context.Context, st *sseWriter, p sseRequest, cursor int64) (int64, bool) {
	if cursor < 0 {
		return cursor, true
	}
	for {
		evs, next, err := s.cfg.Events.FindEvents(ctx, lifeline.EventFilter{After: cursor, Limit: ssePage, Types: p.types, AgentID: p.agentID})
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("stream: SSE catch-up failed", "err", err)
			}
			return cursor, false
		}
		if s.cfg.Log != nil {
			first, err := s.cfg.Log.FirstEventSeq(ctx)
			if err != nil || first > cursor+1 {
				return cursor, false
			}
		}
		for i := range evs {
			st.write(sseFrame(&evs[i]))
		}
		if next > cursor {
			cursor = next
		}
		if st.flush() != nil {
			return cursor, false
		}
		if len(evs) < ssePage {
			return cursor, true
		}
	}
}

// sseWriter buffers frames and flushes them within the write timeout.
type sseWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	buf     []byte
}

func (st *sseWriter) write(frame []byte) { st.buf = append(st.buf, frame...) }

func (st *sseWriter) buffered() int { return len(st.buf) }

func (st *sseWriter) flush() error {
	_ = st.rc.SetWriteDeadline(time.Now().Add(st.timeout))
	if len(st.buf) > 0 {
		if _, err := st.w.Write(st.buf); err != nil {
			return err
		}
		if cap(st.buf) > 256<<10 {
			st.buf = nil
		} else {
			st.buf = st.buf[:0]
		}
	}
	return st.rc.Flush()
}
