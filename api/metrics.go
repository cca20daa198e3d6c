package api

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// WithMetrics serves GET /metrics (Prometheus text format) from g, behind
// the same bearer tokens as the rest of the API, and returns h.
func (h *Handler) WithMetrics(g prometheus.Gatherer) *Handler {
	h.mux.Handle("GET /metrics", h.auth(promhttp.HandlerFor(g, promhttp.HandlerOpts{
		ErrorLog:            slogPrinter{h},
		MaxRequestsInFlight: 4,
	}).ServeHTTP))
	return h
}

// slogPrinter gives promhttp's error log to the handler's logger.
type slogPrinter struct{ h *Handler }

func (p slogPrinter) Println(v ...any) { p.h.log.Error("serving metrics", "err", v) }
