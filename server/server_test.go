package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/bouncer/bouncer/parse"
	"github.com/bouncer/bouncer/store"
	"github.com/bouncer/bouncer/store/bolt"
	"github.com/bouncer/bouncer/verp"
)

const bounceDomain = "bounce.example.org"

// testWriter sends log output to t.Log, so a failing test shows its log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// memSaver keeps deliveries in memory. fail, when set, is returned by Save
// instead of storing; panicNext makes the next Save panic.
type memSaver struct {
	mu         sync.Mutex
	deliveries []*store.Delivery
	fail       error
	panicNext  bool
}

func (m *memSaver) Save(ctx context.Context, d *store.Delivery) ([]store.Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.panicNext {
		m.panicNext = false
		panic("saver exploded")
	}
	if m.fail != nil {
		return nil, m.fail
	}
	m.deliveries = append(m.deliveries, d)
	return []store.Record{{MsgID: "mem" + string(rune('0'+len(m.deliveries)))}}, nil
}

func (m *memSaver) setFail(err error) {
	m.mu.Lock()
	m.fail = err
	m.mu.Unlock()
}

func (m *memSaver) all() []*store.Delivery {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]*store.Delivery(nil), m.deliveries...)
}

// testServer is a Server listening on 127.0.0.1:0.
type testServer struct {
	*Server
	addr        string
	wantPanics  int64
	serveResult chan error
}

func testOptions() Options {
	return Options{
		Hostname: "mx.test",
		Domains:  []string{bounceDomain},
		VERP:     verp.NewDecoder(verp.Options{}),
	}
}

// newTestServer starts a server on a loopback port. At cleanup it shuts
// the server down and fails the test if a session panicked unexpectedly.
func newTestServer(t *testing.T, opts Options, saver Saver) *testServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	tcheck(t, err, "listen")
	ts := &testServer{
		Server:      New(opts, saver, testLogger(t)),
		addr:        l.Addr().String(),
		serveResult: make(chan error, 1),
	}
	go func() { ts.serveResult <- ts.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := ts.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-ts.serveResult; err != nil {
			t.Errorf("serve: %v", err)
		}
		if got := ts.Stats().Panics; got != ts.wantPanics {
			t.Errorf("recovered panics: got %d, want %d", got, ts.wantPanics)
		}
	})
	return ts
}

func tcheck(t testing.TB, err error, msg string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", msg, err)
	}
}

// dial connects a go-smtp client and says EHLO.
func dial(t *testing.T, addr string) *smtp.Client {
	t.Helper()
	c, err := smtp.Dial(addr)
	tcheck(t, err, "dial")
	t.Cleanup(func() { c.Close() })
	c.CommandTimeout = 10 * time.Second
	c.SubmissionTimeout = 10 * time.Second
	tcheck(t, c.Hello("client.test"), "ehlo")
	return c
}

// send runs one transaction and returns the server's 250 text.
func send(c *smtp.Client, from string, rcpts []string, body []byte) (string, error) {
	if err := c.Mail(from, nil); err != nil {
		return "", err
	}
	for _, r := range rcpts {
		if err := c.Rcpt(r, nil); err != nil {
			return "", err
		}
	}
	w, err := c.Data()
	if err != nil {
		return "", err
	}
	if _, err := w.Write(body); err != nil {
		return "", err
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", err
	}
	return resp.StatusText, nil
}

// wantCode asserts that err is an SMTP reply with the given codes.
func wantCode(t *testing.T, err error, code int, enh smtp.EnhancedCode) *smtp.SMTPError {
	t.Helper()
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		t.Fatalf("got error %v, want SMTP reply %d %v", err, code, enh)
	}
	if se.Code != code || se.EnhancedCode != enh {
		t.Fatalf("got reply %d %v %q, want %d %v", se.Code, se.EnhancedCode, se.Message, code, enh)
	}
	return se
}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	tcheck(t, err, "reading testdata")
	return b
}

