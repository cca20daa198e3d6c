package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/bouncer/bouncer/parse"
	"github.com/bouncer/bouncer/policy"
	"github.com/bouncer/bouncer/store"
)

const reclassifyUsage = `reclassify [--dry-run | --apply [--lift]] [--status CODE] [--domain D] [--recipient ADDR] [--kind KIND] [--since DURATION|TIME] [--limit N]

Decodes the stored raw messages again with this binary's decoder and judges
their records again with the configured policy. A dry run (the default)
prints what would change; --apply changes it. Exits 0 when done, 1 on an
error, 2 for a wrong command line.`

// reclassTally sums up a run.
type reclassTally struct {
	messages, changed, unchanged, pruned, missing         int
	suppressed, counted, uncounted, stale, lifted, events int
	gone, extra                                           int
}

func (a *app) reclassifyCmd(ctx context.Context, args []string) error {
	fs := newFlags("reclassify", reclassifyUsage, a.stderr)
	cfgPath := commonFlags(fs)
	var f store.Filter
	finishFilter := recordFilterFlags(fs, &f, "reclassify")
	fs.IntVar(&f.Limit, "limit", 0, "look at the messages of the newest `N` matching records at most (0: all)")
	dry := fs.Bool("dry-run", false, "print what would change and change nothing (the default)")
	apply := fs.Bool("apply", false, "change the records, add suppressions and soft events, queue push events")
	lift := fs.Bool("lift", false, "with --apply: lift the suppressions a record made that its new verdict would not make")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(pos) > 0:
		return usageError("reclassify: unexpected argument %q", pos[0])
	case *dry && *apply:
		return usageError("reclassify: --dry-run and --apply exclude each other")
	case *lift && !*apply:
		return usageError("reclassify: --lift needs --apply")
	case f.Limit < 0:
		return usageError("reclassify: --limit must not be negative")
	}
	if err := finishFilter(); err != nil {
		return err
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	table, err := policy.Compile(cfg.Policy.Rules)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	db, err := openStoreWith(cfg, storeUse{readOnly: !*apply, decide: decider(table, cfg.verpRequired()),
		busyHint: "; stop bouncer serve before reclassify"})
	if err != nil {
		return err
	}
	defer db.Close()
	rc, ok := db.(store.Reclassifier)
	if !ok {
		return fmt.Errorf("reclassify: the %s store cannot reclassify", cfg.Store.Driver)
	}
	out := bufio.NewWriter(a.stdout)
	opts := store.ReclassOptions{DryRun: !*apply, Lift: *lift}
	t, err := reclassify(ctx, db, rc, f, opts, out)
	if ferr := out.Flush(); err == nil {
		err = ferr
	}
	fmt.Fprintln(a.stdout, t.summary(opts.DryRun))
	if err != nil {
		return fmt.Errorf("reclassifying: %w", err)
	}
	if opts.DryRun && t.changed+t.stale > 0 && !*dry {
		fmt.Fprintf(a.stdout, "nothing was changed; to apply: %s\n", commandLine("reclassify", fs, "", "--apply"))
	}
	return nil
}

// maxDone bounds the message IDs remembered to judge each message once.
// The records of a message are numbered together, so they come one after
// the other: forgetting older IDs costs at most a message judged again,
// which changes nothing the second time.
const maxDone = 1 << 16

// reclassify runs rc on the message of each record matching f, each
// message once, store.MaxReclassBatch messages a transaction, and writes
// a line for each record it changes.
func reclassify(ctx context.Context, db store.Store, rc store.Reclassifier, f store.Filter, opts store.ReclassOptions, w io.Writer) (*reclassTally, error) {
	t := &reclassTally{}
	done := map[string]bool{}
	var batch []string
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		res, err := rc.Reclassify(ctx, batch, decodeStored, opts)
		batch = batch[:0]
		if err != nil {
			return err
		}
		for _, r := range res {
			t.messages++
			switch {
			case errors.Is(r.Err, store.ErrRawPruned):
				t.pruned++
			case r.Err != nil:
				t.missing++
				fmt.Fprintf(w, "%s: raw message or records missing, skipped (bouncer check says more): %v\n", r.MsgID, r.Err)
			default:
				t.add(r.Reclass, w)
			}
		}
		return nil
	}
	err := db.ForEach(f, func(r store.Record) error {
		if done[r.MsgID] {
			return nil
		}
		if len(done) >= maxDone {
			clear(done)
		}
		done[r.MsgID] = true
		if batch = append(batch, r.MsgID); len(batch) < store.MaxReclassBatch {
			return nil
		}
		return flush()
	})
	if err == nil {
		err = flush()
	}
	return t, err
}

