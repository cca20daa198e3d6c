package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/bouncer/bouncer/api"
	"github.com/bouncer/bouncer/push"
	"github.com/bouncer/bouncer/store"
)

// PushConfig configures the push worker and its targets ([push] and
// [[push.targets]]).
type PushConfig struct {
	Concurrency int          `toml:"concurrency"`
	Timeout     Duration     `toml:"timeout"`
	MinBackoff  Duration     `toml:"min_backoff"`
	MaxBackoff  Duration     `toml:"max_backoff"`
	MaxAttempts int          `toml:"max_attempts"`
	Targets     []PushTarget `toml:"targets"`
}

// PushTarget is one listmonk instance or generic webhook.
type PushTarget struct {
	Name     string   `toml:"name"`
	Type     string   `toml:"type"` // "listmonk" or "webhook"
	URL      string   `toml:"url"`
	User     string   `toml:"user"`     // listmonk API user
	Password string   `toml:"password"` // listmonk API token
	Source   string   `toml:"source"`   // listmonk "source" field
	Secret   string   `toml:"secret"`   // webhook HMAC key
	Events   []string `toml:"events"`   // hard, soft, complaint, suppressed
}

func defaultPush() PushConfig {
	return PushConfig{
		Concurrency: 4, Timeout: Duration(10 * time.Second),
		MinBackoff: Duration(5 * time.Second), MaxBackoff: Duration(time.Hour), MaxAttempts: 20,
		Targets: []PushTarget{},
	}
}

// validate checks the push section.
func (p *PushConfig) validate() error {
	if p.Concurrency <= 0 || p.Timeout <= 0 || p.MinBackoff <= 0 || p.MaxBackoff < p.MinBackoff || p.MaxAttempts <= 0 {
		return errors.New("config: push.concurrency, timeout, min_backoff and max_attempts must be positive, max_backoff at least min_backoff")
	}
	seen := map[string]bool{}
	for _, t := range p.Targets {
		if t.Name == "" || seen[t.Name] {
			return fmt.Errorf("config: push.targets: empty or repeated name %q", t.Name)
		}
		seen[t.Name] = true
		u, err := url.Parse(t.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("config: push target %s: url %q: want an http or https URL", t.Name, t.URL)
		}
		switch t.Type {
		case "listmonk":
			if t.User == "" || t.Password == "" {
				return fmt.Errorf("config: push target %s: listmonk needs user and password (an API user's token)", t.Name)
			}
		case "webhook":
			if t.Secret == "" {
				return fmt.Errorf("config: push target %s: a webhook needs a secret to sign with", t.Name)
			}
		default:
			return fmt.Errorf("config: push target %s: type %q: want listmonk or webhook", t.Name, t.Type)
		}
		if len(t.Events) == 0 {
			return fmt.Errorf("config: push target %s: events is empty", t.Name)
		}
		for _, e := range t.Events {
			if !slices.Contains(store.EventTypes, e) {
				return fmt.Errorf("config: push target %s: event %q: want one of %s", t.Name, e, strings.Join(store.EventTypes, ", "))
			}
		}
	}
	return nil
}

// startPush sets the store's outbox routing from the config and starts
// the worker. wait blocks until the worker stopped after ctx ended.
func startPush(ctx context.Context, cfg PushConfig, db store.Store, logger *slog.Logger) (w *push.Worker, wait func(), err error) {
	var routes []store.OutboxTarget
	targets := map[string]push.Target{}
	hc := &http.Client{Timeout: time.Duration(cfg.Timeout)}
	for _, t := range cfg.Targets {
		routes = append(routes, store.OutboxTarget{Name: t.Name, Events: t.Events})
		if t.Type == "listmonk" {
			targets[t.Name] = &push.Listmonk{URL: t.URL, User: t.User, Password: t.Password, Source: t.Source, HTTP: hc}
		} else {
			targets[t.Name] = &push.Webhook{URL: t.URL, Secret: t.Secret, HTTP: hc}
		}
	}
	if err := db.SetOutboxTargets(routes); err != nil {
		return nil, nil, err
	}
	opts := push.Options{
		Concurrency: cfg.Concurrency, Timeout: time.Duration(cfg.Timeout),
		MinBackoff: time.Duration(cfg.MinBackoff), MaxBackoff: time.Duration(cfg.MaxBackoff),
		MaxAttempts: cfg.MaxAttempts,
	}
	w = push.NewWorker(db, targets, opts, logger.With("part", "push"))
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(ctx)
	}()
	return w, func() { <-done }, nil
}

const outboxUsage = `outbox [list [--dead] [--json]] | retry [--all | SEQ...] | drop [--all | SEQ...]

Lists push events waiting for delivery (--dead: the dead-letter list), puts
dead letters back in the queue (retry) or deletes them (drop). Through the
admin API when a server runs, else in the database file.`

