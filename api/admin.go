package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/bouncer/bouncer/store"
)

// Limits of write requests.
const (
	maxBodyBytes = 128 << 10
	maxAddrLen   = 320 // as store's limit for suppressed addresses
	maxReasonLen = 1000
)

// decodeBody reads a JSON request body of at most maxBodyBytes.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "bad JSON body")
		return false
	}
	return true
}

// badAddress says what is wrong with an address given to the API, or ""
// if nothing is. NUL, CR, LF and other control characters are refused:
// they end up in exports (a Postfix map, CSV lines) and logs, where a
// newline starts a new entry.
func badAddress(addr string) string {
	switch {
	case hasControl(addr):
		return "address: control characters (NUL, CR, LF, ...) are not allowed"
	case !utf8.ValidString(addr):
		return "address: not valid UTF-8"
	}
	return ""
}

// hasControl reports whether s holds a C0 or C1 control character or DEL.
func hasControl(s string) bool {
	for _, r := range s {
		if r < ' ' || r == 0x7f || r >= 0x80 && r < 0xa0 {
			return true
		}
	}
	return false
}

// SuppressionRequest is the body of POST /v1/suppressions.
type SuppressionRequest struct {
	Address string `json:"address"`
	Reason  string `json:"reason,omitempty"`
}

func (h *Handler) addSuppression(w http.ResponseWriter, r *http.Request) {
	var req SuppressionRequest
	if !decodeBody(w, r, &req) {
		return
	}
	if msg := badAddress(req.Address); msg != "" {
		writeError(w, http.StatusBadRequest, msg)
		return
	}
	addr := store.NormalizeAddr(req.Address)
	switch {
	case !strings.Contains(addr, "@") || len(addr) > maxAddrLen:
		writeError(w, http.StatusBadRequest, "address: want local@domain of at most 320 bytes")
		return
	case len(req.Reason) > maxReasonLen || hasControl(req.Reason):
		writeError(w, http.StatusBadRequest, "reason: want at most 1000 bytes and no control characters")
		return
	}
	err := h.db.AddSuppression(store.Suppression{Address: addr, Reason: req.Reason})
	if errors.Is(err, store.ErrExists) {
		writeError(w, http.StatusConflict, "already suppressed")
		return
	}
	if err != nil {
		h.fail(w, "adding suppression", err)
		return
	}
	added, err := h.db.Suppressed(req.Address)
	if err != nil {
		h.fail(w, "reading suppression", err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(added)
}

func (h *Handler) removeSuppression(w http.ResponseWriter, r *http.Request) {
	if msg := badAddress(r.PathValue("addr")); msg != "" {
		writeError(w, http.StatusBadRequest, msg)
		return
	}
	if err := h.db.RemoveSuppression(r.PathValue("addr")); err != nil {
		h.fail(w, "removing suppression", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// StormsResponse is the body of GET /v1/storms.
type StormsResponse struct {
	Storms []store.Storm `json:"storms"`
}

func (h *Handler) storms(w http.ResponseWriter, r *http.Request) {
	st, err := h.db.Storms()
	if err != nil {
		h.fail(w, "listing storms", err)
		return
	}
	if st == nil {
		st = []store.Storm{}
	}
	writeJSON(w, StormsResponse{Storms: st})
}

// HoldsResponse is the body of GET /v1/holds.
type HoldsResponse struct {
	Holds []store.Hold `json:"holds"`
}

func (h *Handler) holds(w http.ResponseWriter, r *http.Request) {
	hs, err := h.db.Holds(r.URL.Query().Get("domain"))
	if err != nil {
		h.fail(w, "listing holds", err)
		return
	}
	if hs == nil {
		hs = []store.Hold{}
	}
	writeJSON(w, HoldsResponse{Holds: hs})
}

// CountResponse is the body of the release and drop answers.
type CountResponse struct {
	Count int `json:"count"`
}

func (h *Handler) endStorm(release bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		end := h.db.DropHolds
		if release {
			end = h.db.ReleaseHolds
		}
		n, err := end(r.PathValue("domain"))
		if err != nil {
			h.fail(w, "ending storm", err)
			return
		}
		writeJSON(w, CountResponse{Count: n})
	}
}

// MXRequest is the body of PUT /v1/domains/{domain}/mx.
type MXRequest struct {
	Check store.MXCheck `json:"check"`
	Lift  bool          `json:"lift,omitempty"`
}

// MXResponse answers PUT /v1/domains/{domain}/mx.
type MXResponse struct {
	Recovered bool `json:"recovered"`
	Lifted    int  `json:"lifted"`
}

func (h *Handler) setMX(w http.ResponseWriter, r *http.Request) {
	var req MXRequest
	if !decodeBody(w, r, &req) {
		return
	}
	rec, n, err := h.db.SetMXCheck(r.PathValue("domain"), req.Check, req.Lift)
	if errors.Is(err, store.ErrInvalid) {
		writeError(w, http.StatusBadRequest, "invalid domain or result")
		return
	}
	if err != nil {
		h.fail(w, "storing MX check", err)
		return
	}
	writeJSON(w, MXResponse{Recovered: rec, Lifted: n})
}
