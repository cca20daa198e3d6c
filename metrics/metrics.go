// Package metrics exposes bouncer's counters in the Prometheus text
// format. Everything is registered on a registry the caller passes in
// (cmd builds one per serve); nothing is global.
//
// The Go runtime's and the process's standard gauges (go_goroutines,
// go_memstats_*, process_resident_memory_bytes, process_open_fds) are
// registered too.
//
// Counters kept by other packages (server.Stats, the store's outbox,
// push.Worker.Stats, mailbox.Reader.Stats) are read at scrape time by a collector; records and
// commit latency are observed by Saver, which wraps the store's Save.
package metrics

import (
	"context"
	"regexp"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/bouncer/bouncer/mailbox"
	"github.com/bouncer/bouncer/push"
	"github.com/bouncer/bouncer/server"
	"github.com/bouncer/bouncer/store"
)

// Sources are read at each scrape; nil fields are skipped.
type Sources struct {
	Server func() server.Stats
	Outbox func() (queued, dead int, err error)
	Push   func() []push.TargetStats
	// Storms counts the storms the storm guard started since start.
	Storms func() int64
	// Mailboxes gives the counters of each [[mailbox]] reader.
	Mailboxes func() []mailbox.Stats
	// StoreFaults gives the store's failed writes and reopens (the bbolt
	// engine's; nil for PostgreSQL, whose failures are its server's).
	StoreFaults func() StoreFaults
}

// StoreFaults are the failed writes of a store on a local disk and its
// reopens after them.
type StoreFaults struct {
	// WriteErrors counts failed writes and syncs by operation (commit: a
	// failed bbolt commit).
	WriteErrors map[string]int64
	// Reopens counts the reopens from disk after a failure;
	// ReopenErrors the attempts that failed (the disk still failing).
	Reopens, ReopenErrors int64
	// Failed is set while Saves fail (451) until the store has reopened.
	Failed bool
}

var (
	descConns      = prometheus.NewDesc("bouncer_smtp_connections_total", "SMTP connections accepted.", nil, nil)
	descRefused    = prometheus.NewDesc("bouncer_smtp_connections_refused_total", "SMTP connections answered 421 at once (limits, shutdown).", nil, nil)
	descMessages   = prometheus.NewDesc("bouncer_smtp_messages_total", "Messages by outcome: stored (decoded), undecoded (stored raw), temp_failed (4xx, saving failed).", []string{"outcome"}, nil)
	descRcptReject = prometheus.NewDesc("bouncer_smtp_rejected_total", "Commands refused (MAIL, RCPT), by reason: not_bounce_domain, bad_address, bad_token, unsigned, banned, other.", []string{"reason"}, nil)
	descNoMemory   = prometheus.NewDesc("bouncer_smtp_no_memory_total", "Messages answered 452 because the DATA memory budget stayed exhausted.", nil, nil)
	descDataMem    = prometheus.NewDesc("bouncer_smtp_data_memory_bytes", "Bytes of message bodies held in memory now.", nil, nil)
	descPanics     = prometheus.NewDesc("bouncer_smtp_panics_total", "Panics recovered in live sessions.", nil, nil)
	descEvicted    = prometheus.NewDesc("bouncer_smtp_evicted_total", "Connections closed to make room for a new client at max_conns.", nil, nil)
	descLowDisk    = prometheus.NewDesc("bouncer_smtp_low_disk_total", "Messages refused after DATA because free disk space fell below the floor.", nil, nil)
	descPushHeld   = prometheus.NewDesc("bouncer_smtp_push_held_total", "Records whose push events were held on the dead-letter list: their client network was over its push budget.", nil, nil)
	descQueued     = prometheus.NewDesc("bouncer_outbox_queued", "Push events waiting for delivery.", nil, nil)
	descDead       = prometheus.NewDesc("bouncer_outbox_dead", "Push events on the dead-letter list.", nil, nil)
	descPushed     = prometheus.NewDesc("bouncer_push_delivered_total", "Push events delivered, by target.", []string{"target"}, nil)
	descPushFail   = prometheus.NewDesc("bouncer_push_failures_total", "Failed push attempts, by target.", []string{"target"}, nil)
	descStorms     = prometheus.NewDesc("bouncer_storms_started_total", "Storms the storm guard started (a domain's new suppressions held).", nil, nil)
	descPushDead   = prometheus.NewDesc("bouncer_push_dead_total", "Push events moved to the dead-letter list, by target.", []string{"target"}, nil)
	descMbMessages = prometheus.NewDesc("bouncer_mailbox_messages_total", "Messages read from a mailbox, by outcome: stored, not_bounce (left or moved), refused (recipient check), too_large (left).", []string{"mailbox", "outcome"}, nil)
	descMbErrors   = prometheus.NewDesc("bouncer_mailbox_errors_total", "Mailbox sessions ended by an error (connection, login, command, save).", []string{"mailbox"}, nil)
	descMbUp       = prometheus.NewDesc("bouncer_mailbox_connected", "1 while the mailbox reader is logged in.", []string{"mailbox"}, nil)
	descWriteErrs  = prometheus.NewDesc("bouncer_store_write_errors_total", "Failed writes and syncs of the database's file, by operation (commit). Each puts the store in the failed state until it has reopened its files from disk.", []string{"op"}, nil)
	descReopens    = prometheus.NewDesc("bouncer_store_reopens_total", "Reopens of the database's files from disk after a failed write, by result: ok, error (the disk still failing; tried again after a back-off).", []string{"result"}, nil)
	descFailed     = prometheus.NewDesc("bouncer_store_failed", "1 while the store refuses deliveries (451) after a failed write, until it has reopened from disk.", nil, nil)
)

