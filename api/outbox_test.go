package api

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bouncer/bouncer/parse"
	"github.com/bouncer/bouncer/store"
	"github.com/bouncer/bouncer/store/bolt"
)

// saveBounces stores n hard bounces, one per recipient u0@d.example ...
func saveBounces(t *testing.T, db *bolt.DB, n int) {
	t.Helper()
	for i := range n {
		_, err := db.Save(context.Background(), &store.Delivery{
			Received: time.Now(), Raw: fmt.Appendf(nil, "Subject: bounce %d\r\n\r\nx\r\n", i),
			Report: &parse.Report{Kind: parse.KindBounce, Recipients: []parse.Recipient{{
				FinalRecipient: fmt.Sprintf("u%d@d.example", i), Status: "5.4.3",
				Kind: parse.KindBounce, Class: parse.ClassHard, DiagnosticCode: "smtp; 550 5.4.3 routing failure, \"u\"",
			}}},
		})
		tcheck(t, err, "saving")
	}
}

func TestBouncesPaging(t *testing.T) {
	srv, db := newTestAPI(t)
	saveBounces(t, db, 7)
	c := &Client{BaseURL: srv.URL}
	ctx := context.Background()
	var want []string
	tcheck(t, db.ForEach(store.Filter{Domain: "d.example"}, func(r store.Record) error {
		want = append(want, r.ID)
		return nil
	}), "listing")

	var got []string
	before, pages := "", 0
	for {
		recs, next, err := c.Page(ctx, store.Filter{Domain: "d.example", Limit: 3}, before)
		tcheck(t, err, "page")
		pages++
		for _, r := range recs {
			got = append(got, r.ID)
		}
		if next == "" {
			break
		}
		if next != recs[len(recs)-1].ID || pages > 5 {
			t.Fatalf("page %d: next %q is not the last record %q", pages, next, recs[len(recs)-1].ID)
		}
		before = next
	}
	if pages != 3 || !slices.Equal(got, want) {
		t.Fatalf("%d pages gave %v, want 3 pages of %v", pages, got, want)
	}

	for _, bad := range []string{"xyz", strings.Repeat("0", 23), strings.Repeat("g", 24)} {
		_, _, err := c.Page(ctx, store.Filter{}, bad)
		var se *StatusError
		if !errors.As(err, &se) || se.Code != http.StatusBadRequest {
			t.Errorf("before=%q: got %v, want 400", bad, err)
		}
	}
}

// outboxSeqs lists the event numbers of the queue or the dead letters
// through the API.
func outboxSeqs(t *testing.T, c *Client, dead bool) []uint64 {
	t.Helper()
	var seqs []uint64
	tcheck(t, c.OutboxEvents(context.Background(), dead, func(ev store.OutboxEvent) error {
		seqs = append(seqs, ev.Seq)
		return nil
	}), "listing outbox")
	return seqs
}

func TestOutboxEndpoints(t *testing.T) {
	srv, db := newTestAPI(t, "tok")
	tcheck(t, db.SetOutboxTargets([]store.OutboxTarget{{Name: "lm", Events: []string{store.EventHard}}}), "targets")
	saveBounces(t, db, 5)
	ctx := context.Background()

	anon := &Client{BaseURL: srv.URL}
	var se *StatusError
	if _, err := anon.Outbox(ctx, false, 0, 0); !errors.As(err, &se) || se.Code != http.StatusUnauthorized {
		t.Fatalf("outbox without token: %v, want 401", err)
	}
	if _, err := anon.OutboxDrop(ctx); !errors.As(err, &se) || se.Code != http.StatusUnauthorized {
		t.Fatalf("drop without token: %v, want 401", err)
	}

	c := &Client{BaseURL: srv.URL, Token: "tok"}
	page, err := c.Outbox(ctx, false, 0, 2)
	tcheck(t, err, "first page")
	if len(page.Events) != 2 || page.Next != page.Events[1].Seq || page.Queued != 5 || page.Dead != 0 {
		t.Fatalf("first page: %+v", page)
	}
	if ev := page.Events[0]; ev.Target != "lm" || ev.Type != store.EventHard || ev.Addr != "u0@d.example" {
		t.Errorf("first event: %+v", ev)
	}
	queued := outboxSeqs(t, c, false)
	if len(queued) != 5 || !slices.IsSorted(queued) {
		t.Fatalf("queue: %v, want 5 events oldest first", queued)
	}

	// Three events give up, as the push worker would record it.
	var results []store.OutboxResult
	for _, s := range queued[:3] {
		results = append(results, store.OutboxResult{Seq: s, Err: errors.New("answer 400"), Dead: true})
	}
	_, err = db.OutboxUpdate(results)
	tcheck(t, err, "moving to dead letters")
	if dead := outboxSeqs(t, c, true); !slices.Equal(dead, queued[:3]) {
		t.Fatalf("dead letters %v, want %v", dead, queued[:3])
	}

	// A seq that is not a dead letter: 404 and nothing moves.
	if _, err := c.OutboxRetry(ctx, queued[0], queued[4]); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("retry of a queued event: %v, want ErrNotFound", err)
	}
	n, err := c.OutboxRetry(ctx, queued[1])
	tcheck(t, err, "retry")
	if n != 1 {
		t.Errorf("retry moved %d, want 1", n)
	}
	if got := outboxSeqs(t, c, false); len(got) != 3 || !slices.Contains(got, queued[1]) {
		t.Errorf("queue after retry: %v", got)
	}
	n, err = c.OutboxDrop(ctx)
	tcheck(t, err, "drop all")
	if n != 2 || len(outboxSeqs(t, c, true)) != 0 {
		t.Errorf("drop all moved %d, want 2, and an empty dead list", n)
	}

	for _, body := range []string{`{}`, `{"seqs":[1],"all":true}`, `{"seqs":"x"}`, `{"all":true,"extra":1}`} {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/outbox/retry", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer tok")
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		tcheck(t, err, "posting")
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("retry %s: %d, want 400", body, resp.StatusCode)
		}
	}
	// An oversized body is refused, not read whole.
	big := `{"seqs":[` + strings.Repeat("1,", maxBodyBytes) + `1]}`
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/outbox/drop", strings.NewReader(big))
	req.Header.Set("Authorization", "Bearer tok")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	tcheck(t, err, "posting a big body")
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("oversized body: %d, want 400", resp.StatusCode)
	}
}

