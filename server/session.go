package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-smtp"

	"github.com/bouncer/bouncer/parse"
	"github.com/bouncer/bouncer/store"
	"github.com/bouncer/bouncer/verp"
)

// backend makes a session for each client that says HELO or EHLO.
type backend struct{ s *Server }

func (b *backend) NewSession(sc *smtp.Conn) (smtp.Session, error) {
	nc := sc.Conn()
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	c, ok := nc.(*conn)
	if !ok {
		// Every connection comes through listener, so this cannot happen;
		// refuse rather than run without limits.
		b.s.log.Error("connection without limits", "remote", nc.RemoteAddr().String())
		return nil, toSMTP(errors.New("unwrapped connection"))
	}
	c.mu.Lock()
	c.helo = sc.Hostname()
	c.mu.Unlock()
	reserveStack()
	host, _, _ := net.SplitHostPort(c.remote)
	return &session{
		s:    b.s,
		c:    c,
		ip:   host,
		helo: sc.Hostname(),
	}, nil
}

// reserveStack makes the connection's goroutine stack grow here, where it
// holds a few frames, to the size a message needs: decoding runs about 20
// calls deep under go-smtp's frames and Data, and growing the stack there
// copies and adjusts all of them (runtime.newstack: 3.5-5 µs a message in
// CPU profiles of serve under smtp-source, 20 sessions; 2.25 µs with the
// growth here). The runtime starts goroutines at the average stack use
// it sees, which idle connections keep small.
//
//go:noinline
func reserveStack() byte {
	var b [6 << 10]byte
	return firstByte(b[:])
}

//go:noinline
func firstByte(b []byte) byte { return b[0] }

// session is one client's SMTP session. go-smtp calls its methods from one
// goroutine at a time.
type session struct {
	s    *Server
	c    *conn
	lg   *slog.Logger // see log
	ip   string
	helo string
	seq  int // messages begun, for reply ids

	// the current transaction
	from  string
	size  int64 // SIZE= of MAIL FROM (RFC 1870), 0 if none
	rcpts []string
	verp  verp.Result // the first VERP recipient's decoded return path
}

// Reset discards the current transaction (RSET, EHLO, after DATA).
func (s *session) Reset() {
	s.from, s.size, s.rcpts, s.verp = "", 0, nil, verp.Result{}
}

// Logout is called when the connection closes; conn.Close logs the session.
func (s *session) Logout() error { return nil }

// Mail accepts any sender, the null sender of bounces (RFC 5321 §4.5.5)
// first of all. go-smtp has already checked SIZE= against the limit.
func (s *session) Mail(from string, opts *smtp.MailOptions) (err error) {
	defer s.catch(&err, "")
	s.Reset()
	if !utf8.ValidString(from) || len(from) > maxPath || hasControl(from) {
		return s.refuse(errBadSender, "", "from", from)
	}
	var size int64
	if opts != nil {
		size = opts.Size
	}
	now := time.Now()
	if !s.s.diskAllows(size, now) {
		return s.refuse(errLowDisk, "", "from", from)
	}
	if err := s.s.takeMessage(s.c, size, now); err != nil {
		return s.refuse(err, "", "from", from)
	}
	s.from, s.size = from, size
	return nil
}

// maxPath is the longest forward or reverse path, RFC 5321 §4.5.3.1.3
// (256 octets with the angle brackets).
const maxPath = 254

// Rcpt accepts recipients at the bounce domains and postmaster. The local
// part is decoded as VERP; a local part that is not VERP is accepted, and
// a signed token that fails its check is refused.
func (s *session) Rcpt(to string, _ *smtp.RcptOptions) (err error) {
	defer s.catch(&err, "")
	res, err := s.s.intake.Recipient(to)
	if err != nil {
		if s.badToken(err) {
			s.c.kill()
			return s.refuse(errBanned, "", "rcpt", to, "token_error", err.Error())
		}
		return s.refuse(err, "", "rcpt", to)
	}
	if (res.Recipient != "" || res.RecipientHash != "") && s.verp.Form == verp.FormNone {
		// A bounce is about one message, so one return path; with several
		// VERP recipients the first one is kept.
		s.verp = res
	}
	s.rcpts = append(s.rcpts, to)
	return nil
}

// verpRecipient says which address the return path names. A compact
// signed token carries only a hash of it (verp/FORMAT.md): the address is
// the report's recipient that hashes to it, and none if no recipient does.
// The campaign is trusted only from a verified token.
func verpRecipient(res verp.Result, rep *parse.Report) (addr string, verified bool, campaign string) {
	if res.Verified {
		campaign = res.Campaign
	}
	if res.Recipient != "" || res.RecipientHash == "" || rep == nil {
		return res.Recipient, res.Verified, campaign
	}
	for _, r := range rep.Recipients {
		for _, a := range []string{r.FinalRecipient, r.OriginalRecipient} {
			if a != "" && res.MatchRecipient(a) {
				return a, res.Verified, campaign
			}
		}
	}
	if rep.Original != nil && rep.Original.To != "" && res.MatchRecipient(rep.Original.To) {
		return rep.Original.To, res.Verified, campaign
	}
	return "", false, campaign
}

