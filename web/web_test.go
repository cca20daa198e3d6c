package web

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bouncer/bouncer/parse"
	"github.com/bouncer/bouncer/store"
	"github.com/bouncer/bouncer/store/bolt"
	"github.com/bouncer/bouncer/store/storetest"
)

func tcheck(t testing.TB, err error, msg string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", msg, err)
	}
}

// logBuf keeps the handler's log for assertions and copies it to t.Log.
type logBuf struct {
	t   testing.TB
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return l.buf.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// env is a dashboard over a real bbolt store in t.TempDir().
type env struct {
	t     *testing.T
	db    *bolt.DB
	h     *Handler
	log   *logBuf
	clock *storetest.Clock
}

// mustOpen opens a new store with the storm guard at threshold storm (0:
// off) on a fixed clock.
func mustOpen(t *testing.T, clock *storetest.Clock, storm int) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "bouncer.db"), bolt.Options{Now: clock.Now,
		Storm: store.StormOptions{Threshold: storm, Window: time.Hour}})
	tcheck(t, err, "opening store")
	t.Cleanup(func() { db.Close() })
	return db
}

func newEnv(t *testing.T, tokens ...string) *env {
	t.Helper()
	e := &env{t: t, clock: storetest.NewClock(), log: &logBuf{t: t}}
	e.db = mustOpen(t, e.clock, 3)
	h, err := New(e.db, Options{Tokens: tokens, Now: e.clock.Now,
		Logger: slog.New(slog.NewTextHandler(e.log, nil))})
	tcheck(t, err, "New")
	e.h = h
	return e
}

// save stores raw as received now.
func (e *env) save(raw string) []store.Record {
	e.t.Helper()
	d := storetest.Delivery(e.t, raw)
	d.Received = e.clock.Now()
	recs, err := e.db.Save(context.Background(), d)
	tcheck(e.t, err, "save")
	return recs
}

// saveGolden stores every sample of parse/testdata/golden, decoded with
// parse.Message, and returns how many records each day class got.
func (e *env) saveGolden() map[string]int {
	e.t.Helper()
	files, err := filepath.Glob("../parse/testdata/golden/*.eml")
	tcheck(e.t, err, "glob")
	if len(files) < 5 {
		e.t.Fatalf("only %d golden samples", len(files))
	}
	classes := map[string]int{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		tcheck(e.t, err, "reading sample")
		rep, err := parse.Message(bytes.NewReader(raw), parse.Limits{})
		d := &store.Delivery{Raw: raw, Report: rep, Received: e.clock.Now(),
			Envelope: store.Envelope{RcptTo: []string{"bounces@bounce.example.org"}, ClientIP: "127.0.0.1"}}
		if err != nil {
			d.Report, d.ParseError = nil, err.Error()
		}
		recs, err := e.db.Save(context.Background(), d)
		tcheck(e.t, err, "save "+f)
		for _, r := range recs {
			if !r.Duplicate && r.Mismatch == "" {
				classes[store.DayClass(&r)]++
			}
		}
	}
	return classes
}

const testHost = "127.0.0.1:8025"

