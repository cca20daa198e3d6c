// Command soak runs bouncer serve (the real binary) for a set time under
// everything at once: SMTP intake of real bounce samples at a steady rate,
// queries through the admin API and the CLI, exports, pushes to a webhook
// that the soak serves on loopback, and pruning of raw messages. It samples
// the server's memory, open files, goroutines and database size, prints a
// table, and fails if one of them grows without bound (verdict.go), if any
// SMTP reply was not the expected one, or if a message answered 250 has no
// record or a record's push never arrived. See BENCHMARKS.md ("Soak") and
// make soak.
//
//	go run ./bench/soak -bouncer bin/bouncer -time 10m -rate 50
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	benchproc "github.com/bouncer/bouncer/bench/proc"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

type options struct {
	bouncer, samples, dir      string
	duration, every            time.Duration
	queryEvery, exportEvery    time.Duration
	rate                       float64
	sessions, perConn, domains int
	seed, failEvery            int
	keep                       bool
}

func parseOptions(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.bouncer, "bouncer", "", "the bouncer `binary` to run (required)")
	fs.StringVar(&o.samples, "samples", "parse/testdata/golden", "`folder` of *.eml samples sent over SMTP")
	fs.StringVar(&o.dir, "dir", "", "work `folder` (default: a new temporary folder, removed after a run that passes)")
	fs.DurationVar(&o.duration, "time", 10*time.Minute, "how long intake runs")
	fs.DurationVar(&o.every, "every", 0, "sampling interval (0: a 60th of -time, between 1s and 10s)")
	fs.DurationVar(&o.queryEvery, "query-every", 2*time.Second, "interval between queries (API; every fifth one through the CLI)")
	fs.DurationVar(&o.exportEvery, "export-every", 0, "interval between exports through the CLI (0: a fifth of -time, between 2s and 2m)")
	fs.Float64Var(&o.rate, "rate", 50, "messages per second, over all sessions")
	fs.IntVar(&o.sessions, "sessions", 4, "SMTP sessions in parallel")
	fs.IntVar(&o.perConn, "per-conn", 5, "most messages per connection (each connection sends 1 to this many)")
	fs.IntVar(&o.domains, "domains", 5000, "recipient domains the copies spread over")
	fs.IntVar(&o.seed, "seed", -1, "raw messages stored before the start, dated so that pruning deletes them during the run (-1: rate × time / 4, at most 50000)")
	fs.IntVar(&o.failEvery, "push-fail-every", 100, "answer every `N`-th push request 503, so that retries run (0: never)")
	fs.BoolVar(&o.keep, "keep", false, "keep the work folder (database, log, config, samples.tsv)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case o.bouncer == "":
		return o, errors.New("-bouncer is required (make soak builds it)")
	case o.rate <= 0 || o.sessions < 1 || o.perConn < 1 || o.domains < 1:
		return o, errors.New("-rate, -sessions, -per-conn and -domains must be positive")
	case o.duration < time.Second || o.every < 0 || o.queryEvery <= 0 || o.exportEvery < 0:
		return o, errors.New("-time must be at least 1s, and the intervals positive")
	}
	if o.every == 0 {
		o.every = min(max(o.duration/60, time.Second), 10*time.Second)
	}
	if o.exportEvery == 0 {
		o.exportEvery = min(max(o.duration/5, 2*time.Second), 2*time.Minute)
	}
	if o.seed < 0 {
		o.seed = min(int(o.rate*o.duration.Seconds()/4), 50_000)
	}
	return o, nil
}

// soak is one run.
type soak struct {
	o                     options
	dir, cfgPath, dbPath  string
	logPath               string
	api                   string // http://127.0.0.1:PORT
	hc                    *http.Client
	proc                  *benchproc.Proc
	start                 time.Time
	seeded                int
	in                    *intake
	rv                    *receiver
	log                   logWatch
	queryErrs, exportErrs errorLog
	sampleErrs            errorLog
	queries, exports      int
	exportedRows          int
	cpu                   time.Duration // bouncer's CPU time, read before it stops
	mu                    sync.Mutex
}

