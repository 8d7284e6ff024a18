package stream_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline"
	"github.com/lifeline-dev/lifeline/stream"
)

// receiver is a webhook endpoint that records what it receives and answers with the
// next status of its script (200 once the script is used up).
type receiver struct {
	t      *testing.T
	srv    *httptest.Server
	mu     sync.Mutex
	script []int
	got    []delivery
}

type delivery struct {
	header http.Header
	body   []byte
	at     time.Time
}

func newReceiver(t *testing.T, script ...int) *receiver {
	rc := &receiver{t: t, script: script}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		rc.got = append(rc.got, delivery{header: r.Header.Clone(), body: body, at: time.Now()})
		status := http.StatusOK
		if len(rc.script) > 0 {
			status, rc.script = rc.script[0], rc.script[1:]
		}
		rc.mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) deliveries() []delivery {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]delivery(nil), rc.got...)
}

// createWebhook registers a webhook and returns it with its secret.
func (h *harness) createWebhook(url string, events []string, secret string) lifeline.NewWebhook {
	h.t.Helper()
	body := map[string]any{"url": url, "events": events}
	if secret != "" {
		body["secret"] = secret
	}
	r := expect(h.t, h.do("POST", "/api/v1/webhooks", h.admin, body), 201)
	var w lifeline.NewWebhook
	r.json(h.t, &w)
	if r.Header.Get("Location") != "/api/v1/webhooks/"+w.ID {
		h.t.Errorf("Location %q", r.Header.Get("Location"))
	}
	return w
}

func (h *harness) deliveries(id string) []lifeline.WebhookDelivery {
	h.t.Helper()
	var l struct {
		Deliveries []lifeline.WebhookDelivery `json:"deliveries"`
	}
	expect(h.t, h.do("GET", "/api/v1/webhooks/"+id+"/deliveries", h.admin, nil), 200).json(h.t, &l)
	return l.Deliveries
}

func TestWebhookSignedDelivery(t *testing.T) {
	h := start(t, stream.Config{})
	rc := newReceiver(t)
	const secret = "s3cret-s3cret-s3cret"
	w := h.createWebhook(rc.srv.URL+"/hook", []string{lifeline.EventAgentLifecycle}, secret)
	if w.Secret != secret || !strings.HasPrefix(w.ID, "wh_") {
		t.Fatalf("created %+v", w)
	}
	h.register(h.admin, "a1")
	h.lease(h.admin, "a1", "task-1") // lease.acquired: not subscribed
	eventually(t, "a delivery", func() bool { return len(rc.deliveries()) == 1 })
	d := rc.deliveries()[0]

	// Verify the signature independently of the package: HMAC-SHA256 over "<t>.<body>".
	sig := d.header.Get("Lifeline-Signature")
	var ts, v1 string
	for _, part := range strings.Split(sig, ",") {
		k, v, _ := strings.Cut(part, "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			v1 = v
		}
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts + "." + string(d.body)))
	if want := hex.EncodeToString(mac.Sum(nil)); v1 != want || ts == "" {
		t.Fatalf("Lifeline-Signature %q: v1 should be %s", sig, want)
	}
	if err := lifeline.VerifyWebhookSignature(secret, sig, d.body, time.Now(), 5*time.Minute); err != nil {
		t.Errorf("VerifyWebhookSignature: %v", err)
	}
	if err := lifeline.VerifyWebhookSignature("another-secret-xx", sig, d.body, time.Now(), 5*time.Minute); err == nil {
		t.Error("a wrong secret verified")
	}
	if err := lifeline.VerifyWebhookSignature(secret, sig, append(d.body, ' '), time.Now(), 5*time.Minute); err == nil {
		t.Error("a changed body verified")
	}
	if err := lifeline.VerifyWebhookSignature(secret, sig, d.body, time.Now().Add(time.Hour), 5*time.Minute); err == nil {
		t.Error("a stale signature verified")
	}

	var ev lifeline.Event
	if err := json.Unmarshal(d.body, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Seq != 1 || ev.Type != lifeline.EventAgentLifecycle || ev.AgentID != "a1" || ev.NewStatus != lifeline.StatusActive {
		t.Errorf("delivered event %+v", ev)
	}
	if d.header.Get("Lifeline-Event") != lifeline.EventAgentLifecycle || !strings.HasPrefix(d.header.Get("Lifeline-Delivery"), "dlv_") ||
		d.header.Get("Content-Type") != "application/json" {
		t.Errorf("headers %v", d.header)
	}
	ds := h.deliveries(w.ID)
	if len(ds) != 1 || ds[0].Outcome != lifeline.DeliveryDelivered || ds[0].StatusCode != 200 || ds[0].EventSeq != 1 || ds[0].Attempt != 1 {
		t.Errorf("deliveries %+v", ds)
	}
}

