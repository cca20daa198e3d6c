// Package server is bouncer's SMTP side: a go-smtp Backend and Session that
// accept bounces for the configured bounce domains, decode them with parse
// and hand them to a Saver (the store), answering 250 only after the Saver
// has committed the message.
//
// It owns every limit on what a client may do: message size, recipients,
// line length, per-read idle and whole-session deadlines, a minimum data
// rate while DATA streams, connection caps (total, per client address, per
// client network, and a connect rate per address; near the total cap a short
// idle limit and eviction of connections that never had a command accepted,
// conn.go), message and byte rates per client network and a free-disk floor
// (rates.go, 451 at MAIL), a cap on rejected commands and a budget for the
// message bytes held in memory over all sessions (budget.go: a session that
// cannot get room in time gets 452 4.3.1). go-smtp's zero values mean
// "unlimited", so every limit here has a non-zero default.
//
// Protocols: SMTP (RFC 5321) with the extensions go-smtp implements: 8BITMIME
// (RFC 6152), PIPELINING (RFC 2920), SIZE (RFC 1870), ENHANCEDSTATUSCODES
// (RFC 2034, codes from RFC 3463), CHUNKING (RFC 3030), SMTPUTF8 (RFC 6531,
// so RFC 6533 global DSNs can arrive) and STARTTLS (RFC 3207) when a TLS
// configuration is given. Recipients are accepted only for the bounce
// domains and postmaster (RFC 5321 §4.5.1); the local part is decoded as a
// VERP address by package verp.
//
// Bare CR and LF in DATA are normalised to CRLF before decoding and storage
// (RFC 5321 §2.3.8 allows CR and LF only as a pair); a bare LF never ends the
// data, so message bytes cannot run as commands.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/bouncer/bouncer/parse"
	"github.com/bouncer/bouncer/store"
	"github.com/bouncer/bouncer/verp"
)

// Intake returns the server's recipient check and decoding step, for
// messages that arrive another way (package mailbox).
func (s *Server) Intake() *Intake { return s.intake }

// Saver stores one accepted message. It must return only after the
// message is durable: the client gets 250 when Save returns nil.
type Saver interface {
	Save(ctx context.Context, d *store.Delivery) ([]store.Record, error)
}

// VERPDecoder decodes the local part of an envelope recipient.
// *verp.Decoder implements it.
type VERPDecoder interface {
	Decode(local string) (verp.Result, error)
}

