package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bouncer/bouncer/mailbox"
	"github.com/bouncer/bouncer/server"
)

// MailboxConfig is one [[mailbox]]: an IMAP folder read for bounces
// (package mailbox). Zero fields take the defaults of defaultMailbox.
type MailboxConfig struct {
	Name         string `toml:"name"`
	Host         string `toml:"host"`
	Port         int    `toml:"port"` // 0: 993 for implicit TLS, else 143
	TLS          string `toml:"tls"`
	TLSCAFile    string `toml:"tls_ca_file"`
	User         string `toml:"user"`
	Password     string `toml:"password"`
	PasswordFile string `toml:"password_file"`
	Folder       string `toml:"folder"`
	// Wait is "idle" (IDLE where the server has it, else polling) or
	// "poll"; PollInterval is the wait between polls, and the longest
	// wait in IDLE.
	Wait            string   `toml:"wait"`
	PollInterval    Duration `toml:"poll_interval"`
	Action          string   `toml:"action"`
	MoveFolder      string   `toml:"move_folder"`
	Flag            string   `toml:"flag"`
	NotBounceFolder string   `toml:"not_bounce_folder"`
	MaxMessageBytes int64    `toml:"max_message_bytes"`
	MaxPerPoll      int      `toml:"max_per_poll"`
	Timeout         Duration `toml:"timeout"`
	MinBackoff      Duration `toml:"min_backoff"`
	MaxBackoff      Duration `toml:"max_backoff"`
}

// defaultMailbox holds the defaults of a [[mailbox]]'s optional keys.
func defaultMailbox() MailboxConfig {
	d := mailbox.DefaultOptions()
	return MailboxConfig{
		TLS: d.TLS, Folder: d.Folder, Wait: "idle", PollInterval: Duration(d.PollInterval),
		Action: d.Action, MoveFolder: d.MoveFolder, Flag: d.Flag,
		MaxMessageBytes: d.MaxMessageBytes, MaxPerPoll: d.MaxPerPoll, Timeout: Duration(d.Timeout),
		MinBackoff: Duration(d.MinBackoff), MaxBackoff: Duration(d.MaxBackoff),
	}
}

// withDefaults fills the keys a [[mailbox]] left out.
func (m MailboxConfig) withDefaults() MailboxConfig {
	d := defaultMailbox()
	for _, p := range []struct{ v, def *string }{{&m.TLS, &d.TLS}, {&m.Folder, &d.Folder}, {&m.Wait, &d.Wait},
		{&m.Action, &d.Action}, {&m.MoveFolder, &d.MoveFolder}, {&m.Flag, &d.Flag}} {
		if *p.v == "" {
			*p.v = *p.def
		}
	}
	for _, p := range []struct{ v, def *Duration }{{&m.PollInterval, &d.PollInterval}, {&m.Timeout, &d.Timeout},
		{&m.MinBackoff, &d.MinBackoff}, {&m.MaxBackoff, &d.MaxBackoff}} {
		if *p.v == 0 {
			*p.v = *p.def
		}
	}
	if m.MaxMessageBytes == 0 {
		m.MaxMessageBytes = d.MaxMessageBytes
	}
	if m.MaxPerPoll == 0 {
		m.MaxPerPoll = d.MaxPerPoll
	}
	return m
}

// mailboxName is what a name may be: it goes into metric labels and
// record sources.
var mailboxName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// validateMailboxes fills defaults and checks every [[mailbox]], naming
// the first problem in one line.
func (c *Config) validateMailboxes() error {
	seen := map[string]bool{}
	for i := range c.Mailbox {
		m := c.Mailbox[i].withDefaults()
		if !mailboxName.MatchString(m.Name) {
			return fmt.Errorf("config: mailbox %d: name %q: want letters, digits, '.', '_' or '-'", i+1, m.Name)
		}
		if seen[m.Name] {
			return fmt.Errorf("config: mailbox %q is listed twice", m.Name)
		}
		seen[m.Name] = true
		p := "mailbox." + m.Name + "."
		switch {
		case m.Host == "":
			return fmt.Errorf("config: %shost is empty", p)
		case (m.Password == "") == (m.PasswordFile == ""):
			return fmt.Errorf("config: %spassword and %spassword_file: set exactly one", p, p)
		case m.Wait != "idle" && m.Wait != "poll":
			return fmt.Errorf("config: %swait %q: want idle or poll", p, m.Wait)
		}
		for _, b := range []intBound{
			{p + "port", float64(m.Port), 1, 65535, true},
			{p + "max_message_bytes", float64(m.MaxMessageBytes), 1, server.MaxMessageBytesLimit, false},
			{p + "max_per_poll", float64(m.MaxPerPoll), 1, 100_000, false},
		} {
			if err := b.check(); err != nil {
				return err
			}
		}
		for _, b := range []durBound{
			{p + "poll_interval", m.PollInterval, time.Second, 29 * time.Minute, false},
			{p + "timeout", m.Timeout, time.Second, 10 * time.Minute, false},
			{p + "min_backoff", m.MinBackoff, 10 * time.Millisecond, day, false},
			{p + "max_backoff", m.MaxBackoff, 10 * time.Millisecond, day, false},
		} {
			if err := b.check(); err != nil {
				return err
			}
		}
		if err := m.options().Validate(); err != nil {
			return fmt.Errorf("config: %w", err)
		}
	}
	return nil
}

