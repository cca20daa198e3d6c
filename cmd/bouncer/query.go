package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/bouncer/bouncer/api"
	"github.com/bouncer/bouncer/parse"
	"github.com/bouncer/bouncer/store"
)

// querier answers the query commands, from a running server's admin API or
// from the database file opened read-only.
type querier interface {
	Query(ctx context.Context, f store.Filter) ([]store.Record, error)
	Page(ctx context.Context, f store.Filter, before string) ([]store.Record, string, error)
	Suppressed(ctx context.Context, addr string) (*store.Suppression, error)
	Domains(ctx context.Context, status string) ([]store.DomainStat, error)
	RecentDomains(ctx context.Context, f store.DomainFilter) ([]store.DomainStat, error)
	Close() error
}

type dbQuerier struct{ db store.Store }

func (q dbQuerier) Query(_ context.Context, f store.Filter) ([]store.Record, error) {
	return q.db.Query(f)
}
func (q dbQuerier) Page(_ context.Context, f store.Filter, before string) ([]store.Record, string, error) {
	return q.db.Page(f, before)
}
func (q dbQuerier) Suppressed(_ context.Context, addr string) (*store.Suppression, error) {
	return q.db.Suppressed(addr)
}
func (q dbQuerier) Domains(_ context.Context, status string) ([]store.DomainStat, error) {
	return q.db.Domains(status)
}
func (q dbQuerier) RecentDomains(_ context.Context, f store.DomainFilter) ([]store.DomainStat, error) {
	return q.db.RecentDomains(f)
}
func (q dbQuerier) Close() error { return q.db.Close() }

type apiQuerier struct{ *api.Client }

func (apiQuerier) Close() error { return nil }

// apiTimeout bounds every call to the admin API from the CLI.
const apiTimeout = 10 * time.Second

// connect finds the data: the running server's admin API when it answers,
// else the database file, read-only.
func connect(ctx context.Context, cfg Config) (querier, error) {
	var apiErr error
	if cfg.HTTP.Listen != "" {
		c := &api.Client{
			BaseURL: "http://" + dialAddr(cfg.HTTP.Listen),
			HTTP:    &http.Client{Timeout: apiTimeout},
		}
		if len(cfg.HTTP.Tokens) > 0 {
			c.Token = cfg.HTTP.Tokens[0]
		}
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, apiErr = c.Query(pctx, store.Filter{Limit: 1})
		cancel()
		if apiErr == nil {
			return apiQuerier{c}, nil
		}
		var se *api.StatusError
		if errors.As(apiErr, &se) {
			// A server answered, but refused: say so rather than
			// falling back to a file it holds.
			return nil, fmt.Errorf("admin API at %s: %w", c.BaseURL, apiErr)
		}
	}
	db, err := openStore(cfg, true, nil, nil)
	if err != nil {
		if apiErr != nil {
			return nil, fmt.Errorf("%w (admin API at %s did not answer: %v)", err, cfg.HTTP.Listen, apiErr)
		}
		return nil, err
	}
	return dbQuerier{db}, nil
}

// dialAddr turns a listen address into one to dial: a wildcard host
// becomes loopback.
func dialAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, port)
}

// commonFlags adds -config to a query command.
func commonFlags(fs *flag.FlagSet) *string {
	return fs.String("config", "", "TOML config `file` (default: built-in defaults)")
}

// recordFilterFlags adds the record filters shared by query and export
// (--status, --domain, --recipient, --kind, --since) to fs. The returned
// function, called after parsing, completes the filter; cmd names the
// command in its errors.
func recordFilterFlags(fs *flag.FlagSet, f *store.Filter, cmd string) func() error {
	fs.StringVar(&f.Status, "status", "", "enhanced status `code`, e.g. 5.4.3")
	fs.StringVar(&f.Domain, "domain", "", "recipient `domain`")
	fs.StringVar(&f.Recipient, "recipient", "", "recipient `address`")
	kind := fs.String("kind", "", "record `kind`: bounce, delay, complaint, autoreply, delivered, unknown")
	since := fs.String("since", "", "only records newer than a `duration` (24h, 7d) or time (2006-01-02, RFC 3339)")
	return func() error {
		f.Kind = parse.Kind(*kind)
		if *since != "" {
			t, err := parseSince(*since, time.Now())
			if err != nil {
				return usageError("%s: --since: %v", cmd, err)
			}
			f.Since = t
		}
		return nil
	}
}

