package main

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/bouncer/bouncer/push"
)

// receiver is the push target the soak runs: it checks each request's
// signature (push.Verify) and keeps the events by id. Every failEvery-th
// request is answered 503, so that bouncer's retry path runs too.
type receiver struct {
	secret    string
	failEvery int

	mu       sync.Mutex
	requests int
	failed   int            // answered 503 on purpose
	bad      int            // bad signature or body
	events   map[string]int // event id -> deliveries accepted
	records  map[string]bool
	firstBad string
}

func newReceiver(secret string, failEvery int) *receiver {
	return &receiver{secret: secret, failEvery: failEvery, events: map[string]int{}, records: map[string]bool{}}
}

func (rv *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	rv.mu.Lock()
	defer rv.mu.Unlock()
	rv.requests++
	if rv.failEvery > 0 && rv.requests%rv.failEvery == 0 {
		rv.failed++
		http.Error(w, "soak: failing on purpose", http.StatusServiceUnavailable)
		return
	}
	var ev push.WebhookEvent
	if err == nil {
		err = push.Verify(rv.secret, r.Header.Get(push.TimestampHeader), r.Header.Get(push.SignatureHeader), body, time.Now(), 5*time.Minute)
	}
	if err == nil {
		err = json.Unmarshal(body, &ev)
	}
	if err == nil && (ev.ID == "" || ev.RecordID == "" || r.Header.Get(push.IdempotencyHeader) != ev.ID) {
		err = errBadEvent
	}
	if err != nil {
		rv.bad++
		if rv.firstBad == "" {
			rv.firstBad = err.Error()
		}
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	rv.events[ev.ID]++
	rv.records[ev.RecordID] = true
	w.WriteHeader(http.StatusNoContent)
}

type soakError string

func (e soakError) Error() string { return string(e) }

const errBadEvent = soakError("event without id or record id, or an Idempotency-Key that differs")

// receiverStats is a snapshot of the receiver's counts.
type receiverStats struct {
	requests, failed, bad, unique, repeats int
	firstBad                               string
}

func (rv *receiver) stats() receiverStats {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	st := receiverStats{requests: rv.requests, failed: rv.failed, bad: rv.bad, unique: len(rv.events), firstBad: rv.firstBad}
	for _, n := range rv.events {
		st.repeats += n - 1
	}
	return st
}

// hasRecord reports whether an event for the record arrived.
func (rv *receiver) hasRecord(id string) bool {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	return rv.records[id]
}

// serve listens on loopback and serves rv until the listener is closed.
func (rv *receiver) serve() (url string, closeFn func(), err error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: rv, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l)
	return "http://" + l.Addr().String() + "/hook", func() { srv.Close() }, nil
}
