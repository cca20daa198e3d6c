package metrics

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/bouncer/bouncer/parse"
	"github.com/bouncer/bouncer/server"
	"github.com/bouncer/bouncer/store"
	"github.com/bouncer/bouncer/store/bolt"
)

// scrape fetches /metrics over loopback and parses it as Prometheus text.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing metrics: %v", err)
	}
	return fams
}

// value returns the value of the metric in fam whose labels include want.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	fam := fams[name]
	if fam == nil {
		return -1
	}
next:
	for _, m := range fam.Metric {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return -1
}

func TestMetrics(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "b.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.SetOutboxTargets([]store.OutboxTarget{{Name: "lm", Events: []string{store.EventHard}}}); err != nil {
		t.Fatal(err)
	}
	stats := server.Stats{Connections: 3, Stored: 2, Unparsed: 1, Failed: 1}
	reg := prometheus.NewRegistry()
	m, err := New(reg, Sources{Server: func() server.Stats { return stats }, Outbox: db.OutboxStats})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()

	before := scrape(t, srv.URL)
	if v := value(before, "bouncer_smtp_messages_total", map[string]string{"outcome": "undecoded"}); v != 1 {
		t.Fatalf("undecoded %v, want 1", v)
	}
	if v := value(before, "bouncer_outbox_queued", nil); v != 0 {
		t.Fatalf("queued %v, want 0", v)
	}

	sv := m.Saver(db)
	for _, st := range []string{"5.4.3", "5.4.3", "x.y.z"} {
		d := &store.Delivery{
			Raw: []byte("Subject: x\r\n\r\nx\r\n"),
			Report: &parse.Report{Kind: parse.KindBounce, Recipients: []parse.Recipient{{
				FinalRecipient: "a" + st + "@example.com", Status: st, Kind: parse.KindBounce, Class: parse.ClassHard,
			}}},
		}
		if _, err := sv.Save(context.Background(), d); err != nil {
			t.Fatal(err)
		}
	}
	after := scrape(t, srv.URL)
	if v := value(after, "bouncer_records_total", map[string]string{"kind": "bounce", "class": "hard", "status": "5.4.3"}); v != 2 {
		t.Fatalf("records 5.4.3 %v, want 2", v)
	}
	if v := value(after, "bouncer_records_total", map[string]string{"status": "other"}); v != 1 {
		t.Fatalf("records other %v, want 1", v)
	}
	if v := value(after, "bouncer_suppressions_total", nil); v != 1 { // the same address twice
		t.Fatalf("suppressions %v, want 1", v)
	}
	if v := value(after, "bouncer_store_save_seconds", map[string]string{"result": "ok"}); v != 3 {
		t.Fatalf("save observations %v, want 3", v)
	}
	// The repeated 5.4.3 report is a duplicate: stored, but no second event.
	if v := value(after, "bouncer_outbox_queued", nil); v != 2 {
		t.Fatalf("queued %v, want 2", v)
	}
}

// TestStoreFaults: the store's failed writes are counted by operation,
// its reopens by result, and bouncer_store_failed follows the state, as
// read at each scrape.
func TestStoreFaults(t *testing.T) {
	f := StoreFaults{WriteErrors: map[string]int64{"log_write": 0, "log_sync": 0, "commit": 0}}
	reg := prometheus.NewRegistry()
	if _, err := New(reg, Sources{StoreFaults: func() StoreFaults { return f }}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	if v := value(scrape(t, srv.URL), "bouncer_store_failed", nil); v != 0 {
		t.Fatalf("failed %v before any fault, want 0", v)
	}
	f = StoreFaults{WriteErrors: map[string]int64{"log_write": 0, "log_sync": 2, "commit": 1}, Reopens: 3, ReopenErrors: 4, Failed: true}
	got := scrape(t, srv.URL)
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"bouncer_store_write_errors_total", map[string]string{"op": "log_sync"}, 2},
		{"bouncer_store_write_errors_total", map[string]string{"op": "commit"}, 1},
		{"bouncer_store_write_errors_total", map[string]string{"op": "log_write"}, 0},
		{"bouncer_store_reopens_total", map[string]string{"result": "ok"}, 3},
		{"bouncer_store_reopens_total", map[string]string{"result": "error"}, 4},
		{"bouncer_store_failed", nil, 1},
	} {
		if v := value(got, c.name, c.labels); v != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, v, c.want)
		}
	}
}

// TestRuntimeGauges: go_goroutines counts goroutines this test starts and
// process_open_fds the files it holds open.
func TestRuntimeGauges(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := New(reg, Sources{}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	before := scrape(t, srv.URL)
	stop := make(chan struct{})
	for range 50 {
		go func() { <-stop }()
	}
	var files []*os.File
	for range 20 {
		f, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	after := scrape(t, srv.URL)
	now := runtime.NumGoroutine()
	close(stop)
	for _, f := range files {
		f.Close()
	}
	// Goroutines of earlier tests (an HTTP server's) may end meanwhile:
	// the gauge must show the 50 and agree with the runtime's count.
	if g0, g1 := value(before, "go_goroutines", nil), value(after, "go_goroutines", nil); g0 <= 0 || g1 < 50 || g1 < float64(now)-5 || g1 > float64(now)+5 {
		t.Errorf("go_goroutines %v, then %v with 50 more (the runtime counts %d)", g0, g1, now)
	}
	if f0, f1 := value(before, "process_open_fds", nil), value(after, "process_open_fds", nil); f0 <= 0 || f1 < f0+15 { // 20 more, less any an earlier test closed meanwhile
		t.Errorf("process_open_fds %v, then %v with 20 more", f0, f1)
	}
	if v := value(after, "process_resident_memory_bytes", nil); v <= 0 {
		t.Errorf("process_resident_memory_bytes %v", v)
	}
}