// do sends a request to the dashboard from loopback.
func (e *env) do(method, path string, form url.Values, cookies []*http.Cookie, hdr ...string) *httptest.ResponseRecorder {
	e.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	r := httptest.NewRequest(method, "http://"+testHost+path, body)
	r.RemoteAddr = "127.0.0.1:40000"
	if form != nil {
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for _, c := range cookies {
		r.AddCookie(c)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, r)
	return w
}

// get fetches a page and checks its status.
func (e *env) get(path string, code int, cookies ...*http.Cookie) string {
	e.t.Helper()
	w := e.do("GET", path, nil, cookies)
	if w.Code != code {
		e.t.Fatalf("GET %s: %d, want %d\n%s", path, w.Code, code, w.Body)
	}
	return w.Body.String()
}

var csrfRe = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// session loads path and returns its cookies and the CSRF token of its
// forms.
func (e *env) session(path string, cookies ...*http.Cookie) ([]*http.Cookie, string) {
	e.t.Helper()
	w := e.do("GET", path, nil, cookies)
	if w.Code != http.StatusOK {
		e.t.Fatalf("GET %s: %d", path, w.Code)
	}
	m := csrfRe.FindStringSubmatch(w.Body.String())
	if m == nil {
		e.t.Fatalf("no CSRF token on %s", path)
	}
	if got := w.Result().Cookies(); len(got) > 0 {
		cookies = got
	}
	return cookies, m[1]
}

// post sends a form with the CSRF token of a fresh page load and checks
// the status.
func (e *env) post(path string, form url.Values, code int) *httptest.ResponseRecorder {
	e.t.Helper()
	cookies, tok := e.session("/ui/storms")
	form.Set("csrf", tok)
	w := e.do("POST", path, form, cookies)
	if w.Code != code {
		e.t.Fatalf("POST %s: %d, want %d\n%s", path, w.Code, code, w.Body)
	}
	return w
}

func contains(t *testing.T, what, body string, wants ...string) {
	t.Helper()
	for _, want := range wants {
		if !strings.Contains(body, want) {
			t.Errorf("%s lacks %q", what, want)
		}
	}
}

func TestOverview(t *testing.T) {
	e := newEnv(t)
	classes := e.saveGolden()
	e.save(storetest.DSN("a@route.example", "5.4.3", "Sun, 01 Mar 2026 10:00:00 +0000")) // hard, suppressed
	classes[store.DayHard]++
	e.clock.Add(-24 * time.Hour)
	e.save(storetest.DSN("b@full.example", "4.2.2", "Sat, 28 Feb 2026 10:00:00 +0000")) // soft, yesterday
	e.clock.Add(24 * time.Hour)

	body := e.get("/ui/", http.StatusOK)
	today, yesterday := store.DayOf(e.clock.Now()), store.DayOf(e.clock.Now().Add(-24*time.Hour))
	ds, err := e.db.Daily(e.clock.Now(), e.clock.Now())
	tcheck(t, err, "daily")
	if len(ds) != 1 || ds[0].Counts[store.DaySuppressed] == 0 {
		t.Fatalf("daily %+v", ds)
	}
	for k, n := range classes {
		if k == store.DayOther {
			continue
		}
		contains(t, "overview", body, fmt.Sprintf(`data-day="%s" data-total=`, today),
			fmt.Sprintf(`data-key="%s" data-n="%d"`, k, n))
	}
	contains(t, "overview", body,
		fmt.Sprintf(`<title>%s soft: 1</title>`, yesterday),
		fmt.Sprintf(`<title>%s suppressed: %d</title>`, today, ds[0].Counts[store.DaySuppressed]),
		`id="chart-bounces"`, `id="chart-suppressions"`,
		`<td data-key="hard">`+fmt.Sprint(classes[store.DayHard])+`</td>`,
		"a@route.example", `id="queued">0<`, `id="dead">0<`, `id="storms">0<`)
	if strings.Count(body, `<g class="day"`) != 2*chartDays {
		t.Errorf("want %d day groups in the two charts", 2*chartDays)
	}
}

func TestDomainsPages(t *testing.T) {
	e := newEnv(t)
	e.saveGolden()
	e.save(storetest.DSN("a@route.example", "5.4.3", "Sun, 01 Mar 2026 10:00:00 +0000"))
	e.save(storetest.DSN("b@route.example", "5.4.4", "Sun, 01 Mar 2026 10:00:01 +0000"))
	e.save(storetest.DSN("c@dead.example", "5.1.1", "Sun, 01 Mar 2026 10:00:02 +0000"))
	_, _, err := e.db.SetMXCheck("route.example", store.MXCheck{Verdict: "no-mx", Checked: e.clock.Now()}, false)
	tcheck(t, err, "mx check")

	body := e.get("/ui/domains", http.StatusOK)
	contains(t, "domains", body, `href="/ui/domain?name=route.example"`, "mx.route.example", "mta.sender.example",
		"5.4.3 5.4.4", "no-mx", "dead.example")
	if i, j := strings.Index(body, `id="routing"`), strings.Index(body, "dead.example</a></td><td>1</td><td>5.1.1"); j > i && i > 0 {
		t.Error("5.1.1 domain listed among routing failures")
	}

	body = e.get("/ui/domain?name=Route.Example", http.StatusOK)
	contains(t, "domain page", body, `<span class="num" id="total">2</span>`,
		`data-key="5.4.3" data-n="1"`, `data-key="5.4.4" data-n="1"`, "a@route.example", "b@route.example", "no-mx")
	body = e.get("/ui/domain?name=never.example", http.StatusOK)
	contains(t, "unknown domain", body, "No aggregate")

	// An engine without DomainStat: the aggregate comes from the list.
	h, err := New(plainStore{e.db}, Options{Now: e.clock.Now})
	tcheck(t, err, "New")
	e.h = h
	body = e.get("/ui/domain?name=route.example", http.StatusOK)
	contains(t, "domain page without DomainStat", body, `<span class="num" id="total">2</span>`, `data-key="5.4.4" data-n="1"`)
	contains(t, "unknown domain without DomainStat", e.get("/ui/domain?name=never.example", http.StatusOK), "No aggregate")
}

// plainStore hides the engine's optional methods.
type plainStore struct{ Store }

func TestBouncePages(t *testing.T) {
	e := newEnv(t)
	tcheck(t, e.db.SetOutboxTargets([]store.OutboxTarget{{Name: "hook", Events: []string{store.EventHard}}}), "targets")
	e.saveGolden()
	rec := e.save(storetest.DSN("a@route.example", "5.4.3", "Sun, 01 Mar 2026 10:00:00 +0000"))[0]

	body := e.get("/ui/bounces", http.StatusOK)
	contains(t, "bounces", body, "/ui/bounce?id="+rec.ID)
	body = e.get("/ui/bounces?status=5.4.3&domain=route.example", http.StatusOK)
	if strings.Count(body, "/ui/bounce?id=") != 1 {
		t.Errorf("status filter: %d records", strings.Count(body, "/ui/bounce?id="))
	}

	body = e.get("/ui/bounce?id="+rec.ID, http.StatusOK)
	contains(t, "bounce", body, `id="decoded-by">rfc3464<`, `id="rule">5.4.3<`, "<th>verdict</th><td>suppress</td>",
		"<th>diagnostic_code</th>", "<th>envelope.rcpt_to</th><td>bounces@bounce.example.org</td>",
		"<th>remote_mta</th><td>mx.route.example</td>", "<td>hook</td><td>hard</td><td>queued</td>",
		"/ui/bounce/raw?id="+rec.ID)

	w := e.do("GET", "/ui/bounce/raw?id="+rec.ID, nil, nil)
	if w.Code != http.StatusOK || w.Header().Get("Content-Type") != "message/rfc822" ||
		!strings.HasPrefix(w.Header().Get("Content-Disposition"), "attachment;") ||
		w.Header().Get("X-Content-Type-Options") != "nosniff" || !strings.Contains(w.Body.String(), "Final-Recipient: rfc822; a@route.example") {
		t.Errorf("raw: %d %v", w.Code, w.Header())
	}
	e.get("/ui/bounce?id=nothex", http.StatusBadRequest)
	e.get("/ui/bounce?id=000000000000000000000000", http.StatusNotFound)
	e.get("/ui/bounce/raw?id=000000000000000000000000", http.StatusNotFound)
	e.get("/ui/nothing", http.StatusNotFound)
}

func TestSuppressionActions(t *testing.T) {
	e := newEnv(t)
	e.save(storetest.DSN("a@route.example", "5.4.3", "Sun, 01 Mar 2026 10:00:00 +0000"))
	body := e.get("/ui/suppressions", http.StatusOK)
	contains(t, "list", body, "a@route.example", "policy")
	contains(t, "search by domain", e.get("/ui/suppressions?q=route.example", http.StatusOK), "a@route.example")
	contains(t, "search by address", e.get("/ui/suppressions?q=a@route.example", http.StatusOK), "a@route.example")
	contains(t, "search miss", e.get("/ui/suppressions?q=other.example", http.StatusOK), "Nothing matches.")

	w := e.post("/ui/suppressions/add", url.Values{"address": {"New@Example.COM"}, "reason": {"asked us"}}, http.StatusSeeOther)
	if loc := w.Header().Get("Location"); !strings.HasPrefix(loc, "/ui/suppressions?") {
		t.Fatalf("redirect to %q", loc)
	}
	s, err := e.db.Suppressed("New@example.com")
	tcheck(t, err, "added suppression")
	if s.Reason != "asked us" || s.Source != "dashboard" {
		t.Fatalf("added %+v", s)
	}
	contains(t, "flash", e.get("/ui/suppressions?done=added&q=New@example.com", http.StatusOK), "Address added")
	e.post("/ui/suppressions/add", url.Values{"address": {"New@example.com"}}, http.StatusConflict)
	e.post("/ui/suppressions/add", url.Values{"address": {"no-at-sign"}}, http.StatusBadRequest)
	e.post("/ui/suppressions/add", url.Values{"address": {"x\r\n@example.com"}}, http.StatusBadRequest)
	e.post("/ui/suppressions/add", url.Values{"address": {"y@example.com"}, "reason": {"two\nlines"}}, http.StatusBadRequest)

	e.post("/ui/suppressions/remove", url.Values{"address": {"a@route.example"}, "reason": {"mailbox fixed"}}, http.StatusSeeOther)
	if _, err := e.db.Suppressed("a@route.example"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("removed address: %v", err)
	}
	e.post("/ui/suppressions/remove", url.Values{"address": {"a@route.example"}}, http.StatusNotFound)
	logs := e.log.String()
	contains(t, "log", logs, `msg="suppression added" via=dashboard address=New@example.com reason="asked us"`,
		`msg="suppression removed" via=dashboard address=a@route.example reason="mailbox fixed"`)
}

// storm fills a storm on isp.example (threshold 3): two holds.
func (e *env) storm() {
	e.t.Helper()
	for i := range 5 {
		e.save(storetest.DSN(fmt.Sprintf("u%d@isp.example", i), "5.4.3", fmt.Sprintf("Sun, 01 Mar 2026 10:00:%02d +0000", i)))
	}
}

func TestStormActions(t *testing.T) {
	e := newEnv(t)
	e.storm()
	body := e.get("/ui/storms", http.StatusOK)
	contains(t, "storms", body, "isp.example", "u3@isp.example", "u4@isp.example", `action="/ui/storms/release"`)
	contains(t, "overview", e.get("/ui/", http.StatusOK), `id="storms">1<`)

	w := e.post("/ui/storms/release", url.Values{"domain": {"isp.example"}}, http.StatusSeeOther)
	if loc := w.Header().Get("Location"); loc != "/ui/storms?done=released&n=2" {
		t.Fatalf("redirect to %q", loc)
	}
	if _, err := e.db.Suppressed("u4@isp.example"); err != nil {
		t.Fatalf("released hold: %v", err)
	}
	contains(t, "flash", e.get("/ui/storms?done=released&n=2", http.StatusOK), "Held suppressions released: 2.")
	e.post("/ui/storms/release", url.Values{"domain": {"isp.example"}}, http.StatusNotFound)

	e.clock.Add(2 * time.Hour)
	for i := range 5 {
		e.save(storetest.DSN(fmt.Sprintf("v%d@isp.example", i), "5.4.3", fmt.Sprintf("Sun, 01 Mar 2026 14:00:%02d +0000", i)))
	}
	e.post("/ui/storms/drop", url.Values{"domain": {"isp.example"}}, http.StatusSeeOther)
	if _, err := e.db.Suppressed("v4@isp.example"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("dropped hold suppressed: %v", err)
	}
	e.post("/ui/storms/drop", url.Values{}, http.StatusBadRequest)
	contains(t, "log", e.log.String(), `msg="storm holds released" via=dashboard domain=isp.example count=2`,
		`msg="storm holds dropped" via=dashboard domain=isp.example count=2`)
}

// deadLetters queues n events and makes them dead letters.
func (e *env) deadLetters(n int) []store.OutboxEvent {
	e.t.Helper()
	tcheck(e.t, e.db.SetOutboxTargets([]store.OutboxTarget{{Name: "hook", Events: []string{store.EventHard}}}), "targets")
	for i := range n {
		e.save(storetest.DSN(fmt.Sprintf("d%d@dead.example", i), "5.1.1", fmt.Sprintf("Sun, 01 Mar 2026 11:00:%02d +0000", i)))
	}
	evs, err := e.db.OutboxDue(e.clock.Now(), 100, 1000, nil)
	tcheck(e.t, err, "due")
	var res []store.OutboxResult
	for _, ev := range evs {
		res = append(res, store.OutboxResult{Seq: ev.Seq, Err: errors.New("410 gone <b>"), Dead: true})
	}
	_, err = e.db.OutboxUpdate(res)
	tcheck(e.t, err, "update")
	return evs
}

func TestOutboxActions(t *testing.T) {
	e := newEnv(t)
	evs := e.deadLetters(3)
	body := e.get("/ui/storms", http.StatusOK)
	contains(t, "dead letters", body, `id="dead-count">3<`, "d0@dead.example", "410 gone &lt;b&gt;", `name="seq" value="`+fmt.Sprint(evs[0].Seq)+`"`)
	contains(t, "bounce events", e.get("/ui/bounce?id="+evs[0].RecordID, http.StatusOK), "<td>dead</td>", "410 gone &lt;b&gt;")

	e.post("/ui/outbox", url.Values{"op": {"retry"}, "seq": {fmt.Sprint(evs[0].Seq)}}, http.StatusSeeOther)
	if q, d, _ := e.db.OutboxStats(); q != 1 || d != 2 {
		t.Fatalf("after retry: %d queued %d dead", q, d)
	}
	e.post("/ui/outbox", url.Values{"op": {"drop"}, "seq": {fmt.Sprint(evs[1].Seq)}}, http.StatusSeeOther)
	e.post("/ui/outbox", url.Values{"op": {"drop"}, "seq": {fmt.Sprint(evs[1].Seq)}}, http.StatusNotFound)
	e.post("/ui/outbox", url.Values{"op": {"retry"}}, http.StatusBadRequest)
	e.post("/ui/outbox", url.Values{"op": {"retry"}, "all": {"1"}, "seq": {"1"}}, http.StatusBadRequest)
	e.post("/ui/outbox", url.Values{"op": {"explode"}, "all": {"1"}}, http.StatusBadRequest)
	w := e.post("/ui/outbox", url.Values{"op": {"retry"}, "all": {"1"}}, http.StatusSeeOther)
	if loc := w.Header().Get("Location"); loc != "/ui/storms?done=retried&n=1" {
		t.Fatalf("redirect to %q", loc)
	}
	if q, d, _ := e.db.OutboxStats(); q != 2 || d != 0 {
		t.Fatalf("after retry all: %d queued %d dead", q, d)
	}
	contains(t, "log", e.log.String(), `msg="dead letters retried" via=dashboard count=1 all=false`,
		`msg="dead letters dropped" via=dashboard count=1`, `msg="dead letters retried" via=dashboard count=1 all=true`)
}

// xssDSN carries markup and script in every field a page shows: the
// addresses, the Diagnostic-Code, the MTAs and the returned Subject.
const xssDSN = "From: MAILER-DAEMON@mta.example\r\nTo: bounces@bounce.example.org\r\n" +
	"Subject: <script>alert('subject')</script>\r\nMIME-Version: 1.0\r\n" +
	"Content-Type: multipart/report; report-type=delivery-status; boundary=\"b1\"\r\n" +
	"\r\n--b1\r\nContent-Type: text/plain\r\n\r\n<script>alert('text')</script>\r\n" +
	"\r\n--b1\r\nContent-Type: message/delivery-status\r\n\r\n" +
	"Reporting-MTA: dns; <img src=x onerror=alert(1)>.example\r\n\r\n" +
	"Final-Recipient: rfc822; a\"onmouseover=\"alert(1)'x@xss.example\r\nAction: failed\r\nStatus: 5.4.3\r\n" +
	"Remote-MTA: dns; <svg onload=alert(2)>\r\n" +
	"Diagnostic-Code: smtp; 550 <script>alert('diag')</script> <a href=\"javascript:alert(3)\">x</a>\r\n" +
	"\r\n--b1\r\nContent-Type: message/rfc822\r\n\r\n" +
	"From: \"<b>bold</b>\" <sender@example.org>\r\nTo: <script>@xss.example\r\n" +
	"Subject: <script>alert('original')</script><style>body{display:none}</style>\r\n" +
	"Message-ID: <\"><script>alert(4)</script>@example.org>\r\n\r\nbody\r\n" +
	"\r\n--b1--\r\n"

func TestXSS(t *testing.T) {
	e := newEnv(t)
	// The envelope is the sender's too: the VERP local part decoded by
	// the server, MAIL FROM, HELO.
	d := storetest.Delivery(t, xssDSN)
	d.Received = e.clock.Now()
	d.Envelope.VERP = "x<script>alert(1)</script>@xss.example"
	d.Envelope.MailFrom = "<script>alert('from')</script>@evil.example"
	d.Envelope.Helo = "<iframe src=//evil.example>"
	recs, err := e.db.Save(context.Background(), d)
	tcheck(t, err, "save")
	rec := recs[0]
	tcheck(t, e.db.AddSuppression(store.Suppression{Address: `y"><script>alert(5)</script>@xss.example`,
		Reason: "<script>alert(6)</script>"}), "adding suppression")
	if !strings.Contains(rec.DiagnosticCode, "<script>") || rec.Original == nil || !strings.Contains(rec.Original.Subject, "<script>") ||
		!strings.Contains(rec.Addr, "<script>") || !strings.Contains(rec.FinalRecipient, `"onmouseover="`) {
		t.Fatalf("the sample lost its markup in decoding: %+v %+v", rec, rec.Original)
	}
	pages := []string{"/ui/", "/ui/domains", "/ui/domain?name=xss.example", "/ui/bounces",
		"/ui/bounce?id=" + rec.ID, "/ui/suppressions", "/ui/suppressions?q=xss.example", "/ui/storms",
		"/ui/bounces?status=<script>&domain=\"><script>"}
	for _, p := range pages {
		w := e.do("GET", p, nil, nil)
		if w.Code != http.StatusOK {
			t.Fatalf("GET %s: %d", p, w.Code)
		}
		body := w.Body.String()
		for _, bad := range []string{"<script", "<img", "<svg onload", "<style>", "<b>bold", `href="javascript`, "<iframe", `"onmouseover=`, `'x@`} {
			if strings.Contains(body, bad) {
				t.Errorf("%s: %q unescaped", p, bad)
			}
		}
		if got := w.Header().Get("Content-Security-Policy"); got != csp || !strings.Contains(got, "default-src 'none'") ||
			strings.Contains(got, "script-src") || strings.Contains(got, "unsafe") {
			t.Errorf("%s: CSP %q", p, got)
		}
		if w.Header().Get("X-Content-Type-Options") != "nosniff" || w.Header().Get("X-Frame-Options") != "DENY" {
			t.Errorf("%s: headers %v", p, w.Header())
		}
	}
	body := e.get("/ui/bounce?id="+rec.ID, http.StatusOK)
	contains(t, "bounce page", body, "&lt;script&gt;alert(&#39;diag&#39;)&lt;/script&gt;",
		"&lt;script&gt;alert(&#39;original&#39;)&lt;/script&gt;", "&lt;img src=x onerror=alert(1)&gt;")
	body = e.get("/ui/", http.StatusOK)
	contains(t, "overview", body, "x&lt;script&gt;alert(1)&lt;/script&gt;@xss.example")
	body = e.get("/ui/suppressions?q=xss.example", http.StatusOK)
	contains(t, "suppressions", body, `name="address" value="y&#34;&gt;&lt;script&gt;alert(5)&lt;/script&gt;@xss.example"`,
		"<td>&lt;script&gt;alert(6)&lt;/script&gt;")
	// A URL made of bounce data stays a query value.
	contains(t, "overview link", e.get("/ui/", http.StatusOK), `href="/ui/domain?name=xss.example"`)
}

func TestCSRF(t *testing.T) {
	e := newEnv(t)
	form := url.Values{"address": {"x@example.com"}}
	// No cookie, no token.
	if w := e.do("POST", "/ui/suppressions/add", form, nil); w.Code != http.StatusForbidden {
		t.Fatalf("no token: %d", w.Code)
	}
	cookies, tok := e.session("/ui/suppressions")
	c := cookies[0]
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/ui/" || c.Secure {
		t.Fatalf("cookie %+v", c)
	}
	// Cookie without the token, a wrong token, another cookie's token.
	if w := e.do("POST", "/ui/suppressions/add", form, cookies); w.Code != http.StatusForbidden {
		t.Fatalf("cookie, no token: %d", w.Code)
	}
	form.Set("csrf", tok[:len(tok)-2]+"xx")
	if w := e.do("POST", "/ui/suppressions/add", form, cookies); w.Code != http.StatusForbidden {
		t.Fatalf("wrong token: %d", w.Code)
	}
	other, _ := e.session("/ui/suppressions")
	form.Set("csrf", tok)
	if w := e.do("POST", "/ui/suppressions/add", form, other); w.Code != http.StatusForbidden {
		t.Fatalf("token of another cookie: %d", w.Code)
	}
	// The right token from another site.
	if w := e.do("POST", "/ui/suppressions/add", form, cookies, "Origin", "http://evil.example"); w.Code != http.StatusForbidden {
		t.Fatalf("cross-origin: %d", w.Code)
	}
	if w := e.do("POST", "/ui/suppressions/add", form, cookies, "Sec-Fetch-Site", "cross-site"); w.Code != http.StatusForbidden {
		t.Fatalf("cross-site fetch: %d", w.Code)
	}
	if _, err := e.db.Suppressed("x@example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a refused POST changed the list: %v", err)
	}
	for _, p := range []string{"/ui/suppressions/remove", "/ui/storms/release", "/ui/storms/drop", "/ui/outbox", "/ui/logout", "/ui/login"} {
		if w := e.do("POST", p, url.Values{"domain": {"x"}, "address": {"x@example.com"}, "op": {"drop"}, "all": {"1"}}, cookies); w.Code != http.StatusForbidden {
			t.Errorf("POST %s without token: %d", p, w.Code)
		}
	}
	// Same origin with the token works.
	if w := e.do("POST", "/ui/suppressions/add", form, cookies, "Origin", "http://"+testHost, "Sec-Fetch-Site", "same-origin"); w.Code != http.StatusSeeOther {
		t.Fatalf("same origin with token: %d %s", w.Code, w.Body)
	}
	contains(t, "log", e.log.String(), `reason="csrf token"`, `reason=cross-origin`)
}

