package server

import (
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// pipeListener hands out the server ends of net.Pipe connections.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr("listener") }

type pipeAddr string

func (pipeAddr) Network() string  { return "pipe" }
func (a pipeAddr) String() string { return "pipe-" + string(a) }

// closeNotify signals when the server closes its end. Each has its own
// remote address, so a late panic of an earlier session is not taken for
// one of the current session.
type closeNotify struct {
	net.Conn
	remote pipeAddr
	once   sync.Once
	closed chan struct{}
}

func (c *closeNotify) RemoteAddr() net.Addr { return c.remote }

func (c *closeNotify) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// FuzzSession feeds raw client bytes to a whole SMTP session over
// net.Pipe. The session must end (no hang), never panic, and never store a
// message over the size limit or for a recipient outside the bounce domain.
func FuzzSession(f *testing.F) {
	dsn := strings.ReplaceAll(string(readTestdata(f, "lhost-postfix-03.eml")), "\n", "\r\n")
	start := "EHLO fuzz.test\r\nMAIL FROM:<>\r\nRCPT TO:<bounces+u=d.test@" + bounceDomain + ">\r\n"
	for _, seed := range []string{
		start + "DATA\r\n" + dsn + ".\r\nQUIT\r\n",
		start + "DATA\r\nSubject: x\r\n\r\nbody\n.\nMAIL FROM:<e@x.test>\r\nRCPT TO:<v@example.com>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n",
		start + "BDAT 10\r\n0123456789BDAT 3 LAST\r\nabcRSET\r\nQUIT\r\n",
		"EHLO x\r\nMAIL FROM:<> SIZE=99999999999\r\nRCPT TO:<postmaster@mx.test>\r\nSTARTTLS\r\nAUTH PLAIN =\r\n",
		"HELO\r\n\x00\xff\r\n" + strings.Repeat("A", 5000) + "\r\n",
	} {
		f.Add([]byte(seed))
	}

	opts := testOptions()
	opts.MaxMessageBytes = 8192
	opts.MaxLineLength = 1000
	opts.ReadTimeout = 2 * time.Second
	opts.ConnectRate = 1e9
	opts.ConnectBurst = 1 << 30
	saver := &memSaver{}
	srv := New(opts, saver, slog.New(slog.DiscardHandler)) // f.Log may not be used from the target
	l := &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
	go srv.Serve(l)
	f.Cleanup(func() { srv.Close() })

	var seq atomic.Int64
	f.Fuzz(func(t *testing.T, in []byte) {
		client, server := net.Pipe()
		sc := &closeNotify{Conn: server, closed: make(chan struct{}), remote: pipeAddr(strconv.FormatInt(seq.Add(1), 10))}
		l.conns <- sc
		go io.Copy(io.Discard, client)
		client.SetWriteDeadline(time.Now().Add(5 * time.Second))
		client.Write(in)
		client.Close()
		select {
		case <-sc.closed:
		case <-time.After(10 * time.Second):
			t.Fatalf("session did not end")
		}
		if n := srv.Stats().Panics; n != 0 {
			t.Fatalf("%d panics", n)
		}
		for _, d := range saver.all() {
			if int64(len(d.Raw)) > opts.MaxMessageBytes {
				t.Fatalf("stored %d bytes, limit %d", len(d.Raw), opts.MaxMessageBytes)
			}
			for _, r := range d.Envelope.RcptTo {
				dom := strings.ToLower(r[strings.LastIndexByte(r, '@')+1:])
				if dom != bounceDomain && dom != "mx.test" {
					t.Fatalf("stored a message for %q", r)
				}
			}
		}
		saver.mu.Lock()
		saver.deliveries = nil
		saver.mu.Unlock()
	})
}
