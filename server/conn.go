package server

import (
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
)

// listener admits connections within the connection limits. A connection
// over a limit is answered 421 4.7.0 at once and closed, so a client is
// never left hanging in the accept queue.
type listener struct {
	net.Listener
	s *Server
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		c, err := l.s.admit(nc)
		if err == nil {
			return c, nil
		}
		l.s.refuse(nc, err)
	}
}

// refuse answers a connection that is over a limit and closes it. The reply
// fits in any socket buffer, and the write deadline bounds it anyway.
func (s *Server) refuse(nc net.Conn, why error) {
	s.stats.refused.Add(1)
	s.log.Info("connection refused", "remote", nc.RemoteAddr().String(), "reason", why.Error())
	nc.SetWriteDeadline(time.Now().Add(time.Second))
	io.WriteString(nc, replyLine(toSMTP(why), s.opts.Hostname))
	nc.Close()
}

// replyLine formats a one-line reply written outside go-smtp.
func replyLine(e *smtp.SMTPError, host string) string {
	return fmt.Sprintf("%d %d.%d.%d %s %s\r\n", e.Code, e.EnhancedCode[0], e.EnhancedCode[1], e.EnhancedCode[2], host, e.Message)
}

// admit checks the limits for a new connection and registers it. The
// limits, as Postfix's anvil and postscreen keep them: open connections in
// all, per client address and per client network (netKey), and a connect
// rate per address. When all MaxConns are taken, the oldest connection
// that has not had a command accepted yet is evicted to make room (evict),
// so silent connections cannot keep an honest client out.
func (s *Server) admit(nc net.Conn) (*conn, error) {
	ip := addrIP(nc.RemoteAddr())
	key := ipKey(nc.RemoteAddr(), ip)
	nk := netKey(nc.RemoteAddr(), ip)
	now := time.Now()
	trusted := s.trusted(ip)
	if g := s.opts.Guard; g != nil && ip.IsValid() && !trusted && g.Banned(ip, now) {
		return nil, errBanned
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closing:
		return nil, errShuttingDown
	case s.perIP[key] >= s.opts.MaxConnsPerIP, s.perNet[nk] >= s.opts.MaxConnsPerNet:
		return nil, errTooManyConns
	case len(s.conns) >= s.opts.MaxConns && !s.evict():
		return nil, errTooManyConns
	case !s.takeToken(key, now):
		return nil, errConnectRate
	}
	c := &conn{
		Conn:    nc,
		s:       s,
		key:     key,
		net:     nk,
		ip:      ip,
		trusted: trusted,
		remote:  nc.RemoteAddr().String(),
		id:      newID(),
		start:   now,
	}
	s.conns[c] = struct{}{}
	s.perIP[key]++
	s.perNet[nk]++
	s.open.Store(int64(len(s.conns)))
	s.stats.connections.Add(1)
	if s.stressed() {
		s.stressIdle(now)
	}
	return c, nil
}

// release unregisters a closed connection.
func (s *Server) release(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unregister(c)
}

// unregister removes c from the counts; s.mu must be held. An evicted
// connection is unregistered at once and again when it closes.
func (s *Server) unregister(c *conn) {
	if _, ok := s.conns[c]; !ok {
		return
	}
	delete(s.conns, c)
	if s.perIP[c.key]--; s.perIP[c.key] <= 0 {
		delete(s.perIP, c.key)
	}
	if s.perNet[c.net]--; s.perNet[c.net] <= 0 {
		delete(s.perNet, c.net)
	}
	s.open.Store(int64(len(s.conns)))
}

// stressed reports whether at least 4/5 of MaxConns are open. Then the
// idle deadline between commands is StressIdleTimeout, as Postfix's
// smtpd shortens smtpd_timeout under stress.
func (s *Server) stressed() bool {
	return s.open.Load()*5 >= int64(s.opts.MaxConns)*4
}