// badToken tells the Guard about a refused signed token and reports
// whether the client is now banned.
func (s *session) badToken(err error) bool {
	g := s.s.opts.Guard
	if g == nil || !s.c.ip.IsValid() || s.c.trusted {
		// A trusted relay passes on other people's bounces: banning it
		// would stop every bounce it carries.
		return false
	}
	if !errors.Is(err, verp.ErrBadMAC) && !errors.Is(err, verp.ErrUnknownKey) && !errors.Is(err, verp.ErrExpired) {
		return false
	}
	return g.Bad(s.c.ip, time.Now())
}

// hasControl reports whether an address holds ASCII control characters,
// which RFC 5321 §4.1.2 allows nowhere in a path (not even quoted).
func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] == 0x7f {
			return true
		}
	}
	return false
}

// refuse logs a refused command at Info (a client mistake) and returns the
// reply, tagged with the connection id.
func (s *session) refuse(err error, id string, attrs ...any) error {
	s.s.stats.rejected.Add(1)
	s.s.stats.rejectedBy[rejectReason(err)].Add(1)
	if id == "" {
		id = s.c.id
	}
	e := toSMTP(err)
	s.log().Info("command refused", append(attrs, "id", id, "code", e.Code, "reason", err.Error())...)
	return withID(e, id)
}

// Data reads the message, decodes it and saves it. It answers 250 only
// after the Saver returned nil; a message the decoder cannot read is saved
// raw with the reason and also answered 250, since refusing it would only
// make a bounce of a bounce. The body counts against the DATA memory budget
// from its first byte until Save has returned.
func (s *session) Data(r io.Reader) (err error) {
	s.seq++
	id := s.c.id + "." + strconv.Itoa(s.seq)
	defer s.catch(&err, id)
	received := time.Now()

	g := &grant{b: s.s.mem}
	defer g.release()
	body := bodyReader{c: s.c, g: g, max: s.s.opts.MaxMessageBytes, wait: s.s.opts.DataMemoryWait}
	s.c.beginData()
	raw, bare, err := body.read(r, s.size)
	g.doneReading()
	if errors.Is(err, errNoMemory) {
		// The rest of the body is read and dropped under the same
		// deadlines, so the session stays in step for the next command.
		if _, derr := io.Copy(io.Discard, r); derr != nil && !errors.Is(derr, smtp.ErrDataTooLarge) {
			err = &readError{derr}
		}
	}
	s.c.endData()
	s.s.chargeBytes(s.c, body.n, time.Now())
	if err != nil {
		return s.dataFailed(err, id, body.n)
	}
	if !s.s.diskAllows(int64(len(raw)), time.Now()) {
		s.s.stats.lowDisk.Add(1)
		s.log().Warn("message refused: free disk space below the floor", "id", id, "size", len(raw))
		return withID(toSMTP(errLowDisk), id)
	}

	d, panicked := s.s.intake.Delivery(received, store.Envelope{
		MailFrom: s.from,
		RcptTo:   append([]string(nil), s.rcpts...),
		ClientIP: s.ip,
		Helo:     s.helo,
		Relay:    s.c.trusted,
	}, s.verp, raw)
	if panicked != nil {
		// The message is still saved raw, with the panic as its parse
		// error, instead of being refused again on every retry.
		s.s.stats.panics.Add(1)
		s.log().Error("panic in decoder", "panic", panicked.Value, "stack", panicked.Stack)
	}

	d.HoldPush = s.s.pushHold(s.c, time.Now())
	ctx, cancel := context.WithTimeout(context.Background(), s.s.opts.SaveTimeout)
	recs, err := s.s.saver.Save(ctx, d)
	cancel()
	if err != nil {
		s.s.stats.failed.Add(1)
		s.log().Error("storing bounce failed", "id", id, "size", len(raw), "err", err)
		return withID(toSMTP(&saveError{err}), id)
	}
	s.s.stats.stored.Add(1)
	s.countPushes(id, d, recs)
	if d.ParseError != "" {
		s.s.stats.unparsed.Add(1)
	}
	s.logStored(id, d, recs, bare)
	// go-smtp writes the code and text of an *SMTPError returned from
	// Data as they are; a 250 is returned this way so the reply carries
	// the id (RFC 5321 §4.2 lets the text be anything).
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "OK, bounce stored (id " + id + ")"}
}