// Options configure a Server. Zero fields take the defaults in
// DefaultOptions; there is no way to switch a limit off.
type Options struct {
	// Hostname is announced in the greeting and in 421 replies.
	Hostname string
	// Domains are the bounce domains whose recipients are accepted, matched
	// case-insensitively. Empty means any domain: the caller decides when
	// that is safe (bouncer allows it only on loopback).
	Domains []string
	// VERP decodes recipient local parts. Nil uses verp.NewDecoder with
	// its defaults.
	VERP VERPDecoder

	MaxMessageBytes int64 // DATA/BDAT size and the SIZE= limit (RFC 1870)
	MaxRecipients   int   // RCPT per transaction; more get 452 4.5.3
	MaxLineLength   int   // bytes in one line, commands and DATA alike

	// ReadTimeout is the idle deadline, renewed on every read from the
	// client (in DATA too). WriteTimeout bounds each reply.
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	// SessionTimeout caps a whole connection, however active.
	SessionTimeout time.Duration
	// MinDataRate (bytes per second) must be kept up while DATA streams,
	// once DataRateGrace has passed since DATA began.
	MinDataRate   int64
	DataRateGrace time.Duration
	// SaveTimeout bounds one Saver.Save call; past it the client gets 451.
	SaveTimeout time.Duration

	// MaxDataMemory bounds the bytes of message bodies held in memory at
	// once, over all sessions: read buffers and the copies handed to the
	// Saver, from the first byte of DATA until Save returns. A session
	// takes it in steps of 16 KiB, then 64 KiB (a declared SIZE= of up to
	// 256 KiB at once), and waits while it is exhausted; after
	// DataMemoryWait in all it gets 452 4.3.1, the rest of its message is
	// read and dropped, and the session goes on.
	// The oldest session still reading may use the last 2 ×
	// (MaxMessageBytes + 80 KiB) bytes, which the others may not: that
	// much is what one message of the largest size can need, so the oldest
	// always gets through and no set of sessions can block each other for
	// good. Keep
	// MaxDataMemory well above that figure, or only one message is read at
	// a time. Memory of the decoder and the Saver comes on top.
	MaxDataMemory  int64
	DataMemoryWait time.Duration

	MaxConns      int // open connections in all
	MaxConnsPerIP int // open connections per client address (IPv6: per /64)
	// MaxConnsPerNet bounds open connections per client network (IPv4
	// /24, IPv6 /48); it is raised to MaxConnsPerIP if below.
	MaxConnsPerNet int
	// StressIdleTimeout replaces ReadTimeout between commands while at
	// least 4/5 of MaxConns are open. And when all are open, a new
	// connection evicts the oldest one that has had no command accepted
	// (421 4.7.0), so silent connections cannot lock honest clients out.
	StressIdleTimeout time.Duration
	// ConnectRate is how many new connections per minute one client
	// address may open, with bursts of up to ConnectBurst.
	ConnectRate  float64
	ConnectBurst int
	// MaxBadCommands closes a connection after this many 5xx replies
	// (unknown commands, refused recipients, syntax errors).
	MaxBadCommands int

	// MessageRate is how many messages per minute one client network
	// (IPv4 /24, IPv6 /48) may begin, with bursts of MessageBurst;
	// ByteRate how many message bytes per minute, with bursts of one
	// minute's worth (at least MaxMessageBytes). Over either, MAIL gets
	// 451 4.7.1 and the sender retries later. A message already begun is
	// finished; its bytes count against the rate afterwards.
	MessageRate  float64
	MessageBurst int
	ByteRate     int64
	// PushRate is how many push events (a hard or soft bounce, a
	// complaint or a suppression for a listmonk or webhook target) the
	// messages of one client network may cause per hour, with bursts of
	// as many. Past it a message is still stored and judged, but its
	// events go to the dead-letter list, held, instead of being pushed:
	// forged bounces cannot drive a sending tool faster than this, and
	// nothing is lost (`bouncer outbox retry` sends them). Trusted relays
	// are not counted. Negative: no cap.
	PushRate float64

	// FreeSpace, if set, returns the free bytes on the store's file
	// system (cmd passes a statfs of the database's folder). While it is
	// below MinFreeBytes, or a message would take it there, MAIL and
	// DATA get 451 4.3.1, as Postfix's queue_minfree does; the value is
	// read at most once a second.
	FreeSpace    func() (int64, error)
	MinFreeBytes int64

	// Guard, if set, bans clients that send too many bad signed return
	// path tokens (see verp.Guard); they get 421 4.7.0.
	Guard *verp.Guard
	// TrustedRelays are the networks of relays that pass on other
	// people's bounces (your own MTA, README's Postfix setup): their bad
	// tokens are refused but never ban them, and the message and byte
	// rates do not apply to them. Connection limits still do.
	TrustedRelays []netip.Prefix

	// Parse bounds the decoder; zero fields take parse.DefaultLimits().
	Parse parse.Limits

	// TLSConfig enables STARTTLS. TLS versions below 1.2 are refused.
	TLSConfig *tls.Config
	// Debug, if set, receives the full SMTP transcript. It contains
	// addresses: switch it on only when asked to.
	Debug io.Writer

	// Decode is the message decoder; nil means parse.Message.
	Decode func(r io.Reader, lim parse.Limits) (*parse.Report, error)
}

