package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/bouncer/bouncer/api"
	"github.com/bouncer/bouncer/store"
)

// admin changes the suppression list, the storm holds and the MX health,
// through a running server's admin API or in the database file.
type admin interface {
	AddSuppression(ctx context.Context, s store.Suppression) error
	RemoveSuppression(ctx context.Context, addr string) error
	Suppressions(ctx context.Context, domain string, fn func(store.Suppression) error) error
	Storms(ctx context.Context) ([]store.Storm, error)
	Holds(ctx context.Context, domain string) ([]store.Hold, error)
	ReleaseHolds(ctx context.Context, domain string) (int, error)
	DropHolds(ctx context.Context, domain string) (int, error)
	routeStore
	Close() error
}

// routeStore is what the MX checks read and write.
type routeStore interface {
	Domains(ctx context.Context, status string) ([]store.DomainStat, error)
	SetMXCheck(ctx context.Context, domain string, c store.MXCheck, lift bool) (bool, int, error)
}

// dbAdmin is admin on an open database.
type dbAdmin struct{ db store.Store }

func (d dbAdmin) AddSuppression(_ context.Context, s store.Suppression) error {
	return d.db.AddSuppression(s)
}
func (d dbAdmin) RemoveSuppression(_ context.Context, addr string) error {
	return d.db.RemoveSuppression(addr)
}
func (d dbAdmin) Suppressions(_ context.Context, domain string, fn func(store.Suppression) error) error {
	return d.db.Suppressions(domain, fn)
}
func (d dbAdmin) Storms(context.Context) ([]store.Storm, error) { return d.db.Storms() }
func (d dbAdmin) Holds(_ context.Context, domain string) ([]store.Hold, error) {
	return d.db.Holds(domain)
}
func (d dbAdmin) ReleaseHolds(_ context.Context, domain string) (int, error) {
	return d.db.ReleaseHolds(domain)
}
func (d dbAdmin) DropHolds(_ context.Context, domain string) (int, error) {
	return d.db.DropHolds(domain)
}
func (d dbAdmin) Domains(_ context.Context, status string) ([]store.DomainStat, error) {
	return d.db.Domains(status)
}
func (d dbAdmin) SetMXCheck(_ context.Context, domain string, c store.MXCheck, lift bool) (bool, int, error) {
	return d.db.SetMXCheck(domain, c, lift)
}
func (d dbAdmin) Close() error { return d.db.Close() }

type apiAdmin struct{ *api.Client }

func (apiAdmin) Close() error { return nil }

// connectAdmin finds the data like connect: the running server's admin
// API when it answers, else the database file, opened read-write when the
// command writes (a missing file is then created).
func connectAdmin(ctx context.Context, cfg Config, write bool) (admin, error) {
	q, err := connect(ctx, cfg)
	if err != nil {
		var se *api.StatusError
		if !write || errors.As(err, &se) {
			return nil, err
		}
		db, werr := openStore(cfg, false, nil, nil)
		if werr != nil {
			return nil, err
		}
		return dbAdmin{db}, nil
	}
	switch q := q.(type) {
	case apiQuerier:
		return apiAdmin(q), nil
	case dbQuerier:
		if !write {
			return dbAdmin(q), nil
		}
		q.Close()
		db, err := openStore(cfg, false, nil, nil)
		if err != nil {
			return nil, err
		}
		return dbAdmin{db}, nil
	}
	q.Close()
	return nil, fmt.Errorf("connecting: unexpected querier %T", q)
}

const suppressUsage = `suppress add ADDR [--reason TEXT] | suppress remove ADDR | suppress list [--domain D] [--json]

Changes or lists the suppression list. Through the admin API when a server
runs, else in the database file.`

func (a *app) suppressCmd(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "-help" {
		fmt.Fprintf(a.stderr, "Usage: bouncer %s\n", suppressUsage)
		if len(args) == 0 {
			return &exitError{code: 2}
		}
		return errHelp
	}
	sub, args := args[0], args[1:]
	fs := newFlags("suppress "+sub, suppressUsage, a.stderr)
	cfgPath := commonFlags(fs)
	var reason, domain *string
	var asJSON *bool
	switch sub {
	case "add":
		reason = fs.String("reason", "added by hand", "why the address is suppressed")
	case "remove":
	case "list":
		domain = fs.String("domain", "", "only addresses at this `domain`")
		asJSON = fs.Bool("json", false, "print one JSON object per line")
	default:
		return usageError("suppress: unknown subcommand %q (add, remove, list)", sub)
	}
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	want := 1
	if sub == "list" {
		want = 0
	}
	if len(pos) != want {
		return usageError("suppress %s: want %d address argument(s), got %d", sub, want, len(pos))
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	adm, err := connectAdmin(ctx, cfg, sub != "list")
	if err != nil {
		return err
	}
	defer adm.Close()
	switch sub {
	case "add":
		err := adm.AddSuppression(ctx, store.Suppression{Address: pos[0], Reason: *reason})
		if errors.Is(err, store.ErrExists) {
			return fmt.Errorf("%s is already suppressed (see: bouncer suppressed %s)", pos[0], pos[0])
		}
		if err != nil {
			return fmt.Errorf("suppressing %s: %w", pos[0], err)
		}
		fmt.Fprintf(a.stdout, "%s suppressed\n", store.NormalizeAddr(pos[0]))
	case "remove":
		err := adm.RemoveSuppression(ctx, pos[0])
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("%s is not suppressed", pos[0])
		}
		if err != nil {
			return fmt.Errorf("removing %s: %w", pos[0], err)
		}
		fmt.Fprintf(a.stdout, "%s removed from the suppression list\n", store.NormalizeAddr(pos[0]))
	case "list":
		return writeSuppressions(ctx, a.stdout, adm, *domain, *asJSON)
	}
	return nil
}

// writeSuppressions prints the list: JSON lines, or a table with the
// reason and the record that caused each entry.
func writeSuppressions(ctx context.Context, w io.Writer, adm admin, domain string, asJSON bool) error {
	out := bufio.NewWriter(w)
	defer out.Flush()
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false)
	empty := "the suppression list is empty"
	if domain != "" {
		empty = "no address at " + domain + " is suppressed"
	}
	tb := newTable(out, "ADDRESS\tCREATED\tSOURCE\tRECORD\tREASON", empty)
	err := adm.Suppressions(ctx, domain, func(s store.Suppression) error {
		if asJSON {
			return enc.Encode(s)
		}
		return tb.row(fmt.Sprintf("%s\t%s\t%s\t%s\t%s", s.Address, showTime(s.Created),
			s.Source, dash(s.RecordID), suppressionReason(&s)))
	})
	if err != nil {
		return fmt.Errorf("listing suppressions: %w", err)
	}
	if !asJSON {
		return tb.close()
	}
	return nil
}
