package server

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strings"
	"testing"
	"time"
)

// rawClient speaks SMTP byte by byte, for input go-smtp's client would
// never send.
type rawClient struct {
	t  *testing.T
	nc net.Conn
	tc *textproto.Conn
}

// dialRaw connects from local (nil: any) and reads the reply to the
// connection; it fails the test unless that is 220.
func dialRaw(t *testing.T, addr string, local net.Addr) *rawClient {
	t.Helper()
	c := connectRaw(t, addr, local)
	c.expect(220, "")
	return c
}

// connectRaw connects without reading the greeting.
func connectRaw(t *testing.T, addr string, local net.Addr) *rawClient {
	t.Helper()
	d := net.Dialer{LocalAddr: local, Timeout: 5 * time.Second}
	nc, err := d.Dial("tcp", addr)
	tcheck(t, err, "dial")
	t.Cleanup(func() { nc.Close() })
	// A bound on the whole exchange, so a broken server fails the test
	// instead of hanging it.
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	return &rawClient{t: t, nc: nc, tc: textproto.NewConn(nc)}
}

// write sends s as it is.
func (c *rawClient) write(s string) {
	c.t.Helper()
	_, err := c.tc.W.WriteString(s)
	if err == nil {
		err = c.tc.W.Flush()
	}
	tcheck(c.t, err, "writing")
}

// reply reads one reply; code 0 and an error mean the connection ended.
func (c *rawClient) reply() (int, string, error) {
	code, msg, err := c.tc.ReadResponse(0)
	var te *textproto.Error
	if errors.As(err, &te) {
		return te.Code, te.Msg, nil
	}
	return code, msg, err
}

// expect reads one reply and checks its code and the start of its text
// (the enhanced status code, for replies that have one).
func (c *rawClient) expect(code int, prefix string) string {
	c.t.Helper()
	got, msg, err := c.reply()
	if err != nil {
		c.t.Fatalf("reading reply: %v (want %d %s)", err, code, prefix)
	}
	if got != code || !strings.HasPrefix(msg, prefix) {
		c.t.Fatalf("got reply %d %q, want %d %s...", got, msg, code, prefix)
	}
	return msg
}

// cmd sends one command line and checks the reply.
func (c *rawClient) cmd(line string, code int, prefix string) string {
	c.t.Helper()
	c.write(line + "\r\n")
	return c.expect(code, prefix)
}

// expectClosed checks that the server closed the connection.
func (c *rawClient) expectClosed() {
	c.t.Helper()
	code, msg, err := c.reply()
	if err == nil {
		c.t.Fatalf("got reply %d %q, want the connection closed", code, msg)
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
		c.t.Fatalf("got %v, want the connection closed", err)
	}
}

// startMessage runs EHLO, MAIL FROM:<> and one RCPT, ready for DATA.
func (c *rawClient) startMessage() {
	c.t.Helper()
	c.cmd("EHLO client.test", 250, "")
	c.cmd("MAIL FROM:<>", 250, "2.0.0")
	c.cmd("RCPT TO:<bounces+u=dead.test@"+bounceDomain+">", 250, "2.0.0")
}

func TestRawBareLineEndsNormalised(t *testing.T) {
	saver := &memSaver{}
	ts := newTestServer(t, testOptions(), saver)
	c := dialRaw(t, ts.addr, nil)
	c.startMessage()
	c.cmd("DATA", 354, "")
	c.write("Subject: bare\nFrom: a@b.test\n\nline one\rline two\nlast\r\n.\r\n")
	c.expect(250, "2.0.0")
	c.cmd("NOOP", 250, "2.0.0")
	got := saver.all()
	if len(got) != 1 {
		t.Fatalf("got %d deliveries, want 1", len(got))
	}
	want := "Subject: bare\r\nFrom: a@b.test\r\n\r\nline one\r\nline two\r\nlast\r\n"
	if string(got[0].Raw) != want {
		t.Errorf("stored %q, want %q", got[0].Raw, want)
	}
}

func TestRawDotStuffing(t *testing.T) {
	saver := &memSaver{}
	ts := newTestServer(t, testOptions(), saver)
	c := dialRaw(t, ts.addr, nil)
	c.startMessage()
	c.cmd("DATA", 354, "")
	// RFC 5321 §4.5.2: a leading dot is doubled by the client and removed
	// by the server.
	c.write("Subject: dots\r\n\r\n..leading dot\r\n...\r\n. not the end\r\n.\r\n")
	c.expect(250, "2.0.0")
	got := saver.all()
	if len(got) != 1 {
		t.Fatalf("got %d deliveries, want 1", len(got))
	}
	want := "Subject: dots\r\n\r\n.leading dot\r\n..\r\n not the end\r\n"
	if string(got[0].Raw) != want {
		t.Errorf("stored %q, want %q", got[0].Raw, want)
	}
}

