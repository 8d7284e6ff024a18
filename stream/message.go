package stream

import (
	"bytes"
	"encoding/json"
	"strconv"
	"time"

	"github.com/lifeline-dev/lifeline"
)

// Message types of the WebSocket protocol (spec/websocket-protocol.md).
const (
	TypeConnectionEstablished = "connection_established"
	TypeStatusUpdate          = "status_update"
	TypeTaskUpdate            = "task_update"
	TypeBatchUpdate           = "batch_update"
	TypePing                  = "ping"
	TypePong                  = "pong"
)

// ConnectionEstablished is sent once, first, on every connection.
type ConnectionEstablished struct {
	Type      string    `json:"type"`
	AgentID   string    `json:"agent_id"`
	Timestamp Timestamp `json:"timestamp"`
}

// StatusUpdate is sent on every lifecycle transition of the agent.
type StatusUpdate struct {
	Type    string `json:"type"`
	AgentID string `json:"agent_id"`
	Status  string `json:"status"`
	// ExecutionStatus is the agent's latest task update; null when it has reported
	// none (or none is retained in the event log).
	ExecutionStatus *ExecutionStatus `json:"execution_status"`
	Timestamp       Timestamp        `json:"timestamp"`
}

// ExecutionStatus is the state of the task an agent reported last.
type ExecutionStatus struct {
	State    string `json:"state"`
	TaskID   string `json:"task_id"`
	Progress int    `json:"progress"`
	Message  string `json:"message"`
}

// TaskUpdate is sent for every accepted task update of the agent.
type TaskUpdate struct {
	Type     string          `json:"type"`
	AgentID  string          `json:"agent_id"`
	TaskID   string          `json:"task_id"`
	Status   string          `json:"status"`
	Progress int             `json:"progress"`
	Message  string          `json:"message"`
	Result   json.RawMessage `json:"result,omitempty"`
	Error    string          `json:"error,omitempty"`
	// Timestamp is when the update was accepted.
	Timestamp Timestamp `json:"timestamp"`
}

// BatchUpdate carries several messages in order: queued ones delivered on connect, or
// those that arrived within one batching window.
type BatchUpdate struct {
	Type      string        `json:"type"`
	Updates   []BatchedItem `json:"updates"`
	Timestamp Timestamp     `json:"timestamp"`
}

// BatchedItem is one message of a batch: its type, and the whole message as content.
type BatchedItem struct {
	Type    string          `json:"type"`
	Content json.RawMessage `json:"content"`
}

// Ping is the server's heartbeat; the client answers {"type":"pong"}.
type Ping struct {
	Type      string    `json:"type"`
	Timestamp Timestamp `json:"timestamp"`
}

// Timestamp is a time written as an ISO-8601 (RFC 3339) UTC timestamp with fractional
// seconds, the form of every timestamp in the API.
type Timestamp time.Time

// MarshalJSON implements json.Marshaler.
func (t Timestamp) MarshalJSON() ([]byte, error) {
	return appendTimestamp(make([]byte, 0, 40), time.Time(t)), nil
}

// UnmarshalJSON implements json.Unmarshaler.
func (t *Timestamp) UnmarshalJSON(b []byte) error {
	var tt time.Time
	if err := tt.UnmarshalJSON(b); err != nil {
		return err
	}
	*t = Timestamp(tt)
	return nil
}

func appendTimestamp(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.UTC().AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

// wsMessage is one encoded protocol message, shared read-only by every connection it
// is delivered to.
type wsMessage struct {
	typ  string
	body []byte
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// Only our own structs of strings, numbers and raw JSON taken from committed
		// events are encoded here.
		panic("stream: encode message: " + err.Error())
	}
	return b
}

// execStatusOf returns the execution status a task update leaves its agent in.
func execStatusOf(t *lifeline.Task) *ExecutionStatus {
	return &ExecutionStatus{State: t.Status, TaskID: t.TaskID, Progress: t.Progress, Message: t.Message}
}

// statusUpdate returns the status_update of an agent.lifecycle event.
func statusUpdate(ev *lifeline.Event, exec *ExecutionStatus) *wsMessage {
	return &wsMessage{typ: TypeStatusUpdate, body: mustJSON(StatusUpdate{
		Type:            TypeStatusUpdate,
		AgentID:         ev.AgentID,
		Status:          string(ev.NewStatus),
		ExecutionStatus: exec,
		Timestamp:       Timestamp(ev.Timestamp),
	})}
}

// taskUpdate returns the task_update of a task.update event.
func taskUpdate(ev *lifeline.Event) *wsMessage {
	t := ev.Task
	at := ev.Timestamp
	if at.IsZero() {
		at = t.UpdatedAt
	}
	return &wsMessage{typ: TypeTaskUpdate, body: mustJSON(TaskUpdate{
		Type:      TypeTaskUpdate,
		AgentID:   ev.AgentID,
		TaskID:    t.TaskID,
		Status:    t.Status,
		Progress:  t.Progress,
		Message:   t.Message,
		Result:    t.Result,
		Error:     t.Error,
		Timestamp: Timestamp(at),
	})}
}

// encodeFrame returns the WebSocket text message for msgs: the message itself when
// there is one and batching is not forced, a batch_update otherwise. The batch is
// assembled from the already encoded messages, without re-encoding them.
func encodeFrame(buf *bytes.Buffer, msgs []*wsMessage, forceBatch bool, now time.Time) []byte {
	if len(msgs) == 1 && !forceBatch {
		return msgs[0].body
	}
	buf.Reset()
	buf.WriteString(`{"type":"batch_update","updates":[`)
	for i, m := range msgs {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.WriteString(`{"type":`)
		buf.WriteString(strconv.Quote(m.typ))
		buf.WriteString(`,"content":`)
		buf.Write(m.body)
		buf.WriteByte('}')
	}
	buf.WriteString(`],"timestamp":`)
	buf.Write(appendTimestamp(buf.AvailableBuffer(), now))
	buf.WriteByte('}')
	return buf.Bytes()
}

// pingFrame returns a ping message.
func pingFrame(now time.Time) []byte {
	return mustJSON(Ping{Type: TypePing, Timestamp: Timestamp(now)})
}

// pongFrame is the answer to a client's own ping.
var pongFrame = []byte(`{"type":"pong"}`)
