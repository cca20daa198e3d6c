package web

import (
	"net"
	"net/http"
	"strings"
)

// Everything on a page that came from a bounce was written by whoever
// sent it: addresses, diagnostic codes, subjects, MTA names. html/template
// escapes it for the context it lands in (element text, attribute, URL
// query, SVG text); the templates never mark stored data as safe. The
// headers below are the second line: even if markup got through, the
// browser would run no script, load nothing from elsewhere, submit no
// form to another site and show the page in no frame.
const csp = "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// maxFormBytes caps a POST body.
const maxFormBytes = 64 << 10

// guard applies the checks every request passes: the security headers,
// the Host check against DNS rebinding (as the API's), and net/http's
// cross-origin protection for POSTs, which refuses a request whose
// Sec-Fetch-Site or Origin names another site.
func (h *Handler) guard(next http.Handler) http.Handler {
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.log.Info("dashboard request refused", "reason", "cross-origin", "origin", r.Header.Get("Origin"), "remote", r.RemoteAddr)
		h.error(w, r, http.StatusForbidden, "Cross-origin request refused.")
	}))
	protected := cop.Handler(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", csp)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cross-Origin-Opener-Policy", "same-origin")
		hd.Set("Cache-Control", "no-store")
		if !h.opts.HostAllowed(r.Host) {
			h.log.Info("dashboard request refused", "reason", "host not allowed", "host", r.Host, "remote", r.RemoteAddr)
			http.Error(w, "host not served here: use localhost or a configured name", http.StatusMisdirectedRequest)
			return
		}
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
		}
		protected.ServeHTTP(w, r)
	})
}

// loopbackHost accepts localhost and loopback addresses, with any port.
func loopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(strings.TrimSuffix(host, "]"), "["), "."))
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// hasControl reports whether s holds a C0 or C1 control character or DEL,
// which the API refuses in addresses and reasons too: they end up in
// exports and logs, where a newline starts a new entry.
func hasControl(s string) bool {
	for _, r := range s {
		if r < ' ' || r == 0x7f || r >= 0x80 && r < 0xa0 {
			return true
		}
	}
	return false
}
