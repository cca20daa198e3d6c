//go:build integration

package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

var update = flag.Bool("update", false, "save one real DSN per MTA into testdata/")

// bouncerBin is the bouncer binary built once by TestMain.
var bouncerBin string

const (
	bounceDomain = "bounce.test"
	deadDomain   = "dead.test"
)

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "bouncer-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		os.Exit(1)
	}
	bouncerBin = filepath.Join(dir, "bouncer")
	cmd := exec.Command("go", "build", "-o", bouncerBin, "github.com/bouncer/bouncer/cmd/bouncer")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "integration: building bouncer:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// record holds the fields of a store.Record (bouncer query --json) that
// the tests check. It is decoded from the binary's output on purpose, so
// the JSON names are under test too.
type record struct {
	ID                 string `json:"id"`
	MsgID              string `json:"msg_id"`
	Recipient          string `json:"recipient"`
	Status             string `json:"status"`
	StatusLiteral      string `json:"status_literal"`
	Action             string `json:"action"`
	Kind               string `json:"kind"`
	Class              string `json:"class"`
	ReportingMTA       string `json:"reporting_mta"`
	RemoteMTA          string `json:"remote_mta"`
	DiagnosticCode     string `json:"diagnostic_code"`
	OriginalEnvelopeID string `json:"original_envelope_id"`
	OriginalRecipient  string `json:"original_recipient"`
	Reason             string `json:"reason"`
	DecodedBy          string `json:"decoded_by"`
	Verdict            string `json:"verdict"`
	Mismatch           string `json:"mismatch"`
	Suppressed         bool   `json:"suppressed"`
	Envelope           struct {
		MailFrom string `json:"mail_from"`
		VERP     string `json:"verp"`
		Verified bool   `json:"verified"`
		Campaign string `json:"campaign"`
	} `json:"envelope"`
}

func (r record) String() string {
	return fmt.Sprintf("%s %s orig=%s action=%s status=%s (literal %s) kind=%s class=%s reason=%s by=%s verdict=%s envid=%q diag=%q",
		r.ID, r.Recipient, r.OriginalRecipient, r.Action, r.Status, r.StatusLiteral, r.Kind, r.Class, r.Reason, r.DecodedBy, r.Verdict,
		r.OriginalEnvelopeID, r.DiagnosticCode)
}

// bouncerProc is a running "bouncer serve".
type bouncerProc struct {
	smtpAddr string // bound SMTP address, read back from the log
	httpAddr string // bound admin API address
	config   string // config for the client commands (real http.listen)
	dir      string
}

var placeholderRE = regexp.MustCompile(`@[A-Z_]+@`)

var listenRE = regexp.MustCompile(`msg="bouncer listening".* smtp=(\S+).* http=(\S+)`)

// startBouncer runs the built binary on 127.0.0.1:0 with a temp config and
// waits for its "bouncer listening" log line to learn the bound addresses.
func startBouncer(t *testing.T) *bouncerProc {
	t.Helper()
	dir := t.TempDir()
	db := filepath.Join(dir, "bouncer.db")
	serveCfg := filepath.Join(dir, "serve.toml")
	writeFile(t, serveCfg, fmt.Sprintf(`[smtp]
listen = "127.0.0.1:0"
hostname = "bouncer.test"
domains = [%q]
[verp]
keys = [{ id = %q, secret = %q }]
[http]
listen = "127.0.0.1:0"
[store]
path = %q
[log]
level = "debug"
`, bounceDomain, signKey.ID, signKey.Secret, db))

	cmd := exec.Command(bouncerBin, "serve", "-config", serveCfg)
	stderr, err := cmd.StderrPipe()
	tcheck(t, err, "stderr pipe")
	tcheck(t, cmd.Start(), "starting bouncer serve")
	done := make(chan struct{})
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})

	// The server's log is shown only when the test fails.
	logs := &lockedBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("bouncer serve log:\n%s", logs.String())
		}
	})
	found := make(chan [2]string, 1)
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stderr)
		sent := false
		for sc.Scan() {
			line := sc.Text()
			logs.Write([]byte(line + "\n"))
			if m := listenRE.FindStringSubmatch(line); m != nil && !sent {
				found <- [2]string{m[1], m[2]}
				sent = true
			}
		}
		io.Copy(io.Discard, stderr)
		cmd.Wait()
	}()
	var addrs [2]string
	select {
	case addrs = <-found:
	case <-done:
		t.Fatal("bouncer serve exited before listening")
	case <-time.After(20 * time.Second):
		t.Fatal("bouncer serve did not log its listening addresses in 20s")
	}
	p := &bouncerProc{smtpAddr: addrs[0], httpAddr: addrs[1], dir: dir}
	p.config = filepath.Join(dir, "client.toml")
	writeFile(t, p.config, fmt.Sprintf("[http]\nlisten = %q\n[store]\npath = %q\n", p.httpAddr, db))
	return p
}

