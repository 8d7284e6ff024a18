package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline"
)

// heartbeatSeeds are bodies for the decoder tests: what agents send, and what the fast
// decoder must leave to encoding/json.
var heartbeatSeeds = []string{
	`{"status":"active","client_timestamp":"2026-02-08T10:30:00Z"}`,
	`{"status":"active","current_load":3,"tasks_in_progress":["task_01H001","task_01H002"],"client_timestamp":"2026-02-08T10:30:00.123Z"}`,
	`{"status":"draining","current_load":0,"tasks_in_progress":[],"client_timestamp":"2026-02-08T10:30:00+02:00"}`,
	" { \"status\" : \"active\" ,\n\"current_load\" : -0 , \"client_timestamp\":\"2026-02-08T10:30:00.999999999Z\"}\t",
	`{"status":null,"current_load":null,"tasks_in_progress":null,"client_timestamp":null}`,
	`{}`,
	`{"status":"weird","current_load":-12}`,
	`{"status":"act\u0069ve","client_timestamp":"2026-02-08T10:30:00Z"}`,
	`{"STATUS":"active","client_timestamp":"2026-02-08T10:30:00Z"}`,
	`{"status":"active","status":"draining"}`,
	`{"status":"active","current_load":1.5}`,
	`{"status":"active","current_load":1e3}`,
	`{"status":"active","current_load":012}`,
	`{"status":"active","current_load":9223372036854775808}`,
	`{"status":"active","current_load":123456789012345678}`,
	`{"status":"active","tasks_in_progress":["a",null]}`,
	`{"status":"active","tasks_in_progress":"t1"}`,
	`{"status":"active","client_timestamp":"2026-02-30T25:61:00Z"}`,
	`{"status":"active","client_timestamp":"2026-02-08 10:30:00Z"}`,
	`{"status":"active","client_timestamp":12}`,
	`{"status":"active","x":1}`,
	`{"status":"active",}`,
	`{"status":"active"}{}`,
	`{"status":"active"} x`,
	`{"status":"actïve"}`,
	"{\"status\":\"a\x01\"}",
	`null`,
	`[]`,
	`"active"`,
	``,
	`{"agent_id":"a1","status":"active"}`,
	`{"status":"active","tasks_in_progress":[  "a" ,"b"  ]  }`,
}

// FuzzHeartbeatDecoder checks the fast heartbeat decoder against encoding/json (as
// DecodeJSON runs it): whenever the fast decoder accepts a body, encoding/json accepts
// it too and decodes the same value; decodeHeartbeat as a whole (fast path plus
// fallback) gives exactly encoding/json's value or error. The same holds for batch
// items, which also carry agent_id.
func FuzzHeartbeatDecoder(f *testing.F) {
	for _, s := range heartbeatSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		b := []byte(body)

		var want lifeline.Heartbeat
		wantErr := decodeStd(b, &want)
		var it beatItem
		d := fastDecoder{b: b}
		if d.heartbeat(&it, false) && d.end() {
			it.fix()
			if wantErr != nil {
				t.Fatalf("fast decoder accepted %q; encoding/json: %v", body, wantErr)
			}
			if !reflect.DeepEqual(it.hb, want) {
				t.Fatalf("%q: fast %+v, encoding/json %+v", body, it.hb, want)
			}
		}
		var got beatItem
		err := decodeHeartbeat(b, &got)
		if !sameError(err, wantErr) {
			t.Fatalf("%q: error %v, encoding/json %v", body, err, wantErr)
		}
		if err == nil && !reflect.DeepEqual(got.hb, want) {
			t.Fatalf("%q: decoded %+v, encoding/json %+v", body, got.hb, want)
		}

		// As a batch item.
		var wantItem batchItemBody
		wantItemErr := decodeStd(b, &wantItem)
		var bi beatItem
		d = fastDecoder{b: b, s: body}
		if d.heartbeat(&bi, true) && d.end() {
			bi.fix()
			if wantItemErr != nil {
				t.Fatalf("fast decoder accepted item %q; encoding/json: %v", body, wantItemErr)
			}
			if !reflect.DeepEqual(bi.hb, wantItem.Heartbeat) || bi.hasID != (wantItem.AgentID != nil) ||
				(bi.hasID && bi.agentID != *wantItem.AgentID) {
				t.Fatalf("item %q: fast %+v, encoding/json %+v", body, bi, wantItem)
			}
		}
	})
}

