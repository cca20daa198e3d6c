package push

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
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

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func openDB(t testing.TB, path string) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(path, bolt.Options{})
	tcheck(t, err, "open")
	return db
}

func hardBounce(addr string, xh map[string]string) *store.Delivery {
	return &store.Delivery{
		Envelope: store.Envelope{RcptTo: []string{"bounces@bounce.example.org"}},
		Raw:      []byte("Subject: bounce\r\n\r\nbody\r\n"),
		Report: &parse.Report{
			Kind:     parse.KindBounce,
			Original: &parse.Original{XHeaders: xh},
			Recipients: []parse.Recipient{{
				FinalRecipient: addr, Action: parse.Failed, Status: "5.1.1",
				DiagnosticCode: "smtp; 550 5.1.1 no such user", RemoteMTA: "mx.example.com",
				Kind: parse.KindBounce, Class: parse.ClassHard,
			}},
		},
	}
}

// drain runs worker rounds until the outbox is empty or n rounds passed.
func drain(t *testing.T, w *Worker, db *bolt.DB, rounds int) {
	t.Helper()
	for range rounds {
		_, err := w.Round(context.Background())
		tcheck(t, err, "round")
		if q, _, _ := db.OutboxStats(); q == 0 {
			return
		}
	}
	q, _, _ := db.OutboxStats()
	t.Fatalf("outbox still holds %d events after %d rounds", q, rounds)
}

func TestListmonkBody(t *testing.T) {
	const uuid = "9f86b50d-5711-41c8-ab03-bc91c43d711b"
	type got struct {
		body  map[string]any
		idem  string
		ctype string
		user  string
		pass  string
		ok    bool
		path  string
	}
	var mu sync.Mutex
	var reqs []got
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var g got
		g.path = r.Method + " " + r.URL.Path
		g.ctype = r.Header.Get("Content-Type")
		g.idem = r.Header.Get(IdempotencyHeader)
		g.user, g.pass, g.ok = r.BasicAuth()
		dec := json.NewDecoder(r.Body)
		dec.UseNumber()
		if err := dec.Decode(&g.body); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		mu.Lock()
		reqs = append(reqs, g)
		mu.Unlock()
		w.Write([]byte(`{"data": true}`))
	}))
	defer srv.Close()

	db := openDB(t, filepath.Join(t.TempDir(), "b.db"))
	defer db.Close()
	tcheck(t, db.SetOutboxTargets([]store.OutboxTarget{{Name: "lm", Events: []string{store.EventHard}}}), "targets")
	recs, err := db.Save(context.Background(), hardBounce("User@Example.COM", map[string]string{"X-Listmonk-Campaign": uuid}))
	tcheck(t, err, "save")
	_, err = db.Save(context.Background(), hardBounce("two@example.com", nil))
	tcheck(t, err, "save")

	lm := &Listmonk{URL: srv.URL + "/", User: "api", Password: "s3cret"}
	w := NewWorker(db, map[string]Target{"lm": lm}, Options{}, testLogger(t))
	drain(t, w, db, 3)

	if len(reqs) != 2 {
		t.Fatalf("%d requests, want 2", len(reqs))
	}
	// The worker pushes concurrently: find the first bounce's request.
	g, other := reqs[0], reqs[1]
	if g.idem != recs[0].ID+".lm" {
		g, other = other, g
	}
	if g.path != "POST /webhooks/bounce" || g.ctype != "application/json" || !g.ok || g.user != "api" || g.pass != "s3cret" {
		t.Fatalf("request %q content type %q auth %v %q %q", g.path, g.ctype, g.ok, g.user, g.pass)
	}
	if g.idem != recs[0].ID+".lm" {
		t.Fatalf("idempotency key %q", g.idem)
	}
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range g.body {
			if !yield(k) {
				return
			}
		}
	})
	if !slices.Equal(keys, []string{"campaign_uuid", "email", "meta", "source", "type"}) {
		t.Fatalf("body keys %v", keys)
	}
	if g.body["email"] != "User@example.com" || g.body["campaign_uuid"] != uuid ||
		g.body["source"] != "bouncer" || g.body["type"] != "hard" {
		t.Fatalf("body %v", g.body)
	}
	meta, ok := g.body["meta"].(map[string]any)
	if !ok || meta["status"] != "5.1.1" || meta["bouncer_record_id"] != recs[0].ID {
		t.Fatalf("meta %v", g.body["meta"])
	}
	if _, has := other.body["campaign_uuid"]; has {
		t.Fatalf("campaign_uuid sent without a campaign: %v", other.body)
	}
	if st := w.Stats(); st[0].Delivered != 2 || st[0].Failed != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestWebhookSignature(t *testing.T) {
	const secret = "hook-secret"
	var mu sync.Mutex
	var events []WebhookEvent
	var bad atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		err := Verify(secret, r.Header.Get(TimestampHeader), r.Header.Get(SignatureHeader), body, time.Now(), 5*time.Minute)
		if err != nil {
			bad.Add(1)
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		var ev WebhookEvent
		if err := json.Unmarshal(body, &ev); err != nil || ev.ID != r.Header.Get(IdempotencyHeader) {
			http.Error(w, "bad body", 400)
			return
		}
		mu.Lock()
		events = append(events, ev)
		mu.Unlock()
	}))
	defer srv.Close()

	db := openDB(t, filepath.Join(t.TempDir(), "b.db"))
	defer db.Close()
	tcheck(t, db.SetOutboxTargets([]store.OutboxTarget{
		{Name: "good", Events: []string{store.EventHard}},
		{Name: "wrongkey", Events: []string{store.EventHard}},
	}), "targets")
	_, err := db.Save(context.Background(), hardBounce("a@example.com", nil))
	tcheck(t, err, "save")
	w := NewWorker(db, map[string]Target{
		"good":     &Webhook{URL: srv.URL, Secret: secret},
		"wrongkey": &Webhook{URL: srv.URL, Secret: "other"},
	}, Options{}, testLogger(t))
	_, err = w.Round(context.Background())
	tcheck(t, err, "round")
	if len(events) != 1 || events[0].Recipient != "a@example.com" || events[0].Type != "hard" || events[0].Status != "5.1.1" {
		t.Fatalf("events %+v", events)
	}
	// A 401 is permanent: the wrongly signed event is a dead letter.
	if q, d, _ := db.OutboxStats(); q != 0 || d != 1 || bad.Load() != 1 {
		t.Fatalf("queued %d dead %d rejected %d", q, d, bad.Load())
	}

	// Replay: an old timestamp fails even with the right signature.
	body := []byte(`{"id":"x"}`)
	old := fmt.Sprint(time.Now().Add(-time.Hour).Unix())
	if err := Verify(secret, old, Sign(secret, old, body), body, time.Now(), 5*time.Minute); err == nil {
		t.Fatal("replayed request verified")
	}
	now := fmt.Sprint(time.Now().Unix())
	if err := Verify(secret, now, Sign(secret, now, body), append(body, ' '), time.Now(), 5*time.Minute); err == nil {
		t.Fatal("changed body verified")
	}
}