type collector struct{ src Sources }

// Describe lists the descriptors without reading the sources, which may
// not be ready at registration.
func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descConns, descRefused, descMessages, descRcptReject,
		descNoMemory, descDataMem, descPanics, descQueued, descDead, descPushed, descPushFail, descPushDead,
		descMbMessages, descMbErrors, descMbUp, descStorms, descEvicted, descLowDisk, descPushHeld,
		descWriteErrs, descReopens, descFailed} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	if c.src.Server != nil {
		s := c.src.Server()
		counter(descConns, s.Connections)
		counter(descRefused, s.Refused)
		counter(descMessages, s.Stored-s.Unparsed, "stored")
		counter(descMessages, s.Unparsed, "undecoded")
		counter(descMessages, s.Failed, "temp_failed")
		for reason, n := range s.RejectedBy {
			counter(descRcptReject, n, reason)
		}
		counter(descNoMemory, s.NoMemory)
		ch <- prometheus.MustNewConstMetric(descDataMem, prometheus.GaugeValue, float64(s.DataMemory))
		counter(descPanics, s.Panics)
		counter(descEvicted, s.Evicted)
		counter(descLowDisk, s.LowDisk)
		counter(descPushHeld, s.PushHeld)
	}
	if c.src.Storms != nil {
		counter(descStorms, c.src.Storms())
	}
	if c.src.StoreFaults != nil {
		f := c.src.StoreFaults()
		for op, n := range f.WriteErrors {
			counter(descWriteErrs, n, op)
		}
		counter(descReopens, f.Reopens, "ok")
		counter(descReopens, f.ReopenErrors, "error")
		failed := 0.0
		if f.Failed {
			failed = 1
		}
		ch <- prometheus.MustNewConstMetric(descFailed, prometheus.GaugeValue, failed)
	}
	if c.src.Outbox != nil {
		if q, d, err := c.src.Outbox(); err == nil {
			ch <- prometheus.MustNewConstMetric(descQueued, prometheus.GaugeValue, float64(q))
			ch <- prometheus.MustNewConstMetric(descDead, prometheus.GaugeValue, float64(d))
		}
	}
	if c.src.Push != nil {
		for _, t := range c.src.Push() {
			counter(descPushed, t.Delivered, t.Target)
			counter(descPushFail, t.Failed, t.Target)
			counter(descPushDead, t.Dead, t.Target)
		}
	}
	if c.src.Mailboxes != nil {
		for _, m := range c.src.Mailboxes() {
			counter(descMbMessages, m.Stored, m.Name, "stored")
			counter(descMbMessages, m.NotBounce, m.Name, "not_bounce")
			counter(descMbMessages, m.Refused, m.Name, "refused")
			counter(descMbMessages, m.TooLarge, m.Name, "too_large")
			counter(descMbErrors, m.Errors, m.Name)
			up := 0.0
			if m.Connected {
				up = 1
			}
			ch <- prometheus.MustNewConstMetric(descMbUp, prometheus.GaugeValue, up, m.Name)
		}
	}
}