// crlf returns b with every line ending as CRLF, as it travels over SMTP.
func crlf(b []byte) []byte {
	b = bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
	return bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n"))
}

func TestNullSenderDSNStored(t *testing.T) {
	saver := &memSaver{}
	ts := newTestServer(t, testOptions(), saver)
	c := dial(t, ts.addr)
	dsn := readTestdata(t, "lhost-postfix-03.eml")
	text, err := send(c, "", []string{"bounces+user=dead.test@" + bounceDomain}, dsn)
	tcheck(t, err, "sending DSN")
	if !strings.Contains(text, "(id ") {
		t.Errorf("250 text %q carries no id", text)
	}
	got := saver.all()
	if len(got) != 1 {
		t.Fatalf("got %d deliveries, want 1", len(got))
	}
	d := got[0]
	if d.Envelope.MailFrom != "" {
		t.Errorf("MailFrom = %q, want null sender", d.Envelope.MailFrom)
	}
	if d.Envelope.VERP != "user@dead.test" {
		t.Errorf("VERP = %q, want user@dead.test", d.Envelope.VERP)
	}
	if want := []string{"bounces+user=dead.test@" + bounceDomain}; len(d.Envelope.RcptTo) != 1 || d.Envelope.RcptTo[0] != want[0] {
		t.Errorf("RcptTo = %q, want %q", d.Envelope.RcptTo, want)
	}
	if d.Envelope.ClientIP != "127.0.0.1" || d.Envelope.Helo != "client.test" {
		t.Errorf("ClientIP, Helo = %q, %q", d.Envelope.ClientIP, d.Envelope.Helo)
	}
	if !bytes.Equal(d.Raw, crlf(dsn)) {
		t.Errorf("raw message differs from what was sent (%d bytes, sent %d)", len(d.Raw), len(crlf(dsn)))
	}
	if d.ParseError != "" || d.Report == nil {
		t.Fatalf("ParseError %q, Report %v", d.ParseError, d.Report)
	}
	if n := len(d.Report.Recipients); n != 1 || d.Report.Recipients[0].Address() != "kijitora@example.net" {
		t.Errorf("report recipients = %+v, want kijitora@example.net", d.Report.Recipients)
	}
}

func TestRealStore(t *testing.T) {
	db, err := bolt.Open(t.TempDir()+"/bouncer.db", bolt.Options{})
	tcheck(t, err, "opening store")
	ts := newTestServer(t, testOptions(), db)
	t.Cleanup(func() { db.Close() }) // after the server's cleanup
	c := dial(t, ts.addr)
	dsn := readTestdata(t, "lhost-postfix-03.eml")
	_, err = send(c, "", []string{"bounces+user=dead.test@" + bounceDomain}, dsn)
	tcheck(t, err, "sending DSN")

	// The store files the record under the VERP address, which is the
	// address the bounce is about.
	recs, err := db.Query(store.Filter{Recipient: "user@dead.test"})
	tcheck(t, err, "query")
	if len(recs) != 1 {
		t.Fatalf("got %d records, want 1", len(recs))
	}
	r := recs[0]
	if r.Envelope.VERP != "user@dead.test" || r.Envelope.MailFrom != "" || r.FinalRecipient != "kijitora@example.net" {
		t.Errorf("envelope = %+v", r.Envelope)
	}
	raw, err := db.Raw(r.MsgID)
	tcheck(t, err, "reading raw")
	if !bytes.Equal(raw, crlf(dsn)) {
		t.Errorf("stored raw message differs from what was sent")
	}
}