// outboxSource is where the outbox commands work: the running server's
// admin API or the database file.
type outboxSource interface {
	OutboxEvents(ctx context.Context, dead bool, fn func(store.OutboxEvent) error) error
	OutboxRetry(ctx context.Context, seqs ...uint64) (int, error)
	OutboxDrop(ctx context.Context, seqs ...uint64) (int, error)
	Close() error
}

type dbOutbox struct{ db store.Store }

func (d dbOutbox) OutboxEvents(_ context.Context, dead bool, fn func(store.OutboxEvent) error) error {
	return d.db.OutboxEvents(dead, fn)
}
func (d dbOutbox) OutboxRetry(_ context.Context, seqs ...uint64) (int, error) {
	return d.db.OutboxRetry(seqs...)
}
func (d dbOutbox) OutboxDrop(_ context.Context, seqs ...uint64) (int, error) {
	return d.db.OutboxDrop(seqs...)
}
func (d dbOutbox) Close() error { return d.db.Close() }

type apiOutbox struct{ *api.Client }

func (apiOutbox) Close() error { return nil }

// connectOutbox finds the outbox like connect: the running server's admin
// API when it answers, else the database file, opened read-write when the
// command writes. A file held by a server whose API does not answer gives
// the "database is busy" error of openStore within the lock timeout.
func connectOutbox(ctx context.Context, cfg Config, write bool) (outboxSource, error) {
	q, err := connect(ctx, cfg)
	if err != nil {
		return nil, err
	}
	switch q := q.(type) {
	case apiQuerier:
		return apiOutbox(q), nil
	case dbQuerier:
		if !write {
			return dbOutbox(q), nil
		}
		q.Close()
		db, err := openStore(cfg, false, nil, nil)
		if err != nil {
			return nil, err
		}
		return dbOutbox{db}, nil
	}
	q.Close()
	return nil, fmt.Errorf("connecting: unexpected querier %T", q)
}

// outboxCmd shows and manages the push outbox.
func (a *app) outboxCmd(ctx context.Context, args []string) error {
	sub := "list"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		sub, args = args[0], args[1:]
	}
	if sub != "list" && sub != "retry" && sub != "drop" {
		return usageError("usage: bouncer %s", outboxUsage)
	}
	fs := newFlags("outbox", outboxUsage, a.stderr)
	cfgPath := commonFlags(fs)
	dead := fs.Bool("dead", false, "list: the dead-letter list instead of the queue")
	all := fs.Bool("all", false, "retry/drop: every dead letter")
	asJSON := fs.Bool("json", false, "list: one JSON object per line")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	var seqs []uint64
	for _, p := range pos {
		n, err := store.ParseSeq(p)
		if err != nil {
			return usageError("outbox: %v", err)
		}
		seqs = append(seqs, n)
	}
	switch {
	case sub == "list" && len(seqs) > 0:
		return usageError("outbox list: unexpected arguments %q", pos)
	case sub != "list" && len(seqs) == 0 && !*all:
		return usageError("outbox %s: name events (SEQ from outbox list --dead) or --all", sub)
	case sub != "list" && len(seqs) > 0 && *all:
		return usageError("outbox %s: name events or --all, not both", sub)
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	src, err := connectOutbox(ctx, cfg, sub != "list")
	if err != nil {
		return err
	}
	defer src.Close()
	if sub == "list" {
		return a.listOutbox(ctx, src, *dead, *asJSON)
	}
	var n int
	if sub == "retry" {
		n, err = src.OutboxRetry(ctx, seqs...)
	} else {
		n, err = src.OutboxDrop(ctx, seqs...)
	}
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("outbox %s: not every event named is a dead letter (see outbox list --dead); nothing changed", sub)
	}
	if err != nil {
		return fmt.Errorf("outbox %s: %w", sub, err)
	}
	fmt.Fprintf(a.stdout, "%s: %d events\n", sub, n)
	return src.Close()
}

func (a *app) listOutbox(ctx context.Context, src outboxSource, dead, asJSON bool) error {
	out := bufio.NewWriter(a.stdout)
	defer out.Flush()
	if asJSON {
		enc := json.NewEncoder(out)
		enc.SetEscapeHTML(false)
		return src.OutboxEvents(ctx, dead, func(ev store.OutboxEvent) error { return enc.Encode(ev) })
	}
	empty := "no push event is waiting"
	if dead {
		empty = "no dead letters"
	}
	tb := newTable(out, "SEQ\tTARGET\tTYPE\tRECIPIENT\tSTATUS\tATTEMPTS\tNEXT\tLAST ERROR", empty)
	err := src.OutboxEvents(ctx, dead, func(ev store.OutboxEvent) error {
		return tb.row(fmt.Sprintf("%d\t%s\t%s\t%s\t%s\t%d\t%s\t%s", ev.Seq, ev.Target, ev.Type, ev.Addr,
			ev.Status, ev.Attempts, showTime(ev.NextTry), dash(truncateText(ev.LastError, 80))))
	})
	if err != nil {
		return err
	}
	return tb.close()
}

func truncateText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
