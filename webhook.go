package lifeline

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Webhook limits.
const (
	// MaxWebhookURLLength bounds a webhook's URL.
	MaxWebhookURLLength = 2048
	// MinWebhookSecretLength and MaxWebhookSecretLength bound a chosen signing secret.
	MinWebhookSecretLength = 16
	MaxWebhookSecretLength = 256
	// MaxWebhookEvents bounds the event filter of one webhook.
	MaxWebhookEvents = 32
	// WebhookAllEvents in a webhook's events subscribes it to every event type.
	WebhookAllEvents = "*"
)

// Webhook delivery headers. Every delivery is a JSON POST of one Event, signed with the
// webhook's secret.
const (
	// HeaderWebhookSignature is "t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>".
	HeaderWebhookSignature = "Lifeline-Signature"
	// HeaderWebhookEvent is the event type.
	HeaderWebhookEvent = "Lifeline-Event"
	// HeaderWebhookDelivery is the delivery id; every attempt of one delivery carries
	// the same id, so receivers can drop duplicates.
	HeaderWebhookDelivery = "Lifeline-Delivery"
)

// WebhookEventTypes are the event types a webhook may subscribe to, besides "*".
var WebhookEventTypes = []string{
	EventAgentLifecycle,
	EventLeaseAcquired,
	EventLeaseReleased,
	EventLeaseExpired,
	EventTaskUpdate,
}

// Webhook is a registered HTTP endpoint that receives events of the chosen types.
type Webhook struct {
	ID        string    `json:"id"`
	URL       string    `json:"url"`
	Events    []string  `json:"events"`
	CreatedAt time.Time `json:"created_at"`
	// Secret signs deliveries. It is stored, because signing needs it, but shown only
	// once, when the webhook is created.
	Secret string `json:"-"`
}

// Matches reports whether the webhook subscribes to events of type typ.
func (w *Webhook) Matches(typ string) bool {
	for _, e := range w.Events {
		if e == typ || e == WebhookAllEvents {
			return true
		}
	}
	return false
}

// NewWebhook is a freshly created webhook with its signing secret, shown once.
type NewWebhook struct {
	Webhook
	Secret string `json:"secret"`
}

// WebhookRequest is the body of POST /api/v1/webhooks.
type WebhookRequest struct {
	URL    string   `json:"url"`
	Events []string `json:"events"`
	// Secret is the signing secret; empty lets the server generate one.
	Secret string `json:"secret,omitempty"`
}

