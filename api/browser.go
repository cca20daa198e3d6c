package api

import (
	"context"
	"mime"
	"net"
	"net/http"
	"strings"
)

// A web page in the operator's browser can reach a loopback API: it can
// send simple cross-site requests (a form or a text/plain fetch, which
// need no CORS preflight), and with DNS rebinding it can read the answers,
// its own name now pointing at 127.0.0.1. Three checks keep it out
// (issue 21, finding 5):
//
//   - the Host header must name this server (hostAllowed): localhost, a
//     loopback address, or a name given to WithHosts. A rebinding page
//     sends its own name;
//   - state-changing requests must not come from another site:
//     net/http's CrossOriginProtection checks Sec-Fetch-Site and Origin;
//   - their bodies must be declared application/json, which a page can
//     only send cross-site after a CORS preflight this API never answers.
//
// The Go client sends no Origin or Sec-Fetch-Site and sets the JSON type.

// WithHosts adds names (or addresses) accepted in the Host header besides
// localhost and loopback addresses; "*" accepts any, which is safe only
// behind tokens. It returns h.
func (h *Handler) WithHosts(hosts ...string) *Handler {
	for _, n := range hosts {
		if n == "*" {
			h.anyHost = true
			continue
		}
		h.hosts[normHost(n)] = true
	}
	return h
}

// WithReady sets the readiness check of GET /readyz: whether the store can
// commit now (a full disk, a failing file system). It returns h.
func (h *Handler) WithReady(ready func(context.Context) error) *Handler {
	h.ready = ready
	return h
}

// normHost lower-cases a host name and strips a port, brackets and a
// trailing dot.
func normHost(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSuffix(host, "]"), "["), ".")
	return strings.ToLower(host)
}

// HostAllowed reports whether a Host header names this server, by the
// rule of the API's own check; the dashboard (package web) applies it too.
func (h *Handler) HostAllowed(host string) bool { return h.hostAllowed(host) }

// hostAllowed reports whether the request's Host names this server.
func (h *Handler) hostAllowed(host string) bool {
	if h.anyHost {
		return true
	}
	n := normHost(host)
	if n == "localhost" || strings.HasSuffix(n, ".localhost") || h.hosts[n] {
		return true
	}
	ip := net.ParseIP(n)
	return ip != nil && ip.IsLoopback()
}

// unsafeMethod reports whether a method may change state.
func unsafeMethod(m string) bool {
	return m != http.MethodGet && m != http.MethodHead && m != http.MethodOptions
}

// jsonBody reports whether a state-changing request declares a JSON body,
// as it must for POST, PUT and PATCH, and for DELETE when it has a body.
func jsonBody(r *http.Request) bool {
	if r.Method == http.MethodDelete && r.ContentLength == 0 {
		return true
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && mt == "application/json"
}

// guard applies the browser checks around next. The health checks are
// exempt from the Host check: probes use whatever name reaches them, and
// the answers say only ok or not.
func (h *Handler) guard(next http.Handler) http.Handler {
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusForbidden, "cross-origin request refused")
	}))
	protected := cop.Handler(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		health := r.URL.Path == "/healthz" || r.URL.Path == "/readyz"
		switch {
		case !health && !h.hostAllowed(r.Host):
			h.log.Info("api request refused", "reason", "host not allowed", "host", r.Host, "remote", r.RemoteAddr)
			writeError(w, http.StatusMisdirectedRequest, "host not served here: use localhost or a configured name")
		case unsafeMethod(r.Method) && !jsonBody(r):
			writeError(w, http.StatusUnsupportedMediaType, "want Content-Type: application/json")
		default:
			protected.ServeHTTP(w, r)
		}
	})
}
