package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/bouncer/bouncer/store"
)

// do sends one request with the given headers ("Host" sets the Host) and
// returns the status and the error message of a JSON error body.
func do(t *testing.T, method, u, body string, hdr map[string]string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	tcheck(t, err, "making request")
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	tcheck(t, err, method+" "+u)
	defer resp.Body.Close()
	var eb errorBody
	json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&eb)
	return resp.StatusCode, eb.Error
}

// TestBrowserCannotDriveAPI is finding 5 of issue 21: with no tokens (the
// loopback default), a page in the operator's browser sent a text/plain
// POST that added a suppression, another that emptied the dead-letter
// list, and through DNS rebinding read raw messages. Each is refused now,
// over a real listener, while the CLI's own requests still work.
func TestBrowserCannotDriveAPI(t *testing.T) {
	srv, db := newTestAPI(t)
	port := srv.URL[strings.LastIndex(srv.URL, ":")+1:]
	add := `{"address":"victim@example.com","reason":"csrf"}`
	for _, tc := range []struct {
		name, method, path, body string
		hdr                      map[string]string
		want                     int
	}{
		{"cross-site text/plain POST", "POST", "/v1/suppressions", add,
			map[string]string{"Origin": "http://evil.example", "Content-Type": "text/plain"}, 415},
		{"text/plain POST without Origin", "POST", "/v1/suppressions", add,
			map[string]string{"Content-Type": "text/plain;charset=UTF-8"}, 415},
		{"cross-site JSON POST", "POST", "/v1/suppressions", add,
			map[string]string{"Origin": "http://evil.example", "Content-Type": "application/json"}, 403},
		{"Sec-Fetch-Site cross-site", "POST", "/v1/suppressions", add,
			map[string]string{"Sec-Fetch-Site": "cross-site", "Content-Type": "application/json"}, 403},
		{"emptying dead letters cross-site", "POST", "/v1/outbox/drop", `{"all":true}`,
			map[string]string{"Origin": "http://evil.example", "Content-Type": "text/plain"}, 415},
		{"DELETE cross-site", "DELETE", "/v1/suppressions/user@dead.test", "",
			map[string]string{"Origin": "http://evil.example"}, 403},
		{"rebound read", "GET", "/v1/bounces", "", map[string]string{"Host": "evil.example:" + port}, 421},
		{"rebound raw read", "GET", "/v1/bounces/" + strings.Repeat("0", 24) + "/raw", "", map[string]string{"Host": "evil.example:" + port}, 421},
		{"rebound same-origin POST", "POST", "/v1/suppressions", add,
			map[string]string{"Host": "evil.example", "Origin": "http://evil.example", "Content-Type": "application/json"}, 421},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, msg := do(t, tc.method, srv.URL+tc.path, tc.body, tc.hdr)
			if code != tc.want || msg == "" {
				t.Fatalf("got %d %q, want %d with a message", code, msg, tc.want)
			}
		})
	}
	if _, err := db.Suppressed("victim@example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a refused request suppressed the victim: %v", err)
	}
	if _, err := db.Suppressed("user@dead.test"); err != nil {
		t.Errorf("a refused DELETE removed the suppression: %v", err)
	}

	// The CLI's client, a same-origin request, and the names that the
	// server goes by still work.
	c := &Client{BaseURL: srv.URL}
	tcheck(t, c.AddSuppression(context.Background(), store.Suppression{Address: "ok@example.com"}), "client POST")
	code, _ := do(t, "POST", srv.URL+"/v1/suppressions", `{"address":"same@example.com"}`,
		map[string]string{"Origin": srv.URL, "Content-Type": "application/json", "Sec-Fetch-Site": "same-origin"})
	if code != http.StatusCreated {
		t.Errorf("same-origin JSON POST: %d, want 201", code)
	}
	for _, h := range []string{"localhost", "LOCALHOST:8025", "[::1]:8025", "127.0.0.2"} {
		if code, _ := do(t, "GET", srv.URL+"/v1/bounces", "", map[string]string{"Host": h}); code != 200 {
			t.Errorf("Host %s: %d, want 200", h, code)
		}
	}
	// Health checks answer whatever name a probe uses.
	if code, _ := do(t, "GET", srv.URL+"/healthz", "", map[string]string{"Host": "10.1.2.3:8025"}); code != 200 {
		t.Errorf("healthz with a foreign Host: %d, want 200", code)
	}
}

