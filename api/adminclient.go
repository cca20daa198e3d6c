package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/bouncer/bouncer/store"
)

// send makes a request with a JSON body (if in is not nil) and decodes a
// JSON answer into out (if not nil). 404 wraps store.ErrNotFound and 409
// store.ErrExists.
func (c *Client) send(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encoding request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.BaseURL+path, body)
	if err != nil {
		return err
	}
	if in != nil || method == http.MethodPost || method == http.MethodPut {
		// The API takes state-changing requests only with a JSON type
		// (browser.go), a body or not.
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK, http.StatusCreated, http.StatusNoContent:
	case http.StatusNotFound:
		return fmt.Errorf("%w: %s", store.ErrNotFound, path)
	case http.StatusConflict:
		return fmt.Errorf("%w: %s", store.ErrExists, path)
	default:
		var eb errorBody
		json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&eb)
		return &StatusError{Code: resp.StatusCode, Message: eb.Error}
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxResponseBytes)).Decode(out); err != nil {
		return fmt.Errorf("decoding admin API answer: %w", err)
	}
	return nil
}

// AddSuppression puts s.Address on the list with s.Reason, like
// bolt.DB.AddSuppression (source "manual").
func (c *Client) AddSuppression(ctx context.Context, s store.Suppression) error {
	return c.send(ctx, http.MethodPost, "/v1/suppressions", SuppressionRequest{Address: s.Address, Reason: s.Reason}, nil)
}

// RemoveSuppression takes addr off the list, like
// bolt.DB.RemoveSuppression.
func (c *Client) RemoveSuppression(ctx context.Context, addr string) error {
	return c.send(ctx, http.MethodDelete, "/v1/suppressions/"+url.PathEscape(addr), nil, nil)
}

// Storms lists the domains flagged by the storm guard.
func (c *Client) Storms(ctx context.Context) ([]store.Storm, error) {
	var sr StormsResponse
	err := c.send(ctx, http.MethodGet, "/v1/storms", nil, &sr)
	return sr.Storms, err
}

// Holds lists the held suppressions of domain ("" for all).
func (c *Client) Holds(ctx context.Context, domain string) ([]store.Hold, error) {
	path := "/v1/holds"
	if domain != "" {
		path += "?" + url.Values{"domain": {domain}}.Encode()
	}
	var hr HoldsResponse
	err := c.send(ctx, http.MethodGet, path, nil, &hr)
	return hr.Holds, err
}

// ReleaseHolds suppresses the held addresses of domain and clears its
// flag, like bolt.DB.ReleaseHolds.
func (c *Client) ReleaseHolds(ctx context.Context, domain string) (int, error) {
	var cr CountResponse
	err := c.send(ctx, http.MethodPost, "/v1/storms/"+url.PathEscape(domain)+"/release", nil, &cr)
	return cr.Count, err
}

// DropHolds forgets the held addresses of domain and clears its flag,
// like bolt.DB.DropHolds.
func (c *Client) DropHolds(ctx context.Context, domain string) (int, error) {
	var cr CountResponse
	err := c.send(ctx, http.MethodPost, "/v1/storms/"+url.PathEscape(domain)+"/drop", nil, &cr)
	return cr.Count, err
}

// SetMXCheck stores an MX check of domain, like bolt.DB.SetMXCheck.
func (c *Client) SetMXCheck(ctx context.Context, domain string, check store.MXCheck, lift bool) (bool, int, error) {
	var mr MXResponse
	err := c.send(ctx, http.MethodPut, "/v1/domains/"+url.PathEscape(domain)+"/mx", MXRequest{Check: check, Lift: lift}, &mr)
	return mr.Recovered, mr.Lifted, err
}

// OutboxRetry moves dead letters back to the queue (all with no seqs),
// like bolt.DB.OutboxRetry.
func (c *Client) OutboxRetry(ctx context.Context, seqs ...uint64) (int, error) {
	return c.outboxMove(ctx, "retry", seqs)
}

// OutboxDrop deletes dead letters (all with no seqs), like
// bolt.DB.OutboxDrop.
func (c *Client) OutboxDrop(ctx context.Context, seqs ...uint64) (int, error) {
	return c.outboxMove(ctx, "drop", seqs)
}

func (c *Client) outboxMove(ctx context.Context, op string, seqs []uint64) (int, error) {
	var cr CountResponse
	err := c.send(ctx, http.MethodPost, "/v1/outbox/"+op, OutboxRequest{Seqs: seqs, All: len(seqs) == 0}, &cr)
	return cr.Count, err
}
