// Package push delivers outbox events (store.OutboxEvent) to sending
// tools: listmonk's bounce webhook and generic signed webhooks. A Worker
// reads the durable outbox of a bolt.DB and delivers at least once, with
// exponential backoff, moving events that keep failing to the dead-letter
// list.
//
// Every request carries the event's stable id in an Idempotency-Key
// header, so a receiver can drop the duplicates that at-least-once
// delivery allows.
package push

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/bouncer/bouncer/store"
)

// Target delivers one event. An error wrapped with Permanent is not
// retried.
type Target interface {
	Deliver(ctx context.Context, ev store.OutboxEvent) error
}

// permanentError marks a failure that retrying cannot fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err as not worth retrying.
func Permanent(err error) error { return &permanentError{err} }

// IsPermanent reports whether err was marked with Permanent.
func IsPermanent(err error) bool {
	var pe *permanentError
	return errors.As(err, &pe)
}

// IdempotencyHeader carries store.OutboxEvent.ID on every request.
const IdempotencyHeader = "Idempotency-Key"

// maxErrorBody is how much of a failed answer goes into the error.
const maxErrorBody = 200

// post sends body to url and turns the answer into an error: 2xx is
// success, 408, 425, 429 and 5xx are retried, other codes are permanent.
func post(ctx context.Context, hc *http.Client, req *http.Request) error {
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("posting to %s: %w", req.URL.Redacted(), err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // reuse the connection
	if resp.StatusCode/100 == 2 {
		return nil
	}
	err = fmt.Errorf("posting to %s: answer %d: %s", req.URL.Redacted(), resp.StatusCode,
		strings.ToValidUTF8(strings.TrimSpace(string(msg)), "?"))
	switch c := resp.StatusCode; {
	case c == 408, c == 425, c == 429, c >= 500:
		return err
	}
	return Permanent(err)
}

// Listmonk posts events to listmonk's bounce webhook, POST
// {URL}/webhooks/bounce, as documented at https://listmonk.app/docs/bounces/
// ("Webhook API"): a JSON body with email, campaign_uuid (optional),
// source, type ("hard", "soft" or "complaint") and meta, authenticated
// with the basic auth of a listmonk API user that has the
// webhooks:post_bounce permission.
type Listmonk struct {
	URL      string // listmonk's root URL, e.g. https://lists.example.com
	User     string // API user
	Password string // its token
	Source   string // the "source" field; "bouncer" if empty
	HTTP     *http.Client
}

// ListmonkBounce is the body of listmonk's bounce webhook.
type ListmonkBounce struct {
	Email        string `json:"email"`
	CampaignUUID string `json:"campaign_uuid,omitempty"`
	Source       string `json:"source"`
	Type         string `json:"type"`
	// Meta is free-form JSON kept with the bounce. listmonk reads it as
	// raw JSON into a JSONB column; we send an object.
	Meta json.RawMessage `json:"meta,omitempty"`
}

// uuidRE matches a UUID as listmonk stores campaign ids. Other campaign
// ids (a short VERP campaign name) go into meta instead, since listmonk
// rejects a campaign_uuid that is not a UUID.
var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// listmonkMeta is what goes into ListmonkBounce.Meta.
type listmonkMeta struct {
	EventID   string `json:"bouncer_event_id"`
	RecordID  string `json:"bouncer_record_id"`
	Status    string `json:"status,omitempty"`
	Reason    string `json:"reason,omitempty"`
	Campaign  string `json:"campaign,omitempty"`
	RemoteMTA string `json:"remote_mta,omitempty"`
	Diag      string `json:"diagnostic,omitempty"`
}

// ListmonkBody builds the webhook body for ev.
func (l *Listmonk) ListmonkBody(ev store.OutboxEvent) ([]byte, error) {
	meta, err := json.Marshal(listmonkMeta{
		EventID: ev.ID, RecordID: ev.RecordID, Status: ev.Status, Reason: ev.Reason,
		Campaign: ev.Campaign, RemoteMTA: ev.RemoteMTA, Diag: ev.Diagnostic,
	})
	if err != nil {
		return nil, err
	}
	b := ListmonkBounce{Email: ev.Addr, Source: l.Source, Type: ev.Type, Meta: meta}
	if b.Source == "" {
		b.Source = "bouncer"
	}
	if uuidRE.MatchString(ev.Campaign) {
		b.CampaignUUID = strings.ToLower(ev.Campaign)
	}
	return json.Marshal(b)
}

// Deliver posts ev to listmonk.
func (l *Listmonk) Deliver(ctx context.Context, ev store.OutboxEvent) error {
	body, err := l.ListmonkBody(ev)
	if err != nil {
		return Permanent(fmt.Errorf("encoding listmonk bounce: %w", err))
	}
	req, err := http.NewRequest(http.MethodPost, strings.TrimSuffix(l.URL, "/")+"/webhooks/bounce", bytes.NewReader(body))
	if err != nil {
		return Permanent(fmt.Errorf("building listmonk request: %w", err))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(IdempotencyHeader, ev.ID)
	req.SetBasicAuth(l.User, l.Password)
	return post(ctx, l.HTTP, req)
}

// Webhook headers.
const (
	TimestampHeader = "X-Bouncer-Timestamp" // Unix seconds, decimal
	SignatureHeader = "X-Bouncer-Signature" // "sha256=" + hex HMAC-SHA256(secret, timestamp + "." + body)
)

// Webhook posts each event as JSON (store.OutboxEvent's fields) to URL,
// signed: SignatureHeader is the HMAC-SHA256 (RFC 2104) of the timestamp,
// a dot and the body under Secret, so a receiver can check both origin and
// freshness (see Verify).
type Webhook struct {
	URL    string
	Secret string
	HTTP   *http.Client
	Now    func() time.Time // time.Now if nil
}

// WebhookEvent is the body of a generic webhook request.
type WebhookEvent struct {
	ID         string    `json:"id"`
	Type       string    `json:"type"`
	Recipient  string    `json:"recipient"`
	Status     string    `json:"status,omitempty"`
	Reason     string    `json:"reason,omitempty"`
	Kind       string    `json:"kind"`
	Campaign   string    `json:"campaign,omitempty"`
	Diagnostic string    `json:"diagnostic,omitempty"`
	RemoteMTA  string    `json:"remote_mta,omitempty"`
	Suppressed bool      `json:"suppressed"`
	RecordID   string    `json:"record_id"`
	Received   time.Time `json:"received"`
}

// Sign returns the signature header value for body at timestamp ts.
func Sign(secret, ts string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Verify checks a signed webhook request: the signature over ts and body,
// and that ts is within maxSkew of now (against replay).
func Verify(secret, ts, sig string, body []byte, now time.Time, maxSkew time.Duration) error {
	n, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return errors.New("verifying webhook: bad timestamp")
	}
	if d := now.Sub(time.Unix(n, 0)); d > maxSkew || d < -maxSkew {
		return errors.New("verifying webhook: timestamp too far from now")
	}
	if !hmac.Equal([]byte(Sign(secret, ts, body)), []byte(sig)) {
		return errors.New("verifying webhook: bad signature")
	}
	return nil
}

// Deliver posts ev to the webhook.
func (w *Webhook) Deliver(ctx context.Context, ev store.OutboxEvent) error {
	body, err := json.Marshal(WebhookEvent{
		ID: ev.ID, Type: ev.Type, Recipient: ev.Addr, Status: ev.Status, Reason: ev.Reason,
		Kind: ev.Kind, Campaign: ev.Campaign, Diagnostic: ev.Diagnostic, RemoteMTA: ev.RemoteMTA,
		Suppressed: ev.Suppressed, RecordID: ev.RecordID, Received: ev.Created,
	})
	if err != nil {
		return Permanent(fmt.Errorf("encoding webhook event: %w", err))
	}
	req, err := http.NewRequest(http.MethodPost, w.URL, bytes.NewReader(body))
	if err != nil {
		return Permanent(fmt.Errorf("building webhook request: %w", err))
	}
	now := time.Now
	if w.Now != nil {
		now = w.Now
	}
	ts := strconv.FormatInt(now().Unix(), 10)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(IdempotencyHeader, ev.ID)
	req.Header.Set(TimestampHeader, ts)
	req.Header.Set(SignatureHeader, Sign(w.Secret, ts, body))
	return post(ctx, w.HTTP, req)
}