func TestWebhookRetriesWithBackoff(t *testing.T) {
	h := start(t, stream.Config{WebhookBackoff: 20 * time.Millisecond})
	rc := newReceiver(t, 500, 503)
	w := h.createWebhook(rc.srv.URL, []string{"*"}, "")
	if len(w.Secret) < 16 {
		t.Fatalf("generated secret %q", w.Secret)
	}
	h.register(h.admin, "a1")
	eventually(t, "3 attempts", func() bool { return len(rc.deliveries()) == 3 })
	got := rc.deliveries()
	id := got[0].header.Get("Lifeline-Delivery")
	for i, d := range got {
		if d.header.Get("Lifeline-Delivery") != id || string(d.body) != string(got[0].body) {
			t.Errorf("attempt %d is not the same delivery", i+1)
		}
	}
	// Backoff: ≥ half of 20 ms, then ≥ half of 40 ms (equal jitter).
	if d := got[1].at.Sub(got[0].at); d < 10*time.Millisecond {
		t.Errorf("second attempt after %v", d)
	}
	if d := got[2].at.Sub(got[1].at); d < 20*time.Millisecond {
		t.Errorf("third attempt after %v", d)
	}
	eventually(t, "3 recorded attempts", func() bool { return len(h.deliveries(w.ID)) == 3 })
	ds := h.deliveries(w.ID) // newest first
	want := []struct {
		outcome string
		status  int
	}{{lifeline.DeliveryDelivered, 200}, {lifeline.DeliveryRetrying, 503}, {lifeline.DeliveryRetrying, 500}}
	for i, d := range ds {
		if d.Outcome != want[i].outcome || d.StatusCode != want[i].status || d.Attempt != 3-i || d.ID != id {
			t.Errorf("delivery %d: %+v", i, d)
		}
		if (d.Outcome == lifeline.DeliveryRetrying) != (d.NextAttemptAt != nil) {
			t.Errorf("delivery %d: next_attempt_at %v", i, d.NextAttemptAt)
		}
	}
}

func TestWebhookGivesUpAfterMaxAttempts(t *testing.T) {
	h := start(t, stream.Config{WebhookBackoff: time.Millisecond, WebhookMaxAttempts: 3, WebhookTimeout: 200 * time.Millisecond})
	// The first endpoint hangs past the timeout; the second refuses connections.
	release := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(func() { close(release); hang.Close() })
	slow := h.createWebhook(hang.URL, []string{"*"}, "")
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()
	refused := h.createWebhook(deadURL, []string{"*"}, "")

	h.register(h.admin, "a1")
	for _, w := range []lifeline.NewWebhook{slow, refused} {
		eventually(t, "3 attempts to "+w.URL, func() bool { return len(h.deliveries(w.ID)) == 3 })
		ds := h.deliveries(w.ID)
		if ds[0].Outcome != lifeline.DeliveryFailed || ds[0].Attempt != 3 || ds[0].Error == "" || ds[0].StatusCode != 0 {
			t.Errorf("%s: last attempt %+v", w.URL, ds[0])
		}
	}
}

func TestWebhookQueueOverflowDrops(t *testing.T) {
	h := start(t, stream.Config{WebhookQueueSize: 2})
	release := make(chan struct{})
	block := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release }))
	t.Cleanup(func() { close(release); block.Close() })
	w := h.createWebhook(block.URL, []string{"*"}, "")
	// The first event is in flight, two wait, the rest are dropped.
	evs := make([]lifeline.Event, 6)
	for i := range evs {
		evs[i] = lifeline.Event{Seq: int64(100 + i), Type: lifeline.EventAgentLifecycle, AgentID: "x", Timestamp: time.Now()}
	}
	h.svc.Publish(evs[:1])
	time.Sleep(50 * time.Millisecond)
	h.svc.Publish(evs[1:])
	eventually(t, "3 drops", func() bool { return len(h.deliveries(w.ID)) == 3 })
	for _, d := range h.deliveries(w.ID) {
		if d.Outcome != lifeline.DeliveryDropped || d.Attempt != 0 || d.EventSeq < 103 {
			t.Errorf("delivery %+v", d)
		}
	}
}