// DefaultOptions returns the default of every limit.
func DefaultOptions() Options {
	return Options{
		Hostname:        "localhost",
		MaxMessageBytes: 10 << 20, // enough for RET=FULL bounces of normal mail
		MaxRecipients:   10,       // a bounce has one return path
		MaxLineLength:   4000,     // RFC 5321 says 1000; real bounces carry longer lines
		ReadTimeout:     5 * time.Minute,
		WriteTimeout:    time.Minute,
		SessionTimeout:  30 * time.Minute,
		MinDataRate:     1024,
		DataRateGrace:   30 * time.Second,
		SaveTimeout:     30 * time.Second,
		MaxDataMemory:   24 << 20, // the oldest session's 20 MiB, 4 MiB for the rest
		DataMemoryWait:  time.Minute,
		MaxConns:        500,
		MaxConnsPerIP:   10,
		MaxConnsPerNet:  50,
		// Postfix's smtpd_timeout under stress is 10s.
		StressIdleTimeout: 10 * time.Second,
		MessageRate:       300,
		MessageBurst:      100,
		ByteRate:          100 << 20,
		PushRate:          2000,
		MinFreeBytes:      256 << 20,
		ConnectRate:       120,
		ConnectBurst:      30,
		MaxBadCommands:    10,
	}
}

func (o Options) withDefaults() Options {
	d := DefaultOptions()
	if o.Hostname == "" {
		o.Hostname = d.Hostname
	}
	if o.VERP == nil {
		o.VERP = verp.NewDecoder(verp.Options{})
	}
	if o.Decode == nil {
		o.Decode = parse.Message
	}
	setDefault(&o.MaxMessageBytes, d.MaxMessageBytes)
	o.MaxMessageBytes = min(o.MaxMessageBytes, MaxMessageBytesLimit)
	setDefault(&o.MaxRecipients, d.MaxRecipients)
	setDefault(&o.MaxLineLength, d.MaxLineLength)
	setDefault(&o.ReadTimeout, d.ReadTimeout)
	setDefault(&o.WriteTimeout, d.WriteTimeout)
	setDefault(&o.SessionTimeout, d.SessionTimeout)
	setDefault(&o.MinDataRate, d.MinDataRate)
	setDefault(&o.DataRateGrace, d.DataRateGrace)
	setDefault(&o.SaveTimeout, d.SaveTimeout)
	setDefault(&o.MaxDataMemory, d.MaxDataMemory)
	setDefault(&o.DataMemoryWait, d.DataMemoryWait)
	setDefault(&o.MaxConns, d.MaxConns)
	setDefault(&o.MaxConnsPerIP, d.MaxConnsPerIP)
	setDefault(&o.MaxConnsPerNet, d.MaxConnsPerNet)
	o.MaxConnsPerNet = max(o.MaxConnsPerNet, o.MaxConnsPerIP)
	setDefault(&o.StressIdleTimeout, d.StressIdleTimeout)
	setDefault(&o.MessageRate, d.MessageRate)
	setDefault(&o.MessageBurst, d.MessageBurst)
	setDefault(&o.ByteRate, d.ByteRate)
	setDefault(&o.PushRate, d.PushRate)
	setDefault(&o.MinFreeBytes, d.MinFreeBytes)
	setDefault(&o.ConnectRate, d.ConnectRate)
	setDefault(&o.ConnectBurst, d.ConnectBurst)
	setDefault(&o.MaxBadCommands, d.MaxBadCommands)
	if o.TLSConfig != nil && o.TLSConfig.MinVersion < tls.VersionTLS12 {
		o.TLSConfig = o.TLSConfig.Clone()
		o.TLSConfig.MinVersion = tls.VersionTLS12
	}
	return o
}