// stressIdle cuts the deadline of every connection that waits for a
// command to StressIdleTimeout from now; a connection computes it itself
// on its next read, this reaches the ones already waiting. It runs at
// most once a second; s.mu must be held.
func (s *Server) stressIdle(now time.Time) {
	if now.Sub(s.lastStress) < time.Second {
		return
	}
	s.lastStress = now
	for c := range s.conns {
		c.stress(now)
	}
}

// evict makes room for one connection: the oldest connection that has had
// no command accepted yet (none has begun a message, so nothing is lost)
// is told 421 and unregistered at once. It reports false when every
// connection has had a command accepted. s.mu must be held.
func (s *Server) evict() bool {
	var victim *conn
	for c := range s.conns {
		if !c.valid.Load() && (victim == nil || c.start.Before(victim.start)) {
			victim = c
		}
	}
	if victim == nil {
		return false
	}
	s.unregister(victim)
	s.stats.evicted.Add(1)
	victim.evict()
	return true
}

// trusted reports whether ip is one of Options.TrustedRelays.
func (s *Server) trusted(ip netip.Addr) bool {
	for _, p := range s.opts.TrustedRelays {
		if ip.IsValid() && p.Contains(ip) {
			return true
		}
	}
	return false
}

// bucket is a token bucket for one client address's connect rate.
type bucket struct {
	tokens float64
	last   time.Time
}

// takeToken spends one connect token of key; s.mu must be held. Buckets
// that have refilled are pruned once a minute, so the map stays bounded by
// the addresses seen in the last minute or so.
func (s *Server) takeToken(key string, now time.Time) bool {
	perSec := s.opts.ConnectRate / 60
	burst := float64(s.opts.ConnectBurst)
	if now.Sub(s.lastPrun) > time.Minute {
		for k, b := range s.buckets {
			if b.tokens+now.Sub(b.last).Seconds()*perSec >= burst {
				delete(s.buckets, k)
			}
		}
		s.lastPrun = now
	}
	b := s.buckets[key]
	if b == nil {
		b = &bucket{tokens: burst, last: now}
		s.buckets[key] = b
	}
	b.tokens = min(burst, b.tokens+now.Sub(b.last).Seconds()*perSec)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// addrIP is the IP address of a, or the zero Addr.
func addrIP(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// ipKey is the address a client is counted under: its IPv4 address, or the
// /64 of its IPv6 address (one host usually holds a whole /64).
func ipKey(a net.Addr, ip netip.Addr) string {
	if !ip.IsValid() {
		return a.String()
	}
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}

// netKey is the network a client is counted under for MaxConnsPerNet and
// the message rates: the /24 of an IPv4 address, the /48 of an IPv6
// address (a site; ipKey already counts a /64 as one client).
func netKey(a net.Addr, ip netip.Addr) string {
	if !ip.IsValid() {
		return a.String()
	}
	bits := 24
	if ip.Is6() {
		bits = 48
	}
	p, _ := ip.Prefix(bits)
	return p.String()
}

var idEncoding = base32.NewEncoding("0123456789abcdefghjkmnpqrstvwxyz").WithPadding(base32.NoPadding)

// newID returns a short random id for a connection. It only has to be
// unlikely to repeat, not unguessable, so it comes from math/rand/v2
// (seeded by the runtime) and costs no system call.
func newID() string {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], rand.Uint64())
	return idEncoding.EncodeToString(b[:5])
}