func (a *app) queryCmd(ctx context.Context, args []string) error {
	fs := newFlags("query", "query [--status CODE] [--domain D] [--recipient ADDR] [--since DURATION|TIME] [--kind KIND] [--limit N] [--before ID] [--json]", a.stderr)
	cfgPath := commonFlags(fs)
	var f store.Filter
	finishFilter := recordFilterFlags(fs, &f, "query")
	fs.IntVar(&f.Limit, "limit", 100, "most records to print")
	asJSON := fs.Bool("json", false, "print one JSON object per line")
	before := fs.String("before", "", "page: only records older than the record with this `id` (printed as \"more:\" after a full page)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageError("query: unexpected argument %q", pos[0])
	}
	if f.Limit <= 0 || f.Limit > store.MaxLimit {
		return usageError("query: --limit must be between 1 and %d", store.MaxLimit)
	}
	if err := finishFilter(); err != nil {
		return err
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	q, err := connect(ctx, cfg)
	if err != nil {
		return err
	}
	defer q.Close()
	recs, next, err := q.Page(ctx, f, *before)
	if err != nil {
		return fmt.Errorf("querying: %w", err)
	}
	if next != "" {
		// On stderr, so that --json output stays one record a line.
		fmt.Fprintf(a.stderr, "more: %s\n", commandLine("query", fs, "before", "--before", next))
	}
	const header = "RECEIVED\tRECIPIENT\tKIND\tCLASS\tSTATUS\tREASON\tREMOTE-MTA\tVERDICT"
	// VERDICT is the record's verdict as stored and exported: the policy
	// action (suppress, count, record) or the store's (held, duplicate,
	// mismatch).
	return writeList(a.stdout, recs, *asJSON, header, "no records match", func(r store.Record) string {
		return fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s", showTime(r.Received),
			dash(r.Addr), r.Kind, r.Class, dash(r.Status), dash(string(r.Reason)), dash(r.RemoteMTA), dash(r.Verdict))
	})
}

// parseSince reads a duration ("90m", "24h", "7d") before now, a date, or
// an RFC 3339 time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, ok := strings.CutSuffix(s, "d"); ok {
		if n, err := strconv.Atoi(d); err == nil && n >= 0 {
			return now.AddDate(0, 0, -n), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, errors.New("negative duration")
		}
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, timeLayout, "2006-01-02T15:04:05", time.DateTime, time.DateOnly} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is neither a duration (24h, 7d) nor a time (2006-01-02, RFC 3339)", s)
}

func (a *app) suppressedCmd(ctx context.Context, args []string) error {
	fs := newFlags("suppressed", "suppressed [--json] ADDR\n\nExits 0 and says why if ADDR is suppressed, 1 if it is not.", a.stderr)
	cfgPath := commonFlags(fs)
	asJSON := fs.Bool("json", false, "print the suppression entry as JSON")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError("suppressed: want exactly one address")
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	q, err := connect(ctx, cfg)
	if err != nil {
		return err
	}
	defer q.Close()
	addr := pos[0]
	s, err := q.Suppressed(ctx, addr)
	if errors.Is(err, store.ErrNotFound) {
		if !*asJSON {
			fmt.Fprintf(a.stdout, "%s is not suppressed\n", addr)
		}
		return &exitError{code: 1}
	}
	if err != nil {
		return fmt.Errorf("looking up %s: %w", addr, err)
	}
	if *asJSON {
		return json.NewEncoder(a.stdout).Encode(s)
	}
	fmt.Fprintln(a.stdout, suppressionLine(s))
	return nil
}