// run runs a bouncer client command against p and returns stdout and the
// exit code.
func (p *bouncerProc) run(t *testing.T, args ...string) (string, int) {
	t.Helper()
	full := append([]string{args[0], "-config", p.config}, args[1:]...)
	cmd := exec.Command(bouncerBin, full...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.String(), 0
	case errors.As(err, &ee):
		if errb.Len() > 0 {
			t.Logf("bouncer %s: stderr: %s", strings.Join(args, " "), strings.TrimSpace(errb.String()))
		}
		return out.String(), ee.ExitCode()
	default:
		t.Fatalf("running bouncer %s: %v", strings.Join(args, " "), err)
		return "", -1
	}
}

// query returns the records "bouncer query --json" prints for the extra args.
func (p *bouncerProc) query(t *testing.T, args ...string) []record {
	t.Helper()
	out, code := p.run(t, append([]string{"query", "--json", "--limit", "1000"}, args...)...)
	if code != 0 {
		t.Fatalf("bouncer query %v: exit %d", args, code)
	}
	var recs []record
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var r record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("decoding query line %q: %v", line, err)
		}
		recs = append(recs, r)
	}
	return recs
}

// suppressed runs "bouncer suppressed ADDR": 0 suppressed, 1 not.
func (p *bouncerProc) suppressed(t *testing.T, addr string) bool {
	t.Helper()
	out, code := p.run(t, "suppressed", addr)
	switch code {
	case 0:
		t.Logf("bouncer suppressed %s: %s", addr, strings.TrimSpace(out))
		return true
	case 1:
		return false
	default:
		t.Fatalf("bouncer suppressed %s: exit %d", addr, code)
		return false
	}
}

// raw fetches the raw message of a record from the admin API.
func (p *bouncerProc) raw(t *testing.T, id string) []byte {
	t.Helper()
	resp, err := http.Get("http://" + p.httpAddr + "/v1/bounces/" + id + "/raw")
	tcheck(t, err, "fetching raw message")
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	tcheck(t, err, "reading raw message")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("raw message of %s: %s: %s", id, resp.Status, b)
	}
	return b
}

// waitRecord polls "bouncer query" until a record for addr matches ok,
// or fails the test once the deadline passes; the MTAs' retry timers set
// how long that is.
func (p *bouncerProc) waitRecord(t *testing.T, addr string, deadline time.Duration, what string, ok func(record) bool) record {
	t.Helper()
	end := time.Now().Add(deadline)
	for {
		recs := p.query(t, "--recipient", addr)
		for _, r := range recs {
			if ok(r) {
				t.Logf("got %s: %s", what, r)
				return r
			}
		}
		if time.Now().After(end) {
			for _, r := range recs {
				t.Logf("record: %s", r)
			}
			t.Fatalf("no %s for %s within %v (%d records)", what, addr, deadline, len(recs))
		}
		time.Sleep(time.Second)
	}
}

// stub stands in for the remote MTA of dead.test. It answers RCPT by the
// recipient's local part and keeps what it was told.
type stub struct {
	addr string
	mu   sync.Mutex
	log  []string
}

// stubReply is the stub's answer to RCPT TO:<local@dead.test>.
func stubReply(local string) *smtp.SMTPError {
	switch {
	case strings.HasPrefix(local, "route"):
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 4, 3},
			Message: "Routing server failure - intermediate server permanently down"}
	case strings.HasPrefix(local, "unknown"):
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "User unknown"}
	case strings.HasPrefix(local, "later"):
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 3},
			Message: "Routing server temporarily unreachable, try again later"}
	case strings.HasPrefix(local, "full"):
		return &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 2, 2},
			Message: "Mailbox full, quota exceeded"}
	}
	return nil
}

// stubDataReply is the stub's answer at the end of DATA for a message
// whose accepted recipients have these local parts: a message for big*
// is refused as too large (552 5.3.4), for all its recipients.
func stubDataReply(locals []string) *smtp.SMTPError {
	for _, l := range locals {
		if strings.HasPrefix(l, "big") {
			return &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4},
				Message: "Message size exceeds fixed maximum message size"}
		}
	}
	return nil
}

func startStub(t *testing.T) *stub {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	tcheck(t, err, "stub listen")
	s := &stub{addr: l.Addr().String()}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &stubSession{s: s}, nil
	}))
	srv.Domain = "mx.dead.test"
	srv.ReadTimeout = time.Minute
	srv.WriteTimeout = time.Minute
	srv.MaxMessageBytes = 1 << 20
	srv.MaxRecipients = 10
	srv.MaxLineLength = 2000
	srv.EnableDSN = true
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return s
}

func (s *stub) note(format string, args ...any) {
	s.mu.Lock()
	s.log = append(s.log, fmt.Sprintf(format, args...))
	s.mu.Unlock()
}

type stubSession struct {
	s      *stub
	locals []string // local parts of the accepted recipients
}

func (ss *stubSession) Reset()        { ss.locals = nil }
func (ss *stubSession) Logout() error { return nil }
func (ss *stubSession) Mail(from string, _ *smtp.MailOptions) error {
	ss.s.note("MAIL FROM:<%s>", from)
	return nil
}

