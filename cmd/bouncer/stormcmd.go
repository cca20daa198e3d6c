package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/bouncer/bouncer/store"
)

const stormUsage = `storm list [--json] | storm holds [DOMAIN] [--json] | storm release DOMAIN | storm drop DOMAIN

The storm guard holds new suppressions of a domain when more than
storm.threshold distinct addresses of it (or behind one MTA) would be
suppressed with the same status within storm.window. "list" shows the
flagged domains, "holds" the held addresses, "release" suppresses them and
clears the flag, "drop" forgets them and clears the flag.`

func (a *app) stormCmd(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "-help" {
		fmt.Fprintf(a.stderr, "Usage: bouncer %s\n", stormUsage)
		if len(args) == 0 {
			return &exitError{code: 2}
		}
		return errHelp
	}
	sub, args := args[0], args[1:]
	fs := newFlags("storm "+sub, stormUsage, a.stderr)
	cfgPath := commonFlags(fs)
	asJSON := fs.Bool("json", false, "print one JSON object per line")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	switch {
	case sub == "list" && len(pos) == 0, sub == "holds" && len(pos) <= 1,
		(sub == "release" || sub == "drop") && len(pos) == 1:
	case sub == "list" || sub == "holds" || sub == "release" || sub == "drop":
		return usageError("storm %s: wrong number of arguments", sub)
	default:
		return usageError("storm: unknown subcommand %q (list, holds, release, drop)", sub)
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	adm, err := connectAdmin(ctx, cfg, sub == "release" || sub == "drop")
	if err != nil {
		return err
	}
	defer adm.Close()
	switch sub {
	case "list":
		storms, err := adm.Storms(ctx)
		if err != nil {
			return fmt.Errorf("listing storms: %w", err)
		}
		return writeStorms(a.stdout, storms, *asJSON)
	case "holds":
		domain := ""
		if len(pos) == 1 {
			domain = pos[0]
		}
		holds, err := adm.Holds(ctx, domain)
		if err != nil {
			return fmt.Errorf("listing holds: %w", err)
		}
		return writeHolds(a.stdout, holds, *asJSON)
	}
	end, verb := adm.ReleaseHolds, "released (suppressed)"
	if sub == "drop" {
		end, verb = adm.DropHolds, "dropped"
	}
	n, err := end(ctx, pos[0])
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%s has no storm flag and no held suppressions", pos[0])
	}
	if err != nil {
		return fmt.Errorf("storm %s %s: %w", sub, pos[0], err)
	}
	if *asJSON {
		return json.NewEncoder(a.stdout).Encode(map[string]int{"count": n})
	}
	fmt.Fprintf(a.stdout, "%s: %d held addresses %s, storm flag cleared\n", pos[0], n, verb)
	return nil
}

func writeStorms(w io.Writer, storms []store.Storm, asJSON bool) error {
	return writeList(w, storms, asJSON, "DOMAIN\tSTATUS\tSINCE\tCOUNT\tHELD\tKEY", "no domain is held by the storm guard", func(s store.Storm) string {
		return fmt.Sprintf("%s\t%s\t%s\t%d\t%d\t%s", s.Domain, s.Status, showTime(s.Since), s.Count, s.Held, s.Key)
	})
}

func writeHolds(w io.Writer, holds []store.Hold, asJSON bool) error {
	return writeList(w, holds, asJSON, "ADDRESS\tSTATUS\tCREATED\tRECORD\tREASON", "no suppression is held", func(h store.Hold) string {
		return fmt.Sprintf("%s\t%s\t%s\t%s\t%s", h.Address, h.Status, showTime(h.Created), h.RecordID, dash(reasonText(h.Reason)))
	})
}
