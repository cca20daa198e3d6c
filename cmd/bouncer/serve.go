package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bouncer/bouncer/api"
	"github.com/bouncer/bouncer/mailbox"
	"github.com/bouncer/bouncer/metrics"
	"github.com/bouncer/bouncer/policy"
	"github.com/bouncer/bouncer/server"
	"github.com/bouncer/bouncer/store"
	"github.com/bouncer/bouncer/store/bolt"
	"github.com/bouncer/bouncer/store/postgres"
	"github.com/bouncer/bouncer/verp"
	"github.com/bouncer/bouncer/web"
)

func (a *app) serve(ctx context.Context, args []string) error {
	fs := newFlags("serve", "serve [-config FILE]", a.stderr)
	cfgPath := fs.String("config", "", "TOML config `file` (default: built-in defaults)")
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	logger, err := newLogger(a.stderr, cfg.Log.Level)
	if err != nil {
		return err
	}
	for _, w := range cfg.warnings() {
		logger.Warn(w)
	}
	tuneGC(cfg.SMTP.MaxDataMemory)
	table, err := policy.Compile(cfg.Policy.Rules)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	var storms atomic.Int64
	onStorm := func(st store.Storm) {
		storms.Add(1)
		logger.Warn("storm started: new suppressions of the domain are held",
			"domain", st.Domain, "key", st.Key, "status", st.Status, "addresses", st.Count,
			"hold_for", store.StormOptions{HoldFor: time.Duration(cfg.Storm.HoldFor)}.HoldForOrDefault().String())
	}
	onLog := func(li bolt.LogInfo) {
		if li.Damaged != "" {
			logger.Error("database log damaged", "log", li.Path, "applied", li.Applied, "dropped", li.Dropped,
				"damage", li.Damaged, "kept_as", li.KeptAs)
			return
		}
		logger.Info("database log applied", "log", li.Path, "applied", li.Applied, "torn_last_frame", li.Torn)
	}
	onReopen := func(err error) {
		if err != nil {
			logger.Error("database still failing: deliveries get 451 until it reopens", "db", cfg.Store.Path, "err", err)
			return
		}
		logger.Warn("database reopened from disk after a failed write: accepting deliveries again", "db", cfg.Store.Path)
	}
	db, err := openStoreWith(cfg, storeUse{decide: decider(table, cfg.verpRequired()), onStorm: onStorm, onLog: onLog, onReopen: onReopen})
	if err != nil {
		return err
	}
	defer db.Close()

	pctx, stopPush := context.WithCancel(context.Background())
	defer stopPush()
	pusher, waitPush, err := startPush(pctx, cfg.Push, db, logger)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	var (
		srv       *server.Server
		mailboxes []*mailbox.Reader
	)
	msrc := metrics.Sources{
		Server: func() server.Stats { return srv.Stats() },
		Outbox: db.OutboxStats,
		Storms: storms.Load,
		Push:   pusher.Stats,
		Mailboxes: func() []mailbox.Stats {
			out := make([]mailbox.Stats, len(mailboxes))
			for i, r := range mailboxes {
				out[i] = r.Stats()
			}
			return out
		},
	}
	if bdb, ok := db.(*bolt.DB); ok {
		msrc.StoreFaults = func() metrics.StoreFaults {
			f := bdb.Faults()
			return metrics.StoreFaults{WriteErrors: f.WriteErrors, Reopens: f.Reopens, ReopenErrors: f.ReopenErrors, Failed: f.Failed}
		}
	}
	mets, err := metrics.New(reg, msrc)
	if err != nil {
		return fmt.Errorf("registering metrics: %w", err)
	}
	sopts := serverOptions(cfg, a.stderr)
	stopReload := func() {}
	if cfg.SMTP.TLSCertFile != "" {
		certs, err := newCertReloader(cfg.SMTP.TLSCertFile, cfg.SMTP.TLSKeyFile)
		if err != nil {
			return err
		}
		sopts.TLSConfig = certs.config()
		stopReload = certs.reloadOnHUP(ctx, logger)
	}
	defer stopReload()
	ready := &readiness{dir: filepath.Dir(cfg.Store.Path), minFree: cfg.Store.MinFreeBytes}
	if p, ok := db.(interface{ Ping(context.Context) error }); ok {
		ready.ping = p.Ping // a shared server: ask it, not the local disk
	}
	if bdb, ok := db.(*bolt.DB); ok {
		ready.failed = func() bool { return bdb.Faults().Failed }
	}
	saver := ready.saver(mets.Saver(db))
	srv = server.New(sopts, saver, logger)
	// Mailbox messages take the SMTP path: the same recipient check and
	// decoding (srv.Intake) and the same Saver.
	mailboxes, stopMailboxes, err := startMailboxes(cfg, srv.Intake(), saver, logger)
	if err != nil {
		return err
	}
	defer stopMailboxes()
	sl, err := listenSMTP(ctx, cfg.SMTP.Listen)
	if err != nil {
		return fmt.Errorf("listening for SMTP: %w", err)
	}
	var (
		hl      net.Listener
		httpSrv *http.Server
	)
	if cfg.HTTP.Listen != "" {
		hl, err = net.Listen("tcp", cfg.HTTP.Listen)
		if err != nil {
			sl.Close()
			return fmt.Errorf("listening for HTTP: %w", err)
		}
		apiH := withBackup(api.New(db, cfg.HTTP.Tokens, logger), db).WithMetrics(reg).
			WithHosts(cfg.apiHosts()...).WithReady(ready.check)
		ui, err := web.New(db, web.Options{Tokens: cfg.HTTP.Tokens, HostAllowed: apiH.HostAllowed, Logger: logger})
		if err != nil {
			hl.Close()
			sl.Close()
			return fmt.Errorf("starting the dashboard: %w", err)
		}
		httpSrv = &http.Server{
			Handler:           adminHandler(apiH, ui),
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      5 * time.Minute,
			IdleTimeout:       time.Minute,
			MaxHeaderBytes:    64 << 10,
			ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		}
	}

	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(sl) }()
	attrs := []any{"smtp", sl.Addr().String(), "db", storeName(cfg)}
	var httpAddr net.Addr
	if httpSrv != nil {
		httpAddr = hl.Addr()
		attrs = append(attrs, "http", httpAddr.String())
		go func() {
			if err := httpSrv.Serve(hl); !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	logger.Info("bouncer listening", attrs...)
	if a.onReady != nil {
		a.onReady(sl.Addr(), httpAddr)
	}

	recheckDone := a.startRecheck(ctx, db, cfg, logger)
	pruneDone := startPrune(ctx, db, time.Duration(cfg.Store.PruneInterval), logger)

	var serveErr error
	select {
	case <-ctx.Done():
		logger.Info("shutting down", "grace", time.Duration(cfg.SMTP.ShutdownTimeout).String())
	case serveErr = <-errc:
		logger.Error("listener failed", "err", serveErr)
	}
	sctx, cancel := context.WithTimeout(context.Background(), time.Duration(cfg.SMTP.ShutdownTimeout))
	defer cancel()
	if httpSrv != nil {
		httpSrv.Shutdown(sctx)
	}
	if err := srv.Shutdown(sctx); err != nil {
		logger.Warn("connections closed at the end of the grace period", "err", err)
	}
	stopMailboxes()
	recheckDone()
	pruneDone()
	stopPush()
	waitPush()
	if err := db.Close(); err != nil {
		return fmt.Errorf("closing database: %w", err)
	}
	logger.Info("stopped")
	return serveErr
}

// adminHandler serves the dashboard under /ui/, redirects / there, and
// gives every other path to the admin API.
func adminHandler(apiH, ui http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle(web.Prefix, ui)
	mux.Handle("GET /{$}", http.RedirectHandler(web.Prefix, http.StatusFound))
	mux.Handle("/", apiH)
	return mux
}

// listenSMTP listens for SMTP sessions without TCP keep-alive: Go turns
// it on for every accepted connection, four setsockopt calls each (5 per
// message in strace -c under smtp-source, with TCP_NODELAY), and a
// session's idle and total time are bounded by the server's own
// deadlines, which notice a dead peer long before a keep-alive probe.
func listenSMTP(ctx context.Context, addr string) (net.Listener, error) {
	lc := net.ListenConfig{KeepAliveConfig: net.KeepAliveConfig{Enable: false}, KeepAlive: -1}
	return lc.Listen(ctx, "tcp", addr)
}

// tuneGC makes the collector run less often than Go's default: a
// session allocates about 40 KB per bounce and keeps little, so at
// GOGC=100 collection cost about a tenth of serve's CPU under load
// (smtp-source, 20 sessions: 285-349 µs of CPU per message against
// 253-277 µs at 400, alternating runs). The heap may then grow to five
// times what is live, so a soft memory limit, twice the DATA budget
// (the bodies in flight) plus 16 MiB, makes it collect sooner when
// large messages fill the budget. GOGC and GOMEMLIMIT in the environment
// win.
func tuneGC(maxDataMemory int64) {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(2*maxDataMemory + 16<<20)
	}
}