// options copies a [[mailbox]] into the reader's options; the password
// file and CA file are read by mailboxOptions.
func (m MailboxConfig) options() mailbox.Options {
	port := m.Port
	if port == 0 {
		port = 143
		if m.TLS == mailbox.TLSImplicit {
			port = 993
		}
	}
	return mailbox.Options{
		Name: m.Name, Addr: net.JoinHostPort(m.Host, strconv.Itoa(port)), TLS: m.TLS,
		User: m.User, Password: m.Password, Folder: m.Folder,
		Idle: m.Wait == "idle", PollInterval: time.Duration(m.PollInterval),
		Action: m.Action, MoveFolder: m.MoveFolder, Flag: m.Flag, NotBounceFolder: m.NotBounceFolder,
		MaxMessageBytes: m.MaxMessageBytes, MaxPerPoll: m.MaxPerPoll,
		Timeout: time.Duration(m.Timeout), MinBackoff: time.Duration(m.MinBackoff), MaxBackoff: time.Duration(m.MaxBackoff),
	}
}

// mailboxOptions returns the reader's options with the password and CAs
// read from their files.
func (c *Config) mailboxOptions(m MailboxConfig) (mailbox.Options, error) {
	o := m.options()
	o.SaveTimeout = time.Duration(c.SMTP.SaveTimeout)
	if m.PasswordFile != "" {
		b, err := os.ReadFile(m.PasswordFile)
		if err != nil {
			return o, fmt.Errorf("mailbox %s: reading password_file: %w", m.Name, err)
		}
		o.Password = strings.TrimRight(string(b), "\r\n")
		if o.Password == "" {
			return o, fmt.Errorf("mailbox %s: password_file %s is empty", m.Name, m.PasswordFile)
		}
	}
	if m.TLSCAFile != "" {
		pem, err := os.ReadFile(m.TLSCAFile)
		if err != nil {
			return o, fmt.Errorf("mailbox %s: reading tls_ca_file: %w", m.Name, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return o, fmt.Errorf("mailbox %s: tls_ca_file %s holds no PEM certificate", m.Name, m.TLSCAFile)
		}
		o.TLSConfig = &tls.Config{RootCAs: pool}
	}
	return o, nil
}

// resolveMailboxPaths makes the mailboxes' file paths absolute against
// the config file's folder.
func (c *Config) resolveMailboxPaths(dir string) {
	for i := range c.Mailbox {
		for _, p := range []*string{&c.Mailbox[i].PasswordFile, &c.Mailbox[i].TLSCAFile} {
			if *p != "" && !filepath.IsAbs(*p) {
				*p = filepath.Join(dir, *p)
			}
		}
	}
}

// killAfterSaveEnv, set to 1, makes serve SIGKILL itself after the first
// mailbox message is saved and before it is moved: the crash test's hook
// (cmd/bouncer/mailbox_test.go). Nothing else reads it.
const killAfterSaveEnv = "BOUNCER_TEST_KILL_AFTER_SAVE"

// startMailboxes starts one reader per [[mailbox]], saving through saver
// with the SMTP server's recipient check and decoding. The returned
// function stops them and waits until they have.
func startMailboxes(cfg Config, in *server.Intake, saver mailbox.Saver, logger *slog.Logger) ([]*mailbox.Reader, func(), error) {
	var readers []*mailbox.Reader
	for _, m := range cfg.Mailbox {
		o, err := cfg.mailboxOptions(m)
		if err != nil {
			return nil, nil, err
		}
		if os.Getenv(killAfterSaveEnv) == "1" {
			o.AfterSave = func() { syscall.Kill(os.Getpid(), syscall.SIGKILL) }
		}
		readers = append(readers, mailbox.New(o, in, saver, logger))
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, r := range readers {
		wg.Go(func() { r.Run(ctx) })
	}
	return readers, func() { cancel(); wg.Wait() }, nil
}

// mailboxCmd is "bouncer mailbox test NAME": log in, say how many
// messages wait, log out.
func (a *app) mailboxCmd(ctx context.Context, args []string) error {
	fs := newFlags("mailbox", "mailbox test NAME\n\nLogs in to the [[mailbox]] NAME of the config, says how many messages its folder\nholds and how many wait to be read, and exits (1 if it cannot log in).", a.stderr)
	cfgPath := commonFlags(fs)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 || pos[0] != "test" {
		return usageError("mailbox: want: mailbox test NAME")
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	var m *MailboxConfig
	var names []string
	for i := range cfg.Mailbox {
		names = append(names, cfg.Mailbox[i].Name)
		if cfg.Mailbox[i].Name == pos[1] {
			m = &cfg.Mailbox[i]
		}
	}
	if m == nil {
		if len(names) == 0 {
			return fmt.Errorf("mailbox %q: the config has no [[mailbox]]", pos[1])
		}
		return fmt.Errorf("mailbox %q is not in the config (it has: %s)", pos[1], strings.Join(names, ", "))
	}
	o, err := cfg.mailboxOptions(*m)
	if err != nil {
		return err
	}
	logger := slog.New(slog.DiscardHandler)
	r := mailbox.New(o, server.NewIntake(serverOptions(cfg, nil)), nil, logger)
	tctx, cancel := context.WithTimeout(ctx, 2*o.Timeout)
	defer cancel()
	total, waiting, err := r.Test(tctx)
	if err != nil {
		if errors.Is(tctx.Err(), context.DeadlineExceeded) {
			return fmt.Errorf("mailbox %s: no answer from %s within %s", m.Name, o.Addr, 2*o.Timeout)
		}
		return err
	}
	fmt.Fprintf(a.stdout, "mailbox %s: logged in to %s as %s; %s holds %d messages, %d to read\n",
		m.Name, o.Addr, o.User, o.Folder, total, waiting)
	return nil
}