func (s *soak) errorCount() int {
	return s.in.errs.count() + s.queryErrs.count() + s.exportErrs.count() + s.sampleErrs.count() + s.log.nerr
}

// retention is the soak config's raw_retention: it may not be below an
// hour, so the seed is dated from an hour before the start.
const (
	retention = time.Hour
	secret    = "soak-webhook-secret-of-some-length"
)

// pruneEvery is the soak config's prune_interval: a tenth of the run, at
// most a minute, so that even a short run prunes several times.
func pruneEvery(d time.Duration) time.Duration {
	return min(max(d/10, time.Second), time.Minute).Round(time.Second)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseOptions(args, stderr)
	if err != nil {
		return err
	}
	samples, err := loadSamples(o.samples)
	if err != nil {
		return err
	}
	s := &soak{o: o, hc: &http.Client{Timeout: 5 * time.Minute}}
	if s.dir = o.dir; s.dir == "" {
		if s.dir, err = os.MkdirTemp("", "soak-"); err != nil {
			return err
		}
	} else if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return err
	}
	s.dbPath, s.cfgPath, s.logPath = filepath.Join(s.dir, "bouncer.db"), filepath.Join(s.dir, "bouncer.toml"), filepath.Join(s.dir, "bouncer.log")
	s.log.path = s.logPath
	err = s.run(ctx, samples, stdout)
	if err == nil && !o.keep && o.dir == "" {
		os.RemoveAll(s.dir)
	} else {
		fmt.Fprintf(stdout, "work folder kept: %s\n", s.dir)
	}
	return err
}

func (s *soak) run(ctx context.Context, samples []*sample, stdout io.Writer) error {
	o := s.o
	fmt.Fprintf(stdout, "soak: %v at %.0f msg/s from %d sessions (1-%d messages per connection), %d samples from %s over %d domains\n",
		o.duration, o.rate, o.sessions, o.perConn, len(samples), o.samples, o.domains)
	t0 := time.Now()
	var err error
	if s.seeded, err = seed(ctx, s.dbPath, samples, o.seed, t0.Add(-retention), o.duration); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "seed: %d raw messages (%d records) dated %s to %s ago in %v, pruned as the run goes (raw_retention %v, prune_interval %v)\n",
		o.seed, s.seeded, retention, retention-o.duration, time.Since(t0).Round(time.Millisecond), retention, pruneEvery(o.duration))

	s.rv = newReceiver(secret, o.failEvery)
	hookURL, closeHook, err := s.rv.serve()
	if err != nil {
		return err
	}
	defer closeHook()
	httpAddr, err := benchproc.FreeAddr()
	if err != nil {
		return err
	}
	s.api = "http://" + httpAddr
	if err := os.WriteFile(s.cfgPath, []byte(soakConfig(o, httpAddr, hookURL)), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "limits: loopback is not a trusted relay here (so the storm guard counts only each domain's own addresses);"+
		" message_rate, byte_rate, push_rate and connect_rate are set far above the soak's rate, so nothing is throttled or held\n")
	if s.proc, err = benchproc.Start("bouncer", s.logPath, nil, o.bouncer, "serve", "-config", s.cfgPath); err != nil {
		return err
	}
	stopped := false
	defer func() {
		if !stopped {
			s.proc.Stop()
		}
	}()
	m, err := s.proc.LogMatch(s.logPath, regexp.MustCompile(`msg="bouncer listening".* smtp=(\S+)`))
	if err != nil {
		return err
	}
	s.in = &intake{addr: m[1], samples: samples, domains: o.domains, rate: o.rate, sessions: o.sessions, maxPerConn: o.perConn}
	fmt.Fprintf(stdout, "bouncer %s: pid %d, smtp %s, api %s, webhook %s, folder %s\n", o.bouncer, s.proc.Pid(), m[1], s.api, hookURL, s.dir)

	pts, err := s.drive(ctx, stdout)
	if err != nil {
		return err
	}
	acc, accErr := s.account(stdout)
	s.cpu, _ = s.proc.CPUTime()
	stopped = true
	stopErr := s.proc.Stop()
	if err := s.log.read(); err != nil {
		return err
	}
	return s.report(stdout, pts, acc, errors.Join(accErr, stopErr, writeSamples(filepath.Join(s.dir, "samples.tsv"), pts)))
}

