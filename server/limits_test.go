package server

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// localAddr is a source address on the loopback network; Linux routes all
// of 127.0.0.0/8 to lo, so 127.0.0.2 is a second client.
func localAddr(ip string) net.Addr {
	return &net.TCPAddr{IP: net.ParseIP(ip)}
}

// TestSlowloris opens silent connections from one address until the cap,
// checks that the next one is answered 421 4.7.0 at once, and that a client
// from another address is still served.
func TestSlowloris(t *testing.T) {
	opts := testOptions()
	opts.MaxConnsPerIP = 5
	saver := &memSaver{}
	ts := newTestServer(t, opts, saver)
	for range opts.MaxConnsPerIP {
		dialRaw(t, ts.addr, localAddr("127.0.0.1")) // reads 220, then stays silent
	}
	for range 3 {
		c := connectRaw(t, ts.addr, localAddr("127.0.0.1"))
		c.expect(421, "4.7.0")
		c.expectClosed()
	}

	nc, err := (&net.Dialer{LocalAddr: localAddr("127.0.0.2")}).Dial("tcp", ts.addr)
	tcheck(t, err, "dialing from 127.0.0.2")
	c := smtp.NewClient(nc)
	defer c.Close()
	tcheck(t, c.Hello("other.test"), "ehlo")
	_, err = send(c, "", []string{"x@" + bounceDomain}, readTestdata(t, "lhost-postfix-03.eml"))
	tcheck(t, err, "sending from another address")
	if s := ts.Stats(); s.Refused != 3 || s.Stored != 1 {
		t.Errorf("stats = %+v, want 3 refused, 1 stored", s)
	}
}

func TestTotalConnectionCap(t *testing.T) {
	opts := testOptions()
	opts.MaxConns = 2
	ts := newTestServer(t, opts, &memSaver{})
	// Connections that have had a command accepted are not evicted.
	dialRaw(t, ts.addr, localAddr("127.0.0.1")).cmd("EHLO one.test", 250, "")
	dialRaw(t, ts.addr, localAddr("127.0.0.2")).cmd("EHLO two.test", 250, "")
	c := connectRaw(t, ts.addr, localAddr("127.0.0.3"))
	c.expect(421, "4.7.0")
	c.expectClosed()
}

func TestConnectRate(t *testing.T) {
	opts := testOptions()
	opts.ConnectRate = 1 // per minute: no token comes back during the test
	opts.ConnectBurst = 2
	ts := newTestServer(t, opts, &memSaver{})
	for range 2 {
		c := dialRaw(t, ts.addr, localAddr("127.0.0.1"))
		c.cmd("QUIT", 221, "")
	}
	c := connectRaw(t, ts.addr, localAddr("127.0.0.1"))
	c.expect(421, "4.7.0")
	c.expectClosed()
	// Another address has its own budget.
	c = dialRaw(t, ts.addr, localAddr("127.0.0.2"))
	c.cmd("QUIT", 221, "")
}

func TestIdleTimeout(t *testing.T) {
	opts := testOptions()
	opts.ReadTimeout = 200 * time.Millisecond
	ts := newTestServer(t, opts, &memSaver{})
	c := dialRaw(t, ts.addr, nil)
	c.cmd("EHLO client.test", 250, "")
	// Silence: the server gives up.
	c.expect(421, "4.4.2")
	c.expectClosed()
}

// TestIdleRenewedInData streams a message slower than the idle timeout
// allows for the whole of it, but faster than it for each read: the
// deadline is per read, so the message is accepted.
func TestIdleRenewedInData(t *testing.T) {
	opts := testOptions()
	opts.ReadTimeout = 600 * time.Millisecond
	opts.MinDataRate = 1 // out of the way
	saver := &memSaver{}
	ts := newTestServer(t, opts, saver)
	c := dialRaw(t, ts.addr, nil)
	c.startMessage()
	c.cmd("DATA", 354, "")
	c.write("Subject: slow\r\n\r\n")
	for i := range 8 { // 8 × 150 ms is twice the idle timeout
		time.Sleep(150 * time.Millisecond)
		c.write("line " + strings.Repeat("x", i) + "\r\n")
	}
	c.write(".\r\n")
	c.expect(250, "2.0.0")
	if n := len(saver.all()); n != 1 {
		t.Fatalf("got %d deliveries, want 1", n)
	}
}