// setDefault replaces a zero or negative limit with its default.
func setDefault[T int | int64 | float64 | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// Stats are counters since the server started.
type Stats struct {
	Connections int64 // accepted connections
	Refused     int64 // connections answered 421 at once (limits, shutdown)
	Stored      int64 // messages saved and answered 250
	Unparsed    int64 // of Stored, those the decoder could not decode
	Failed      int64 // messages answered 4xx because saving failed
	Rejected    int64 // recipients refused
	Panics      int64 // panics recovered in live sessions
	// ClosedPanics counts panics go-smtp v0.25.1 recovers when a client
	// pipelines commands after QUIT or after being cut off: go-smtp keeps
	// running the buffered commands on a closed connection whose session
	// it has dropped, and dereferences the nil session. The client has
	// already gone, so these are counted apart and logged at Debug.
	ClosedPanics int64

	// NoMemory counts messages answered 452 4.3.1 because the DATA memory
	// budget stayed exhausted for DataMemoryWait.
	NoMemory int64
	// DataMemory is the budget in use now, DataMemoryPeak the most ever
	// in use (never above MaxDataMemory).
	DataMemory     int64
	DataMemoryPeak int64
	// RejectedBy splits Rejected by reason (the Reason* constants).
	RejectedBy map[string]int64
	// Evicted counts connections closed to make room for a new one
	// (Options.StressIdleTimeout); LowDisk messages refused after DATA
	// because free disk space fell below the floor.
	Evicted int64
	LowDisk int64
	// PushHeld counts records whose push events were held because their
	// client network was over Options.PushRate.
	PushHeld int64
}

type counters struct {
	connections, refused, stored, unparsed, failed, rejected, panics, closedPanics, noMemory atomic.Int64
	evicted, lowDisk, pushHeld                                                               atomic.Int64
	rejectedBy                                                                               [len(rejectReasons)]atomic.Int64
}

// Server is a bounce-receiving SMTP server.
type Server struct {
	opts   Options
	saver  Saver
	log    *slog.Logger
	smtp   *smtp.Server
	intake *Intake
	stats  counters
	mem    *budget
	// pushWarned is when the last "push events held" line was logged
	// (Unix nanoseconds).
	pushWarned atomic.Int64

	readSlack, writeSlack time.Duration // see slack

	rates rates
	disk  disk

	open atomic.Int64 // len(conns), read without mu

	mu         sync.Mutex
	closing    bool
	conns      map[*conn]struct{}
	perIP      map[string]int
	perNet     map[string]int
	buckets    map[string]*bucket
	lastPrun   time.Time
	lastStress time.Time
	ln         net.Listener
}

// New returns a Server that stores accepted messages with saver.
func New(opts Options, saver Saver, logger *slog.Logger) *Server {
	opts = opts.withDefaults()
	s := &Server{
		opts:    opts,
		saver:   saver,
		log:     logger,
		intake:  NewIntake(opts),
		conns:   make(map[*conn]struct{}),
		perIP:   make(map[string]int),
		perNet:  make(map[string]int),
		buckets: make(map[string]*bucket),
		rates:   rates{entries: make(map[string]*rateEntry)},
		mem:     newBudget(opts.MaxDataMemory, DataReserve(opts.MaxMessageBytes)),

		readSlack:  slack(min(opts.ReadTimeout, opts.DataRateGrace)),
		writeSlack: slack(opts.WriteTimeout),
	}
	srv := smtp.NewServer(&backend{s: s})
	srv.Domain = opts.Hostname
	srv.MaxMessageBytes = opts.MaxMessageBytes
	srv.MaxRecipients = opts.MaxRecipients
	srv.MaxLineLength = opts.MaxLineLength
	// The deadlines go-smtp sets are replaced by conn's own (idle, session,
	// data rate); these values are set anyway so no go-smtp limit is zero.
	srv.ReadTimeout = opts.ReadTimeout
	srv.WriteTimeout = opts.WriteTimeout
	srv.EnableSMTPUTF8 = true
	srv.TLSConfig = opts.TLSConfig
	srv.Debug = opts.Debug
	srv.ErrorLog = &errorLog{s: s}
	s.smtp = srv
	return s
}

// Serve accepts connections on l until Shutdown or Close. It returns nil
// after Shutdown or Close.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		l.Close()
		return nil
	}
	s.ln = l
	s.mu.Unlock()
	return s.smtp.Serve(&listener{Listener: l, s: s})
}