// TestDownTargetAcrossRestart: a target that answers 503 for a while
// gets every event once it is back, after the store and worker were
// closed and reopened in between, and each event exactly once here.
func TestDownTargetAcrossRestart(t *testing.T) {
	var down atomic.Bool
	down.Store(true)
	var mu sync.Mutex
	seen := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			http.Error(w, "maintenance", http.StatusServiceUnavailable)
			return
		}
		var b ListmonkBounce
		json.NewDecoder(r.Body).Decode(&b)
		mu.Lock()
		seen[b.Email]++
		mu.Unlock()
	}))
	defer srv.Close()

	path := filepath.Join(t.TempDir(), "b.db")
	db := openDB(t, path)
	tcheck(t, db.SetOutboxTargets([]store.OutboxTarget{{Name: "lm", Events: []string{store.EventHard}}}), "targets")
	const n = 25
	for i := range n {
		_, err := db.Save(context.Background(), hardBounce(fmt.Sprintf("u%d@example.com", i), nil))
		tcheck(t, err, "save")
	}
	opts := Options{MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond, Concurrency: 3}
	targets := map[string]Target{"lm": &Listmonk{URL: srv.URL}}
	w := NewWorker(db, targets, opts, testLogger(t))
	for range 3 {
		_, err := w.Round(context.Background())
		tcheck(t, err, "round")
		time.Sleep(3 * time.Millisecond) // let the backoff pass
	}
	if st := w.Stats(); st[0].Failed == 0 || st[0].Delivered != 0 {
		t.Fatalf("stats while down %+v", st)
	}
	if q, d, _ := db.OutboxStats(); q != n || d != 0 {
		t.Fatalf("while down: queued %d dead %d", q, d)
	}
	tcheck(t, db.Close(), "close")

	// Restart: a new store and worker on the same file; the target is back.
	down.Store(false)
	db = openDB(t, path)
	defer db.Close()
	time.Sleep(3 * time.Millisecond)
	w = NewWorker(db, targets, opts, testLogger(t))
	drain(t, w, db, 20)
	if len(seen) != n {
		t.Fatalf("%d addresses delivered, want %d", len(seen), n)
	}
	for a, c := range seen {
		if c != 1 {
			t.Fatalf("%s delivered %d times", a, c)
		}
	}
}

func TestMaxAttemptsDeadLetter(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusBadGateway)
	}))
	defer srv.Close()
	db := openDB(t, filepath.Join(t.TempDir(), "b.db"))
	defer db.Close()
	tcheck(t, db.SetOutboxTargets([]store.OutboxTarget{{Name: "lm", Events: []string{store.EventHard}}}), "targets")
	_, err := db.Save(context.Background(), hardBounce("a@example.com", nil))
	tcheck(t, err, "save")
	clock := time.Now()
	opts := Options{MaxAttempts: 3, Now: func() time.Time { return clock }}
	w := NewWorker(db, map[string]Target{"lm": &Listmonk{URL: srv.URL}}, opts, testLogger(t))
	for range 5 {
		w.Round(context.Background())
		clock = clock.Add(2 * time.Hour) // past any backoff
	}
	var dead []store.OutboxEvent
	db.OutboxEvents(true, func(ev store.OutboxEvent) error { dead = append(dead, ev); return nil })
	if len(dead) != 1 || dead[0].Attempts != 3 || dead[0].LastError == "" {
		t.Fatalf("dead letters %+v", dead)
	}
}

func TestBackoff(t *testing.T) {
	w := NewWorker(nil, nil, Options{MinBackoff: time.Second, MaxBackoff: time.Minute}, slog.Default())
	prev := time.Duration(0)
	for a := range 12 {
		d := w.backoff(a)
		want := min(time.Second<<a, time.Minute)
		if d > want || d < want*4/5 {
			t.Fatalf("attempt %d: backoff %s, want %s minus at most 20%%", a, d, want)
		}
		if a < 5 && d <= prev*4/5 {
			t.Fatalf("attempt %d: backoff %s did not grow from %s", a, d, prev)
		}
		prev = d
	}
}