func (ss *stubSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	local, _, _ := strings.Cut(to, "@")
	err := stubReply(strings.ToLower(local))
	if err != nil {
		ss.s.note("RCPT TO:<%s> -> %d %v %s", to, err.Code, err.EnhancedCode, err.Message)
		return err
	}
	ss.s.note("RCPT TO:<%s> -> 250", to)
	ss.locals = append(ss.locals, strings.ToLower(local))
	return nil
}

func (ss *stubSession) Data(r io.Reader) error {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	if err := stubDataReply(ss.locals); err != nil {
		ss.s.note("DATA for %v -> %d %v %s", ss.locals, err.Code, err.EnhancedCode, err.Message)
		return err
	}
	ss.s.note("DATA for %v -> 250", ss.locals)
	return nil
}

// message is one submission to the MTA under test.
type message struct {
	from   string
	to     []string
	mail   *smtp.MailOptions
	rcpt   *smtp.RcptOptions
	header string // extra header lines
}

// submit delivers msg to the MTA listening at addr over SMTP.
func submit(t *testing.T, addr string, msg message) {
	t.Helper()
	c, err := smtp.Dial(addr)
	tcheck(t, err, "dialing MTA")
	defer c.Close()
	tcheck(t, c.Hello("client.example.test"), "EHLO")
	tcheck(t, c.Mail(msg.from, msg.mail), "MAIL FROM")
	for _, to := range msg.to {
		tcheck(t, c.Rcpt(to, msg.rcpt), "RCPT TO "+to)
	}
	w, err := c.Data()
	tcheck(t, err, "DATA")
	body := fmt.Sprintf("From: Newsletter <news@example.test>\r\nTo: %s\r\nSubject: integration test to %s\r\n"+
		"Message-ID: <%d.%s@example.test>\r\nDate: %s\r\n%s\r\nHello, this is a test message.\r\n",
		strings.Join(msg.to, ", "), strings.Join(msg.to, ", "), time.Now().UnixNano(), strings.ReplaceAll(msg.to[0], "@", "."),
		time.Now().Format(time.RFC1123Z), msg.header)
	_, err = io.WriteString(w, body)
	tcheck(t, err, "writing message")
	tcheck(t, w.Close(), "end of DATA")
	tcheck(t, c.Quit(), "QUIT")
}

// freePort returns a loopback port nobody listened on a moment ago, for
// MTAs that need a port in their config before they start.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	tcheck(t, err, "finding a free port")
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// port returns the port of a loopback host:port.
func port(t *testing.T, addr string) string {
	t.Helper()
	host, p, err := net.SplitHostPort(addr)
	tcheck(t, err, "splitting "+addr)
	if host != "127.0.0.1" {
		t.Fatalf("%s is not on 127.0.0.1", addr)
	}
	return p
}

// waitListen waits until something accepts connections at addr.
func waitListen(t *testing.T, addr string, within time.Duration) {
	t.Helper()
	end := time.Now().Add(within)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(end) {
			t.Fatalf("nothing listens at %s after %v: %v", addr, within, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// mtaDir makes a world-traversable temp folder: MTA daemons drop root and
// must reach their spool by absolute path, which t.TempDir's 0700 parents
// forbid. It is removed at cleanup, after the MTA (registered later) stops.
func mtaDir(t *testing.T, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	tcheck(t, err, "making MTA folder")
	tcheck(t, os.Chmod(dir, 0o755), "chmod MTA folder")
	t.Cleanup(func() {
		if t.Failed() && os.Getenv("KEEP_MTA_DIR") != "" {
			t.Logf("keeping %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	return dir
}

// fill copies a testdata template to dst, replacing @KEY@ placeholders.
func fill(t *testing.T, src, dst string, vars map[string]string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", src))
	tcheck(t, err, "reading template")
	s := string(b)
	for k, v := range vars {
		s = strings.ReplaceAll(s, "@"+k+"@", v)
	}
	if m := placeholderRE.FindString(s); m != "" {
		t.Fatalf("%s: placeholder %s not filled", src, m)
	}
	writeFile(t, dst, s)
}

// saveSample writes a real DSN into testdata when -update is given.
func saveSample(t *testing.T, name string, raw []byte) {
	t.Helper()
	if !*update {
		return
	}
	tcheck(t, os.WriteFile(filepath.Join("testdata", name), raw, 0o644), "saving sample")
	t.Logf("saved testdata/%s (%d bytes)", name, len(raw))
}

// runCmd runs an MTA control command with a deadline and logs its output.
func runCmd(t *testing.T, env []string, name string, args ...string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if len(out) > 0 {
		t.Logf("%s %s: %s", name, strings.Join(args, " "), strings.TrimSpace(string(out)))
	}
	if err != nil {
		return fmt.Errorf("running %s %s: %w", name, strings.Join(args, " "), err)
	}
	return nil
}

func requireRoot(t *testing.T, mta string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("SKIP: %s must be started as root (it binds, changes user and owns its queue); run as root or in CI", mta)
	}
}

// lockedBuffer collects a child's output while tests read it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func writeFile(t *testing.T, name, s string) {
	t.Helper()
	tcheck(t, os.WriteFile(name, []byte(s), 0o644), "writing "+name)
}

func tcheck(t *testing.T, err error, msg string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", msg, err)
	}
}