// soakConfig is bouncer's config for the soak.
func soakConfig(o options, httpAddr, hookURL string) string {
	return fmt.Sprintf(`# written by bench/soak
[smtp]
listen = "127.0.0.1:0"
domains = ["localhost"]
max_conns_per_ip = %[1]d
max_conns_per_net = %[1]d
connect_rate = 1e6
connect_burst = 10000
message_rate = 1e7
message_burst = 1000000
byte_rate = 1099511627776
push_rate = 1e9
trusted_relays = []

[http]
listen = %[2]q

[store]
path = "bouncer.db"
raw_retention = %[3]q
prune_interval = %[4]q

[storm]
threshold = 10000

[push]
min_backoff = "1s"
max_backoff = "10s"

[[push.targets]]
name = "soak"
type = "webhook"
url = %[5]q
secret = %[6]q
events = ["hard", "soft", "complaint", "suppressed"]

[log]
level = "info"
`, o.sessions+20, httpAddr, retention.String(), pruneEvery(o.duration).String(), hookURL, secret)
}

// drive runs intake, queries, exports and sampling for the soak's time,
// then lets the outbox drain, and returns the samples.
func (s *soak) drive(ctx context.Context, stdout io.Writer) ([]point, error) {
	s.start = time.Now()
	p0, err := s.take()
	if err != nil {
		return nil, fmt.Errorf("first sample: %w", err)
	}
	pts := []point{p0}
	rctx, cancel := context.WithTimeout(ctx, s.o.duration)
	defer cancel()
	var wg sync.WaitGroup
	for _, f := range []func(context.Context){s.in.run, s.queryLoop, s.exportLoop} {
		wg.Add(1)
		go func() { defer wg.Done(); f(rctx) }()
	}
	tick := time.NewTicker(s.o.every)
	progress := max(s.o.duration/10, s.o.every)
	lastShown := time.Duration(0)
	for rctx.Err() == nil {
		select {
		case <-rctx.Done():
		case <-tick.C:
			p, err := s.take()
			if err != nil {
				s.sampleErrs.add("sampling", err)
				continue
			}
			pts = append(pts, p)
			if p.at-lastShown >= progress {
				lastShown = p.at
				fmt.Fprintf(stdout, "  %v: %.0f accepted, %.0f records, %.0f pushes, RSS %.1f MiB, db %.1f MiB, %.0f goroutines, %.0f files, %.0f errors\n",
					p.at.Round(time.Second), p.accepted, p.records, p.pushes, p.rss/(1<<20), p.dbSize/(1<<20), p.goroutines, p.fds, p.errors)
			}
		}
		if exited, err := s.proc.Exited(); exited {
			tick.Stop()
			cancel()
			wg.Wait()
			return nil, fmt.Errorf("bouncer exited during the soak: %v (log %s)", err, s.logPath)
		}
	}
	tick.Stop()
	wg.Wait()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if err := s.drain(); err != nil {
		return nil, err
	}
	p, err := s.take()
	if err != nil {
		return nil, fmt.Errorf("last sample: %w", err)
	}
	return append(pts, p), nil
}

// drain waits until the outbox is empty, at most 3 minutes (the backoff
// is at most 10s).
func (s *soak) drain() error {
	deadline := time.Now().Add(3 * time.Minute)
	for {
		m, err := metricsText(s.hc, s.api)
		if err != nil {
			return err
		}
		if m["bouncer_outbox_queued"] == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the outbox still holds %.0f events 3 minutes after intake stopped", m["bouncer_outbox_queued"])
		}
		time.Sleep(time.Second)
	}
}