// conn wraps a client connection. Every read gets a fresh deadline: the
// idle timeout, cut short by the session cap and, while DATA streams, by the
// minimum data rate. A read error is sticky, so after a timeout in DATA the
// rest of the body can never be read as commands. It also counts the 5xx
// replies go-smtp writes and ends the session after MaxBadCommands.
type conn struct {
	net.Conn
	s       *Server
	key     string     // ipKey
	net     string     // netKey
	ip      netip.Addr // invalid for non-IP connections
	trusted bool       // one of Options.TrustedRelays
	remote  string     // RemoteAddr().String()
	id      string
	start   time.Time

	// valid is set once the server accepted a command (a 2xx or 3xx
	// reply other than the greeting); only connections without one are
	// evicted.
	valid atomic.Bool

	mu        sync.Mutex
	readErr   error // sticky
	saidBye   bool  // a final reply was written by goodbye
	closing   bool  // server is shutting down
	evicted   bool  // evict was called
	inData    bool
	dataStart time.Time
	dataBytes int64
	bytesIn   int64
	timeout   string    // which deadline expired, for the log
	readDL    time.Time // read deadline last set on Conn
	writeDL   time.Time // write deadline last set on Conn

	wmu  sync.Mutex // serialises writes to Conn; guards held
	held []byte     // reply bytes not yet written, see Write

	// reply scanning (plaintext only)
	bad       int
	greets    int // 220 replies seen; the second means STARTTLS began
	encrypted bool
	linePos   int
	lineHead  [4]byte

	// set by the session
	helo     string
	messages int

	closeOnce sync.Once
}

func (c *conn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if c.readErr != nil {
		err := c.readErr
		c.mu.Unlock()
		return 0, err
	}
	if c.closing && !c.inData {
		c.mu.Unlock()
		return 0, c.goodbye(errShuttingDown)
	}
	if c.evicted {
		c.mu.Unlock()
		return 0, c.goodbye(errEvicted)
	}
	if d := c.deadline(time.Now()); d.Before(c.readDL) || d.Sub(c.readDL) > c.s.readSlack {
		c.setReadDeadline(d)
	}
	c.mu.Unlock()

	if err := c.flush(); err != nil {
		c.mu.Lock()
		c.readErr = err
		c.mu.Unlock()
		return 0, err
	}
	n, err := c.Conn.Read(p)

	c.mu.Lock()
	c.bytesIn += int64(n)
	if c.inData {
		c.dataBytes += int64(n)
	}
	closing := c.closing && !c.inData
	evicted := c.evicted
	c.mu.Unlock()
	if err == nil {
		return n, nil
	}
	if closing && isTimeout(err) {
		// Shutdown interrupted a wait for the next command.
		return n, c.goodbye(errShuttingDown)
	}
	if evicted && isTimeout(err) {
		return n, c.goodbye(errEvicted)
	}
	c.mu.Lock()
	if isTimeout(err) {
		c.timeout = c.deadlineName(time.Now())
	}
	c.readErr = err
	c.mu.Unlock()
	return n, err
}

// slack is how far a deadline may lag behind the one it should be before
// it is set again: a tenth of the timeout, at most a second. Setting a
// deadline costs a timer update in the runtime; renewing the idle deadline
// on every read and every reply would do that several times per message
// for nothing. A deadline is never set later than it should be, only up to
// the slack earlier.
func slack(timeout time.Duration) time.Duration {
	return min(time.Second, timeout/10)
}

// setReadDeadline sets the read deadline of the connection; c.mu must be
// held.
func (c *conn) setReadDeadline(t time.Time) {
	c.readDL = t
	c.Conn.SetReadDeadline(t)
}

// deadline is when the current read must be done; c.mu must be held.
func (c *conn) deadline(now time.Time) time.Time {
	o := &c.s.opts
	d := now.Add(o.ReadTimeout)
	if !c.inData && c.s.stressed() {
		d = now.Add(min(o.ReadTimeout, o.StressIdleTimeout))
	}
	if end := c.start.Add(o.SessionTimeout); end.Before(d) {
		d = end
	}
	if c.inData {
		rate := c.dataStart.Add(o.DataRateGrace + time.Duration(c.dataBytes*int64(time.Second)/o.MinDataRate))
		if rate.Before(d) {
			d = rate
		}
	}
	return d
}

// deadlineName names the deadline that expired at now; c.mu must be held.
func (c *conn) deadlineName(now time.Time) string {
	o := &c.s.opts
	switch {
	case !now.Before(c.start.Add(o.SessionTimeout)):
		return "session"
	case c.inData && c.deadline(now).Before(now.Add(o.ReadTimeout)):
		return "data rate"
	}
	return "idle"
}

