package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/lifeline-dev/lifeline"
)

// MaxBatchHeartbeats caps the number of heartbeats in one POST /api/v1/heartbeats.
// A larger batch is refused as a whole with 413 payload_too_large; split it.
const MaxBatchHeartbeats = 1000

// Beater is implemented by agent services that can record a heartbeat into a
// caller-owned acknowledgement without allocating (registry.Engine does). The heartbeat
// handlers use it when the configured AgentService has it, and Heartbeat otherwise.
// Beat must not retain hb or ack, or anything they point to, after it returns: the
// handlers reuse them for the next request. The strings in hb (tasks_in_progress) are
// the caller's own and may be kept.
type Beater interface {
	Beat(ctx context.Context, id string, hb *lifeline.Heartbeat, ack *lifeline.HeartbeatAck) error
}

// beat records one heartbeat through the service's Beat when it has one.
func (s *Server) beat(ctx context.Context, id string, hb *lifeline.Heartbeat, ack *lifeline.HeartbeatAck) error {
	if b, ok := s.cfg.Agents.(Beater); ok {
		return b.Beat(ctx, id, hb, ack)
	}
	// Any other service may keep what it is given: hand it its own copy, since hb
	// points into pooled memory.
	cp := *hb
	if hb.CurrentLoad != nil {
		n := *hb.CurrentLoad
		cp.CurrentLoad = &n
	}
	a, err := s.cfg.Agents.Heartbeat(ctx, id, &cp)
	if err != nil {
		return err
	}
	*ack = *a
	return nil
}

// beatScratch is the per-request memory of the heartbeat handlers, pooled so that a
// heartbeat on the fast path allocates nothing of its own.
type beatScratch struct {
	body  []byte
	out   []byte
	item  beatItem
	ack   lifeline.HeartbeatAck
	batch []batchEntry
}

// maxPooledBuf is the largest buffer returned to a pool; bigger ones are left to the
// garbage collector so that the pool does not pin them.
const maxPooledBuf = 256 << 10

// Single heartbeats and batches keep separate pools: a batch's buffers are a hundred
// times larger.
var (
	scratchPool = sync.Pool{New: func() any {
		return &beatScratch{body: make([]byte, 0, 1024), out: make([]byte, 0, 512)}
	}}
	batchPool = sync.Pool{New: func() any { return new(beatScratch) }}
)

func getScratch(p *sync.Pool) *beatScratch { return p.Get().(*beatScratch) }

func putScratch(p *sync.Pool, sc *beatScratch) {
	if cap(sc.body) > maxPooledBuf || cap(sc.out) > maxPooledBuf || cap(sc.batch) > 2*MaxBatchHeartbeats {
		return
	}
	sc.item = beatItem{}
	sc.ack = lifeline.HeartbeatAck{}
	clear(sc.batch[:cap(sc.batch)]) // drop references to strings and errors
	sc.batch = sc.batch[:0]
	p.Put(sc)
}

// contentTypeJSON is shared by every heartbeat response, so that setting the header
// does not allocate. net/http only reads header values; it never writes into them.
var contentTypeJSON = []string{"application/json"}

// handleHeartbeat is POST /api/v1/agents/{agent_id}/heartbeat (RFC-0016 §4).
func (s *Server) handleHeartbeat(w http.ResponseWriter, r *http.Request) {
	id, ok := s.agentID(w, r)
	if !ok {
		return
	}
	sc := getScratch(&scratchPool)
	defer putScratch(&scratchPool, sc)
	var err error
	sc.body, err = readBody(w, r, sc.body[:0], s.cfg.MaxBodyBytes)
	if err != nil {
		s.problem(w, r, err)
		return
	}
	hb := &sc.item.hb
	if err := decodeHeartbeat(sc.body, &sc.item); err != nil {
		s.problem(w, r, err)
		return
	}
	if err := hb.Validate(); err != nil {
		s.problem(w, r, err)
		return
	}
	if err := s.beat(r.Context(), id, hb, &sc.ack); err != nil {
		s.problem(w, r, err)
		return
	}
	sc.out = appendAck(sc.out[:0], &sc.ack)
	sc.out = append(sc.out, '\n')
	w.Header()["Content-Type"] = contentTypeJSON
	_, _ = w.Write(sc.out)
}