// report prints the table and the checks, and returns why the soak
// fails, if it does.
func (s *soak) report(w io.Writer, pts []point, acc accounting, err error) error {
	rs := s.rv.stats()
	last := pts[len(pts)-1]
	cpu := s.cpu
	fmt.Fprintf(w, "\nbouncer: %v CPU time (user and system) over the run, %.0f%% of one core\n", cpu.Round(10*time.Millisecond),
		100*cpu.Seconds()/last.at.Seconds())
	fmt.Fprintf(w, "intake: %d messages accepted in %v (%.1f msg/s), %d records expected, SMTP errors %d\n",
		s.in.accepted.Load(), s.o.duration, float64(s.in.accepted.Load())/s.o.duration.Seconds(), s.in.records.Load(), s.in.errs.count())
	fmt.Fprintf(w, "queries: %d (errors %d); exports: %d, the last %d rows (errors %d)\n",
		s.queries, s.queryErrs.count(), s.exports, s.exportedRows, s.exportErrs.count())
	fmt.Fprintf(w, "pushes: %d requests, %d answered 503 on purpose, %d events, %d repeated deliveries, %d bad\n",
		rs.requests, rs.failed, rs.unique, rs.repeats, rs.bad)
	fmt.Fprintf(w, "pruning: %d raw messages in %d prunes (seed %d messages); bouncer log: %d error lines, %d warnings\n",
		s.log.pruned, s.log.prunes, s.o.seed, s.log.nerr, s.log.warns)
	fmt.Fprintf(w, "accounting: %s\n\n", acc)
	bad := judge(w, pts)
	var problems []string
	if len(bad) > 0 {
		problems = append(problems, "grows without bound: "+strings.Join(bad, ", "))
	}
	for _, e := range []struct {
		what string
		log  *errorLog
	}{{"SMTP", &s.in.errs}, {"query", &s.queryErrs}, {"export", &s.exportErrs}, {"sampling", &s.sampleErrs}} {
		if n := e.log.count(); n > 0 {
			problems = append(problems, fmt.Sprintf("%d %s errors, first: %s", n, e.what, strings.Join(e.log.list(), "; ")))
		}
	}
	if s.log.nerr > 0 {
		problems = append(problems, fmt.Sprintf("%d error lines in bouncer's log, first: %s", s.log.nerr, strings.Join(s.log.errors, "; ")))
	}
	if rs.bad > 0 {
		problems = append(problems, fmt.Sprintf("%d bad push requests, first: %s", rs.bad, rs.firstBad))
	}
	if s.o.seed > 0 && s.log.pruned == 0 {
		problems = append(problems, "no raw message was pruned")
	}
	if last.accepted == 0 {
		problems = append(problems, "no message was accepted")
	}
	problems = append(problems, acc.problems()...)
	if err != nil {
		problems = append(problems, err.Error())
	}
	if len(problems) > 0 {
		fmt.Fprintln(w, "\nverdict: FAIL")
		for _, p := range problems {
			fmt.Fprintln(w, "  "+p)
		}
		return fmt.Errorf("%d problems", len(problems))
	}
	fmt.Fprintln(w, "\nverdict: ok (nothing grows without bound, no errors, every 250 has its records, every push arrived)")
	return nil
}

// writeSamples writes every sample as a line of tab-separated values,
// for a look at a run after the table (with -keep or -dir).
func writeSamples(path string, pts []point) error {
	var b strings.Builder
	b.WriteString("seconds\trss\trss_anon\trss_file\tfds\tgoroutines\tdb\twal\trecords\taccepted\tpushes\tqueued\traw_pruned\terrors\n")
	for _, p := range pts {
		fmt.Fprintf(&b, "%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\n", p.at.Seconds(),
			p.rss, p.anon, p.file, p.fds, p.goroutines, p.dbSize, p.walSize, p.records, p.accepted, p.pushes, p.queued, p.rawPruned, p.errors)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("writing the samples: %w", err)
	}
	return nil
}
