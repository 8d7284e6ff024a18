package stream

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/lifeline-dev/lifeline"
	"github.com/lifeline-dev/lifeline/api"
)

// Webhook deliveries: every matching event is POSTed as JSON (the Event, as in the
// event log) to the webhook's URL, signed with its secret:
//
//	Lifeline-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
//	Lifeline-Event:     <event type>
//	Lifeline-Delivery:  <delivery id, the same on every attempt>
//
// A 2xx answer within WebhookTimeout delivers it. Anything else is retried with
// exponential backoff and jitter, up to WebhookMaxAttempts attempts. Redirects are not
// followed. Deliveries to one webhook are made one at a time, in event order, from a
// queue of at most WebhookQueueSize events: while an endpoint fails, its queue fills
// and further events are dropped (and recorded as dropped); other webhooks and the
// engine are never held up. Registrations are stored; queued deliveries and the
// delivery history are kept in memory and do not survive a restart.

// endpoint is the delivery state of one webhook.
type endpoint struct {
	s      *Service
	hook   *lifeline.Webhook // immutable
	ctx    context.Context   // cancelled when the webhook is deleted or the service closes
	cancel context.CancelFunc
	wake   chan struct{}

	mu      sync.Mutex
	queue   []*lifeline.Event
	history []*lifeline.WebhookDelivery // oldest first, at most WebhookHistory
}

// startEndpoint starts delivering to w.
func (s *Service) startEndpoint(w *lifeline.Webhook) {
	ctx, cancel := context.WithCancel(s.ctx)
	ep := &endpoint{s: s, hook: w, ctx: ctx, cancel: cancel, wake: make(chan struct{}, 1)}
	s.hooksMu.Lock()
	s.hooks[w.ID] = ep
	s.hooksMu.Unlock()
	if !s.goroutine(ep.run) {
		cancel()
	}
}

// dispatchWebhooks queues ev for every webhook that subscribes to its type.
func (s *Service) dispatchWebhooks(ev *lifeline.Event) {
	s.hooksMu.RLock()
	defer s.hooksMu.RUnlock()
	for _, ep := range s.hooks {
		if ep.hook.Matches(ev.Type) {
			ep.enqueue(ev)
		}
	}
}

func (ep *endpoint) enqueue(ev *lifeline.Event) {
	ep.mu.Lock()
	if len(ep.queue) >= ep.s.cfg.WebhookQueueSize {
		ep.recordLocked(&lifeline.WebhookDelivery{
			ID: newDeliveryID(), EventSeq: ev.Seq, EventType: ev.Type,
			At: ep.s.now().Round(0).UTC(), Outcome: lifeline.DeliveryDropped,
			Error: "the webhook's delivery queue is full",
		})
		ep.mu.Unlock()
		ep.s.stats.hookDropped.Add(1)
		return
	}
	ep.queue = append(ep.queue, ev)
	ep.mu.Unlock()
	select {
	case ep.wake <- struct{}{}:
	default:
	}
}

// run delivers the queued events one at a time until the webhook is deleted or the
// service closes.
func (ep *endpoint) run() {
	for {
		ep.mu.Lock()
		var ev *lifeline.Event
		if len(ep.queue) > 0 {
			ev = ep.queue[0]
			ep.queue[0] = nil
			ep.queue = ep.queue[1:]
			if len(ep.queue) == 0 {
				ep.queue = nil
			}
		}
		ep.mu.Unlock()
		if ev == nil {
			select {
			case <-ep.ctx.Done():
				return
			case <-ep.wake:
			}
			continue
		}
		if !ep.deliver(ev) {
			return
		}
	}
}