// Addr is the address Serve listens on, nil before Serve.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Shutdown stops accepting connections, answers 421 to clients that are
// between transactions, lets messages whose DATA has begun finish (and get
// their 250 or 451; one waiting for DATA memory gets 452 4.3.1 at once),
// and returns when every connection is closed. If ctx
// ends first, the remaining connections are closed at once and ctx's error
// is returned.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	s.mem.close()
	for _, c := range conns {
		c.shutdown()
	}
	err := s.smtp.Shutdown(ctx)
	if errors.Is(err, smtp.ErrServerClosed) {
		return nil
	}
	if ctx.Err() != nil {
		s.smtp.Close()
		return ctx.Err()
	}
	return err
}

// Close closes the listener and every connection at once.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	s.mem.close()
	err := s.smtp.Close()
	if errors.Is(err, smtp.ErrServerClosed) {
		return nil
	}
	return err
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	c := &s.stats
	st := Stats{
		Connections: c.connections.Load(),
		Refused:     c.refused.Load(),
		Stored:      c.stored.Load(),
		Unparsed:    c.unparsed.Load(),
		Failed:      c.failed.Load(),
		Rejected:    c.rejected.Load(),
		Panics:      c.panics.Load(),

		ClosedPanics: c.closedPanics.Load(),
		NoMemory:     c.noMemory.Load(),
		Evicted:      c.evicted.Load(),
		LowDisk:      c.lowDisk.Load(),
		PushHeld:     c.pushHeld.Load(),
	}
	st.DataMemory, st.DataMemoryPeak = s.mem.stats()
	st.RejectedBy = make(map[string]int64, len(rejectReasons))
	for i, r := range rejectReasons {
		st.RejectedBy[r] = c.rejectedBy[i].Load()
	}
	return st
}

// DataReserve is the most DATA budget one message may need: the bytes as
// read (a SIZE= buffer plus chunks, rounded up to whole chunks) and the
// copy handed to the Saver. maxMessage is taken as at most
// MaxMessageBytesLimit, as New does, so the sum cannot overflow.
func DataReserve(maxMessage int64) int64 {
	return 2 * (min(maxMessage, MaxMessageBytesLimit) + 1 + firstChunk + chunkSize)
}

// MaxMessageBytesLimit is the largest MaxMessageBytes; New lowers a larger
// value to it. A bounce of more than 1 GiB is no bounce, and limits near
// 2^63 overflow the sums that size buffers and budgets.
const MaxMessageBytesLimit = 1 << 30

func normDomain(d string) string {
	return strings.ToLower(strings.TrimSuffix(d, "."))
}

// isLive reports whether a connection from remote is open.
func (s *Server) isLive(remote string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.remote == remote {
			return true
		}
	}
	return false
}

// errorLog receives go-smtp's internal error messages. It counts the panics
// go-smtp recovers itself (outside our session methods) and logs the rest.
type errorLog struct{ s *Server }

func (l *errorLog) Printf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	if remote, ok := strings.CutPrefix(msg, "panic serving "); ok {
		remote, _, _ = strings.Cut(remote, ": ")
		if !l.s.isLive(remote) {
			l.s.stats.closedPanics.Add(1)
			l.s.log.Debug("panic in smtp server after close", "detail", msg)
			return
		}
		l.s.stats.panics.Add(1)
		l.s.log.Error("panic in smtp server", "detail", msg)
		return
	}
	// go-smtp reports connection errors (resets, timeouts) here; they are
	// the client's business, not the operator's.
	l.s.log.Debug("smtp server", "detail", msg)
}

func (l *errorLog) Println(v ...any) { l.Printf("%s", fmt.Sprintln(v...)) }