// startPrune runs db.Prune every interval (never if 0) until ctx ends or
// the returned function is called, which waits for it to stop.
func startPrune(ctx context.Context, db store.Store, interval time.Duration, logger *slog.Logger) func() {
	if interval <= 0 {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			st, err := db.Prune(ctx)
			if err != nil && ctx.Err() == nil {
				logger.Error("pruning the database failed", "err", err)
				continue
			}
			logger.Info("database pruned", "raw", st.Raw, "seen", st.Seen, "soft", st.Soft)
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// decider is the policy table's verdict; with signed return paths
// required (verp.required), a record whose address did not come from a
// valid signed token is only recorded: anybody can send a DSN to a bounce
// domain's postmaster or to a non-VERP local part, naming any recipient.
func decider(table *policy.Table, required bool) func(*store.Record) store.Decision {
	if !required {
		return table.Decide
	}
	return func(r *store.Record) store.Decision {
		if !r.Envelope.Verified {
			return store.Decision{Action: store.ActionRecord, Rule: "unverified address (verp.required)"}
		}
		return table.Decide(r)
	}
}

// serverOptions copies the config into the server's options.
func serverOptions(cfg Config, debug io.Writer) server.Options {
	c := cfg.SMTP
	relays, _ := cfg.trustedRelays() // checked by validate
	opts := server.Options{
		Hostname:        c.Hostname,
		Domains:         c.Domains,
		VERP:            verp.NewDecoder(cfg.verpOptions()),
		MaxMessageBytes: c.MaxMessageBytes,
		MaxDataMemory:   c.MaxDataMemory,
		MaxRecipients:   c.MaxRecipients,
		MaxLineLength:   c.MaxLineLength,
		ReadTimeout:     time.Duration(c.ReadTimeout),
		WriteTimeout:    time.Duration(c.WriteTimeout),
		SessionTimeout:  time.Duration(c.SessionTimeout),
		MinDataRate:     c.MinDataRate,
		DataRateGrace:   time.Duration(c.DataRateGrace),
		SaveTimeout:     time.Duration(c.SaveTimeout),
		MaxConns:        c.MaxConns,
		MaxConnsPerIP:   c.MaxConnsPerIP,
		ConnectRate:     c.ConnectRate,
		ConnectBurst:    c.ConnectBurst,
		MaxBadCommands:  c.MaxBadCommands,
		MaxConnsPerNet:  c.MaxConnsPerNet,

		StressIdleTimeout: time.Duration(c.StressIdleTimeout),
		MessageRate:       c.MessageRate,
		MessageBurst:      c.MessageBurst,
		ByteRate:          c.ByteRate,
		PushRate:          c.PushRate,
		TrustedRelays:     relays,
		Guard: verp.NewGuard(verp.GuardOptions{
			MaxBad: cfg.VERP.Guard.MaxBad,
			Window: time.Duration(cfg.VERP.Guard.Window),
			Ban:    time.Duration(cfg.VERP.Guard.Ban),
		}),
	}
	if cfg.Log.SMTPDebug {
		opts.Debug = debug
	}
	if cfg.Store.MinFreeBytes > 0 && cfg.Store.Driver == "bbolt" {
		dir := filepath.Dir(cfg.Store.Path)
		opts.FreeSpace = func() (int64, error) { return freeSpace(dir) }
		opts.MinFreeBytes = cfg.Store.MinFreeBytes
	}
	return opts
}

// withBackup serves GET /v1/backup when the store can copy itself.
func withBackup(h *api.Handler, db store.Store) *api.Handler {
	if b, ok := db.(api.Backuper); ok {
		return h.WithBackup(b)
	}
	return h
}

// openStore opens the database for serve (read-write) or for a query
// command (read-only, with a short lock timeout so it never hangs).
// decide is the policy, for a read-write open.
// onLog is told what Open did with the write-ahead log (nil: a line on
// standard error, so that it is never silent).
func openStore(cfg Config, readOnly bool, decide func(*store.Record) store.Decision, onLog func(bolt.LogInfo)) (store.Store, error) {
	return openStoreWith(cfg, storeUse{readOnly: readOnly, decide: decide, onLog: onLog})
}

// storeUse is what a command asks of the store beyond the config.
type storeUse struct {
	readOnly bool
	decide   func(*store.Record) store.Decision // the policy, for a read-write open
	onStorm  func(store.Storm)                  // told of each storm started (serve)
	onLog    func(bolt.LogInfo)                 // told what Open did with bbolt's log
	onReopen func(error)                        // told of each reopen after a failed write (serve)
	busyHint string                             // added to the error for a file another process holds
}

// rules are the store's rules from cfg and the policy.
func (cfg Config) rules(decide func(*store.Record) store.Decision) store.Rules {
	return store.Rules{Decide: decide, DedupeWindow: time.Duration(cfg.Store.DedupeWindow),
		Storm: store.StormOptions{Threshold: cfg.Storm.Threshold, Window: time.Duration(cfg.Storm.Window),
			HoldFor: time.Duration(cfg.Storm.HoldFor)}}
}

// openStoreWith opens the configured engine.
func openStoreWith(cfg Config, use storeUse) (store.Store, error) {
	readOnly, onLog := use.readOnly, use.onLog
	if cfg.Store.Driver == "postgres" {
		return openPostgres(cfg, use)
	}
	rules := cfg.rules(use.decide)
	opts := bolt.Options{LockTimeout: time.Duration(cfg.Store.LockTimeout), ReadOnly: readOnly, Decide: rules.Decide,
		Storm: rules.Storm, OnStorm: use.onStorm, OnLog: onLog, OnReopen: use.onReopen,
		RawRetention: time.Duration(cfg.Store.RawRetention), DedupeWindow: rules.DedupeWindow}
	if onLog == nil {
		opts.OnLog = func(li bolt.LogInfo) { fmt.Fprintf(os.Stderr, "bouncer: database %s\n", li) }
	}
	if readOnly && opts.LockTimeout > time.Second {
		opts.LockTimeout = time.Second
	}
	db, err := bolt.Open(cfg.Store.Path, opts)
	switch {
	case err == nil:
		return db, nil
	case errors.Is(err, bolt.ErrLocked):
		return nil, fmt.Errorf("database %s is busy: another bouncer process holds it%s", cfg.Store.Path, use.busyHint)
	case errors.Is(err, bolt.ErrDamaged):
		return nil, damagedError(cfg, err)
	default:
		return nil, fmt.Errorf("opening database %s: %w", cfg.Store.Path, err)
	}
}

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		return nil, fmt.Errorf("config: log.level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// openPostgres connects to the PostgreSQL store (read-only commands use
// it as serve does: the server is shared anyway).
func openPostgres(cfg Config, use storeUse) (store.Store, error) {
	opts := postgres.Options{URL: cfg.Store.URL, Schema: cfg.Store.Schema, Rules: cfg.rules(use.decide),
		OnStorm: use.onStorm, RawRetention: time.Duration(cfg.Store.RawRetention)}
	if cfg.Store.PasswordFile != "" {
		b, err := os.ReadFile(cfg.Store.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("reading store.password_file: %w", err)
		}
		line, _, _ := strings.Cut(string(b), "\n")
		if opts.Password = strings.TrimRight(line, "\r"); opts.Password == "" {
			return nil, fmt.Errorf("store.password_file %s: the first line is empty", cfg.Store.PasswordFile)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := postgres.Open(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("opening the PostgreSQL store (schema %s): %w", cfg.Store.Schema, err)
	}
	return db, nil
}

// storeName says which database serve uses, for its start-up line: the
// bbolt file's absolute path, or the PostgreSQL schema.
func storeName(cfg Config) string {
	if cfg.Store.Driver == "postgres" {
		return "postgres schema " + cfg.Store.Schema
	}
	if p, err := filepath.Abs(cfg.Store.Path); err == nil {
		return p
	}
	return cfg.Store.Path
}