func TestHostCheck(t *testing.T) {
	e := newEnv(t)
	r := httptest.NewRequest("GET", "http://rebind.example:8025/ui/", nil)
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, r)
	if w.Code != http.StatusMisdirectedRequest {
		t.Fatalf("rebinding host: %d", w.Code)
	}
	for _, host := range []string{"localhost:8025", "[::1]:8025", "127.0.0.1"} {
		r := httptest.NewRequest("GET", "http://"+host+"/ui/", nil)
		w := httptest.NewRecorder()
		e.h.ServeHTTP(w, r)
		if w.Code != http.StatusOK {
			t.Errorf("host %s: %d", host, w.Code)
		}
	}
}

func TestLogin(t *testing.T) {
	e := newEnv(t, "s3cret-token")
	e.save(storetest.DSN("a@route.example", "5.4.3", "Sun, 01 Mar 2026 10:00:00 +0000"))
	for _, p := range []string{"/ui/", "/ui/domains", "/ui/bounces", "/ui/suppressions", "/ui/storms"} {
		w := e.do("GET", p, nil, nil)
		if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/ui/login?next="+url.QueryEscape(p) {
			t.Fatalf("GET %s without login: %d %q", p, w.Code, w.Header().Get("Location"))
		}
	}
	if w := e.do("POST", "/ui/suppressions/add", url.Values{"address": {"x@example.com"}}, nil); w.Code != http.StatusUnauthorized {
		t.Fatalf("POST without login: %d", w.Code)
	}
	cookies, tok := e.session("/ui/login?next=/ui/storms")
	w := e.do("POST", "/ui/login", url.Values{"csrf": {tok}, "token": {"wrong"}, "next": {"/ui/storms"}}, cookies)
	if w.Code != http.StatusUnauthorized || len(w.Result().Cookies()) != 0 {
		t.Fatalf("wrong token: %d", w.Code)
	}
	w = e.do("POST", "/ui/login", url.Values{"csrf": {tok}, "token": {"s3cret-token"}, "next": {"//evil.example/"}}, cookies)
	if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/ui/" {
		t.Fatalf("login: %d %q", w.Code, w.Header().Get("Location"))
	}
	sess := w.Result().Cookies()
	if len(sess) != 1 || sess[0].Value == cookies[0].Value || !sess[0].HttpOnly || sess[0].SameSite != http.SameSiteStrictMode || sess[0].MaxAge <= 0 {
		t.Fatalf("session cookie %+v (before %+v)", sess, cookies)
	}
	body := e.get("/ui/", http.StatusOK, sess...)
	contains(t, "overview after login", body, "a@route.example", `action="/ui/logout"`)
	// The cookie the browser came with is not a session.
	e.do("GET", "/ui/", nil, cookies)
	if w := e.do("GET", "/ui/", nil, cookies); w.Code != http.StatusSeeOther {
		t.Fatalf("pre-login cookie: %d", w.Code)
	}
	// The API's bearer token opens the pages too.
	if w := e.do("GET", "/ui/domains", nil, nil, "Authorization", "Bearer s3cret-token"); w.Code != http.StatusOK {
		t.Fatalf("bearer: %d", w.Code)
	}
	if w := e.do("GET", "/ui/domains", nil, nil, "Authorization", "Bearer nope"); w.Code != http.StatusSeeOther {
		t.Fatalf("wrong bearer: %d", w.Code)
	}
	// Logout ends the session.
	_, tok = e.session("/ui/", sess...)
	if w := e.do("POST", "/ui/logout", url.Values{"csrf": {tok}}, sess); w.Code != http.StatusSeeOther {
		t.Fatalf("logout: %d", w.Code)
	}
	if w := e.do("GET", "/ui/", nil, sess); w.Code != http.StatusSeeOther {
		t.Fatalf("after logout: %d", w.Code)
	}
	contains(t, "log", e.log.String(), `msg="dashboard login failed"`, `msg="dashboard login"`, `msg="dashboard logout"`)
}

func TestSecureCookieOnTLS(t *testing.T) {
	e := newEnv(t)
	r := httptest.NewRequest("GET", "https://"+testHost+"/ui/login", nil)
	r.TLS = &tls.ConnectionState{}
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, r)
	cs := w.Result().Cookies()
	if len(cs) != 1 || !cs[0].Secure {
		t.Fatalf("cookie over TLS: %+v", cs)
	}
}

func TestStatic(t *testing.T) {
	e := newEnv(t)
	w := e.do("GET", "/ui/static/style.css", nil, nil)
	if w.Code != http.StatusOK || !strings.HasPrefix(w.Header().Get("Content-Type"), "text/css") || w.Header().Get("Content-Security-Policy") == "" {
		t.Fatalf("style.css: %d %v", w.Code, w.Header())
	}
}

func TestNiceCeil(t *testing.T) {
	for n, want := range map[int]int{0: 2, 1: 2, 2: 2, 3: 4, 7: 8, 9: 10, 11: 20, 35: 40, 130: 200, 999: 1000} {
		if got := niceCeil(n); got != want {
			t.Errorf("niceCeil(%d) = %d, want %d", n, got, want)
		}
	}
}