func TestWebhookAPI(t *testing.T) {
	h := start(t, stream.Config{})
	rc := newReceiver(t)
	coord, _ := h.newKey(lifeline.RoleCoordinator)

	t.Run("Invalid", func(t *testing.T) {
		for _, body := range []map[string]any{
			{"url": "ftp://x.example/", "events": []string{"*"}},
			{"url": "/relative", "events": []string{"*"}},
			{"url": "https://user:pw@x.example/", "events": []string{"*"}},
			{"url": "https://x.example/", "events": []string{}},
			{"url": "https://x.example/", "events": []string{"agent.nope"}},
			{"url": "https://x.example/", "events": []string{"*"}, "secret": "short"},
			{"url": "https://x.example/", "events": []string{"*"}, "extra": 1},
		} {
			r := expect(t, h.do("POST", "/api/v1/webhooks", h.admin, body), 400)
			if code := r.problem(t); code != lifeline.EInvalid {
				t.Errorf("%v: code %q", body, code)
			}
		}
	})
	t.Run("AdminOnly", func(t *testing.T) {
		expect(t, h.do("POST", "/api/v1/webhooks", coord, map[string]any{"url": rc.srv.URL, "events": []string{"*"}}), 403)
		expect(t, h.do("GET", "/api/v1/webhooks", coord, nil), 403)
		expect(t, h.do("GET", "/api/v1/webhooks/wh_x/deliveries", coord, nil), 403)
		expect(t, h.do("DELETE", "/api/v1/webhooks/wh_x", coord, nil), 403)
	})

	w := h.createWebhook(rc.srv.URL, []string{lifeline.EventAgentLifecycle, lifeline.EventTaskUpdate}, "")
	t.Run("ListAndGetHideTheSecret", func(t *testing.T) {
		r := expect(t, h.do("GET", "/api/v1/webhooks", h.admin, nil), 200)
		if strings.Contains(string(r.body), w.Secret) || !strings.Contains(string(r.body), w.ID) {
			t.Errorf("list: %s", r.body)
		}
		r = expect(t, h.do("GET", "/api/v1/webhooks/"+w.ID, h.admin, nil), 200)
		if strings.Contains(string(r.body), w.Secret) {
			t.Errorf("get shows the secret: %s", r.body)
		}
		expect(t, h.do("GET", "/api/v1/webhooks/wh_unknown", h.admin, nil), 404)
	})
	t.Run("SurvivesRestart", func(t *testing.T) {
		h.restart()
		h.register(h.admin, "after-restart")
		eventually(t, "a delivery after the restart", func() bool { return len(rc.deliveries()) == 1 })
		d := rc.deliveries()[0]
		if err := lifeline.VerifyWebhookSignature(w.Secret, d.header.Get("Lifeline-Signature"), d.body, time.Now(), time.Minute); err != nil {
			t.Errorf("signature after restart: %v", err)
		}
	})
	t.Run("Delete", func(t *testing.T) {
		expect(t, h.do("DELETE", "/api/v1/webhooks/"+w.ID, h.admin, nil), 204)
		expect(t, h.do("DELETE", "/api/v1/webhooks/"+w.ID, h.admin, nil), 404)
		expect(t, h.do("GET", "/api/v1/webhooks/"+w.ID+"/deliveries", h.admin, nil), 404)
		h.register(h.admin, "after-delete")
		time.Sleep(50 * time.Millisecond)
		if n := len(rc.deliveries()); n != 1 {
			t.Errorf("%d deliveries after delete, want still 1", n)
		}
		var l struct {
			Webhooks []lifeline.Webhook `json:"webhooks"`
		}
		expect(t, h.do("GET", "/api/v1/webhooks", h.admin, nil), 200).json(t, &l)
		if len(l.Webhooks) != 0 {
			t.Errorf("webhooks after delete: %+v", l.Webhooks)
		}
	})
}
