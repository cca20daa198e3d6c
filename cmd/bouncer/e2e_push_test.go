package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/bouncer/bouncer/store"
)

// received is one request a fake listmonk got.
type received struct {
	method, path, contentType, user, pass, key string
	timestamp, signature                       string
	body                                       []byte
	code                                       int // what it answered
}

// fakeListmonk records the requests to it and answers 503 while down.
type fakeListmonk struct {
	mu   sync.Mutex
	down bool
	reqs []received
}

func (f *fakeListmonk) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	user, pass, _ := r.BasicAuth()
	f.mu.Lock()
	defer f.mu.Unlock()
	rec := received{method: r.Method, path: r.URL.Path, contentType: r.Header.Get("Content-Type"),
		user: user, pass: pass, key: r.Header.Get("Idempotency-Key"), body: body, code: http.StatusOK,
		timestamp: r.Header.Get("X-Bouncer-Timestamp"), signature: r.Header.Get("X-Bouncer-Signature")}
	if f.down {
		rec.code = http.StatusServiceUnavailable
	}
	f.reqs = append(f.reqs, rec)
	w.WriteHeader(rec.code)
	fmt.Fprintln(w, `{"data": true}`)
}

func (f *fakeListmonk) setDown(down bool) {
	f.mu.Lock()
	f.down = down
	f.mu.Unlock()
}

// requests returns the requests so far answered with code.
func (f *fakeListmonk) requests(code int) []received {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []received
	for _, r := range f.reqs {
		if r.code == code {
			out = append(out, r)
		}
	}
	return out
}

// waitFor polls cond every 50ms for up to 30s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// pushConfig is the config tail of a server with one listmonk target.
func pushConfig(url string) string {
	return fmt.Sprintf(`
[push]
min_backoff = "100ms"
max_backoff = "300ms"
max_attempts = 1000
[[push.targets]]
name = "lm"
type = "listmonk"
url = %q
user = "bouncer-api"
password = "s3cret"
events = ["hard"]
`, url)
}