// SetReadDeadline is a no-op: conn sets its own deadline before each read,
// replacing go-smtp's, which is set once per command and so would cap a
// whole DATA transfer instead of each read.
func (c *conn) SetReadDeadline(time.Time) error { return nil }

// SetDeadline only sets the write deadline, for the same reason.
func (c *conn) SetDeadline(t time.Time) error { return c.SetWriteDeadline(t) }

// SetWriteDeadline sets the write deadline, which go-smtp renews before
// every reply, unless it would move less than the slack later.
func (c *conn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !t.Before(c.writeDL) && t.Sub(c.writeDL) <= c.s.writeSlack {
		return nil
	}
	c.writeDL = t
	return c.Conn.SetWriteDeadline(t)
}

// goodbye writes a final reply for why, makes further reads return io.EOF
// (which go-smtp takes as a quiet end of session) and returns io.EOF.
func (c *conn) goodbye(why error) error {
	c.mu.Lock()
	already := c.saidBye
	c.saidBye = true
	c.readErr = io.EOF
	// After STARTTLS the session speaks TLS above this connection: a
	// plaintext reply written here would corrupt the stream, so the client
	// only sees the connection close.
	plain := !c.encrypted
	c.mu.Unlock()
	if !already && plain {
		c.SetWriteDeadline(time.Now().Add(c.s.opts.WriteTimeout))
		c.wmu.Lock()
		c.writeHeld([]byte(replyLine(toSMTP(why), c.s.opts.Hostname)))
		c.wmu.Unlock()
	}
	return io.EOF
}

// kill makes further reads fail with io.EOF, ending the session quietly
// after the reply go-smtp is about to write.
func (c *conn) kill() {
	c.mu.Lock()
	if c.readErr == nil || !errors.Is(c.readErr, io.EOF) {
		c.readErr = io.EOF
	}
	c.mu.Unlock()
}

// Write counts the final lines of 5xx replies ("5yz " at the start of a
// line) and holds the reply until the session next waits for the client:
// Read, Close and goodbye write out what is held first. go-smtp flushes
// every reply line on its own, so without this the EHLO reply would take
// one system call per extension, and the replies to pipelined commands
// (RFC 2920: MAIL, RCPT and DATA in one go) one each; held, they leave in
// one write, as RFC 2920 §3.1 suggests. After STARTTLS the bytes are
// ciphertext and nothing is counted; go-smtp's own limit on syntax errors
// still holds. go-smtp's wording of a reply is replaced first (reword).
func (c *conn) Write(p []byte) (int, error) {
	if q := c.reword(p); q != nil {
		if _, err := c.write(q); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return c.write(p)
}

func (c *conn) write(p []byte) (int, error) {
	c.mu.Lock()
	bye := c.saidBye
	tooMany := !bye && c.scan(p)
	c.mu.Unlock()
	if bye {
		// Replies to commands go-smtp had already buffered are dropped:
		// the client has been told the session is over.
		return len(p), nil
	}
	c.wmu.Lock()
	if !tooMany && len(c.held)+len(p) <= maxHeld {
		c.held = append(c.held, p...)
		c.wmu.Unlock()
		return len(p), nil
	}
	n, err := c.writeHeld(p)
	c.wmu.Unlock()
	if tooMany {
		c.goodbye(errTooManyBad)
	}
	return n, err
}

// maxHeld bounds the reply bytes Write holds.
const maxHeld = 4096

// writeHeld writes the held bytes followed by p and returns how many bytes
// of p were written; c.wmu must be held.
func (c *conn) writeHeld(p []byte) (int, error) {
	out := p
	if len(c.held) > 0 {
		c.held = append(c.held, p...)
		out = c.held
	}
	n, err := c.Conn.Write(out)
	c.held = c.held[:0]
	return max(0, n-(len(out)-len(p))), err
}

// flush writes the held reply bytes.
func (c *conn) flush() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if len(c.held) == 0 {
		return nil
	}
	_, err := c.writeHeld(nil)
	return err
}