// readBody reads the whole request body, at most max bytes, into buf. Errors are those
// of DecodeJSON: payload_too_large over the cap, invalid for a broken body.
func readBody(w http.ResponseWriter, r *http.Request, buf []byte, max int64) ([]byte, error) {
	if r.ContentLength > max {
		// Do not read (or drain) a body we are going to refuse.
		w.Header().Set("Connection", "close")
		return buf, tooLarge(max)
	}
	if n := int(r.ContentLength); n > 0 && cap(buf) < n+1 {
		buf = make([]byte, 0, n+1) // +1: room to see EOF without growing
	}
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if int64(len(buf)) > max {
			w.Header().Set("Connection", "close")
			return buf, tooLarge(max)
		}
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, decodeError(err)
		}
	}
}

func tooLarge(max int64) error {
	return decodeError(&http.MaxBytesError{Limit: max})
}

// decodeHeartbeat decodes a heartbeat body into it, with the semantics and the error
// messages of DecodeJSON (encoding/json, unknown fields rejected, one value only): the
// fast decoder takes the bodies that agents send, and anything it does not handle is
// decoded again by encoding/json, which also writes the error message.
func decodeHeartbeat(body []byte, it *beatItem) error {
	*it = beatItem{}
	d := fastDecoder{b: body}
	if d.heartbeat(it, false) && d.end() {
		it.fix()
		return nil
	}
	*it = beatItem{}
	return decodeStd(body, &it.hb)
}

// decodeStd is DecodeJSON over a body already read.
func decodeStd(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return lifeline.Errorf(lifeline.EInvalid, "request body must hold exactly one JSON value")
	}
	return nil
}

// beatItem is one decoded heartbeat with, in a batch, its agent id.
type beatItem struct {
	hb      lifeline.Heartbeat
	load    int // storage for *hb.CurrentLoad
	agentID string
	hasID   bool // agent_id was a JSON string
}

// fix points hb.CurrentLoad at the item's own storage (the item may have moved since it
// was decoded).
func (it *beatItem) fix() {
	if it.hb.CurrentLoad != nil {
		it.hb.CurrentLoad = &it.load
	}
}

// Field bits, to refuse duplicate keys on the fast path (encoding/json takes the last).
const (
	fStatus = 1 << iota
	fLoad
	fTasks
	fTimestamp
	fAgentID
)

// emptyTasks is what encoding/json decodes "tasks_in_progress":[] into: an empty,
// non-nil slice. Sharing it is safe: it has no capacity to write into.
var emptyTasks = []string{}

// fastDecoder decodes the small, flat heartbeat objects without reflection. It handles
// plain JSON only: any escape sequence, non-ASCII byte, unknown, duplicate or
// differently-cased key, fraction or exponent makes it give up (false), and the caller
// falls back to encoding/json. When it succeeds the result equals encoding/json's
// (FuzzHeartbeatDecoder checks this).
type fastDecoder struct {
	b []byte
	i int
	// s, when set, is string(b): strings are cut from it instead of allocated one by
	// one (batches).
	s string
}

func (d *fastDecoder) ws() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// next skips white space and consumes c if it comes next.
func (d *fastDecoder) next(c byte) bool {
	d.ws()
	if d.i < len(d.b) && d.b[d.i] == c {
		d.i++
		return true
	}
	return false
}

// end reports whether only white space is left.
func (d *fastDecoder) end() bool {
	d.ws()
	return d.i == len(d.b)
}

// str consumes a string without escapes, control or non-ASCII bytes and returns the
// offsets of its content.
func (d *fastDecoder) str() (start, end int, ok bool) {
	d.ws()
	if d.i >= len(d.b) || d.b[d.i] != '"' {
		return 0, 0, false
	}
	start = d.i + 1
	for j := start; j < len(d.b); j++ {
		c := d.b[j]
		if c == '"' {
			d.i = j + 1
			return start, j, true
		}
		if c == '\\' || c < 0x20 || c >= 0x80 {
			return 0, 0, false
		}
	}
	return 0, 0, false
}

// null consumes a JSON null if it comes next.
func (d *fastDecoder) null() bool {
	d.ws()
	if len(d.b)-d.i >= 4 && string(d.b[d.i:d.i+4]) == "null" {
		d.i += 4
		return true
	}
	return false
}