// scrape reads the value of a counter or gauge with the given labels
// from GET /metrics, parsed as Prometheus text.
func scrape(t *testing.T, httpAddr, name string, labels map[string]string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	tcheck(t, err, "getting /metrics")
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %d", resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	tcheck(t, err, "parsing /metrics")
	fam, ok := fams[name]
	if !ok {
		t.Fatalf("/metrics has no %s", name)
	}
	for _, m := range fam.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		if !reflect.DeepEqual(got, labels) && !(len(got) == 0 && len(labels) == 0) {
			continue
		}
		switch {
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("/metrics has no %s%v", name, labels)
	return 0
}

// outboxJSON runs `bouncer outbox list --json` and decodes it.
func outboxJSON(t *testing.T, args ...string) []store.OutboxEvent {
	t.Helper()
	return cliJSON[store.OutboxEvent](t, append([]string{"outbox", "list", "--json"}, args...)...)
}

const testCampaign = "5b4c4f3e-2d1a-4b6c-9e8f-0a1b2c3d4e5f"

// campaignDSN is the Postfix 5.4.3 sample whose returned headers carry
// listmonk's campaign header.
func campaignDSN(t *testing.T) []byte {
	t.Helper()
	msg := readTestdata(t, "postfix-543.eml")
	out := bytes.Replace(msg, []byte("X-Campaign: 7"), []byte("X-Listmonk-Campaign: "+testCampaign), 1)
	if bytes.Equal(out, msg) {
		t.Fatal("sample has no X-Campaign header to replace")
	}
	return out
}

func TestPushToListmonkEndToEnd(t *testing.T) {
	lm := &fakeListmonk{}
	recv := httptest.NewServer(lm)
	defer recv.Close()
	hook := &fakeListmonk{}
	hookSrv := httptest.NewServer(hook)
	defer hookSrv.Close()
	ts := newTestServer(t, pushConfig(recv.URL)+fmt.Sprintf(`
[[push.targets]]
name = "crm"
type = "webhook"
url = %q
secret = "hook-secret"
events = ["hard"]
`, hookSrv.URL+"/hooks/bounce"))

	stored := map[string]string{"outcome": "stored"}
	before := scrape(t, ts.httpAddr, "bouncer_smtp_messages_total", stored)
	tcheck(t, deliver(t, ts.smtpAddr, "bounces+user=dead.test@localhost", campaignDSN(t)), "delivering DSN")
	if after := scrape(t, ts.httpAddr, "bouncer_smtp_messages_total", stored); after != before+1 {
		t.Errorf("stored messages: %v before, %v after the DSN, want one more", before, after)
	}

	// The event is delivered and leaves the outbox.
	waitFor(t, "the listmonk request", func() bool { return len(lm.requests(http.StatusOK)) > 0 })
	waitFor(t, "the webhook request", func() bool { return len(hook.requests(http.StatusOK)) > 0 })
	waitFor(t, "an empty outbox", func() bool { return len(outboxJSON(t, "-config", ts.cliConfig)) == 0 })
	reqs := lm.requests(http.StatusOK)
	if len(reqs) != 1 || len(lm.requests(http.StatusServiceUnavailable)) != 0 {
		t.Fatalf("listmonk got %d requests, want exactly 1", len(reqs))
	}
	if got := scrape(t, ts.httpAddr, "bouncer_push_delivered_total", map[string]string{"target": "lm"}); got != 1 {
		t.Errorf("bouncer_push_delivered_total{target=lm} = %v, want 1", got)
	}

	recs := queryJSON(t, "-config", ts.cliConfig, "--recipient", "user@dead.test")
	if len(recs) != 1 {
		t.Fatalf("query gave %d records, want 1", len(recs))
	}
	rec := recs[0]
	r := reqs[0]
	// listmonk's bounce webhook (https://listmonk.app/docs/bounces/):
	// POST /webhooks/bounce, JSON, basic auth of an API user.
	if r.method != http.MethodPost || r.path != "/webhooks/bounce" || r.contentType != "application/json" ||
		r.user != "bouncer-api" || r.pass != "s3cret" || r.key != rec.ID+".lm" {
		t.Errorf("request: %s %s, type %q, auth %q:%q, key %q", r.method, r.path, r.contentType, r.user, r.pass, r.key)
	}
	var top map[string]json.RawMessage
	tcheck(t, json.Unmarshal(r.body, &top), "decoding body")
	var keys []string
	for k := range top {
		keys = append(keys, k)
	}
	if len(keys) != 5 {
		t.Errorf("body has fields %v, want email, campaign_uuid, source, type, meta", keys)
	}
	var body struct {
		Email        string         `json:"email"`
		CampaignUUID string         `json:"campaign_uuid"`
		Source       string         `json:"source"`
		Type         string         `json:"type"`
		Meta         map[string]any `json:"meta"`
	}
	tcheck(t, json.Unmarshal(r.body, &body), "decoding body")
	if body.Email != "user@dead.test" || body.CampaignUUID != testCampaign || body.Source != "bouncer" || body.Type != "hard" {
		t.Errorf("body: %s", r.body)
	}
	wantMeta := map[string]any{
		"bouncer_event_id": rec.ID + ".lm", "bouncer_record_id": rec.ID, "status": "5.4.3",
		"reason": string(rec.Reason), "campaign": testCampaign, "remote_mta": "relay.dead.test",
		"diagnostic": rec.DiagnosticCode,
	}
	if !reflect.DeepEqual(body.Meta, wantMeta) {
		t.Errorf("meta:\n got %v\nwant %v", body.Meta, wantMeta)
	}

	// The webhook, checked as the README tells a receiver to: HMAC-SHA256
	// under the secret of timestamp "." body, hex after "sha256=", and a
	// timestamp close to now.
	hooks := hook.requests(http.StatusOK)
	if len(hooks) != 1 {
		t.Fatalf("webhook got %d requests, want 1", len(hooks))
	}
	h := hooks[0]
	mac := hmac.New(sha256.New, []byte("hook-secret"))
	mac.Write([]byte(h.timestamp + "." + string(h.body)))
	if want := "sha256=" + hex.EncodeToString(mac.Sum(nil)); !hmac.Equal([]byte(h.signature), []byte(want)) {
		t.Errorf("webhook signature %q, want %q", h.signature, want)
	}
	sec, err := strconv.ParseInt(h.timestamp, 10, 64)
	if err != nil || time.Since(time.Unix(sec, 0)).Abs() > 5*time.Minute {
		t.Errorf("webhook timestamp %q is not near now", h.timestamp)
	}
	var ev map[string]any
	tcheck(t, json.Unmarshal(h.body, &ev), "decoding webhook body")
	if h.path != "/hooks/bounce" || h.contentType != "application/json" || h.key != rec.ID+".crm" ||
		ev["id"] != rec.ID+".crm" || ev["type"] != "hard" || ev["recipient"] != "user@dead.test" ||
		ev["status"] != "5.4.3" || ev["record_id"] != rec.ID || ev["campaign"] != testCampaign || ev["suppressed"] != true {
		t.Errorf("webhook request %s %q key %q: %s", h.path, h.contentType, h.key, h.body)
	}
}

// serveIn starts serve on the database in dir (kept across restarts) and
// returns it with the addresses it listens on.
func serveIn(t *testing.T, dir, extra string) *testServer {
	t.Helper()
	return newTestServerConfig(t, writeConfig(t, dir, `
[smtp]
listen = "127.0.0.1:0"
hostname = "bouncer.test"
domains = ["localhost"]
[http]
listen = "127.0.0.1:0"
[store]
path = "bouncer.db"
`+extra))
}

func TestPushSurvivesRestart(t *testing.T) {
	lm := &fakeListmonk{down: true}
	recv := httptest.NewServer(lm)
	defer recv.Close()
	dir := t.TempDir()
	ts := serveIn(t, dir, pushConfig(recv.URL))
	tcheck(t, deliver(t, ts.smtpAddr, "bounces+user=dead.test@localhost", readTestdata(t, "postfix-543.eml")), "delivering DSN")
	// Wait until the store recorded a refused attempt (the receiver
	// seeing it is not enough: stopping cancels an attempt in flight).
	waitFor(t, "a refused attempt in the outbox", func() bool {
		evs := outboxJSON(t, "-config", ts.cliConfig)
		return len(evs) == 1 && evs[0].Attempts > 0
	})
	ts.stop(t)

	// Stopped: the CLI reads the outbox from the file. The event waits,
	// with the failure recorded.
	evs := outboxJSON(t, "-config", ts.cliConfig)
	if len(evs) != 1 || evs[0].Target != "lm" || evs[0].Attempts < 1 || !strings.Contains(evs[0].LastError, "503") {
		t.Fatalf("outbox after stop: %+v", evs)
	}
	id := evs[0].ID

	lm.setDown(false)
	ts = serveIn(t, dir, pushConfig(recv.URL))
	waitFor(t, "delivery after the restart", func() bool { return len(lm.requests(http.StatusOK)) > 0 })
	waitFor(t, "an empty outbox", func() bool { return len(outboxJSON(t, "-config", ts.cliConfig)) == 0 })
	ok := lm.requests(http.StatusOK)
	if len(ok) != 1 || ok[0].key != id {
		t.Fatalf("listmonk accepted %d requests (%+v), want exactly 1 with key %s", len(ok), ok, id)
	}
	if dead := outboxJSON(t, "-config", ts.cliConfig, "--dead"); len(dead) != 0 {
		t.Errorf("dead letters: %+v", dead)
	}
}