// TestRawSmuggling sends SMTP smuggling attempts: an end-of-data marker
// with bare line ends, followed by commands. None of them may end the data,
// so the commands stay message text and never run.
func TestRawSmuggling(t *testing.T) {
	for _, end := range []string{"\n.\n", "\r\n.\n", "\n.\r\n", "\r.\r\n", "\r\n.\r", "\r\n\x00.\r\n"} {
		t.Run(fmt.Sprintf("%q", end), func(t *testing.T) {
			saver := &memSaver{}
			ts := newTestServer(t, testOptions(), saver)
			c := dialRaw(t, ts.addr, nil)
			c.startMessage()
			c.cmd("DATA", 354, "")
			// A server that took end as the end of data would run these
			// commands and take the final ".\r\n" as the end of a second
			// message from evil@attacker.test.
			smuggled := "MAIL FROM:<evil@attacker.test>\r\nRCPT TO:<smuggled@" + bounceDomain + ">\r\nDATA\r\nSubject: smuggled\r\n\r\nhi\r\n"
			c.write("Subject: outer\r\n\r\nbody" + end + smuggled + ".\r\n")
			c.expect(250, "2.0.0")
			// If anything had run as commands, their replies would come
			// before NOOP's.
			c.cmd("NOOP", 250, "2.0.0 No operation")
			got := saver.all()
			if len(got) != 1 {
				t.Fatalf("got %d deliveries, want 1", len(got))
			}
			if !bytes.Contains(got[0].Raw, []byte("RCPT TO:<smuggled@")) {
				t.Errorf("smuggled commands are not in the message text: %q", got[0].Raw)
			}
			if got[0].Envelope.MailFrom != "" {
				t.Errorf("MailFrom = %q, want the null sender", got[0].Envelope.MailFrom)
			}
		})
	}
}

func TestRawLongLines(t *testing.T) {
	opts := testOptions()
	opts.MaxLineLength = 200
	saver := &memSaver{}
	ts := newTestServer(t, opts, saver)

	t.Run("command", func(t *testing.T) {
		c := dialRaw(t, ts.addr, nil)
		c.cmd("EHLO client.test", 250, "")
		c.cmd("NOOP "+strings.Repeat("x", 300), 500, "5.4.0")
		c.expectClosed()
	})
	t.Run("data", func(t *testing.T) {
		c := dialRaw(t, ts.addr, nil)
		c.startMessage()
		c.cmd("DATA", 354, "")
		c.write("Subject: long\r\n\r\n" + strings.Repeat("y", 300) + "\r\n.\r\n")
		c.expect(500, "5.5.2")
		// go-smtp's line limit then answers the next read itself.
		c.expect(500, "5.4.0")
		c.expectClosed()
	})
	if n := len(saver.all()); n != 0 {
		t.Errorf("got %d deliveries, want none", n)
	}
}

func TestRawBDAT(t *testing.T) {
	saver := &memSaver{}
	ts := newTestServer(t, testOptions(), saver)
	c := dialRaw(t, ts.addr, nil)
	c.startMessage()
	part1 := "Subject: chunked\r\n\r\n"
	part2 := "body\r\n.\r\nMAIL FROM:<x@y.test>\r\n"
	c.write(fmt.Sprintf("BDAT %d\r\n%s", len(part1), part1))
	c.expect(250, "2.0.0")
	c.write(fmt.Sprintf("BDAT %d LAST\r\n%s", len(part2), part2))
	c.expect(250, "2.0.0")
	c.cmd("NOOP", 250, "2.0.0")
	got := saver.all()
	if len(got) != 1 {
		t.Fatalf("got %d deliveries, want 1", len(got))
	}
	if string(got[0].Raw) != part1+part2 {
		t.Errorf("stored %q, want both chunks %q", got[0].Raw, part1+part2)
	}
}

// TestRawCommandsAfterQuit pipelines commands after QUIT. go-smtp v0.25.1
// runs them on the closed connection and panics on its dropped session;
// that must not count as a session panic, and the server keeps serving.
func TestRawCommandsAfterQuit(t *testing.T) {
	ts := newTestServer(t, testOptions(), &memSaver{})
	c := dialRaw(t, ts.addr, nil)
	c.write("EHLO client.test\r\nQUIT\r\nMAIL FROM:<>\r\nRCPT TO:<x@" + bounceDomain + ">\r\n")
	c.expect(250, "")
	c.expect(221, "2.0.0")
	c.expectClosed()
	deadline := time.Now().Add(10 * time.Second)
	for ts.Stats().ClosedPanics == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if s := ts.Stats(); s.ClosedPanics != 1 || s.Panics != 0 {
		t.Errorf("stats = %+v, want 1 panic after close and none in sessions", s)
	}
	c = dialRaw(t, ts.addr, nil)
	c.cmd("EHLO client.test", 250, "")
}

// TestRawPipelining sends the commands of two transactions in batches, as
// an RFC 2920 client does: the held replies all arrive, in order, before
// the server waits for more, and QUIT's reply arrives before the close.
func TestRawPipelining(t *testing.T) {
	saver := &memSaver{}
	ts := newTestServer(t, testOptions(), saver)
	c := dialRaw(t, ts.addr, nil)
	c.cmd("EHLO client.test", 250, "")
	rcpt := "RCPT TO:<bounces+u=dead.test@" + bounceDomain + ">\r\n"
	c.write("MAIL FROM:<>\r\nRCPT TO:<someone@elsewhere.example>\r\n" + rcpt + "DATA\r\n")
	c.expect(250, "2.0.0")
	c.expect(550, "5.7.1")
	c.expect(250, "2.0.0")
	c.expect(354, "")
	c.write("Subject: one\r\n\r\nfirst\r\n.\r\nMAIL FROM:<>\r\n" + rcpt + "DATA\r\n")
	c.expect(250, "2.0.0")
	c.expect(250, "2.0.0")
	c.expect(250, "2.0.0")
	c.expect(354, "")
	c.write("Subject: two\r\n\r\nsecond\r\n.\r\nQUIT\r\n")
	c.expect(250, "2.0.0")
	c.expect(221, "")
	c.expectClosed()
	got := saver.all()
	if len(got) != 2 || string(got[0].Raw) != "Subject: one\r\n\r\nfirst\r\n" || string(got[1].Raw) != "Subject: two\r\n\r\nsecond\r\n" {
		t.Fatalf("stored %d messages, want the two sent", len(got))
	}
}