// int consumes an integer literal that fits in 18 digits (no fraction, no exponent).
func (d *fastDecoder) int() (int, bool) {
	d.ws()
	j := d.i
	neg := j < len(d.b) && d.b[j] == '-'
	if neg {
		j++
	}
	start := j
	if j >= len(d.b) {
		return 0, false
	}
	switch c := d.b[j]; {
	case c == '0':
		j++
	case c >= '1' && c <= '9':
		for j < len(d.b) && d.b[j] >= '0' && d.b[j] <= '9' {
			j++
		}
	default:
		return 0, false
	}
	if j-start > 18 {
		return 0, false
	}
	if j < len(d.b) {
		if c := d.b[j]; c == '.' || c == 'e' || c == 'E' || (c >= '0' && c <= '9') {
			return 0, false
		}
	}
	n := 0
	for _, c := range d.b[start:j] {
		n = n*10 + int(c-'0')
	}
	if neg {
		n = -n
	}
	d.i = j
	return n, true
}

func (d *fastDecoder) sub(start, end int) string {
	if d.s != "" {
		return d.s[start:end]
	}
	return string(d.b[start:end])
}

// heartbeat decodes one heartbeat object into it; withID accepts agent_id (batches).
func (d *fastDecoder) heartbeat(it *beatItem, withID bool) bool {
	if !d.next('{') {
		return false
	}
	if d.next('}') {
		return true
	}
	var seen uint8
	for {
		ks, ke, ok := d.str()
		if !ok || !d.next(':') {
			return false
		}
		var bit uint8
		switch string(d.b[ks:ke]) {
		case "status":
			bit = fStatus
			if d.null() {
				break // null leaves a string as it is
			}
			s, e, ok := d.str()
			if !ok {
				return false
			}
			switch string(d.b[s:e]) {
			case "active":
				it.hb.Status = lifeline.StatusActive
			case "draining":
				it.hb.Status = lifeline.StatusDraining
			default:
				it.hb.Status = lifeline.Status(d.sub(s, e))
			}
		case "current_load":
			bit = fLoad
			if d.null() {
				it.hb.CurrentLoad = nil
				break
			}
			n, ok := d.int()
			if !ok {
				return false
			}
			it.load = n
			it.hb.CurrentLoad = &it.load
		case "tasks_in_progress":
			bit = fTasks
			if !d.tasks(it) {
				return false
			}
		case "client_timestamp":
			bit = fTimestamp
			if d.null() {
				break
			}
			s, e, ok := d.str()
			// time.Time decodes the raw literal, quotes included, as encoding/json
			// hands it over.
			if !ok || it.hb.ClientTimestamp.UnmarshalJSON(d.b[s-1:e+1]) != nil {
				return false
			}
		case "agent_id":
			if !withID {
				return false
			}
			bit = fAgentID
			if d.null() {
				break
			}
			s, e, ok := d.str()
			if !ok {
				return false
			}
			it.agentID, it.hasID = d.sub(s, e), true
		default:
			return false
		}
		if seen&bit != 0 {
			return false
		}
		seen |= bit
		if d.next(',') {
			continue
		}
		return d.next('}')
	}
}

// tasks decodes tasks_in_progress: null, or an array of strings. All the ids share one
// allocation (two with the slice).
func (d *fastDecoder) tasks(it *beatItem) bool {
	if d.null() {
		it.hb.TasksInProgress = nil
		return true
	}
	if !d.next('[') {
		return false
	}
	if d.next(']') {
		it.hb.TasksInProgress = emptyTasks
		return true
	}
	// First pass: validate and count.
	from := d.i
	n := 0
	first, last := -1, 0
	for {
		s, e, ok := d.str()
		if !ok {
			return false
		}
		if first < 0 {
			first = s
		}
		last = e
		n++
		if d.next(',') {
			continue
		}
		if !d.next(']') {
			return false
		}
		break
	}
	// Second pass: cut the ids from one string.
	all := d.sub(first, last)
	out := make([]string, 0, n)
	save := d.i
	d.i = from
	for range n {
		s, e, _ := d.str()
		out = append(out, all[s-first:e-first])
		d.next(',')
	}
	d.i = save
	it.hb.TasksInProgress = out
	return true
}

// appendAck appends the JSON of ack exactly as encoding/json writes it.
func appendAck(b []byte, ack *lifeline.HeartbeatAck) []byte {
	if ack.Acknowledged {
		b = append(b, `{"acknowledged":true,"server_timestamp":`...)
	} else {
		b = append(b, `{"acknowledged":false,"server_timestamp":`...)
	}
	return appendAckTail(b, ack)
}