// TestSessionCap keeps a session busy with NOOPs past the session cap.
func TestSessionCap(t *testing.T) {
	opts := testOptions()
	opts.SessionTimeout = 500 * time.Millisecond
	ts := newTestServer(t, opts, &memSaver{})
	c := dialRaw(t, ts.addr, nil)
	c.cmd("EHLO client.test", 250, "")
	for range 200 {
		time.Sleep(50 * time.Millisecond)
		c.write("NOOP\r\n")
		code, msg, err := c.reply()
		tcheck(t, err, "reading reply")
		if code == 250 {
			continue
		}
		if code != 421 || !strings.HasPrefix(msg, "4.4.2") {
			t.Fatalf("got %d %q, want 421 4.4.2", code, msg)
		}
		c.expectClosed()
		return
	}
	t.Fatalf("session still open after 200 NOOPs, want it closed by the session cap")
}

// TestMinDataRate trickles a message below the minimum rate. The server
// gives up with 421, and what the client sends afterwards, including an end
// of data and commands, never runs.
func TestMinDataRate(t *testing.T) {
	opts := testOptions()
	opts.MinDataRate = 100
	opts.DataRateGrace = 300 * time.Millisecond
	saver := &memSaver{}
	ts := newTestServer(t, opts, saver)
	c := dialRaw(t, ts.addr, nil)
	c.startMessage()
	c.cmd("DATA", 354, "")
	trickle := "Subject: trickle\r\n\r\n" + strings.Repeat("z", 200) + "\r\n.\r\nMAIL FROM:<x@y.test>\r\n"
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range len(trickle) {
			if _, err := c.nc.Write([]byte{trickle[i]}); err != nil {
				return
			}
			time.Sleep(20 * time.Millisecond) // 50 bytes/s
		}
	}()
	c.expect(421, "4.4.2")
	c.expectClosed()
	c.nc.Close()
	<-done
	if n := len(saver.all()); n != 0 {
		t.Fatalf("got %d deliveries, want none", n)
	}
}

func TestTooManyBadCommands(t *testing.T) {
	opts := testOptions()
	opts.MaxBadCommands = 3
	ts := newTestServer(t, opts, &memSaver{})
	c := dialRaw(t, ts.addr, nil)
	c.cmd("EHLO client.test", 250, "")
	c.cmd("MAIL FROM:<>", 250, "")
	c.cmd("RCPT TO:<a@example.com>", 550, "5.7.1")
	c.cmd("RCPT TO:<b@example.com>", 550, "5.7.1")
	c.cmd("RCPT TO:<c@example.com>", 550, "5.7.1")
	c.expect(421, "4.7.0")
	c.expectClosed()
}