// countPushes charges the push events of a stored message to its client
// network's budget (Options.PushRate), and counts and logs those held.
func (s *session) countPushes(id string, d *store.Delivery, recs []store.Record) {
	n := 0
	for i := range recs {
		if store.Pushable(&recs[i]) {
			n++
		}
	}
	now := time.Now()
	s.s.chargeEvents(s.c, n, now)
	if d.HoldPush == "" || n == 0 {
		return
	}
	s.s.stats.pushHeld.Add(int64(n))
	// One line a minute at most: a flood is what this limit is for.
	if last := s.s.pushWarned.Load(); now.UnixNano()-last >= int64(time.Minute) && s.s.pushWarned.CompareAndSwap(last, now.UnixNano()) {
		s.log().Warn("push events held: client network over its push budget; they wait on the dead-letter list (bouncer outbox list --dead)",
			"id", id, "net", s.c.net, "held", n, "push_rate", s.s.opts.PushRate)
	}
}

// dataFailed handles a message that could not be read in full.
func (s *session) dataFailed(err error, id string, n int64) error {
	if !errors.Is(err, smtp.ErrDataTooLarge) && !errors.Is(err, errNoMemory) {
		// A timeout or broken connection: the stream is out of step, so
		// the session ends after this reply; nothing after it may be read
		// as a command.
		s.c.kill()
	}
	if errors.Is(err, errNoMemory) {
		s.s.stats.noMemory.Add(1)
	}
	e := toSMTP(err)
	s.log().Info("message refused", "id", id, "code", e.Code, "read", n, "reason", err.Error())
	return withID(e, id)
}

// logStored writes the one line per accepted message. The attributes go
// in as slog.Attr values from an array on the stack, so the line costs no
// boxing into interfaces; it carries the connection's cid and remote
// itself, so that most sessions never make their own logger (log).
func (s *session) logStored(id string, d *store.Delivery, recs []store.Record, bare int) {
	var buf [18]slog.Attr
	attrs := append(buf[:0],
		slog.String("cid", s.c.id),
		slog.String("remote", s.c.remote),
		slog.String("id", id),
		slog.String("from", d.Envelope.MailFrom),
		slog.String("rcpt", rcptList(d.Envelope.RcptTo)),
		slog.Int("size", len(d.Raw)),
		slog.Int("records", len(recs)),
	)
	if len(recs) > 0 {
		attrs = append(attrs, slog.String("msg_id", recs[0].MsgID))
	}
	if d.Envelope.VERP != "" {
		attrs = append(attrs, slog.String("verp", d.Envelope.VERP), slog.Bool("verified", d.Envelope.Verified))
	}
	if rep := d.Report; rep != nil {
		attrs = append(attrs, slog.String("kind", string(rep.Kind)))
		if len(rep.Recipients) > 0 {
			r := rep.Recipients[0]
			attrs = append(attrs, slog.String("recipient", r.Address()), slog.String("action", string(r.Action)), slog.String("status", r.Status))
		}
	}
	if d.ParseError != "" {
		attrs = append(attrs, slog.String("parse_error", d.ParseError))
	}
	if bare > 0 {
		attrs = append(attrs, slog.Int("bare_newlines", bare))
	}
	logInfo(s.s.log, "bounce stored", attrs...)
}

// log returns the session's logger, which adds the connection's id and
// remote address to each line. It is made on first use: the one line of
// most sessions, "bounce stored", carries them itself.
func (s *session) log() *slog.Logger {
	if s.lg == nil {
		s.lg = s.s.log.With("cid", s.c.id, "remote", s.c.remote)
	}
	return s.lg
}

// logInfo logs msg at info level like Logger.LogAttrs, but without the
// caller's program counter, which slog would look up on every line
// (runtime.Callers: about 1 µs, twice per message) and which no handler
// of serve prints.
func logInfo(l *slog.Logger, msg string, attrs ...slog.Attr) {
	ctx := context.Background()
	h := l.Handler()
	if !h.Enabled(ctx, slog.LevelInfo) {
		return
	}
	r := slog.NewRecord(time.Now(), slog.LevelInfo, msg, 0)
	r.AddAttrs(attrs...)
	_ = h.Handle(ctx, r)
}

// rcptList joins the recipients with commas; one needs no new string.
func rcptList(rcpts []string) string {
	if len(rcpts) == 1 {
		return rcpts[0]
	}
	return strings.Join(rcpts, ",")
}

// catch recovers a panic in a session method: it is counted and logged,
// the client gets 421 and the connection closes; the server keeps running.
func (s *session) catch(err *error, id string) {
	v := recover()
	if v == nil {
		return
	}
	s.s.stats.panics.Add(1)
	if id == "" {
		id = s.c.id
	}
	s.log().Error("panic in session", "id", id, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
	s.c.kill()
	*err = withID(toSMTP(&panicError{v}), id)
}