func TestExportEndpoints(t *testing.T) {
	srv, db := newTestAPI(t, "tok")
	saveBounces(t, db, 30)
	ctx := context.Background()
	c := &Client{BaseURL: srv.URL, Token: "tok"}

	var wantSup []store.Suppression
	tcheck(t, db.Suppressions("d.example", func(s store.Suppression) error { wantSup = append(wantSup, s); return nil }), "suppressions")
	var wantRecs []string
	tcheck(t, db.ForEach(store.Filter{Domain: "d.example"}, func(r store.Record) error {
		wantRecs = append(wantRecs, r.ID+" "+r.Addr+" "+r.DiagnosticCode)
		return nil
	}), "records")
	if len(wantSup) != 30 || len(wantRecs) != 30 {
		t.Fatalf("store has %d suppressions and %d records, want 30", len(wantSup), len(wantRecs))
	}

	var buf bytes.Buffer
	tcheck(t, c.Export(ctx, "suppressions", FormatJSON, store.Filter{Domain: "d.example"}, &buf), "json export")
	dec := json.NewDecoder(&buf)
	var gotSup []store.Suppression
	for dec.More() {
		var s store.Suppression
		tcheck(t, dec.Decode(&s), "decoding")
		gotSup = append(gotSup, s)
	}
	if len(gotSup) != len(wantSup) {
		t.Fatalf("json export: %d entries, want %d", len(gotSup), len(wantSup))
	}
	for i := range gotSup {
		if gotSup[i].Address != wantSup[i].Address || gotSup[i].Status != wantSup[i].Status || !gotSup[i].Created.Equal(wantSup[i].Created) {
			t.Errorf("entry %d: got %+v, want %+v", i, gotSup[i], wantSup[i])
		}
	}

	buf.Reset()
	tcheck(t, c.Export(ctx, "suppressions", FormatPostfix, store.Filter{}, &buf), "postfix export")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 32 || !strings.HasPrefix(lines[0], "#") || lines[1]+"\n" != PostfixLine(wantSup[0]) ||
		!strings.HasPrefix(lines[1], "u0@d.example REJECT 5.4.3 ") {
		t.Errorf("postfix export (%d lines): %q, want line 1 %q", len(lines), lines[:min(3, len(lines))], PostfixLine(wantSup[0]))
	}

	buf.Reset()
	tcheck(t, c.Export(ctx, "bounces", FormatCSV, store.Filter{Domain: "d.example"}, &buf), "csv export")
	rows, err := csv.NewReader(&buf).ReadAll()
	tcheck(t, err, "reading csv")
	var gotRecs []string
	for _, row := range rows[1:] {
		gotRecs = append(gotRecs, row[0]+" "+row[2]+" "+row[10])
	}
	if !slices.Equal(rows[0], BounceHeader) || !slices.Equal(gotRecs, wantRecs) {
		t.Errorf("csv export:\n got %q\nwant %q", gotRecs, wantRecs)
	}

	var se *StatusError
	if err := c.Export(ctx, "bounces", FormatPostfix, store.Filter{}, &buf); !errors.As(err, &se) || se.Code != http.StatusBadRequest {
		t.Errorf("postfix bounces: %v, want 400", err)
	}
	if err := c.Export(ctx, "secrets", FormatJSON, store.Filter{}, &buf); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown export: %v, want 404", err)
	}
	if err := (&Client{BaseURL: srv.URL}).Export(ctx, "bounces", FormatJSON, store.Filter{}, &buf); !errors.As(err, &se) || se.Code != http.StatusUnauthorized {
		t.Errorf("export without token: %v, want 401", err)
	}
	// A store failure before anything was sent is a plain 500.
	db.Close()
	buf.Reset()
	if err := c.Export(ctx, "bounces", FormatJSON, store.Filter{}, &buf); !errors.As(err, &se) || se.Code != http.StatusInternalServerError || buf.Len() != 0 {
		t.Errorf("export from a closed store: %v (%d bytes), want 500", err, buf.Len())
	}
}