// suppressionLine says once each why s is on the list: "user@dead.test
// is suppressed since T (policy): bounce hard 5.4.3 (routing_failure),
// record ID".
func suppressionLine(s *store.Suppression) string {
	line := fmt.Sprintf("%s is suppressed since %s (%s): %s", s.Address, showTime(s.Created), s.Source, suppressionReason(s))
	if s.RecordID != "" {
		line += ", record " + s.RecordID
	}
	return line
}

// suppressionReason is s's reason without repeats, and its status if the
// reason does not name it.
func suppressionReason(s *store.Suppression) string {
	reason := dash(reasonText(s.Reason))
	if s.Status != "" && !strings.Contains(reason, s.Status) {
		reason += ", status " + s.Status
	}
	return reason
}

// reasonText drops from a policy suppression's reason the rule label the
// policy made up from the status and kind ("bounce hard 5.4.3
// (routing_failure) rule 5.4.3 bounce suppress"), which only repeats the
// text before it. A named rule, a pattern or a count stays.
func reasonText(reason string) string {
	i := strings.LastIndex(reason, " rule ")
	if i < 0 {
		return reason
	}
	head, label := reason[:i], strings.Fields(reason[i+len(" rule "):])
	if len(label) < 2 || len(label) > 3 || label[len(label)-1] != "suppress" {
		return reason
	}
	for _, w := range label[:len(label)-1] {
		if !slices.Contains(strings.Fields(strings.NewReplacer("(", " ", ")", " ").Replace(head)), w) {
			return reason
		}
	}
	return head
}

func (a *app) domainsCmd(ctx context.Context, args []string) error {
	fs := newFlags("domains", "domains [--status CODE] [--limit N] [--wide] [--check] [--json]\n\n"+
		"Lists the 100 most recently bounced domains (last bounce first) unless --limit says otherwise;\n"+
		"--limit 0 lists every domain. The table fits 80 columns; --wide adds every column.", a.stderr)
	cfgPath := commonFlags(fs)
	status := fs.String("status", "", "only domains with records of this status `code`")
	limit := fs.Int("limit", store.DefaultDomainLimit, "list at most `N` domains, the most recently bounced first (0: all)")
	asJSON := fs.Bool("json", false, "print one JSON object per line")
	wide := fs.Bool("wide", false, "print every column: all statuses, first and last seen as times, the MTAs, the MX check's time")
	check := fs.Bool("check", false, "check the MX route of every domain with 5.4.x bounces now and store the results")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageError("domains: unexpected argument %q", pos[0])
	}
	if *limit < 0 {
		return usageError("domains: --limit must not be negative")
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	if *check {
		return a.domainsCheck(ctx, cfg, *asJSON)
	}
	q, err := connect(ctx, cfg)
	if err != nil {
		return err
	}
	defer q.Close()
	ds, err := q.RecentDomains(ctx, store.DomainFilter{Status: *status, Limit: *limit})
	if err != nil {
		return fmt.Errorf("listing domains: %w", err)
	}
	if !*wide && !*asJSON {
		return writeNarrowDomains(a.stdout, ds, *status != "", time.Now())
	}
	return writeDomains(a.stdout, ds, *asJSON, *status != "")
}

// writeDomains writes the domains as JSON lines or as the wide table.
func writeDomains(w io.Writer, ds []store.DomainStat, asJSON, filtered bool) error {
	const header = "DOMAIN\tTOTAL\tSTATUSES\tFIRST-SEEN\tLAST-SEEN\tREMOTE-MTAS\tREPORTING-MTAS\tSTORM\tLAST-MX-CHECK"
	return writeList(w, ds, asJSON, header, domainsEmpty(filtered), func(d store.DomainStat) string {
		storm, route := healthColumns(d)
		return fmt.Sprintf("%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s", d.Domain, d.Total, statusCounts(d.Counts),
			showTime(d.FirstSeen), showTime(d.LastSeen),
			dash(strings.Join(d.RemoteMTAs, ",")), dash(strings.Join(d.ReportingMTAs, ",")), storm, route)
	})
}

// statusCounts renders {"5.4.3": 2, "5.1.1": 1} as "5.1.1:1 5.4.3:2".
func statusCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s:%d", dash(k), m[k])
	}
	return b.String()
}
