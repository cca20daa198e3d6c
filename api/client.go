package api

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/bouncer/bouncer/store"
)

// Client calls a running bouncer's admin API.
type Client struct {
	BaseURL string // e.g. "http://127.0.0.1:8025"
	Token   string // bearer token, if the server wants one
	HTTP    *http.Client
}

// maxResponseBytes caps what the client reads from one answer.
const maxResponseBytes = 256 << 20

// StatusError is an answer other than 200.
type StatusError struct {
	Code    int
	Message string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("admin API answered %d: %s", e.Code, e.Message)
}

func (c *Client) get(ctx context.Context, path string, q url.Values) (*http.Response, error) {
	u := c.BaseURL + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
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
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		var eb errorBody
		json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&eb)
		if resp.StatusCode == http.StatusNotFound {
			return nil, fmt.Errorf("%w: %s", store.ErrNotFound, path)
		}
		return nil, &StatusError{Code: resp.StatusCode, Message: eb.Error}
	}
	return resp, nil
}

func (c *Client) getJSON(ctx context.Context, path string, q url.Values, v any) error {
	resp, err := c.get(ctx, path, q)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxResponseBytes)).Decode(v); err != nil {
		return fmt.Errorf("decoding admin API answer: %w", err)
	}
	return nil
}

// Query lists bounce records like bolt.DB.Query.
func (c *Client) Query(ctx context.Context, f store.Filter) ([]store.Record, error) {
	recs, _, err := c.Page(ctx, f, "")
	return recs, err
}

// Page lists one page of bounce records like bolt.DB.Page: older than
// the record before ("" for the newest), and the cursor of the next page.
func (c *Client) Page(ctx context.Context, f store.Filter, before string) ([]store.Record, string, error) {
	q := filterValues(f)
	if before != "" {
		q.Set("before", before)
	}
	var br BouncesResponse
	err := c.getJSON(ctx, "/v1/bounces", q, &br)
	return br.Records, br.Next, err
}

// filterValues encodes f as query parameters.
func filterValues(f store.Filter) url.Values {
	q := url.Values{}
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	set("status", f.Status)
	set("domain", f.Domain)
	set("recipient", f.Recipient)
	set("kind", string(f.Kind))
	if !f.Since.IsZero() {
		q.Set("since", f.Since.UTC().Format(time.RFC3339Nano))
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	return q
}

// Outbox lists one page of queued events (dead: dead letters) after the
// event numbered after (0: from the oldest), with the queue sizes.
func (c *Client) Outbox(ctx context.Context, dead bool, after uint64, limit int) (*OutboxResponse, error) {
	q := url.Values{}
	if dead {
		q.Set("dead", "1")
	}
	if after > 0 {
		q.Set("after", strconv.FormatUint(after, 10))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var or OutboxResponse
	if err := c.getJSON(ctx, "/v1/outbox", q, &or); err != nil {
		return nil, err
	}
	return &or, nil
}

// OutboxEvents calls fn for each queued event (dead: each dead letter),
// oldest first, a page at a time, like bolt.DB.OutboxEvents.
func (c *Client) OutboxEvents(ctx context.Context, dead bool, fn func(store.OutboxEvent) error) error {
	var after uint64
	for {
		page, err := c.Outbox(ctx, dead, after, maxOutboxLimit)
		if err != nil {
			return err
		}
		for _, ev := range page.Events {
			if err := fn(ev); err != nil {
				return err
			}
		}
		if page.Next == 0 || page.Next <= after {
			return nil
		}
		after = page.Next
	}
}

// Export streams GET /v1/export/{what} in format to w. what is "bounces"
// (filtered by f) or "suppressions" (by f.Domain). A stream the server
// broke off is an error, though w may have part of it.
func (c *Client) Export(ctx context.Context, what, format string, f store.Filter, w io.Writer) error {
	q := filterValues(f)
	q.Del("limit")
	q.Set("format", format)
	resp, err := c.get(ctx, "/v1/export/"+url.PathEscape(what), q)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(w, resp.Body); err != nil {
		return fmt.Errorf("reading export: %w", err)
	}
	if msg := resp.Trailer.Get(ExportErrorTrailer); msg != "" {
		return fmt.Errorf("export broke off: %s", msg)
	}
	return nil
}

// Suppressed returns the suppression entry of addr, or an error wrapping
// store.ErrNotFound.
func (c *Client) Suppressed(ctx context.Context, addr string) (*store.Suppression, error) {
	var s store.Suppression
	if err := c.getJSON(ctx, "/v1/suppressions/"+url.PathEscape(addr), nil, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// Suppressions streams the suppression list of domain ("" for all).
func (c *Client) Suppressions(ctx context.Context, domain string, fn func(store.Suppression) error) error {
	q := url.Values{}
	if domain != "" {
		q.Set("domain", domain)
	}
	resp, err := c.get(ctx, "/v1/suppressions", q)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var s store.Suppression
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			return fmt.Errorf("decoding admin API answer: %w", err)
		}
		if err := fn(s); err != nil {
			return err
		}
	}
	return sc.Err()
}

// Domains lists recipient domains like bolt.DB.Domains.
func (c *Client) Domains(ctx context.Context, status string) ([]store.DomainStat, error) {
	q := url.Values{}
	if status != "" {
		q.Set("status", status)
	}
	var dr DomainsResponse
	err := c.getJSON(ctx, "/v1/domains", q, &dr)
	return dr.Domains, err
}

// RecentDomains lists recipient domains like bolt.DB.RecentDomains: the
// most recently bounced first, at most f.Limit (0: all).
func (c *Client) RecentDomains(ctx context.Context, f store.DomainFilter) ([]store.DomainStat, error) {
	q := url.Values{}
	if f.Status != "" {
		q.Set("status", f.Status)
	}
	q.Set("limit", strconv.Itoa(f.Limit))
	var dr DomainsResponse
	err := c.getJSON(ctx, "/v1/domains", q, &dr)
	return dr.Domains, err
}