// FuzzBatchDecoder checks that a batch decoded on the fast path gives the same
// entries as the encoding/json path, and that no body makes the decoder panic.
func FuzzBatchDecoder(f *testing.F) {
	for _, s := range heartbeatSeeds {
		f.Add(`{"heartbeats":[` + s + `]}`)
	}
	f.Add(`{"heartbeats":[{"agent_id":"a1","status":"active","client_timestamp":"2026-02-08T10:30:00Z"},{"agent_id":"a2","status":"draining","current_load":2,"tasks_in_progress":["t1","t2"],"client_timestamp":"2026-02-08T10:30:00Z"}]}`)
	f.Add(`{"heartbeats":[],"heartbeats":[]}`)
	f.Add(` {"heartbeats" : [ ] } `)
	f.Add(`{"Heartbeats":[]}`)
	f.Fuzz(func(t *testing.T, body string) {
		got, err := decodeBatch([]byte(body), nil)
		want, wantErr := decodeBatchSlow([]byte(body), nil)
		if !sameError(err, wantErr) {
			t.Fatalf("%q: error %v, encoding/json path %v", body, err, wantErr)
		}
		if err != nil {
			return
		}
		if len(got) != len(want) {
			t.Fatalf("%q: %d entries, encoding/json path %d", body, len(got), len(want))
		}
		for i := range got {
			g, w := got[i], want[i]
			if !sameError(g.err, w.err) || g.item.agentID != w.item.agentID || g.item.hasID != w.item.hasID ||
				(g.err == nil && !reflect.DeepEqual(g.item.hb, w.item.hb)) {
				t.Fatalf("%q item %d: %+v %v, encoding/json path %+v %v", body, i, g.item, g.err, w.item, w.err)
			}
		}
	})
}

func sameError(a, b error) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return lifeline.ErrorCode(a) == lifeline.ErrorCode(b) && lifeline.ErrorMessage(a) == lifeline.ErrorMessage(b)
}

// TestFastPathTakesAgentBodies makes sure that what agents actually send never falls
// back to encoding/json.
func TestFastPathTakesAgentBodies(t *testing.T) {
	for _, body := range heartbeatSeeds[:5] {
		var it beatItem
		d := fastDecoder{b: []byte(body)}
		if !d.heartbeat(&it, false) || !d.end() {
			t.Errorf("fast decoder refused %s", body)
		}
	}
	batch := `{"heartbeats":[{"agent_id":"a1","status":"active","client_timestamp":"2026-02-08T10:30:00Z"},` +
		` {"agent_id":"a2","status":"active","current_load":2,"tasks_in_progress":["t1"],"client_timestamp":"2026-02-08T10:30:00Z"}]}`
	d := fastDecoder{b: []byte(batch), s: batch}
	entries, ok := d.batch(nil)
	if !ok || len(entries) != 2 || entries[1].item.agentID != "a2" || *entries[1].item.hb.CurrentLoad != 2 {
		t.Fatalf("fast batch decoder: %v %+v", ok, entries)
	}
}

// TestDecodeBatchMatchesSlowPath decodes batches on the fast path and, forced, on the
// slow one: the entries are the same.
func TestDecodeBatchMatchesSlowPath(t *testing.T) {
	var items []string
	for _, s := range heartbeatSeeds {
		if json.Valid([]byte(s)) {
			items = append(items, s)
		}
	}
	body := []byte(`{"heartbeats":[` + strings.Join(items, ",") + `]}`)
	got, err := decodeBatch(body, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(items) {
		t.Fatalf("%d entries for %d items", len(got), len(items))
	}
	for i, raw := range items {
		var it beatItem
		d := fastDecoder{b: []byte(raw)}
		var wantErr error
		if !d.heartbeat(&it, true) || !d.end() {
			it = beatItem{}
			wantErr = decodeBatchItem(json.RawMessage(raw), &it)
		}
		it.fix()
		e := got[i]
		if !sameError(e.err, wantErr) || (wantErr == nil && !reflect.DeepEqual(e.item.hb, it.hb)) || e.item.agentID != it.agentID {
			t.Errorf("item %d %s: got %+v %v, want %+v %v", i, raw, e.item, e.err, it, wantErr)
		}
	}
}

// TestAppendAckMatchesEncodingJSON checks the hand-written response encoder.
func TestAppendAckMatchesEncodingJSON(t *testing.T) {
	ts := time.Date(2026, 2, 8, 10, 30, 0, 123000000, time.UTC)
	for _, ack := range []lifeline.HeartbeatAck{
		{Acknowledged: true, ServerTimestamp: ts, AgentStatus: lifeline.StatusActive, PendingCommands: []lifeline.Command{}},
		{Acknowledged: true, ServerTimestamp: ts.Add(456789), AgentStatus: lifeline.StatusDraining},
		{ServerTimestamp: time.Date(2026, 2, 8, 10, 30, 0, 0, time.FixedZone("", 3600)), AgentStatus: "<odd>\"&'\u2028"},
		{Acknowledged: true, ServerTimestamp: ts, AgentStatus: lifeline.StatusActive,
			PendingCommands: []lifeline.Command{{Command: "drain", Reason: "deploy <v2> & \"more\"", DrainTimeoutSeconds: 30}}},
	} {
		want, err := json.Marshal(&ack)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendAck(nil, &ack); !bytes.Equal(got, want) {
			t.Errorf("appendAck:\n got %s\nwant %s", got, want)
		}
	}
	for _, s := range []string{"", "a1", `quo"te`, "back\\slash", "<html>&", "\x00\x1f", "naïve", "\u2028", "\xff"} {
		want, _ := json.Marshal(s)
		if got := appendString(nil, s); !bytes.Equal(got, want) {
			t.Errorf("appendString(%q) = %s, want %s", s, got, want)
		}
	}
}

// stubBeater is an AgentService with Beat that acknowledges everything.
type stubBeater struct{ lifeline.AgentService }

func (stubBeater) Beat(ctx context.Context, id string, hb *lifeline.Heartbeat, ack *lifeline.HeartbeatAck) error {
	ack.Acknowledged = true
	ack.ServerTimestamp = time.Date(2026, 2, 8, 10, 30, 0, 123, time.UTC)
	ack.AgentStatus = lifeline.StatusActive
	ack.PendingCommands = emptyCommands
	return nil
}

var emptyCommands = []lifeline.Command{}

// rewindBody is a request body that can be read again.
type rewindBody struct{ bytes.Reader }

func (*rewindBody) Close() error { return nil }

// nopWriter is a ResponseWriter that keeps nothing.
type nopWriter struct {
	h    http.Header
	code int
}

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *nopWriter) WriteHeader(code int)        { w.code = code }