// TestHostileInput sends one bad command per case over real TCP and checks
// the reply and that the session is still in step afterwards.
func TestHostileInput(t *testing.T) {
	opts := testOptions()
	opts.MaxMessageBytes = 4096
	ts := newTestServer(t, opts, &memSaver{})
	rcpt := "RCPT TO:<x@" + bounceDomain + ">"
	tests := []struct {
		name  string
		setup []string // commands that must get 2xx first
		send  string
		code  int
		enh   string
	}{
		{"unknown command", nil, "XYZW arg\r\n", 500, "5.5.2"},
		{"mangled command", nil, "FOO BAR\r\n", 501, "5.5.2"},
		{"short command", nil, "AB\r\n", 501, "5.5.2"},
		{"SIZE over limit at MAIL", nil, "MAIL FROM:<> SIZE=999999999\r\n", 552, "5.3.4"},
		{"SIZE not a number", nil, "MAIL FROM:<> SIZE=-1\r\n", 501, "5.5.4"},
		{"invalid UTF-8 sender", nil, "MAIL FROM:<a\xff@b.test>\r\n", 553, "5.1.7"},
		{"control character in sender", nil, "MAIL FROM:<a\x01b@b.test>\r\n", 553, "5.1.7"},
		{"unknown MAIL parameter", nil, "MAIL FROM:<> X-EVIL=1\r\n", 500, "5.5.4"},
		{"BINARYMIME not offered", nil, "MAIL FROM:<> BODY=BINARYMIME\r\n", 504, "5.5.4"},
		{"RCPT before MAIL", nil, rcpt + "\r\n", 502, "5.5.1"},
		{"DATA before RCPT", []string{"MAIL FROM:<>"}, "DATA\r\n", 502, "5.5.1"},
		{"empty recipient", []string{"MAIL FROM:<>"}, "RCPT TO:<>\r\n", 501, "5.5.2"},
		{"invalid UTF-8 recipient", []string{"MAIL FROM:<>"}, "RCPT TO:<b\xffd@" + bounceDomain + ">\r\n", 553, "5.1.3"},
		{"NUL in recipient", []string{"MAIL FROM:<>"}, "RCPT TO:<b\x00d@" + bounceDomain + ">\r\n", 553, "5.1.3"},
		{"over-long path", []string{"MAIL FROM:<>"}, "RCPT TO:<" + strings.Repeat("a", 300) + "@" + bounceDomain + ">\r\n", 553, "5.1.3"},
		{"relay attempt", []string{"MAIL FROM:<>"}, "RCPT TO:<victim@example.com>\r\n", 550, "5.7.1"},
		{"source route to a foreign domain", []string{"MAIL FROM:<>"}, "RCPT TO:<@" + bounceDomain + ":victim@example.com>\r\n", 550, "5.7.1"},
		{"DSN parameter not offered", []string{"MAIL FROM:<>"}, rcpt + " NOTIFY=NEVER\r\n", 504, "5.5.4"},
		{"BDAT past the size limit", []string{"MAIL FROM:<>", rcpt}, "BDAT 5000 LAST\r\n" + strings.Repeat(strings.Repeat("b", 98)+"\r\n", 50), 552, "5.3.4"},
		{"BDAT without a size", []string{"MAIL FROM:<>", rcpt}, "BDAT\r\n", 501, "5.5.4"},
		{"DATA with an argument", []string{"MAIL FROM:<>", rcpt}, "DATA now\r\n", 501, "5.5.4"},
		{"nested MAIL", []string{"MAIL FROM:<>"}, "MAIL FROM:<>\r\n", 250, "2.0.0"},
		{"STARTTLS not offered", nil, "STARTTLS\r\n", 502, "5.5.1"},
		{"AUTH over plaintext", nil, "AUTH PLAIN AGZvbwBiYXI=\r\n", 523, "5.7.10"},
		{"EXPN", nil, "EXPN staff\r\n", 502, "5.5.1"},
		{"VRFY", nil, "VRFY root\r\n", 252, "2.5.0"},
		{"UTF-8 recipient with SMTPUTF8", []string{"MAIL FROM:<> SMTPUTF8"}, "RCPT TO:<bücher@" + bounceDomain + ">\r\n", 250, "2.0.0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dialRaw(t, ts.addr, nil)
			c.cmd("EHLO client.test", 250, "")
			for _, s := range tt.setup {
				c.write(s + "\r\n")
				if code, msg, err := c.reply(); err != nil || code/100 != 2 {
					t.Fatalf("setup %q: got %d %q %v", s, code, msg, err)
				}
			}
			c.write(tt.send)
			c.expect(tt.code, tt.enh)
			c.cmd("NOOP", 250, "2.0.0")
			c.cmd("RSET", 250, "2.0.0")
			c.cmd("MAIL FROM:<>", 250, "2.0.0")
			c.cmd(rcpt, 250, "2.0.0")
		})
	}
}

// TestGracefulShutdown checks that Shutdown lets a message in DATA finish
// and get its 250, while an idle client is told 421 at once.
func TestGracefulShutdown(t *testing.T) {
	saver := &memSaver{}
	ts := newTestServer(t, testOptions(), saver)

	busy := dialRaw(t, ts.addr, nil)
	busy.startMessage()
	busy.cmd("DATA", 354, "")
	busy.write("Subject: in flight\r\n\r\nfirst half\r\n")

	idle := dialRaw(t, ts.addr, nil)
	idle.cmd("EHLO idle.test", 250, "")

	shutdown := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shutdown <- ts.Shutdown(ctx)
	}()

	idle.expect(421, "4.3.2")
	idle.expectClosed()

	busy.write("second half\r\n.\r\n")
	busy.expect(250, "2.0.0")
	busy.expect(421, "4.3.2")
	busy.expectClosed()

	tcheck(t, <-shutdown, "shutdown")
	if n := len(saver.all()); n != 1 {
		t.Fatalf("got %d deliveries, want 1", n)
	}
	if _, err := net.DialTimeout("tcp", ts.addr, time.Second); err == nil {
		t.Errorf("server still accepts connections after Shutdown")
	}
}