// Validate checks a webhook request: an absolute http or https URL without user
// information, at least one known event type (or "*"), and a secret of reasonable
// length when one is given.
func (r *WebhookRequest) Validate() error {
	if r.URL == "" || len(r.URL) > MaxWebhookURLLength {
		return Errorf(EInvalid, "url must be an absolute http or https URL of at most %d bytes", MaxWebhookURLLength)
	}
	u, err := url.Parse(r.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Opaque != "" {
		return Errorf(EInvalid, "url must be an absolute http or https URL")
	}
	if u.User != nil {
		return Errorf(EInvalid, "url must not carry credentials; deliveries are authenticated by their signature")
	}
	if u.Fragment != "" {
		return Errorf(EInvalid, "url must not have a fragment")
	}
	if len(r.Events) == 0 || len(r.Events) > MaxWebhookEvents {
		return Errorf(EInvalid, "events must list 1 to %d event types", MaxWebhookEvents)
	}
	for _, e := range r.Events {
		if !validWebhookEvent(e) {
			return Errorf(EInvalid, "unknown event type %q; use %s or %q", e, strings.Join(WebhookEventTypes, ", "), WebhookAllEvents)
		}
	}
	if r.Secret != "" && (len(r.Secret) < MinWebhookSecretLength || len(r.Secret) > MaxWebhookSecretLength) {
		return Errorf(EInvalid, "secret must be %d to %d bytes (or absent: the server generates one)", MinWebhookSecretLength, MaxWebhookSecretLength)
	}
	return nil
}

func validWebhookEvent(e string) bool {
	if e == WebhookAllEvents {
		return true
	}
	for _, t := range WebhookEventTypes {
		if e == t {
			return true
		}
	}
	return false
}

// Outcomes of a webhook delivery attempt.
const (
	// DeliveryDelivered: the endpoint answered 2xx.
	DeliveryDelivered = "delivered"
	// DeliveryRetrying: the attempt failed and another one is scheduled.
	DeliveryRetrying = "retrying"
	// DeliveryFailed: the last allowed attempt failed; the event is not delivered.
	DeliveryFailed = "failed"
	// DeliveryDropped: the endpoint's queue was full; no attempt was made.
	DeliveryDropped = "dropped"
)

// WebhookDelivery is one attempt (or a drop) of delivering an event to a webhook.
type WebhookDelivery struct {
	// ID is the delivery id, shared by every attempt of the same event.
	ID        string `json:"id"`
	WebhookID string `json:"webhook_id"`
	EventSeq  int64  `json:"event_seq"`
	EventType string `json:"event_type"`
	// Attempt counts from 1; 0 for a dropped delivery.
	Attempt int       `json:"attempt"`
	At      time.Time `json:"at"`
	Outcome string    `json:"outcome"`
	// StatusCode is the endpoint's HTTP status, absent when there was no response.
	StatusCode int `json:"status_code,omitempty"`
	// Error says why the attempt failed.
	Error string `json:"error,omitempty"`
	// DurationMS is how long the attempt took.
	DurationMS int64 `json:"duration_ms"`
	// NextAttemptAt is set on retrying outcomes.
	NextAttemptAt *time.Time `json:"next_attempt_at,omitempty"`
}

// WebhookService manages webhooks. Every method is for admin keys only (forbidden
// otherwise).
type WebhookService interface {
	// CreateWebhook registers a webhook and returns it with its secret, shown once.
	// Returns invalid for a bad request.
	CreateWebhook(ctx context.Context, r *WebhookRequest) (*NewWebhook, error)
	// Webhooks lists every webhook, oldest first, without secrets.
	Webhooks(ctx context.Context) ([]*Webhook, error)
	// FindWebhookByID returns one webhook without its secret. Returns not_found if
	// unknown.
	FindWebhookByID(ctx context.Context, id string) (*Webhook, error)
	// DeleteWebhook removes a webhook; queued deliveries are discarded. Returns
	// not_found if unknown.
	DeleteWebhook(ctx context.Context, id string) error
	// WebhookDeliveries returns the most recent delivery attempts, newest first.
	// Returns not_found if the webhook is unknown.
	WebhookDeliveries(ctx context.Context, id string) ([]*WebhookDelivery, error)
}

// SignWebhook returns the Lifeline-Signature header value for body sent at t:
// "t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>".
func SignWebhook(secret string, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + webhookMAC(secret, ts, body)
}

func webhookMAC(secret, ts string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// VerifyWebhookSignature checks a Lifeline-Signature header against body: one of its
// v1 signatures must be the HMAC of its timestamp and body, and the timestamp must be
// within tolerance of now (replay protection; tolerance ≤ 0 skips that check). It
// returns unauthorized when the signature does not verify.
func VerifyWebhookSignature(secret, header string, body []byte, now time.Time, tolerance time.Duration) error {
	var ts string
	var sigs []string
	for _, part := range strings.Split(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		switch k {
		case "t":
			ts = v
		case "v1":
			sigs = append(sigs, v)
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(sigs) == 0 {
		return Errorf(EUnauthorized, "malformed %s header", HeaderWebhookSignature)
	}
	if tolerance > 0 {
		if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
			return Errorf(EUnauthorized, "signature timestamp is outside the tolerance")
		}
	}
	want := webhookMAC(secret, ts, body)
	for _, s := range sigs {
		if hmac.Equal([]byte(s), []byte(want)) {
			return nil
		}
	}
	return Errorf(EUnauthorized, "signature does not match")
}