func TestRecipientDomains(t *testing.T) {
	tests := []struct {
		name string
		opts func(*Options)
		rcpt string
		code int // 0: accepted
		enh  smtp.EnhancedCode
	}{
		{"bounce domain", nil, "bounces+a=b.test@" + bounceDomain, 0, smtp.EnhancedCode{}},
		{"domain case-insensitive", nil, "x@BOUNCE.Example.ORG", 0, smtp.EnhancedCode{}},
		{"non-VERP local part", nil, "plain@" + bounceDomain, 0, smtp.EnhancedCode{}},
		{"foreign domain", nil, "victim@example.com", 550, smtp.EnhancedCode{5, 7, 1}},
		{"subdomain is foreign", nil, "x@sub." + bounceDomain, 550, smtp.EnhancedCode{5, 7, 1}},
		{"postmaster at bounce domain", nil, "postmaster@" + bounceDomain, 0, smtp.EnhancedCode{}},
		{"postmaster at hostname", nil, "PostMaster@mx.test", 0, smtp.EnhancedCode{}},
		{"postmaster elsewhere", nil, "postmaster@example.com", 550, smtp.EnhancedCode{5, 7, 1}},
		{"no domains configured", func(o *Options) { o.Domains = nil }, "anyone@anywhere.test", 0, smtp.EnhancedCode{}},
		{"invalid UTF-8", nil, "b\xffd@" + bounceDomain, 553, smtp.EnhancedCode{5, 1, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := testOptions()
			if tt.opts != nil {
				tt.opts(&opts)
			}
			ts := newTestServer(t, opts, &memSaver{})
			c := dial(t, ts.addr)
			tcheck(t, c.Mail("", nil), "mail")
			err := c.Rcpt(tt.rcpt, nil)
			if tt.code == 0 {
				tcheck(t, err, "rcpt")
				return
			}
			se := wantCode(t, err, tt.code, tt.enh)
			if !strings.Contains(se.Message, "(id ") {
				t.Errorf("reply %q carries no id", se.Message)
			}
			// The session stays usable after a refused recipient.
			tcheck(t, c.Rcpt("postmaster@"+bounceDomain, nil), "rcpt after refusal")
		})
	}
}

func TestOversizeMessage(t *testing.T) {
	opts := testOptions()
	opts.MaxMessageBytes = 4096
	saver := &memSaver{}
	ts := newTestServer(t, opts, saver)
	c := dial(t, ts.addr)
	big := bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n"), 128)
	_, err := send(c, "", []string{"x@" + bounceDomain}, big)
	wantCode(t, err, 552, smtp.EnhancedCode{5, 3, 4})

	// The session stays in step: the next transaction works.
	_, err = send(c, "", []string{"x@" + bounceDomain}, readTestdata(t, "lhost-postfix-03.eml"))
	tcheck(t, err, "sending after oversize")
	if n := len(saver.all()); n != 1 {
		t.Fatalf("got %d deliveries, want 1", n)
	}
}

func TestSizeAtMail(t *testing.T) {
	opts := testOptions()
	opts.MaxMessageBytes = 2048
	ts := newTestServer(t, opts, &memSaver{})
	c := dial(t, ts.addr)
	err := c.Mail("", &smtp.MailOptions{Size: 4096})
	wantCode(t, err, 552, smtp.EnhancedCode{5, 3, 4})
	tcheck(t, c.Mail("", &smtp.MailOptions{Size: 1024}), "mail with SIZE under limit")
}

func TestTooManyRecipients(t *testing.T) {
	opts := testOptions()
	opts.MaxRecipients = 2
	saver := &memSaver{}
	ts := newTestServer(t, opts, saver)
	c := dial(t, ts.addr)
	tcheck(t, c.Mail("", nil), "mail")
	tcheck(t, c.Rcpt("a@"+bounceDomain, nil), "rcpt 1")
	tcheck(t, c.Rcpt("b@"+bounceDomain, nil), "rcpt 2")
	wantCode(t, c.Rcpt("c@"+bounceDomain, nil), 452, smtp.EnhancedCode{4, 5, 3})
	// The message still goes to the recipients accepted so far.
	w, err := c.Data()
	tcheck(t, err, "data")
	w.Write(readTestdata(t, "lhost-postfix-03.eml"))
	tcheck(t, w.Close(), "end of data")
	got := saver.all()
	if len(got) != 1 || len(got[0].Envelope.RcptTo) != 2 {
		t.Fatalf("got deliveries %+v, want one with 2 recipients", got)
	}
}