// scan inspects reply bytes; c.mu must be held. It reports whether the
// bad-command limit has just been passed.
func (c *conn) scan(p []byte) bool {
	if c.encrypted {
		return false
	}
	over := false
	for _, b := range p {
		if b == '\n' {
			c.linePos = 0
			continue
		}
		if c.linePos < len(c.lineHead) {
			c.lineHead[c.linePos] = b
			c.linePos++
			if c.linePos == len(c.lineHead) && c.lineHead[3] == ' ' {
				switch {
				case c.lineHead[0] == '5':
					c.bad++
					over = over || c.bad == c.s.opts.MaxBadCommands
				case string(c.lineHead[:3]) == "220":
					// The greeting, then "220 Ready to start TLS".
					if c.greets++; c.greets == 2 {
						c.valid.Store(true)
						c.encrypted = true
						return over
					}
				case c.lineHead[0] == '2', c.lineHead[0] == '3':
					c.valid.Store(true)
				}
			}
		}
	}
	return over
}

// beginData and endData bracket a message transfer: the data rate applies,
// and Shutdown lets it finish.
func (c *conn) beginData() {
	// The 354 reply goes out now, not after a wait for DATA memory.
	c.flush()
	c.mu.Lock()
	c.inData = true
	c.dataStart = time.Now()
	c.dataBytes = 0
	c.mu.Unlock()
}

// pauseData moves the data-rate clock on by d, a time in which the
// session did not read because it waited for DATA memory.
func (c *conn) pauseData(d time.Duration) {
	c.mu.Lock()
	c.dataStart = c.dataStart.Add(d)
	c.mu.Unlock()
}

func (c *conn) endData() {
	c.mu.Lock()
	c.inData = false
	c.messages++
	closing := c.closing
	c.mu.Unlock()
	if closing {
		// Wake a read that may have begun before the transfer ended.
		c.mu.Lock()
		c.setReadDeadline(time.Now())
		c.mu.Unlock()
	}
}

// evict tells a connection waiting for a command that it must make room:
// it gets 421 4.7.0 and is closed.
func (c *conn) evict() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.evicted = true
	c.setReadDeadline(time.Now())
}

// stress cuts the deadline of a wait for a command to StressIdleTimeout
// from now (see Server.stressed).
func (c *conn) stress(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if d := now.Add(c.s.opts.StressIdleTimeout); !c.inData && d.Before(c.readDL) {
		c.setReadDeadline(d)
	}
}

// shutdown marks the connection for closing and interrupts a wait for the
// next command. A message transfer in progress is left to finish.
func (c *conn) shutdown() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closing = true
	if !c.inData {
		c.setReadDeadline(time.Now())
	}
}

func (c *conn) Close() error {
	// The last reply (221 to QUIT, or go-smtp's 421) may be held. A
	// client that does not read gets a second, not the whole write
	// timeout; and a write in progress (Server.Close from elsewhere) is
	// cut short by closing, not waited for.
	if c.wmu.TryLock() {
		if len(c.held) > 0 {
			c.Conn.SetWriteDeadline(time.Now().Add(min(time.Second, c.s.opts.WriteTimeout)))
			c.writeHeld(nil)
		}
		c.wmu.Unlock()
	}
	err := c.Conn.Close()
	c.closeOnce.Do(func() {
		c.s.release(c)
		c.mu.Lock()
		var buf [8]slog.Attr
		attrs := append(buf[:0],
			slog.String("cid", c.id),
			slog.String("remote", c.remote),
			slog.String("helo", c.helo),
			slog.Duration("duration", time.Since(c.start).Round(time.Millisecond)),
			slog.Int("messages", c.messages),
			slog.Int64("bytes_in", c.bytesIn),
			slog.Int("bad_replies", c.bad),
		)
		if c.timeout != "" {
			attrs = append(attrs, slog.String("timeout", c.timeout))
		}
		c.mu.Unlock()
		logInfo(c.s.log, "connection closed", attrs...)
	})
	return err
}
