package api

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/bouncer/bouncer/store"
)

// Outbox paging limits.
const (
	defaultOutboxLimit = 100
	maxOutboxLimit     = 1000
	maxSeqsPerRequest  = 5000 // fits in maxBodyBytes
)

// OutboxResponse is the body of GET /v1/outbox: queued events (or dead
// letters with dead=1), oldest first. Next is the after= cursor of the
// following page, 0 when there is no more.
type OutboxResponse struct {
	Events []store.OutboxEvent `json:"events"`
	Next   uint64              `json:"next,omitempty"`
	Queued int                 `json:"queued"`
	Dead   int                 `json:"dead"`
}

// errPageFull stops the outbox walk once a page is full.
var errPageFull = errors.New("page full")

func (h *Handler) outbox(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	dead := q.Get("dead") == "1" || q.Get("dead") == "true"
	limit := defaultOutboxLimit
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 || n > maxOutboxLimit {
			writeError(w, http.StatusBadRequest, "limit: want a number from 1 to "+strconv.Itoa(maxOutboxLimit))
			return
		}
		limit = n
	}
	var after uint64
	if s := q.Get("after"); s != "" {
		n, err := store.ParseSeq(s)
		if err != nil {
			writeError(w, http.StatusBadRequest, "after: want an event number")
			return
		}
		after = n
	}
	resp := OutboxResponse{Events: []store.OutboxEvent{}}
	more := false
	err := h.db.OutboxEvents(dead, func(ev store.OutboxEvent) error {
		if ev.Seq <= after {
			return nil
		}
		if len(resp.Events) == limit {
			more = true
			return errPageFull
		}
		resp.Events = append(resp.Events, ev)
		return nil
	})
	if err != nil && !errors.Is(err, errPageFull) {
		h.fail(w, "listing outbox", err)
		return
	}
	if more {
		resp.Next = resp.Events[len(resp.Events)-1].Seq
	}
	if resp.Queued, resp.Dead, err = h.db.OutboxStats(); err != nil {
		h.fail(w, "counting outbox", err)
		return
	}
	writeJSON(w, resp)
}

// OutboxRequest is the body of POST /v1/outbox/retry and /v1/outbox/drop:
// the dead letters to move, or all of them.
type OutboxRequest struct {
	Seqs []uint64 `json:"seqs,omitempty"`
	All  bool     `json:"all,omitempty"`
}

// outboxMove serves retry (dead letters back to the queue, due now) and
// drop (dead letters deleted), like `bouncer outbox retry|drop`, and
// answers CountResponse: naming
// no event needs all=true, and a seq that is not a dead letter is 404
// with nothing changed.
func (h *Handler) outboxMove(retry bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req OutboxRequest
		if !decodeBody(w, r, &req) {
			return
		}
		if (len(req.Seqs) == 0) != req.All || len(req.Seqs) > maxSeqsPerRequest {
			writeError(w, http.StatusBadRequest, "name the events in seqs (at most 5000) or set all, not both")
			return
		}
		var n int
		var err error
		if retry {
			n, err = h.db.OutboxRetry(req.Seqs...)
		} else {
			n, err = h.db.OutboxDrop(req.Seqs...)
		}
		if err != nil {
			h.fail(w, "moving dead letters", err)
			return
		}
		writeJSON(w, CountResponse{Count: n})
	}
}
