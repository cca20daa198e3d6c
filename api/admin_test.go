package api

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/bouncer/bouncer/store"
)

func TestWriteEndpoints(t *testing.T) {
	srv, db := newTestAPI(t, "secret")
	ctx := context.Background()

	// Writes need the token like reads.
	anon := &Client{BaseURL: srv.URL}
	var se *StatusError
	if err := anon.AddSuppression(ctx, store.Suppression{Address: "a@example.com"}); !errors.As(err, &se) || se.Code != http.StatusUnauthorized {
		t.Fatalf("add without token: %v, want 401", err)
	}
	if _, err := anon.ReleaseHolds(ctx, "dead.test"); !errors.As(err, &se) || se.Code != http.StatusUnauthorized {
		t.Fatalf("release without token: %v, want 401", err)
	}
	if _, err := db.Suppressed("a@example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("refused add was stored: %v", err)
	}

	c := &Client{BaseURL: srv.URL, Token: "secret"}
	tcheck(t, c.AddSuppression(ctx, store.Suppression{Address: "a@example.com", Reason: "asked"}), "add")
	if s, err := db.Suppressed("a@example.com"); err != nil || s.Reason != "asked" || s.Source != "manual" {
		t.Fatalf("added entry: %+v %v", s, err)
	}
	if err := c.AddSuppression(ctx, store.Suppression{Address: "a@example.com"}); !errors.Is(err, store.ErrExists) {
		t.Errorf("second add: %v, want ErrExists", err)
	}
	if err := c.AddSuppression(ctx, store.Suppression{Address: "no-at-sign"}); !errors.As(err, &se) || se.Code != http.StatusBadRequest {
		t.Errorf("invalid address: %v, want 400", err)
	}
	if err := c.AddSuppression(ctx, store.Suppression{Address: "b@example.com", Reason: strings.Repeat("x", 200_000)}); !errors.As(err, &se) || se.Code != http.StatusBadRequest {
		t.Errorf("oversized body: %v, want 400", err)
	}
	tcheck(t, c.RemoveSuppression(ctx, "a@example.com"), "remove")
	if err := c.RemoveSuppression(ctx, "a@example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second remove: %v, want ErrNotFound", err)
	}

	if storms, err := c.Storms(ctx); err != nil || len(storms) != 0 {
		t.Errorf("storms: %v %+v", err, storms)
	}
	if _, err := c.DropHolds(ctx, "dead.test"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("drop without storm: %v, want ErrNotFound", err)
	}

	rec, _, err := c.SetMXCheck(ctx, "dead.test", store.MXCheck{Verdict: "valid", Routed: true, Checked: time.Now(), Result: []byte(`{"verdict":"valid"}`)}, false)
	tcheck(t, err, "set MX check")
	if !rec {
		t.Error("a routed first check after a 5.4.3 is a recovery")
	}
	ds, err := c.Domains(ctx, "")
	tcheck(t, err, "domains")
	if len(ds) != 1 || ds[0].LastMX == nil || ds[0].LastMX.Verdict != "valid" || ds[0].Recovered == nil {
		t.Errorf("domains after check: %+v", ds)
	}
	if _, _, err := c.SetMXCheck(ctx, "bad domain", store.MXCheck{}, false); !errors.As(err, &se) || se.Code != http.StatusBadRequest {
		t.Errorf("invalid domain: %v, want 400", err)
	}
}