func TestSaverFailure(t *testing.T) {
	saver := &memSaver{}
	const internal = "bolt: disk on fire at /var/lib/bouncer.db"
	saver.setFail(errors.New(internal))
	ts := newTestServer(t, testOptions(), saver)
	dsn := readTestdata(t, "lhost-postfix-03.eml")

	c := dial(t, ts.addr)
	_, err := send(c, "", []string{"x@" + bounceDomain}, dsn)
	se := wantCode(t, err, 451, smtp.EnhancedCode{4, 3, 0})
	for _, leak := range []string{"disk", "bolt", "/var", "fire"} {
		if strings.Contains(se.Message, leak) {
			t.Errorf("reply %q leaks internals (%q)", se.Message, leak)
		}
	}
	if ts.Stats().Failed != 1 {
		t.Errorf("Failed = %d, want 1", ts.Stats().Failed)
	}
	c.Quit()

	// Once the fault clears, delivery works again on a fresh connection.
	saver.setFail(nil)
	c = dial(t, ts.addr)
	_, err = send(c, "", []string{"x@" + bounceDomain}, dsn)
	tcheck(t, err, "sending after the fault cleared")
	if n := len(saver.all()); n != 1 {
		t.Fatalf("got %d deliveries, want 1", n)
	}
}

func TestSaveTimeout(t *testing.T) {
	opts := testOptions()
	opts.SaveTimeout = 50 * time.Millisecond
	ts := newTestServer(t, opts, blockingSaver{})
	c := dial(t, ts.addr)
	_, err := send(c, "", []string{"x@" + bounceDomain}, readTestdata(t, "lhost-postfix-03.eml"))
	wantCode(t, err, 451, smtp.EnhancedCode{4, 3, 0})
}

// blockingSaver waits until its context ends, like a store whose disk hangs.
type blockingSaver struct{}

func (blockingSaver) Save(ctx context.Context, _ *store.Delivery) ([]store.Record, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func TestUndecodableMessageKept(t *testing.T) {
	saver := &memSaver{}
	ts := newTestServer(t, testOptions(), saver)
	c := dial(t, ts.addr)
	for _, body := range [][]byte{
		readTestdata(t, "is-not-bounce-02.eml"),
		[]byte("Content-Type: multipart/report; boundary=\"x\"\r\n\r\n--x\r\nContent-Type: message/delivery-status\r\n\r\n\x00\xff\xfe garbage with no end"),
	} {
		_, err := send(c, "", []string{"x@" + bounceDomain}, body)
		tcheck(t, err, "sending undecodable message")
	}
	got := saver.all()
	if len(got) != 2 {
		t.Fatalf("got %d deliveries, want 2", len(got))
	}
	for i, d := range got {
		if d.ParseError == "" {
			t.Errorf("delivery %d: no ParseError, report %+v", i, d.Report)
		}
		if len(d.Raw) == 0 {
			t.Errorf("delivery %d: raw message not kept", i)
		}
	}
	if !errors.Is(parseErr(t, got[0]), parse.ErrNotBounce) {
		t.Errorf("ParseError of a non-bounce = %q, want %q", got[0].ParseError, parse.ErrNotBounce)
	}
	if s := ts.Stats(); s.Stored != 2 || s.Unparsed != 2 {
		t.Errorf("stats = %+v, want 2 stored, 2 unparsed", s)
	}
}

// parseErr re-runs the decoder on a stored message, to compare errors.
func parseErr(t *testing.T, d *store.Delivery) error {
	t.Helper()
	_, err := parse.Message(bytes.NewReader(d.Raw), parse.Limits{})
	if err == nil || err.Error() != d.ParseError {
		t.Fatalf("decoder now says %v, stored ParseError %q", err, d.ParseError)
	}
	return err
}

func TestPanicInSession(t *testing.T) {
	saver := &memSaver{panicNext: true}
	ts := newTestServer(t, testOptions(), saver)
	ts.wantPanics = 1
	dsn := readTestdata(t, "lhost-postfix-03.eml")

	c := dial(t, ts.addr)
	_, err := send(c, "", []string{"x@" + bounceDomain}, dsn)
	wantCode(t, err, 421, smtp.EnhancedCode{4, 3, 0})
	// The connection is closed after the 421.
	if err := c.Noop(); err == nil {
		t.Errorf("NOOP after 421 succeeded, want closed connection")
	}

	// The server keeps running.
	c = dial(t, ts.addr)
	_, err = send(c, "", []string{"x@" + bounceDomain}, dsn)
	tcheck(t, err, "sending after a panic")
	if got := ts.Stats().Panics; got != 1 {
		t.Errorf("Panics = %d, want 1", got)
	}
}

func TestDecoderPanicStillStored(t *testing.T) {
	opts := testOptions()
	opts.Decode = func(io.Reader, parse.Limits) (*parse.Report, error) { panic("decoder bug") }
	saver := &memSaver{}
	ts := newTestServer(t, opts, saver)
	ts.wantPanics = 1
	c := dial(t, ts.addr)
	_, err := send(c, "", []string{"x@" + bounceDomain}, readTestdata(t, "lhost-postfix-03.eml"))
	tcheck(t, err, "sending")
	got := saver.all()
	if len(got) != 1 || !strings.Contains(got[0].ParseError, "decoder panic") {
		t.Fatalf("got %+v, want one delivery with a decoder panic as ParseError", got)
	}
}

// lockedBuffer is a log destination that tests read while sessions write.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) lines() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Split(b.buf.String(), "\n")
}

