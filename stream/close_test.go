package stream_test

import (
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline/stream"
)

// streamGoroutines returns the stacks of goroutines running code of package stream
// (test code excluded).
func streamGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "lifeline/stream.(*") || strings.Contains(g, "lifeline/stream.New") {
			out = append(out, g)
		}
	}
	return out
}

func TestCloseStopsEveryGoroutine(t *testing.T) {
	h := start(t, stream.Config{HeartbeatInterval: 50 * time.Millisecond, WebhookBackoff: time.Hour})
	h.register(h.admin, "worker-1")
	ws := h.mustDial("worker-1", h.admin)
	h.stalledConnNoCleanup("worker-1")
	sse, _ := h.openSSE("", h.admin)
	rc := newReceiver(t, 500) // one failure, then a retry an hour away
	h.createWebhook(rc.srv.URL, []string{"*"}, "")
	expect(t, h.do("DELETE", "/api/v1/agents/worker-1", h.admin, nil), 204)
	sse.mustNext()
	ws.next()
	eventually(t, "a failed delivery", func() bool { return len(rc.deliveries()) == 1 })

	start := time.Now()
	h.close()
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Close took %v", d)
	}
	if gs := streamGoroutines(); len(gs) > 0 {
		t.Fatalf("%d goroutines of package stream survive Close:\n%s", len(gs), strings.Join(gs, "\n\n"))
	}
	if _, err := ws.read(time.Second); err == nil {
		t.Error("the WebSocket survived Close")
	}
}
