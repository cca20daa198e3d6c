package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bouncer/bouncer/parse"
	"github.com/bouncer/bouncer/store"
	"github.com/bouncer/bouncer/store/bolt"
)

func tcheck(t testing.TB, err error, msg string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", msg, err)
	}
}

// newTestAPI opens a real store, saves a real Postfix DSN into it, and
// serves the API on loopback.
func newTestAPI(t *testing.T, tokens ...string) (*httptest.Server, *bolt.DB) {
	t.Helper()
	return newTestAPIWith(t, tokens, nil)
}

// newTestAPIWith is newTestAPI with a function that sets up the handler.
func newTestAPIWith(t *testing.T, tokens []string, setup func(*Handler)) (*httptest.Server, *bolt.DB) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "bouncer.db"), bolt.Options{})
	tcheck(t, err, "opening store")
	t.Cleanup(func() { db.Close() })
	raw, err := os.ReadFile("../cmd/bouncer/testdata/postfix-543.eml")
	tcheck(t, err, "reading sample")
	rep, err := parse.Message(bytes.NewReader(raw), parse.Limits{})
	tcheck(t, err, "decoding sample")
	_, err = db.Save(context.Background(), &store.Delivery{
		Received: time.Now(), Raw: raw, Report: rep,
		Envelope: store.Envelope{RcptTo: []string{"bounces+user=dead.test@localhost"}, VERP: "user@dead.test"},
	})
	tcheck(t, err, "saving")
	h := New(db, tokens, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if setup != nil {
		setup(h)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, db
}

func TestClientRoundTrip(t *testing.T) {
	srv, _ := newTestAPI(t)
	c := &Client{BaseURL: srv.URL}
	ctx := context.Background()
	recs, err := c.Query(ctx, store.Filter{Status: "5.4.3", Domain: "dead.test"})
	tcheck(t, err, "query")
	if len(recs) != 1 || recs[0].Addr != "user@dead.test" || !recs[0].Suppressed {
		t.Fatalf("query: %+v", recs)
	}
	if recs, err := c.Query(ctx, store.Filter{Status: "5.1.1"}); err != nil || len(recs) != 0 {
		t.Fatalf("query for another status: %v, %d records", err, len(recs))
	}
	s, err := c.Suppressed(ctx, "user@dead.test")
	tcheck(t, err, "suppressed")
	if s.Status != "5.4.3" || s.RecordID != recs[0].ID {
		t.Errorf("suppression entry: %+v", s)
	}
	if _, err := c.Suppressed(ctx, "alive@dead.test"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("suppressed(alive): got %v, want ErrNotFound", err)
	}
	var listed []string
	tcheck(t, c.Suppressions(ctx, "dead.test", func(s store.Suppression) error {
		listed = append(listed, s.Address)
		return nil
	}), "suppressions")
	if len(listed) != 1 || listed[0] != "user@dead.test" {
		t.Errorf("suppressions: %v", listed)
	}
	ds, err := c.Domains(ctx, "5.4.3")
	tcheck(t, err, "domains")
	if len(ds) != 1 || ds[0].Domain != "dead.test" || ds[0].Counts["5.4.3"] != 1 {
		t.Errorf("domains: %+v", ds)
	}

	resp, err := http.Get(srv.URL + "/v1/bounces/" + recs[0].ID + "/raw")
	tcheck(t, err, "raw")
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Contains(body, []byte("Status: 5.4.3")) {
		t.Errorf("raw: %d, %d bytes", resp.StatusCode, len(body))
	}
	resp, err = http.Get(srv.URL + "/v1/bounces?limit=x")
	tcheck(t, err, "bad limit")
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("limit=x: %d, want 400", resp.StatusCode)
	}
}

func TestAuth(t *testing.T) {
	srv, _ := newTestAPI(t, "s3cret-token")
	ctx := context.Background()
	for _, tok := range []string{"", "wrong", "s3cret-token-but-longer"} {
		c := &Client{BaseURL: srv.URL, Token: tok}
		_, err := c.Query(ctx, store.Filter{})
		var se *StatusError
		if !errors.As(err, &se) || se.Code != http.StatusUnauthorized {
			t.Errorf("token %q: got %v, want 401", tok, err)
		}
	}
	c := &Client{BaseURL: srv.URL, Token: "s3cret-token"}
	if _, err := c.Query(ctx, store.Filter{}); err != nil {
		t.Errorf("right token: %v", err)
	}
	// The health check needs no token, for load balancers.
	resp, err := http.Get(srv.URL + "/healthz")
	tcheck(t, err, "healthz")
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("healthz: %d", resp.StatusCode)
	}
}

func TestHealthzFailsWhenStoreCloses(t *testing.T) {
	srv, db := newTestAPI(t)
	db.Close()
	resp, err := http.Get(srv.URL + "/healthz")
	tcheck(t, err, "healthz")
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || bytes.Contains(body, []byte("closed")) {
		t.Errorf("healthz on a closed store: %d %q (want 503 without internals)", resp.StatusCode, body)
	}
}

// TestRecentDomains saves bounces for three more domains, each later
// than the last, and lists them through the limit parameter.
func TestRecentDomains(t *testing.T) {
	srv, db := newTestAPI(t)
	raw, err := os.ReadFile("../cmd/bouncer/testdata/postfix-543.eml")
	tcheck(t, err, "reading sample")
	t0 := time.Now()
	for i, dom := range []string{"a.test", "b.test", "c.test"} {
		rep, err := parse.Message(bytes.NewReader(raw), parse.Limits{})
		tcheck(t, err, "decoding sample")
		rep.Recipients[0].FinalRecipient = "user@" + dom
		rep.Recipients[0].Status = "5.1.1"
		_, err = db.Save(context.Background(), &store.Delivery{
			Received: t0.Add(time.Duration(i+1) * time.Hour), Raw: raw, Report: rep,
			Envelope: store.Envelope{RcptTo: []string{"bounces@localhost"}},
		})
		tcheck(t, err, "saving")
	}
	c := &Client{BaseURL: srv.URL}
	ctx := context.Background()
	names := func(ds []store.DomainStat) (s []string) {
		for _, d := range ds {
			s = append(s, d.Domain)
		}
		return s
	}
	for _, tc := range []struct {
		f    store.DomainFilter
		want string
	}{
		{store.DomainFilter{Limit: 2}, "[c.test b.test]"},
		{store.DomainFilter{}, "[c.test b.test a.test dead.test]"},
		{store.DomainFilter{Status: "5.4.3", Limit: 10}, "[dead.test]"},
	} {
		ds, err := c.RecentDomains(ctx, tc.f)
		tcheck(t, err, "recent domains")
		if got := fmt.Sprint(names(ds)); got != tc.want {
			t.Errorf("%+v: %s, want %s", tc.f, got, tc.want)
		}
	}
	ds, err := c.Domains(ctx, "")
	tcheck(t, err, "domains")
	if got := fmt.Sprint(names(ds)); got != "[a.test b.test c.test dead.test]" {
		t.Errorf("all domains: %s", got)
	}
	for _, bad := range []string{"-1", "x"} {
		resp, err := http.Get(srv.URL + "/v1/domains?limit=" + bad)
		tcheck(t, err, "bad limit")
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("limit=%s: %d, want 400", bad, resp.StatusCode)
		}
	}
}
