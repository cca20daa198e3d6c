package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

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
func startPush(ctx context.Context, cfg PushConfig, db *store.DB, logger *slog.Logger) (w *push.Worker, wait func(), err error) {
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

const outboxUsage = "outbox [list [--dead]] | retry [--all | SEQ...] | drop [--all | SEQ...]"

// outboxCmd shows and manages the push outbox in the database file
// (retry and drop need serve stopped: they write).
func (a *app) outboxCmd(_ context.Context, args []string) error {
	sub := "list"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		sub, args = args[0], args[1:]
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
	cfg, err := loadConfig(*cfgPath)
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
	switch sub {
	case "list":
		db, err := openStore(cfg, true, nil)
		if err != nil {
			return err
		}
		defer db.Close()
		return a.listOutbox(db, *dead, *asJSON)
	case "retry", "drop":
		if len(seqs) == 0 && !*all {
			return usageError("outbox %s: name events (SEQ from outbox list --dead) or --all", sub)
		}
		db, err := openStore(cfg, false, nil)
		if err != nil {
			return err
		}
		defer db.Close()
		var n int
		if sub == "retry" {
			n, err = db.OutboxRetry(seqs...)
		} else {
			n, err = db.OutboxDrop(seqs...)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "%s: %d events\n", sub, n)
		return db.Close()
	}
	return usageError("usage: bouncer %s", outboxUsage)
}

func (a *app) listOutbox(db *store.DB, dead, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(a.stdout)
		return db.OutboxEvents(dead, func(ev store.OutboxEvent) error { return enc.Encode(ev) })
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tTARGET\tTYPE\tRECIPIENT\tSTATUS\tATTEMPTS\tNEXT\tLAST ERROR")
	err := db.OutboxEvents(dead, func(ev store.OutboxEvent) error {
		_, err := fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", ev.Seq, ev.Target, ev.Type, ev.Addr,
			ev.Status, ev.Attempts, ev.NextTry.Format(time.RFC3339), truncateText(ev.LastError, 80))
		return err
	})
	if err != nil {
		return err
	}
	return tw.Flush()
}

func truncateText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
