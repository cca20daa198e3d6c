package mailbox

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/mail"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-message/textproto"

	"github.com/bouncer/bouncer/parse"
	"github.com/bouncer/bouncer/store"
	"github.com/bouncer/bouncer/verp"
)

// handle takes one message: saved and then moved, flagged or deleted if it
// is a bounce for us, else left alone or moved to NotBounceFolder.
func (s *session) handle(ctx context.Context, uid imap.UID, raw []byte) error {
	r := s.r
	env, res, err := r.envelope(raw)
	if err != nil {
		r.stats.refused.Add(1)
		r.log.Info("message left in the mailbox: recipient refused", "uid", uint32(uid), "reason", err.Error())
		return s.leave(uid)
	}
	d, panicked := r.in.Delivery(time.Now(), env, res, raw)
	if panicked != nil {
		r.log.Error("panic in decoder", "uid", uint32(uid), "panic", panicked.Value, "stack", panicked.Stack)
	}
	if !isBounce(d.Report) {
		r.stats.notBounce.Add(1)
		kind := parse.KindUnknown
		if d.Report != nil {
			kind = d.Report.Kind
		}
		r.log.Info("message left in the mailbox: not a bounce", "uid", uint32(uid), "kind", string(kind))
		return s.leave(uid)
	}

	s.crit.Lock()
	defer s.crit.Unlock()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.opts.SaveTimeout)
	recs, err := r.saver.Save(sctx, d)
	cancel()
	if err != nil {
		return fmt.Errorf("mailbox %s: saving message uid %d: %w", r.opts.Name, uid, err)
	}
	r.stats.stored.Add(1)
	r.logStored(uid, d, recs)
	if r.opts.AfterSave != nil {
		r.opts.AfterSave()
	}
	return s.done(uid)
}

// isBounce reports whether the decoder recognised a report worth a
// record: a DSN, a bounce in another shape, or a feedback report. An
// auto-reply is left to the people who read the mailbox.
func isBounce(rep *parse.Report) bool {
	return rep != nil && rep.Kind != "" && rep.Kind != parse.KindUnknown && rep.Kind != parse.KindAutoReply
}

func (r *Reader) logStored(uid imap.UID, d *store.Delivery, recs []store.Record) {
	attrs := []slog.Attr{slog.Int("uid", int(uid)), slog.String("from", d.Envelope.MailFrom),
		slog.String("rcpt", strings.Join(d.Envelope.RcptTo, ",")), slog.Int("size", len(d.Raw)), slog.Int("records", len(recs))}
	if len(recs) > 0 {
		attrs = append(attrs, slog.String("msg_id", recs[0].MsgID))
		if recs[0].Duplicate {
			attrs = append(attrs, slog.Bool("duplicate", true))
		}
	}
	if d.Envelope.VERP != "" {
		attrs = append(attrs, slog.String("verp", d.Envelope.VERP), slog.Bool("verified", d.Envelope.Verified))
	}
	if rep := d.Report; rep != nil {
		attrs = append(attrs, slog.String("kind", string(rep.Kind)))
		if len(rep.Recipients) > 0 {
			rc := rep.Recipients[0]
			attrs = append(attrs, slog.String("recipient", rc.Address()), slog.String("action", string(rc.Action)), slog.String("status", rc.Status))
		}
	}
	if d.ParseError != "" {
		attrs = append(attrs, slog.String("parse_error", d.ParseError))
	}
	r.log.LogAttrs(context.Background(), slog.LevelInfo, "bounce stored", attrs...)
}

// done moves, flags or deletes a saved message.
func (s *session) done(uid imap.UID) error {
	o := &s.r.opts
	set := imap.UIDSetNum(uid)
	var err error
	switch o.Action {
	case ActionMove:
		_, err = s.c.Move(set, o.MoveFolder).Wait()
	case ActionFlag:
		err = s.c.Store(set, &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.Flag(o.Flag)}}, nil).Close()
	case ActionDelete:
		err = s.c.Store(set, &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close()
		if err == nil && s.uidplus {
			err = s.c.UIDExpunge(set).Close()
		} else if err == nil {
			err = s.c.Expunge().Close()
		}
	}
	if err != nil {
		return fmt.Errorf("mailbox %s: %s of message uid %d after saving it: %w", o.Name, o.Action, uid, err)
	}
	return nil
}

// leave handles a message that is not saved: moved to NotBounceFolder if
// one is set, else left in place and not fetched again by this process.
func (s *session) leave(uid imap.UID) error {
	if f := s.r.opts.NotBounceFolder; f != "" {
		if _, err := s.c.Move(imap.UIDSetNum(uid), f).Wait(); err != nil {
			return fmt.Errorf("mailbox %s: moving message uid %d to %q: %w", s.r.opts.Name, uid, f, err)
		}
		return nil
	}
	s.r.skip(s.validity, uint32(uid))
	return nil
}

// recipientHeaders are where the delivering MTA wrote the envelope
// recipient, in the order they are trusted: Postfix's and qmail's
// Delivered-To and Postfix's X-Original-To, Exim's Envelope-To, and To as
// the last resort.
var recipientHeaders = []string{"Delivered-To", "X-Original-To", "Envelope-To", "To"}

// envelope makes the SMTP envelope of a message from its header: the
// sender from Return-Path, and as the one recipient the first header
// address that the RCPT check accepts with a VERP return path, else the
// first it accepts at all. With none accepted, the error is the first
// refusal.
func (r *Reader) envelope(raw []byte) (store.Envelope, verp.Result, error) {
	env := store.Envelope{Source: "mailbox:" + r.opts.Name}
	h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(raw)))
	if err != nil && h.Len() == 0 {
		return env, verp.Result{}, fmt.Errorf("reading header: %w", err)
	}
	env.MailFrom = strings.Trim(strings.TrimSpace(h.Get("Return-Path")), "<>")
	var (
		plain    string
		firstErr error
		seen     = map[string]bool{}
	)
	for _, key := range recipientHeaders {
		for _, v := range h.Values(key) {
			for _, a := range headerAddrs(v) {
				if seen[strings.ToLower(a)] {
					continue
				}
				seen[strings.ToLower(a)] = true
				res, err := r.in.Recipient(a)
				switch {
				case err != nil:
					if firstErr == nil {
						firstErr = fmt.Errorf("%s %s: %w", key, a, err)
					}
				case res.Recipient != "" || res.RecipientHash != "":
					env.RcptTo = []string{a}
					return env, res, nil
				case plain == "":
					plain = a
				}
			}
		}
	}
	if plain != "" {
		env.RcptTo = []string{plain}
		return env, verp.Result{}, nil
	}
	if firstErr == nil {
		firstErr = errors.New("no recipient address in Delivered-To, X-Original-To, Envelope-To or To")
	}
	return env, verp.Result{}, firstErr
}

// headerAddrs returns the addresses of one header field value: a list
// of RFC 5322 addresses, or failing that, comma-separated bare addresses.
func headerAddrs(v string) []string {
	var out []string
	if list, err := mail.ParseAddressList(v); err == nil {
		for _, a := range list {
			out = append(out, a.Address)
		}
		return out
	}
	for _, p := range strings.Split(v, ",") {
		p = strings.Trim(strings.TrimSpace(p), "<>")
		if strings.Contains(p, "@") {
			out = append(out, p)
		}
	}
	return out
}
