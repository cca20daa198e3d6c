// Package mailbox reads bounces from an IMAP folder, for senders whose
// bounce address lives in an existing mailbox instead of behind an MX that
// points at bouncer. Each message goes the way of one received over SMTP:
// the return path is taken from the headers the delivering MTA wrote
// (Delivered-To, X-Original-To, Envelope-To, then To) and checked as at
// RCPT, the message is decoded and saved by the same Saver, so policy,
// dedupe, the storm guard and the outbox apply. The record's envelope says
// "mailbox:NAME" in Source.
//
// A message is moved, flagged or deleted only after Save returned: a reader
// killed in between sees it again on its next pass, and the store's dedupe
// marks the second copy a duplicate, which counts nothing. Mail that is not
// a bounce (nothing recognised, or an RFC 3834 auto-reply), or whose
// recipient the check refuses, is not saved: it is left where it is or
// moved to Options.NotBounceFolder, never deleted. A message over
// MaxMessageBytes is left where it is and never fetched.
//
// Protocols: IMAP4rev1 (RFC 3501) with IDLE (RFC 2177) when the server
// has it, MOVE (RFC 6851, else COPY, STORE \Deleted and EXPUNGE), UIDPLUS
// (RFC 4315, UID EXPUNGE) where available; implicit TLS (RFC 8314) or
// STARTTLS (RFC 2595), plain text only to a loopback address.
//
// The client library is github.com/emersion/go-imap/v2 (a beta) rather
// than v1 (the stable release): v1 gets no more work, while v2 is where
// fixes land; v2 has IDLE built in and restarts it before the 30-minute
// server timeout (RFC 2177 §3), falls back from MOVE by itself, and hands
// over message bodies as literals of known size, which the size limit
// reads bounded. Its API may still change between betas; go.mod pins one.
package mailbox

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bouncer/bouncer/server"
	"github.com/bouncer/bouncer/store"
	"github.com/bouncer/bouncer/verp"
)

// Saver stores one message; it returns only after the message is
// durable. server.Saver and the store's Save have this shape.
type Saver interface {
	Save(ctx context.Context, d *store.Delivery) ([]store.Record, error)
}

// Intake is the recipient check and decoding step shared with SMTP intake;
// *server.Intake implements it.
type Intake interface {
	Recipient(to string) (verp.Result, error)
	Delivery(received time.Time, env store.Envelope, res verp.Result, raw []byte) (*store.Delivery, *server.DecoderPanic)
}

// TLS modes.
const (
	TLSImplicit = "implicit" // TLS from the first byte (port 993)
	TLSStartTLS = "starttls" // plain, then STARTTLS (port 143)
	TLSNone     = "none"     // no TLS: loopback addresses only
)

// What is done with a message once its record is committed.
const (
	ActionMove   = "move"   // to Options.MoveFolder
	ActionFlag   = "flag"   // set Options.Flag; messages with it are skipped
	ActionDelete = "delete" // \Deleted and expunged
)

// Options configure one mailbox reader. Zero fields take the defaults
// of DefaultOptions.
type Options struct {
	Name      string // the [[mailbox]] name, in logs, metrics and Source
	Addr      string // host:port
	TLS       string // TLSImplicit, TLSStartTLS or TLSNone
	TLSConfig *tls.Config
	User      string
	Password  string
	Folder    string // default INBOX

	// Idle waits with IDLE when the server has it; PollInterval is the
	// wait without it, and the longest wait in IDLE before a new pass.
	Idle         bool
	PollInterval time.Duration

	Action          string // ActionMove, ActionFlag or ActionDelete
	MoveFolder      string // for ActionMove; created if missing
	Flag            string // for ActionFlag, e.g. \Seen or $Bounced
	NotBounceFolder string // "" leaves non-bounces in place; created if missing

	MaxMessageBytes int64         // larger messages are left alone
	MaxPerPoll      int           // messages handled in one pass
	Timeout         time.Duration // dialing and each command
	SaveTimeout     time.Duration // one Save
	MinBackoff      time.Duration // first wait after an error, doubling
	MaxBackoff      time.Duration // longest wait; also after a refused login

	// AfterSave, if set, runs after a Save returned nil and before the
	// message is moved, flagged or deleted (tests kill the process here).
	AfterSave func()
}

// DefaultOptions returns the defaults of the options that have one.
func DefaultOptions() Options {
	return Options{
		TLS: TLSImplicit, Folder: "INBOX", Idle: true, PollInterval: time.Minute,
		Action: ActionMove, MoveFolder: "bouncer-processed", Flag: `\Seen`,
		MaxMessageBytes: 10 << 20, MaxPerPoll: 100, Timeout: time.Minute, SaveTimeout: 30 * time.Second,
		MinBackoff: 5 * time.Second, MaxBackoff: 5 * time.Minute,
	}
}

func (o Options) withDefaults() Options {
	d := DefaultOptions()
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&o.TLS, d.TLS)
	def(&o.Folder, d.Folder)
	def(&o.Action, d.Action)
	def(&o.MoveFolder, d.MoveFolder)
	def(&o.Flag, d.Flag)
	dur := func(p *time.Duration, v time.Duration) {
		if *p <= 0 {
			*p = v
		}
	}
	dur(&o.PollInterval, d.PollInterval)
	dur(&o.Timeout, d.Timeout)
	dur(&o.SaveTimeout, d.SaveTimeout)
	dur(&o.MinBackoff, d.MinBackoff)
	dur(&o.MaxBackoff, d.MaxBackoff)
	if o.MaxMessageBytes <= 0 {
		o.MaxMessageBytes = d.MaxMessageBytes
	}
	if o.MaxPerPoll <= 0 {
		o.MaxPerPoll = d.MaxPerPoll
	}
	o.MaxBackoff = max(o.MaxBackoff, o.MinBackoff)
	return o
}