// TestLogLines checks the two info lines of a stored bounce: "bounce
// stored" with what was decided, and "connection closed" with the
// session's totals, both carrying the connection id.
func TestLogLines(t *testing.T) {
	var out lockedBuffer
	l, err := net.Listen("tcp", "127.0.0.1:0")
	tcheck(t, err, "listen")
	s := New(testOptions(), &memSaver{}, slog.New(slog.NewTextHandler(&out, nil)))
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		tcheck(t, s.Shutdown(ctx), "shutdown")
		tcheck(t, <-done, "serve")
	}()

	c := dial(t, l.Addr().String())
	_, err = send(c, "", []string{"bounces+user=dead.test@" + bounceDomain}, readTestdata(t, "lhost-postfix-03.eml"))
	tcheck(t, err, "sending DSN")
	tcheck(t, c.Quit(), "quit")

	find := func(msg string) string {
		for range 500 {
			for _, line := range out.lines() {
				if strings.Contains(line, "msg="+msg) || strings.Contains(line, `msg="`+msg+`"`) {
					return line
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("no %q line in the log:\n%s", msg, strings.Join(out.lines(), "\n"))
		return ""
	}
	stored, closed := find("bounce stored"), find("connection closed")
	cid := regexp.MustCompile(`\bcid=(\S+)`).FindStringSubmatch(stored)
	if cid == nil {
		t.Fatalf("stored line has no cid: %s", stored)
	}
	for _, want := range []string{"level=INFO", " id=" + cid[1] + ".1 ", "verp=user@dead.test", "kind=bounce",
		"recipient=kijitora@example.net", "action=failed", "status=5."} {
		if !strings.Contains(stored, want) {
			t.Errorf("stored line lacks %q: %s", want, stored)
		}
	}
	for _, want := range []string{"level=INFO", "cid=" + cid[1] + " ", "remote=127.0.0.1:", "helo=client.test", "messages=1 ", "bad_replies=0"} {
		if !strings.Contains(closed, want) {
			t.Errorf("closed line lacks %q: %s", want, closed)
		}
	}
}