// Saver is the server's store interface.
type Saver interface {
	Save(ctx context.Context, d *store.Delivery) ([]store.Record, error)
}

// Metrics holds the counters observed by Saver.
type Metrics struct {
	mu       sync.Mutex
	statuses map[string]bool // status label values in use, at most maxStatuses

	records    *prometheus.CounterVec
	suppressed prometheus.Counter
	commit     *prometheus.HistogramVec
}

// New registers bouncer's metrics on reg.
func New(reg prometheus.Registerer, src Sources) (*Metrics, error) {
	m := &Metrics{
		statuses: map[string]bool{},
		records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bouncer_records_total",
			Help: "Records stored, by kind, class and enhanced status (well-formed codes only, else \"other\").",
		}, []string{"kind", "class", "status"}),
		suppressed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bouncer_suppressions_total",
			Help: "Addresses put on the suppression list by policy.",
		}),
		commit: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "bouncer_store_save_seconds",
			Help:    "Time from Save to committed and synced, including the wait for the writer, by result.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"result"}),
	}
	// The Go runtime's (go_goroutines, go_memstats_*) and the process's
	// (process_resident_memory_bytes, process_open_fds) gauges, so that a
	// leak shows on the same endpoint (make soak reads them).
	runtime := []prometheus.Collector{collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})}
	for _, c := range append([]prometheus.Collector{m.records, m.suppressed, m.commit, collector{src}}, runtime...) {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// statusRE is a well-formed enhanced status code (RFC 3463 §2).
var statusRE = regexp.MustCompile(`^[245]\.\d{1,3}\.\d{1,3}$`)

// kinds and classes bound the label values an attacker can create.
var (
	kinds   = map[string]bool{"bounce": true, "delay": true, "complaint": true, "autoreply": true, "delivered": true, "unknown": true}
	classes = map[string]bool{"hard": true, "soft": true, "none": true, "": true}
)

// maxStatuses caps the distinct status label values.
const maxStatuses = 200

// statusLabel bounds the status label: a well-formed code among the
// first maxStatuses seen, else "other".
func (m *Metrics) statusLabel(status string) string {
	if status == "" {
		return ""
	}
	if !statusRE.MatchString(status) {
		return "other"
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.statuses[status] {
		if len(m.statuses) >= maxStatuses {
			return "other"
		}
		m.statuses[status] = true
	}
	return status
}

// Saver wraps s so that each Save is timed and its records counted.
func (m *Metrics) Saver(s Saver) Saver { return saver{s, m} }

type saver struct {
	s Saver
	m *Metrics
}

func (sv saver) Save(ctx context.Context, d *store.Delivery) ([]store.Record, error) {
	start := time.Now()
	recs, err := sv.s.Save(ctx, d)
	result := "ok"
	if err != nil {
		result = "error"
	}
	sv.m.commit.WithLabelValues(result).Observe(time.Since(start).Seconds())
	for i := range recs {
		r := &recs[i]
		kind, class, status := string(r.Kind), string(r.Class), r.Status
		if !kinds[kind] {
			kind = "other"
		}
		if !classes[class] {
			class = "other"
		}
		status = sv.m.statusLabel(status)
		sv.m.records.WithLabelValues(kind, class, status).Inc()
		if r.Suppressed {
			sv.m.suppressed.Inc()
		}
	}
	return recs, err
}