// Validate reports the first option that cannot work, in one line.
func (o Options) Validate() error {
	o = o.withDefaults()
	host, _, err := net.SplitHostPort(o.Addr)
	switch {
	case o.Name == "":
		return errors.New("mailbox without a name")
	case err != nil || host == "":
		return fmt.Errorf("mailbox %s: address %q: want host:port", o.Name, o.Addr)
	case o.TLS != TLSImplicit && o.TLS != TLSStartTLS && o.TLS != TLSNone:
		return fmt.Errorf("mailbox %s: tls %q: want implicit, starttls or none", o.Name, o.TLS)
	case o.TLS == TLSNone && !isLoopback(host):
		return fmt.Errorf("mailbox %s: tls = none sends the password in plain text: only allowed to a loopback address, not %q", o.Name, host)
	case o.User == "":
		return fmt.Errorf("mailbox %s: user is empty", o.Name)
	case o.Action != ActionMove && o.Action != ActionFlag && o.Action != ActionDelete:
		return fmt.Errorf("mailbox %s: action %q: want move, flag or delete", o.Name, o.Action)
	case o.Action == ActionMove && o.MoveFolder == o.Folder:
		return fmt.Errorf("mailbox %s: move_folder is the folder read", o.Name)
	case o.NotBounceFolder == o.Folder:
		return fmt.Errorf("mailbox %s: not_bounce_folder is the folder read", o.Name)
	}
	return nil
}

// isLoopback reports whether host is localhost or a loopback address.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Stats are one reader's counters since it started.
type Stats struct {
	Name      string
	Stored    int64 // messages saved (and then moved, flagged or deleted)
	NotBounce int64 // not saved: nothing recognised or an auto-reply
	Refused   int64 // not saved: no recipient passed the RCPT check
	TooLarge  int64 // over MaxMessageBytes, left alone
	Errors    int64 // sessions ended by an error (connection, login, command, Save)
	Connected bool  // logged in now
}

type counters struct {
	stored, notBounce, refused, tooLarge, errors atomic.Int64
	connected                                    atomic.Bool
}

// Reader reads one mailbox.
type Reader struct {
	opts  Options
	in    Intake
	saver Saver
	log   *slog.Logger
	stats counters

	mu      sync.Mutex
	skipped map[uint32]map[uint32]bool // UIDVALIDITY → UIDs left in place
}

// New returns a reader; opts must pass Validate.
func New(opts Options, in Intake, saver Saver, logger *slog.Logger) *Reader {
	opts = opts.withDefaults()
	return &Reader{opts: opts, in: in, saver: saver, log: logger.With("mailbox", opts.Name),
		skipped: make(map[uint32]map[uint32]bool)}
}

// Name is the mailbox's name.
func (r *Reader) Name() string { return r.opts.Name }

// Stats returns the reader's counters.
func (r *Reader) Stats() Stats {
	s := &r.stats
	return Stats{Name: r.opts.Name, Stored: s.stored.Load(), NotBounce: s.notBounce.Load(), Refused: s.refused.Load(),
		TooLarge: s.tooLarge.Load(), Errors: s.errors.Load(), Connected: s.connected.Load()}
}

// Run reads the mailbox until ctx ends: it logs in, handles what waits,
// then waits for more (IDLE or the poll interval). After an error it logs
// one line, waits (MinBackoff doubling up to MaxBackoff, MaxBackoff after
// a refused login or certificate) and starts again. It returns when ctx
// ends, after the message between its Save and its move, if any, is done.
func (r *Reader) Run(ctx context.Context) {
	backoff := r.opts.MinBackoff
	for ctx.Err() == nil {
		s, err := r.dial(ctx, true)
		worked := false
		if err == nil {
			r.stats.connected.Store(true)
			r.log.Info("mailbox connected", "addr", r.opts.Addr, "folder", r.opts.Folder, "idle", s.idle)
			worked, err = s.run(ctx)
			r.stats.connected.Store(false)
			s.close()
		}
		if ctx.Err() != nil {
			return
		}
		r.stats.errors.Add(1)
		if worked {
			backoff = r.opts.MinBackoff
		}
		wait := backoff
		if errors.Is(err, ErrLogin) || errors.Is(err, ErrCertificate) {
			wait = r.opts.MaxBackoff
			r.log.Error("mailbox unusable", "err", err, "retry_in", wait.String())
		} else {
			r.log.Warn("mailbox session failed", "err", err, "retry_in", wait.String())
		}
		backoff = min(2*backoff, r.opts.MaxBackoff)
		// Up to a tenth more, so readers of one server do not retry in step.
		wait += rand.N(wait/10 + 1)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// Test logs in, selects the folder and returns how many messages it
// holds and how many of them wait to be handled, then logs out. It
// changes nothing in the mailbox.
func (r *Reader) Test(ctx context.Context) (total, waiting int, err error) {
	s, err := r.dial(ctx, false)
	if err != nil {
		return 0, 0, err
	}
	defer s.close()
	uids, err := s.search()
	if err != nil {
		return 0, 0, err
	}
	return int(s.total), len(uids), nil
}

// skip remembers a message left in place, so later passes of this process
// do not fetch it again.
func (r *Reader) skip(validity, uid uint32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.skipped[validity]
	if m == nil {
		m = make(map[uint32]bool)
		r.skipped[validity] = m
	}
	m[uid] = true
}

func (r *Reader) isSkipped(validity, uid uint32) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.skipped[validity][uid]
}