// TestConfiguredHosts: WithHosts adds names; "*" accepts any Host.
func TestConfiguredHosts(t *testing.T) {
	srv, _ := newTestAPIWith(t, nil, func(h *Handler) { h.WithHosts("Bouncer.Internal") })
	if code, _ := do(t, "GET", srv.URL+"/v1/bounces", "", map[string]string{"Host": "bouncer.internal:8025"}); code != 200 {
		t.Errorf("configured host: %d, want 200", code)
	}
	if code, _ := do(t, "GET", srv.URL+"/v1/bounces", "", map[string]string{"Host": "evil.example"}); code != 421 {
		t.Errorf("other host: %d, want 421", code)
	}
	srv, _ = newTestAPIWith(t, []string{"tok"}, func(h *Handler) { h.WithHosts("*") })
	if code, _ := do(t, "GET", srv.URL+"/v1/bounces", "", map[string]string{"Host": "mx.example.org", "Authorization": "Bearer tok"}); code != 200 {
		t.Errorf(`"*": %d, want 200`, code)
	}
}

// TestBadInputIs400 is part of finding 7: ids that cannot be record ids
// answered 500, and the suppression endpoint stored addresses holding NUL
// or newlines. Both get 400 with a message now.
func TestBadInputIs400(t *testing.T) {
	srv, db := newTestAPI(t)
	for _, p := range []string{"/v1/bounces/xyz", "/v1/bounces/xyz/raw", "/v1/bounces/" + strings.Repeat("g", 24)} {
		code, msg := do(t, "GET", srv.URL+p, "", nil)
		if code != 400 || !strings.Contains(msg, "record id") {
			t.Errorf("GET %s: %d %q, want 400 naming a record id", p, code, msg)
		}
	}
	json := map[string]string{"Content-Type": "application/json"}
	for _, addr := range []string{"a\x00b@example.com", "a\r\nb@example.com", "a@example.com\n", "a\tb@example.com", "a\u0085b@example.com"} {
		body, _ := jsonMarshal(SuppressionRequest{Address: addr})
		code, msg := do(t, "POST", srv.URL+"/v1/suppressions", body, json)
		if code != 400 || msg == "" {
			t.Errorf("POST address %q: %d %q, want 400 with a message", addr, code, msg)
		}
	}
	body, _ := jsonMarshal(SuppressionRequest{Address: "fine@example.com", Reason: "line\nbreak"})
	if code, _ := do(t, "POST", srv.URL+"/v1/suppressions", body, json); code != 400 {
		t.Errorf("POST reason with a newline: %d, want 400", code)
	}
	for _, m := range []string{"GET", "DELETE"} {
		if code, _ := do(t, m, srv.URL+"/v1/suppressions/"+url.PathEscape("a\nb@example.com"), "", nil); code != 400 {
			t.Errorf("%s an address with a newline: %d, want 400", m, code)
		}
	}
	n := 0
	tcheck(t, db.Suppressions("", func(store.Suppression) error { n++; return nil }), "listing")
	if n != 1 {
		t.Errorf("%d suppressions, want the 1 from the sample", n)
	}
}

func jsonMarshal(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}

// TestReadiness is the last part of finding 7: /healthz said ok while the
// disk was full and every delivery got 451. /healthz stays liveness;
// /readyz fails while the store cannot commit.
func TestReadiness(t *testing.T) {
	var failing atomic.Bool
	srv, _ := newTestAPIWith(t, []string{"tok"}, func(h *Handler) {
		h.WithReady(func(context.Context) error {
			if failing.Load() {
				return errors.New("no space left on device")
			}
			return nil
		})
	})
	if code, _ := do(t, "GET", srv.URL+"/readyz", "", nil); code != 200 {
		t.Errorf("readyz: %d, want 200", code)
	}
	failing.Store(true)
	code, msg := do(t, "GET", srv.URL+"/readyz", "", nil)
	if code != 503 || strings.Contains(msg, "space") {
		t.Errorf("readyz while failing: %d %q, want 503 without internals", code, msg)
	}
	if code, _ := do(t, "GET", srv.URL+"/healthz", "", nil); code != 200 {
		t.Errorf("healthz while not ready: %d, want 200 (alive)", code)
	}
}