// deliver makes up to WebhookMaxAttempts attempts. It reports false when the endpoint
// is stopping.
func (ep *endpoint) deliver(ev *lifeline.Event) bool {
	cfg := &ep.s.cfg
	body, err := json.Marshal(ev)
	if err != nil {
		ep.s.log.Error("stream: encode webhook event", "seq", ev.Seq, "err", err)
		return true
	}
	id := newDeliveryID()
	for attempt := 1; ; attempt++ {
		start := time.Now()
		status, err := ep.post(body, id, ev.Type)
		if ep.ctx.Err() != nil {
			return false
		}
		d := &lifeline.WebhookDelivery{
			ID: id, EventSeq: ev.Seq, EventType: ev.Type, Attempt: attempt,
			At: ep.s.now().Round(0).UTC(), StatusCode: status, DurationMS: time.Since(start).Milliseconds(),
		}
		switch {
		case err == nil && status >= 200 && status < 300:
			d.Outcome = lifeline.DeliveryDelivered
			ep.record(d)
			ep.s.stats.hookDelivered.Add(1)
			return true
		case err != nil:
			d.Error = truncate(err.Error(), 256)
		default:
			d.Error = "the endpoint answered " + strconv.Itoa(status)
		}
		if attempt >= cfg.WebhookMaxAttempts {
			d.Outcome = lifeline.DeliveryFailed
			ep.record(d)
			ep.s.stats.hookFailed.Add(1)
			ep.s.log.Warn("stream: webhook delivery failed", "webhook_id", ep.hook.ID, "seq", ev.Seq, "attempts", attempt, "err", d.Error)
			return true
		}
		wait := backoff(cfg.WebhookBackoff, cfg.WebhookMaxBackoff, attempt)
		next := d.At.Add(wait)
		d.Outcome, d.NextAttemptAt = lifeline.DeliveryRetrying, &next
		ep.record(d)
		t := time.NewTimer(wait)
		select {
		case <-ep.ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
	}
}

// backoff returns the delay after the given (failed) attempt: base·2^(attempt-1),
// capped at max, with "equal jitter" (a random point in its upper half), so that many
// failing deliveries do not retry in lockstep.
func backoff(base, max time.Duration, attempt int) time.Duration {
	d := base
	for i := 1; i < attempt && d < max; i++ {
		d *= 2
	}
	d = min(d, max)
	half := d / 2
	return half + time.Duration(mrand.Int64N(int64(half)+1))
}

// post sends one attempt and returns the response status.
func (ep *endpoint) post(body []byte, deliveryID, eventType string) (int, error) {
	ctx, cancel := context.WithTimeout(ep.ctx, ep.s.cfg.WebhookTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.hook.URL, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Lifeline-Webhook/1")
	req.Header.Set(lifeline.HeaderWebhookSignature, lifeline.SignWebhook(ep.hook.Secret, ep.s.now(), body))
	req.Header.Set(lifeline.HeaderWebhookEvent, eventType)
	req.Header.Set(lifeline.HeaderWebhookDelivery, deliveryID)
	resp, err := ep.s.cfg.WebhookClient.Do(req)
	if err != nil {
		return 0, err
	}
	// Read a little of the body so the connection can be reused; the rest is the
	// endpoint's business.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return resp.StatusCode, nil
}

func (ep *endpoint) record(d *lifeline.WebhookDelivery) {
	ep.mu.Lock()
	ep.recordLocked(d)
	ep.mu.Unlock()
}

func (ep *endpoint) recordLocked(d *lifeline.WebhookDelivery) {
	d.WebhookID = ep.hook.ID
	if len(ep.history) >= ep.s.cfg.WebhookHistory {
		copy(ep.history, ep.history[1:])
		ep.history = ep.history[:len(ep.history)-1]
	}
	ep.history = append(ep.history, d)
}

func newDeliveryID() string { return "dlv_" + ulid.Make().String() }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// requireAdmin returns forbidden unless the caller is an admin (or the system).
func requireAdmin(ctx context.Context) error {
	if c, ok := lifeline.CallerFrom(ctx); ok && c.Role != lifeline.RoleAdmin {
		return lifeline.Errorf(lifeline.EForbidden, "managing webhooks needs an admin key")
	}
	return nil
}

// CreateWebhook registers a webhook and starts delivering to it. Admins only.
func (s *Service) CreateWebhook(ctx context.Context, r *lifeline.WebhookRequest) (*lifeline.NewWebhook, error) {
	if err := requireAdmin(ctx); err != nil {
		return nil, err
	}
	if s.cfg.Webhooks == nil {
		return nil, lifeline.Errorf(lifeline.EUnavailable, "webhooks are not enabled")
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	secret := r.Secret
	if secret == "" {
		var b [20]byte
		_, _ = rand.Read(b[:])
		secret = "whsec_" + base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:])
	}
	events := append([]string(nil), r.Events...)
	w := &lifeline.Webhook{
		ID:        "wh_" + ulid.Make().String(),
		URL:       r.URL,
		Events:    events,
		CreatedAt: s.now().Round(0).UTC(),
		Secret:    secret,
	}
	if err := s.cfg.Webhooks.CreateWebhook(ctx, w); err != nil {
		return nil, err
	}
	s.startEndpoint(w)
	return &lifeline.NewWebhook{Webhook: *w, Secret: secret}, nil
}

// Webhooks lists every webhook without secrets, oldest first. Admins only.
func (s *Service) Webhooks(ctx context.Context) ([]*lifeline.Webhook, error) {
	if err := requireAdmin(ctx); err != nil {
		return nil, err
	}
	if s.cfg.Webhooks == nil {
		return []*lifeline.Webhook{}, nil
	}
	hooks, err := s.cfg.Webhooks.Webhooks(ctx)
	if err != nil {
		return nil, err
	}
	for _, w := range hooks {
		w.Secret = ""
	}
	return hooks, nil
}

func (s *Service) endpoint(id string) (*endpoint, error) {
	s.hooksMu.RLock()
	ep := s.hooks[id]
	s.hooksMu.RUnlock()
	if ep == nil {
		return nil, lifeline.Errorf(lifeline.ENotFound, "webhook %q not found", id)
	}
	return ep, nil
}

// FindWebhookByID returns one webhook without its secret. Admins only.
func (s *Service) FindWebhookByID(ctx context.Context, id string) (*lifeline.Webhook, error) {
	if err := requireAdmin(ctx); err != nil {
		return nil, err
	}
	ep, err := s.endpoint(id)
	if err != nil {
		return nil, err
	}
	w := *ep.hook
	w.Secret = ""
	return &w, nil
}

// DeleteWebhook removes a webhook; its queued deliveries are abandoned and an attempt
// in flight is cancelled. Admins only.
func (s *Service) DeleteWebhook(ctx context.Context, id string) error {
	if err := requireAdmin(ctx); err != nil {
		return err
	}
	if s.cfg.Webhooks == nil {
		return lifeline.Errorf(lifeline.ENotFound, "webhook %q not found", id)
	}
	if err := s.cfg.Webhooks.DeleteWebhook(ctx, id); err != nil {
		return err
	}
	s.hooksMu.Lock()
	ep := s.hooks[id]
	delete(s.hooks, id)
	s.hooksMu.Unlock()
	if ep != nil {
		ep.cancel()
	}
	return nil
}

// WebhookDeliveries returns the recent attempts of a webhook, newest first. Admins
// only.
func (s *Service) WebhookDeliveries(ctx context.Context, id string) ([]*lifeline.WebhookDelivery, error) {
	if err := requireAdmin(ctx); err != nil {
		return nil, err
	}
	ep, err := s.endpoint(id)
	if err != nil {
		return nil, err
	}
	ep.mu.Lock()
	defer ep.mu.Unlock()
	out := make([]*lifeline.WebhookDelivery, len(ep.history))
	for i, d := range ep.history {
		c := *d
		out[len(out)-1-i] = &c
	}
	return out, nil
}

// HTTP handlers of the webhook API.

type webhookList struct {
	Webhooks []*lifeline.Webhook `json:"webhooks"`
}

type deliveryList struct {
	Deliveries []*lifeline.WebhookDelivery `json:"deliveries"`
}

func (s *Service) handleCreateWebhook(w http.ResponseWriter, r *http.Request) {
	var req lifeline.WebhookRequest
	if err := api.DecodeJSON(w, r, &req, s.cfg.MaxBodyBytes); err != nil {
		api.WriteProblem(w, r, err)
		return
	}
	hook, err := s.CreateWebhook(r.Context(), &req)
	if err != nil {
		s.problem(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Location", "/api/v1/webhooks/"+hook.ID)
	api.WriteJSON(w, http.StatusCreated, hook)
}

func (s *Service) handleListWebhooks(w http.ResponseWriter, r *http.Request) {
	hooks, err := s.Webhooks(r.Context())
	if err != nil {
		s.problem(w, r, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, webhookList{Webhooks: hooks})
}

// webhookID reads and validates the {webhook_id} path segment.
func webhookID(r *http.Request) (string, error) {
	id := r.PathValue("webhook_id")
	if err := lifeline.ValidateID("webhook_id", id); err != nil {
		return "", err
	}
	return id, nil
}

func (s *Service) handleGetWebhook(w http.ResponseWriter, r *http.Request) {
	id, err := webhookID(r)
	if err != nil {
		api.WriteProblem(w, r, err)
		return
	}
	hook, err := s.FindWebhookByID(r.Context(), id)
	if err != nil {
		s.problem(w, r, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, hook)
}

func (s *Service) handleDeleteWebhook(w http.ResponseWriter, r *http.Request) {
	id, err := webhookID(r)
	if err != nil {
		api.WriteProblem(w, r, err)
		return
	}
	if err := s.DeleteWebhook(r.Context(), id); err != nil {
		s.problem(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Service) handleListDeliveries(w http.ResponseWriter, r *http.Request) {
	id, err := webhookID(r)
	if err != nil {
		api.WriteProblem(w, r, err)
		return
	}
	ds, err := s.WebhookDeliveries(r.Context(), id)
	if err != nil {
		s.problem(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	api.WriteJSON(w, http.StatusOK, deliveryList{Deliveries: ds})
}