// decodeStored is the decoder serve runs, with a panic turned into a
// decoding error as serve does.
func decodeStored(raw []byte) (rep *parse.Report, err error) {
	defer func() {
		if p := recover(); p != nil {
			rep, err = nil, fmt.Errorf("decoder panic: %v", p)
		}
	}()
	return parse.Message(bytes.NewReader(raw), parse.Limits{})
}

// add counts res and writes its lines.
func (t *reclassTally) add(res *store.Reclass, w io.Writer) {
	t.unchanged += res.Unchanged
	for _, c := range res.Changed {
		if c.Rewrites() {
			t.changed++
		} else {
			t.unchanged++
		}
		t.suppressed += b2i(c.Suppressed)
		t.counted += b2i(c.Counted)
		t.uncounted += b2i(c.Uncounted)
		t.stale += b2i(c.Stale && !c.Lifted)
		t.lifted += b2i(c.Lifted)
		t.events += c.Events
		fmt.Fprintln(w, changeLine(&c))
	}
	for _, r := range res.Gone {
		t.gone++
		fmt.Fprintf(w, "%s  %s: no longer decoded from its message, kept as it is\n", r.ID, printable(dash(r.Addr)))
	}
	for _, r := range res.Extra {
		t.extra++
		fmt.Fprintf(w, "%s  %s: new recipient of this message (%s), not stored\n", res.MsgID, printable(dash(r.Addr)), verdictText(&r))
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// verdictText is what a record is and its verdict: "bounce hard 5.4.3
// suppress".
func verdictText(r *store.Record) string {
	return printable(strings.Join([]string{string(r.Kind), string(r.Class), dash(r.Status), dash(r.Verdict)}, " "))
}

// printable shows the control characters of s, which a bounce's sender
// chose, as "?", so that a line cannot move the terminal's cursor or
// pass for another.
func printable(s string) string { return cut(s, len(s)+1) }

// changeLine is one record's change: "ID  RECIPIENT: OLD → NEW; notes".
func changeLine(c *store.RecordChange) string {
	rcpt := printable(dash(c.Old.Addr))
	if c.New.Addr != c.Old.Addr {
		rcpt += " → " + printable(dash(c.New.Addr))
	}
	line := fmt.Sprintf("%s  %s: %s", c.Old.ID, rcpt, verdictText(&c.Old))
	if old, nw := verdictText(&c.Old), verdictText(&c.New); old != nw {
		line += " → " + nw
	} else if c.Rewrites() {
		line += " (other decoded fields change)"
	}
	var notes []string
	if c.Suppressed {
		notes = append(notes, "suppressed")
	}
	if c.Counted {
		notes = append(notes, "soft event counted")
	}
	if c.Uncounted {
		notes = append(notes, "soft event taken back")
	}
	if c.Events > 0 {
		notes = append(notes, plural(c.Events, "push event"))
	}
	if c.New.Verdict == store.ActionHeld {
		notes = append(notes, "still held: bouncer storm release or drop decides it")
	}
	switch {
	case c.Lifted:
		notes = append(notes, "its suppression of "+printable(c.Old.Addr)+" lifted")
	case c.Stale:
		notes = append(notes, "its suppression of "+printable(c.Old.Addr)+" no longer follows: kept (--apply --lift lifts it)")
	}
	if len(notes) > 0 {
		line += "; " + strings.Join(notes, ", ")
	}
	return line
}

// summary is the last line of a run: "dry run: 4 messages, 3 records
// would change, ..." or "applied: 4 messages, 3 records changed, ...".
func (t *reclassTally) summary(dry bool) string {
	head, did := "applied", func(past string) string { return past }
	if dry {
		head = "dry run"
		did = func(past string) string {
			if past == "changed" {
				return "would change"
			}
			return "would be " + past
		}
	}
	s := fmt.Sprintf("%s: %s, %s %s, %d unchanged; %s %s, %s %s, %d taken back, %s %s",
		head, plural(t.messages, "message"), plural(t.changed, "record"), did("changed"), t.unchanged,
		plural(t.suppressed, "suppression"), did("added"), plural(t.counted, "soft event"), did("counted"),
		t.uncounted, plural(t.events, "push event"), did("queued"))
	if t.stale > 0 {
		s += fmt.Sprintf("; %s stale, kept (--apply --lift lifts them)", plural(t.stale, "suppression"))
	}
	if t.lifted > 0 {
		s += fmt.Sprintf("; %s %s", plural(t.lifted, "suppression"), did("lifted"))
	}
	if t.gone+t.extra > 0 {
		s += fmt.Sprintf("; %s no longer decoded (kept), %s (not stored)", plural(t.gone, "record"), plural(t.extra, "new recipient"))
	}
	if t.pruned+t.missing > 0 {
		s += fmt.Sprintf("; %s skipped: raw deleted by the retention (%d) or missing (%d)", plural(t.pruned+t.missing, "message"), t.pruned, t.missing)
	}
	return s
}

// plural is "1 message", "2 messages".
func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