// appendAckTail appends server_timestamp, agent_status and pending_commands and the
// closing brace.
func appendAckTail(b []byte, ack *lifeline.HeartbeatAck) []byte {
	b = appendTime(b, ack.ServerTimestamp)
	b = append(b, `,"agent_status":`...)
	b = appendString(b, string(ack.AgentStatus))
	b = append(b, `,"pending_commands":`...)
	switch {
	case ack.PendingCommands == nil:
		b = append(b, "null"...)
	case len(ack.PendingCommands) == 0:
		b = append(b, "[]"...)
	default:
		data, err := json.Marshal(ack.PendingCommands)
		if err != nil {
			data = []byte("[]") // a Command of plain strings and ints always marshals
		}
		b = append(b, data...)
	}
	return append(b, '}')
}

// appendTime appends t as time.Time's MarshalJSON does (RFC 3339 with nanoseconds).
func appendTime(b []byte, t time.Time) []byte {
	if y := t.Year(); y < 0 || y > 9999 {
		data, _ := json.Marshal(t) // fails as encoding/json would; never for server clocks
		return append(b, data...)
	}
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

// appendString appends s as a JSON string, escaped as encoding/json escapes it (HTML
// characters included).
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			data, _ := json.Marshal(s)
			return append(b, data...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// batchEntry is one heartbeat of a batch and its outcome.
type batchEntry struct {
	item beatItem
	ack  lifeline.HeartbeatAck
	err  error
	lane uint8
}

// batchLanes is how many goroutines work through a large batch. Heartbeats that cause
// a transition (an unhealthy agent resuming) wait for a store commit; working on
// several at once lets group commit write them together.
const batchLanes = 8

// batchLaneMin is the batch size from which lanes are used.
const batchLaneMin = 64

// handleBatchHeartbeat is POST /api/v1/heartbeats: many agents' heartbeats in one
// request, for processes that host many agents. Every item is handled as the single
// heartbeat would be (same validation, ownership and transitions) and answered in
// results at the same index; an item's failure never fails the others.
func (s *Server) handleBatchHeartbeat(w http.ResponseWriter, r *http.Request) {
	sc := getScratch(&batchPool)
	defer putScratch(&batchPool, sc)
	var err error
	sc.body, err = readBody(w, r, sc.body[:0], s.cfg.MaxBodyBytes)
	if err != nil {
		s.problem(w, r, err)
		return
	}
	sc.batch, err = decodeBatch(sc.body, sc.batch[:0])
	if err != nil {
		s.problem(w, r, err)
		return
	}
	entries := sc.batch
	for i := range entries {
		e := &entries[i]
		if e.err != nil {
			continue
		}
		if err := lifeline.ValidateID("agent_id", e.item.agentID); err != nil {
			e.err = err
			continue
		}
		if err := e.item.hb.Validate(); err != nil {
			e.err = err
		}
	}
	ctx := r.Context()
	if len(entries) < batchLaneMin {
		for i := range entries {
			s.beatEntry(ctx, &entries[i])
		}
	} else {
		// Each agent id keeps to one lane, so that repeated ids in a batch are applied
		// in order.
		for i := range entries {
			entries[i].lane = uint8(fnv32(entries[i].item.agentID) % batchLanes)
		}
		var wg sync.WaitGroup
		for lane := range uint8(batchLanes) {
			wg.Go(func() {
				for i := range entries {
					if entries[i].lane == lane {
						s.beatEntry(ctx, &entries[i])
					}
				}
			})
		}
		wg.Wait()
	}
	sc.out = append(sc.out[:0], `{"results":[`...)
	for i := range entries {
		if i > 0 {
			sc.out = append(sc.out, ',')
		}
		sc.out = s.appendResult(sc.out, r, &entries[i])
	}
	sc.out = append(sc.out, "]}\n"...)
	w.Header()["Content-Type"] = contentTypeJSON
	_, _ = w.Write(sc.out)
}

// beatEntry records one valid batch item.
func (s *Server) beatEntry(ctx context.Context, e *batchEntry) {
	if e.err != nil {
		return
	}
	e.err = s.beat(ctx, e.item.agentID, &e.item.hb, &e.ack)
}

// appendResult appends the result of one batch item: the heartbeat response with its
// agent_id, or a per-item problem {agent_id, acknowledged: false, status, code, detail}.
func (s *Server) appendResult(b []byte, r *http.Request, e *batchEntry) []byte {
	b = append(b, '{')
	if e.item.hasID {
		b = append(b, `"agent_id":`...)
		b = appendString(b, e.item.agentID)
		b = append(b, ',')
	}
	if e.err == nil {
		b = append(b, `"acknowledged":true,"server_timestamp":`...)
		return appendAckTail(b, &e.ack)
	}
	code := lifeline.ErrorCode(e.err)
	if code == lifeline.EInternal {
		s.log.Error("internal error", "method", r.Method, "path", r.URL.Path, "agent_id", e.item.agentID, "err", e.err)
	}
	b = append(b, `"acknowledged":false,"status":`...)
	b = strconv.AppendInt(b, int64(lifeline.HTTPStatus(code)), 10)
	b = append(b, `,"code":`...)
	b = appendString(b, code)
	b = append(b, `,"detail":`...)
	b = appendString(b, lifeline.ErrorMessage(e.err))
	return append(b, '}')
}

func fnv32(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}

// decodeBatch decodes {"heartbeats":[...]} into entries. Errors are about the whole
// request (malformed JSON, unknown members, too many items); an item that cannot be
// decoded gets its own error in its entry.
func decodeBatch(body []byte, entries []batchEntry) ([]batchEntry, error) {
	// Fast path: a well-formed batch of plain items. The body is converted to a string
	// once and every id is cut from it.
	d := fastDecoder{b: body, s: string(body)}
	if out, ok := d.batch(entries); ok {
		return out, nil
	}
	clear(entries[:cap(entries)])
	return decodeBatchSlow(body, entries[:0])
}

// decodeBatchSlow is decodeBatch with encoding/json for the envelope; each item still
// goes through the fast decoder first.
func decodeBatchSlow(body []byte, entries []batchEntry) ([]batchEntry, error) {
	var env struct {
		Heartbeats *[]json.RawMessage `json:"heartbeats"`
	}
	if err := decodeStd(body, &env); err != nil {
		return entries, err
	}
	if env.Heartbeats == nil {
		return entries, lifeline.Errorf(lifeline.EInvalid, "heartbeats is required: an array of heartbeat objects, each with its agent_id")
	}
	items := *env.Heartbeats
	if len(items) > MaxBatchHeartbeats {
		return entries, errTooManyHeartbeats
	}
	for _, raw := range items {
		entries = append(entries, batchEntry{})
		e := &entries[len(entries)-1]
		d := fastDecoder{b: raw}
		if d.heartbeat(&e.item, true) && d.end() {
			continue
		}
		e.item = beatItem{}
		e.err = decodeBatchItem(raw, &e.item)
	}
	for i := range entries {
		entries[i].item.fix()
	}
	return entries, nil
}

var errTooManyHeartbeats = lifeline.Errorf(lifeline.EPayloadTooLarge, "a batch holds at most %d heartbeats; split it", MaxBatchHeartbeats)

// batchItemBody is one item of a batch as encoding/json decodes it.
type batchItemBody struct {
	AgentID *string `json:"agent_id"`
	lifeline.Heartbeat
}

// decodeBatchItem decodes one item the slow way, for its error message (or for the
// rare valid item the fast decoder leaves alone, such as one with escapes).
func decodeBatchItem(raw json.RawMessage, it *beatItem) error {
	if t := bytes.TrimLeft(raw, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return lifeline.Errorf(lifeline.EInvalid, "each item of heartbeats must be a JSON object")
	}
	var b batchItemBody
	err := decodeStd(raw, &b)
	// encoding/json fills what it can before it reports a bad member: keep the id, so
	// that the result names the agent.
	if b.AgentID != nil {
		it.agentID, it.hasID = *b.AgentID, true
	}
	if err != nil {
		return err
	}
	it.hb = b.Heartbeat
	if it.hb.CurrentLoad != nil {
		it.load = *it.hb.CurrentLoad
	}
	return nil
}

// batch decodes the whole batch on the fast path; false when anything is unusual.
func (d *fastDecoder) batch(entries []batchEntry) ([]batchEntry, bool) {
	if !d.next('{') {
		return entries, false
	}
	ks, ke, ok := d.str()
	if !ok || string(d.b[ks:ke]) != "heartbeats" || !d.next(':') || !d.next('[') {
		return entries, false
	}
	if !d.next(']') {
		for {
			if len(entries) == MaxBatchHeartbeats {
				return entries, false // let the slow path count and refuse it
			}
			entries = append(entries, batchEntry{})
			if !d.heartbeat(&entries[len(entries)-1].item, true) {
				return entries, false
			}
			if d.next(',') {
				continue
			}
			if !d.next(']') {
				return entries, false
			}
			break
		}
	}
	if !d.next('}') || !d.end() {
		return entries, false
	}
	for i := range entries {
		entries[i].item.fix()
	}
	return entries, true
}
