package mailbox

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

var (
	// ErrLogin is returned (wrapped) when the server refuses the user
	// and password.
	ErrLogin = errors.New("login refused")
	// ErrCertificate is returned (wrapped) when the server's certificate
	// does not verify.
	ErrCertificate = errors.New("server certificate does not verify")
)

// session is one logged-in connection with the folder selected.
type session struct {
	r        *Reader
	c        *imapclient.Client
	idle     bool // wait with IDLE
	uidplus  bool
	validity uint32
	total    uint32
	exists   chan struct{} // a new EXISTS count arrived

	// crit is held from a Save to the end of the message's move, flag or
	// delete; closing the connection at shutdown waits for it.
	crit sync.Mutex
}

// dial connects, logs in and selects the folder; with create, it also
// creates the folders messages are moved to.
func (r *Reader) dial(ctx context.Context, create bool) (*session, error) {
	s := &session{r: r, exists: make(chan struct{}, 1)}
	host, _, _ := net.SplitHostPort(r.opts.Addr)
	tc := &tls.Config{}
	if r.opts.TLSConfig != nil {
		tc = r.opts.TLSConfig.Clone()
	}
	if tc.ServerName == "" {
		tc.ServerName = host
	}
	tc.MinVersion = max(tc.MinVersion, tls.VersionTLS12)
	opts := &imapclient.Options{
		TLSConfig: tc,
		Dialer:    &net.Dialer{Timeout: r.opts.Timeout},
		UnilateralDataHandler: &imapclient.UnilateralDataHandler{
			Mailbox: func(d *imapclient.UnilateralDataMailbox) {
				if d.NumMessages != nil {
					select {
					case s.exists <- struct{}{}:
					default:
					}
				}
			},
		},
	}
	var err error
	switch r.opts.TLS {
	case TLSImplicit:
		s.c, err = imapclient.DialTLS(r.opts.Addr, opts)
	case TLSStartTLS:
		s.c, err = imapclient.DialStartTLS(r.opts.Addr, opts)
	default:
		s.c, err = imapclient.DialInsecure(r.opts.Addr, opts)
	}
	if err != nil {
		return nil, r.dialError(err)
	}
	stop := context.AfterFunc(ctx, func() { s.c.Close() })
	defer stop()
	if err := s.login(create); err != nil {
		s.c.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	return s, nil
}

// dialError makes a one-line error of a failed connection.
func (r *Reader) dialError(err error) error {
	var (
		cv *tls.CertificateVerificationError
		ua x509.UnknownAuthorityError
		he x509.HostnameError
		ci x509.CertificateInvalidError
	)
	if errors.As(err, &cv) || errors.As(err, &ua) || errors.As(err, &he) || errors.As(err, &ci) {
		return fmt.Errorf("mailbox %s: %w: %s: %v (a private CA goes in tls_ca_file)", r.opts.Name, ErrCertificate, r.opts.Addr, err)
	}
	return fmt.Errorf("mailbox %s: connecting to %s: %w", r.opts.Name, r.opts.Addr, err)
}

// login logs in, creates the folders messages are moved to (with create)
// and selects the folder.
func (s *session) login(create bool) error {
	o := &s.r.opts
	if err := s.c.Login(o.User, o.Password).Wait(); err != nil {
		var ie *imap.Error
		if errors.As(err, &ie) {
			return fmt.Errorf("mailbox %s: %w for user %q: %s", o.Name, ErrLogin, o.User, oneLine(ie.Text))
		}
		return fmt.Errorf("mailbox %s: logging in: %w", o.Name, err)
	}
	for _, f := range []string{o.MoveFolder, o.NotBounceFolder} {
		if !create || f == "" || f == o.MoveFolder && o.Action != ActionMove {
			continue
		}
		if err := s.ensureFolder(f); err != nil {
			return err
		}
	}
	sel, err := s.c.Select(o.Folder, nil).Wait()
	if err != nil {
		return fmt.Errorf("mailbox %s: selecting folder %q: %w", o.Name, o.Folder, err)
	}
	s.validity, s.total = sel.UIDValidity, sel.NumMessages
	caps := s.c.Caps()
	s.idle = o.Idle && (caps.Has(imap.CapIdle) || caps.Has(imap.CapIMAP4rev2))
	s.uidplus = caps.Has(imap.CapUIDPlus) || caps.Has(imap.CapIMAP4rev2)
	return nil
}

// ensureFolder creates folder unless it exists.
func (s *session) ensureFolder(folder string) error {
	list, err := s.c.List("", folder, nil).Collect()
	if err != nil {
		return fmt.Errorf("mailbox %s: listing folder %q: %w", s.r.opts.Name, folder, err)
	}
	if len(list) > 0 {
		return nil
	}
	if err := s.c.Create(folder, nil).Wait(); err != nil {
		var ie *imap.Error
		if errors.As(err, &ie) && ie.Code == imap.ResponseCodeAlreadyExists {
			return nil
		}
		return fmt.Errorf("mailbox %s: creating folder %q: %w", s.r.opts.Name, folder, err)
	}
	s.r.log.Info("mailbox folder created", "folder", folder)
	return nil
}

func (s *session) close() {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.c.Logout().Wait()
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
	s.c.Close()
}

// run handles what waits and then what arrives, until an error or the
// end of ctx. worked says whether at least one pass completed.
func (s *session) run(ctx context.Context) (worked bool, err error) {
	stop := context.AfterFunc(ctx, func() {
		s.crit.Lock()
		defer s.crit.Unlock()
		s.c.Close()
	})
	defer stop()
	for ctx.Err() == nil {
		n, err := s.pass(ctx)
		if err != nil {
			return worked, err
		}
		worked = true
		if n >= s.r.opts.MaxPerPoll {
			continue // more wait
		}
		if err := s.wait(ctx); err != nil {
			return worked, err
		}
	}
	return worked, nil
}

// wait returns when new mail may have arrived: an EXISTS in IDLE, or the
// poll interval passed.
func (s *session) wait(ctx context.Context) error {
	t := time.NewTimer(s.r.opts.PollInterval)
	defer t.Stop()
	if !s.idle {
		select {
		case <-ctx.Done():
		case <-t.C:
		case <-s.c.Closed():
			return fmt.Errorf("mailbox %s: connection closed by the server", s.r.opts.Name)
		}
		return nil
	}
	idle, err := s.c.Idle()
	if err != nil {
		return fmt.Errorf("mailbox %s: starting IDLE: %w", s.r.opts.Name, err)
	}
	select {
	case <-ctx.Done():
		return nil
	case <-t.C:
	case <-s.exists:
	case <-s.c.Closed():
		return fmt.Errorf("mailbox %s: connection closed by the server", s.r.opts.Name)
	}
	if err := idle.Close(); err != nil {
		return fmt.Errorf("mailbox %s: ending IDLE: %w", s.r.opts.Name, err)
	}
	if err := idle.Wait(); err != nil {
		return fmt.Errorf("mailbox %s: ending IDLE: %w", s.r.opts.Name, err)
	}
	return nil
}

// search returns the UIDs of the messages to handle, oldest first: all
// but those marked \Deleted, done (ActionFlag) or left in place before.
func (s *session) search() ([]imap.UID, error) {
	crit := &imap.SearchCriteria{NotFlag: []imap.Flag{imap.FlagDeleted}}
	if s.r.opts.Action == ActionFlag {
		crit.NotFlag = append(crit.NotFlag, imap.Flag(s.r.opts.Flag))
	}
	data, err := s.c.UIDSearch(crit, nil).Wait()
	if err != nil {
		return nil, fmt.Errorf("mailbox %s: searching: %w", s.r.opts.Name, err)
	}
	var out []imap.UID
	for _, u := range data.AllUIDs() {
		if !s.r.isSkipped(s.validity, uint32(u)) {
			out = append(out, u)
		}
	}
	return out, nil
}

// pass handles up to MaxPerPoll waiting messages and returns how many it
// looked at.
func (s *session) pass(ctx context.Context) (int, error) {
	uids, err := s.search()
	if err != nil || len(uids) == 0 {
		return 0, err
	}
	uids = uids[:min(len(uids), s.r.opts.MaxPerPoll)]
	sizes, err := s.sizes(uids)
	if err != nil {
		return 0, err
	}
	for i, uid := range uids {
		if ctx.Err() != nil {
			return i, nil
		}
		size, ok := sizes[uid]
		if !ok {
			continue // expunged by someone else meanwhile
		}
		if size > s.r.opts.MaxMessageBytes {
			s.tooLarge(uid, size)
			continue
		}
		raw, err := s.fetch(uid)
		if errors.Is(err, errTooLarge) {
			s.tooLarge(uid, int64(len(raw)))
			continue
		}
		if err != nil {
			return i, err
		}
		if raw == nil {
			continue
		}
		if err := s.handle(ctx, uid, raw); err != nil {
			return i, err
		}
	}
	return len(uids), nil
}

// sizes fetches the RFC822.SIZE of each message.
func (s *session) sizes(uids []imap.UID) (map[imap.UID]int64, error) {
	msgs, err := s.c.Fetch(imap.UIDSetNum(uids...), &imap.FetchOptions{UID: true, RFC822Size: true}).Collect()
	if err != nil {
		return nil, fmt.Errorf("mailbox %s: fetching sizes: %w", s.r.opts.Name, err)
	}
	out := make(map[imap.UID]int64, len(msgs))
	for _, m := range msgs {
		out[m.UID] = m.RFC822Size
	}
	return out, nil
}

var errTooLarge = errors.New("message over the size limit")

// fetch reads one message without setting \Seen (BODY.PEEK[]), at most
// MaxMessageBytes of it. It returns nil for a message gone meanwhile.
func (s *session) fetch(uid imap.UID) ([]byte, error) {
	max := s.r.opts.MaxMessageBytes
	cmd := s.c.Fetch(imap.UIDSetNum(uid), &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{{Peek: true}}})
	var raw []byte
	var rerr error
	if msg := cmd.Next(); msg != nil {
		for item := msg.Next(); item != nil; item = msg.Next() {
			b, ok := item.(imapclient.FetchItemDataBodySection)
			if !ok || b.Literal == nil {
				continue
			}
			if b.Literal.Size() > max {
				raw, rerr = make([]byte, 0), errTooLarge
				break
			}
			raw, rerr = io.ReadAll(io.LimitReader(b.Literal, max+1))
			if rerr == nil && int64(len(raw)) > max {
				rerr = errTooLarge
			}
		}
	}
	if err := cmd.Close(); err != nil && rerr == nil {
		rerr = fmt.Errorf("mailbox %s: fetching message uid %d: %w", s.r.opts.Name, uid, err)
	}
	return raw, rerr
}

func (s *session) tooLarge(uid imap.UID, size int64) {
	s.r.stats.tooLarge.Add(1)
	s.r.skip(s.validity, uint32(uid))
	s.r.log.Warn("message left in the mailbox: over the size limit", "uid", uint32(uid), "size", size, "max", s.r.opts.MaxMessageBytes)
}

// oneLine cuts a server's text at its first line break.
func oneLine(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] == '\r' || s[i] == '\n' {
			return s[:i]
		}
	}
	return s
}