// TestHeartbeatHandlerAllocs checks that the heartbeat handler itself allocates nothing
// once the request is parsed: body read into a pooled buffer, decoded without
// reflection, acknowledged by Beat into pooled memory, encoded by hand.
func TestHeartbeatHandlerAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counts")
	}
	s := NewServer(Config{Agents: stubBeater{}})
	body := []byte(`{"status":"active","current_load":3,"client_timestamp":"2026-02-08T10:30:00Z"}`)
	rb := &rewindBody{}
	r := httptest.NewRequest("POST", "/api/v1/agents/a1/heartbeat", rb)
	r.SetPathValue("agent_id", "a1")
	r.ContentLength = int64(len(body))
	w := &nopWriter{h: http.Header{}}
	allocs := testing.AllocsPerRun(1000, func() {
		rb.Reset(body)
		s.handleHeartbeat(w, r)
	})
	if w.code != 0 && w.code != 200 {
		t.Fatalf("status %d", w.code)
	}
	if allocs != 0 {
		t.Errorf("%v allocations per heartbeat, want 0", allocs)
	}
}

func BenchmarkDecodeHeartbeat(b *testing.B) {
	body := []byte(`{"status":"active","current_load":3,"client_timestamp":"2026-02-08T10:30:00.123Z"}`)
	b.Run("Fast", func(b *testing.B) {
		var it beatItem
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			if err := decodeHeartbeat(body, &it); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("EncodingJSON", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			var hb lifeline.Heartbeat
			if err := decodeStd(body, &hb); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkHeartbeatHandler(b *testing.B) {
	s := NewServer(Config{Agents: stubBeater{}})
	body := []byte(`{"status":"active","current_load":3,"client_timestamp":"2026-02-08T10:30:00Z"}`)
	rb := &rewindBody{}
	r := httptest.NewRequest("POST", "/api/v1/agents/a1/heartbeat", rb)
	r.SetPathValue("agent_id", "a1")
	r.ContentLength = int64(len(body))
	w := &nopWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		rb.Reset(body)
		s.handleHeartbeat(w, r)
	}
}

func BenchmarkBatchHandler(b *testing.B) {
	s := NewServer(Config{Agents: stubBeater{}})
	var buf bytes.Buffer
	buf.WriteString(`{"heartbeats":[`)
	for i := range 1000 {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.WriteString(`{"agent_id":"bench-0000` + strings.Repeat("x", i%3) + `","status":"active","current_load":1,"client_timestamp":"2026-02-08T10:30:00Z"}`)
	}
	buf.WriteString(`]}`)
	body := buf.Bytes()
	rb := &rewindBody{}
	r := httptest.NewRequest("POST", "/api/v1/heartbeats", rb)
	r.ContentLength = int64(len(body))
	w := &nopWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		rb.Reset(body)
		s.handleBatchHeartbeat(w, r)
	}
	b.ReportMetric(float64(b.N)*1000/b.Elapsed().Seconds(), "items/s")
}

var _ io.ReadCloser = (*rewindBody)(nil)
