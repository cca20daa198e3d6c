package mx

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/textproto"
	"os"
	"time"
)

// maxGreeting caps the bytes read from a greeting. RFC 5321 §4.5.3.1.5
// limits a reply line to 512 octets; a multi-line greeting of a few lines
// fits easily.
const maxGreeting = 4096

// probe connects to ip on the SMTP port and reads the greeting (RFC 5321
// §3.1: 220 when the service is ready, 554 when it is not). It sends QUIT
// and closes without waiting for the answer.
func probe(ctx context.Context, ip string, opts Options) Addr {
	a := Addr{IP: ip}
	d := net.Dialer{Timeout: opts.ConnectTimeout}
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(ip, portString(opts.Port)))
	if err != nil {
		a.Error = "connect: " + netErr(err)
		return a
	}
	defer conn.Close()
	a.Connects = true
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if err := conn.SetDeadline(time.Now().Add(opts.GreetingTimeout)); err != nil {
		a.Error = "greeting: " + netErr(err)
		return a
	}
	tp := textproto.NewReader(bufio.NewReader(io.LimitReader(conn, maxGreeting)))
	code, msg, err := tp.ReadResponse(220)
	var perr *textproto.Error
	switch {
	case err == nil:
		a.Greets = true
		a.Greeting = clean(firstLine("220 "+msg), 200)
		conn.Write([]byte("QUIT\r\n")) // best effort; the answer is not awaited
	case errors.As(err, &perr):
		a.Greeting = clean(firstLine(perr.Error()), 200)
		a.Error = "greeting: not 220"
		if code == 554 {
			a.Error = "greeting: 554, no SMTP service here (RFC 5321 §3.1)"
		}
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		a.Error = "greeting: connection closed before a complete greeting"
	default:
		a.Error = "greeting: " + netErr(err)
	}
	return a
}

// firstLine returns s up to its first line break.
func firstLine(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] == '\r' || s[i] == '\n' {
			return s[:i]
		}
	}
	return s
}

// netErr shortens a network error: "connection refused", "i/o timeout".
func netErr(err error) string {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		err = op.Err
	}
	var sys *os.SyscallError
	if errors.As(err, &sys) && sys.Err != nil {
		err = sys.Err
	}
	return clean(err.Error(), 200)
}
