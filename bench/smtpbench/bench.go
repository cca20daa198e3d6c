package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Goals of issue 8; reported as met or not, never adjusted.
const (
	goalVsDiscard = 0.60
	goalVsSink    = 0.45
	goalP99       = 20 * time.Millisecond
	goalRSS       = 100 << 20
)

type benchFlags struct {
	bouncer, sink, source, msgFile, workDir string
	storeExtra                              string // more [store] keys
	variants                                []variant
	count, rssSessions, rssCount, rssSize   int
	rounds                                  int
	sessions                                []int
	keep, rssOnly                           bool
}

// variant is a second bouncer configuration measured in the same rounds
// (smtpbench run -variant): its [store] keys instead of -store's.
type variant struct{ name, storeKeys string }

// server is the name of the variant's rows.
func (v variant) server() string { return "bouncer " + v.name }

// keys returns the variant's [store] keys for one round: {round} becomes
// a name unique to the round (letters, digits and _), so that a variant
// on a shared database server, e.g. schema = "bench_{round}", starts
// each round empty as the others do.
func (v variant) keys(tag string) string {
	safe := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, strings.ToLower(tag))
	return strings.ReplaceAll(v.storeKeys, "{round}", safe)
}

// parseVariant reads NAME=KEYS; \n in KEYS separates TOML lines.
func parseVariant(s string) (variant, error) {
	name, keys, ok := strings.Cut(s, "=")
	if !ok || name == "" || strings.ContainsAny(name, " \t") {
		return variant{}, fmt.Errorf("-variant %q: want NAME=KEYS, e.g. keepraw='raw_retention = \"0s\"'", s)
	}
	return variant{name: name, storeKeys: strings.ReplaceAll(keys, `\n`, "\n")}, nil
}

// row is one server at one session count.
type row struct {
	server     string
	sessions   int
	round      int
	sourceRate float64       // smtp-source, msg/s
	serverCPU  time.Duration // the server's CPU time per message during the smtp-source run
	clientCPU  time.Duration // smtp-source's own CPU time per message
	idle       float64       // share of the machine's CPU time idle (or waiting for I/O) during the smtp-source run
	load       loadResult
	peak       int64 // VmHWM of the server process, bytes
	stored     int   // bouncer: records in the database afterwards
}

func benchCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var f benchFlags
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.bouncer, "bouncer", "", "bouncer `binary` (required)")
	fs.StringVar(&f.sink, "sink", "/usr/sbin/smtp-sink", "Postfix smtp-sink `binary`")
	fs.StringVar(&f.source, "source", "/usr/sbin/smtp-source", "Postfix smtp-source `binary`")
	fs.StringVar(&f.msgFile, "msg", "cmd/bouncer/testdata/postfix-543.eml", "the DSN `file` every message is")
	fs.StringVar(&f.workDir, "dir", "", "work `folder` for databases and logs (default: a new temporary folder)")
	fs.IntVar(&f.count, "m", 20000, "messages per run")
	fs.IntVar(&f.rounds, "rounds", 5, "rounds of the three servers, one after the other, at each session count above 1 (the goals use the median ratio)")
	sessions := fs.String("s", "20,1", "session counts, comma-separated")
	fs.IntVar(&f.rssSessions, "rss-s", 200, "sessions of the memory check")
	fs.IntVar(&f.rssCount, "rss-m", 600, "messages of the memory check")
	fs.IntVar(&f.rssSize, "rss-size", 1<<20, "message size of the memory check, bytes")
	fs.BoolVar(&f.keep, "keep", false, "keep the work folder")
	fs.StringVar(&f.storeExtra, "store", "", "more [store] `keys` for bouncer, e.g. 'raw_retention = \"0s\"'")
	fs.BoolVar(&f.rssOnly, "rss-only", false, "run only the memory check")
	fs.Func("variant", "another bouncer measured in the same rounds, as `NAME=KEYS`: [store] keys instead of -store's, \\n between lines, {round} replaced by a name unique to the round (repeatable); e.g. pg='driver = \"postgres\"\\nurl = \"postgres://...\"\\nschema = \"b_{round}\"'",
		func(s string) error {
			v, err := parseVariant(s)
			if err == nil {
				f.variants = append(f.variants, v)
			}
			return err
		})
	if err := fs.Parse(args); err != nil {
		return err
	}
	if f.bouncer == "" {
		return errors.New("-bouncer is required")
	}
	if f.rounds < 1 {
		return errors.New("-rounds must be at least 1")
	}
	for _, s := range strings.Split(*sessions, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return fmt.Errorf("bad session count %q", s)
		}
		f.sessions = append(f.sessions, n)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if f.workDir == "" {
		if f.workDir, err = os.MkdirTemp("", "smtpbench-"); err != nil {
			return err
		}
		if !f.keep {
			defer os.RemoveAll(f.workDir)
		}
	}
	msg, err := os.ReadFile(f.msgFile)
	if err != nil {
		return err
	}
	return bench(ctx, f, self, msg, stdout)
}

const rcpt = "bounces+user=dead.test@localhost"

func bench(ctx context.Context, f benchFlags, self string, msg []byte, out io.Writer) error {
	fmt.Fprintf(out, "smtpbench %s  load average at start: %s\n", time.Now().Format(time.RFC3339), loadAvg())
	fmt.Fprintf(out, "message %s (%d bytes), MAIL FROM:<> RCPT TO:<%s>, %d messages per run, new connection per message\n",
		f.msgFile, len(msg), rcpt, f.count)
	fmt.Fprintf(out, "bouncer: max_conns_per_ip 2×sessions+10, connect_rate 1e7/min, connect_burst 100000, other settings default; log level info; DB in %s\n\n", f.workDir)
	data := dataPayload(msg)
	var rows []row
	if f.rssOnly {
		f.sessions = nil
	}
	for _, s := range f.sessions {
		// The machine's speed drifts (other tenants): the servers are
		// measured in turn, round after round, and each round's ratio is
		// taken between its own rows. Each round starts with the next
		// server, so that none is always measured first or last.
		rounds := f.rounds
		if s == 1 {
			rounds = 1
		}
		servers := []string{"smtp-sink", "go-smtp discard", "bouncer"}
		for _, v := range f.variants {
			servers = append(servers, v.server())
		}
		for round := 1; round <= rounds; round++ {
			for i := range servers {
				server := servers[(round-1+i)%len(servers)]
				r, err := measure(ctx, f, self, server, s, round, data)
				if err != nil {
					return fmt.Errorf("%s, %d sessions: %w", server, s, err)
				}
				fmt.Fprintf(out, "  done: %-15s %3d sessions  round %d  smtp-source %6.0f msg/s  go-load %6.0f msg/s\n",
					server, s, round, r.sourceRate, r.load.rate())
				rows = append(rows, r)
			}
		}
	}
	big := bigBounce(msg, f.rssSize)
	rss, err := measureRSS(ctx, f, big)
	if err != nil {
		return fmt.Errorf("memory check: %w", err)
	}
	fmt.Fprintln(out)
	printTable(out, f, rows, rss, len(big))
	fmt.Fprintf(out, "\nload average at end: %s\n", loadAvg())
	return nil
}

// measure starts one server fresh, drives it with smtp-source and then the
// Go load generator (same message, envelope and count), and stops it.
func measure(ctx context.Context, f benchFlags, self, server string, sessions, round int, data []byte) (row, error) {
	r := row{server: server, sessions: sessions, round: round}
	// Each round starts on a new database and log.
	tag := fmt.Sprintf("%s-%d-%d", strings.ReplaceAll(server, " ", "-"), sessions, round)
	logPath := filepath.Join(f.workDir, tag+".log")
	var (
		p   *proc
		err error
	)
	switch server {
	case "smtp-sink":
		p, err = startSink(f.sink, logPath)
	case "go-smtp discard":
		p, err = startDiscard(self, logPath)
	default:
		keys := f.storeExtra
		for _, v := range f.variants {
			if server == v.server() {
				keys = v.keys(tag)
			}
		}
		p, err = startBouncer(f.bouncer, filepath.Join(f.workDir, tag), logPath, 2*sessions+10, keys)
	}
	if err != nil {
		return r, err
	}
	stopped := false
	defer func() {
		if !stopped {
			p.Stop()
		}
	}()
	cpu0, err := p.CPUTime()
	if err != nil {
		return r, err
	}
	m0, err := machineCPU()
	if err != nil {
		return r, err
	}
	var client time.Duration
	if r.sourceRate, client, err = runSource(ctx, f, p.addr, sessions); err != nil {
		return r, err
	}
	m1, err := machineCPU()
	if err != nil {
		return r, err
	}
	cpu1, err := p.CPUTime()
	if err != nil {
		return r, err
	}
	r.serverCPU = (cpu1 - cpu0) / time.Duration(f.count)
	r.clientCPU = client / time.Duration(f.count)
	r.idle = m1.idleSince(m0)
	r.load = runLoad(ctx, loadOptions{Addr: p.addr, Sessions: sessions, Count: f.count, Rcpt: rcpt, Data: data, Timeout: time.Minute})
	if r.load.FirstErr != nil {
		return r, fmt.Errorf("go load generator: %d failed, first: %w", r.load.Failed, r.load.FirstErr)
	}
	if r.peak, err = p.PeakRSS(); err != nil {
		return r, err
	}
	stopped = true
	if err := p.Stop(); err != nil {
		return r, fmt.Errorf("stopping %s: %w (log %s)", server, err, logPath)
	}
	if strings.HasPrefix(server, "bouncer") {
		if r.stored, err = storedRecords(f.bouncer, p.cfg); err != nil {
			return r, err
		}
		if want := f.count + r.load.Sent; r.stored != want {
			return r, fmt.Errorf("bouncer answered 250 to %d messages but stored %d records", want, r.stored)
		}
	}
	return r, nil
}

// runSource runs smtp-source and returns messages per second and the CPU
// time (user and system) smtp-source used. smtp-source exits non-zero on
// any reply other than the expected one.
func runSource(ctx context.Context, f benchFlags, addr string, sessions int) (float64, time.Duration, error) {
	cmd := exec.CommandContext(ctx, f.source, "-s", strconv.Itoa(sessions), "-m", strconv.Itoa(f.count),
		"-f", "", "-t", rcpt, "-F", f.msgFile, addr)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return 0, 0, fmt.Errorf("smtp-source: %w: %s", err, strings.TrimSpace(out.String()))
	}
	rate := float64(f.count) / time.Since(start).Seconds()
	return rate, cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(), nil
}

// storedRecords asks bouncer (stopped) how many records its database
// holds, duplicates included: the load sends one DSN again and again, which
// bouncer stores every time but marks as a duplicate after the first.
func storedRecords(bouncerPath, cfg string) (int, error) {
	cmd := exec.Command(bouncerPath, "export", "bounces", "-config", cfg, "-format", "json")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("bouncer export: %w", err)
	}
	n := 0
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) > 0 {
			n++
		}
	}
	if err := sc.Err(); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return 0, fmt.Errorf("reading bouncer export output: %w", err)
	}
	if err := cmd.Wait(); err != nil {
		return 0, fmt.Errorf("bouncer export: %w", err)
	}
	return n, nil
}

// rssResult is the memory check: many sessions sending large bounces.
type rssResult struct {
	load   loadResult
	peak   int64
	stored int
}

func measureRSS(ctx context.Context, f benchFlags, big []byte) (rssResult, error) {
	var res rssResult
	dir := filepath.Join(f.workDir, "bouncer-rss")
	logPath := filepath.Join(f.workDir, "bouncer-rss.log")
	p, err := startBouncer(f.bouncer, dir, logPath, f.rssSessions+10, f.storeExtra)
	if err != nil {
		return res, err
	}
	res.load = runLoad(ctx, loadOptions{Addr: p.addr, Sessions: f.rssSessions, Count: f.rssCount, Rcpt: rcpt,
		Data: dataPayload(big), Timeout: 5 * time.Minute})
	peak, perr := p.PeakRSS()
	serr := p.Stop()
	if res.load.FirstErr != nil {
		return res, fmt.Errorf("%d failed, first: %w", res.load.Failed, res.load.FirstErr)
	}
	if perr != nil {
		return res, perr
	}
	if serr != nil {
		return res, serr
	}
	res.peak = peak
	if res.stored, err = storedRecords(f.bouncer, filepath.Join(dir, "bouncer.toml")); err != nil {
		return res, err
	}
	if res.stored != res.load.Sent {
		return res, fmt.Errorf("bouncer answered 250 to %d messages but stored %d records", res.load.Sent, res.stored)
	}
	return res, nil
}

func printTable(out io.Writer, f benchFlags, rows []row, rss rssResult, bigSize int) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "server\tsessions\tround\tsmtp-source msg/s\tserver CPU/msg\tsmtp-source CPU/msg\tidle\tgo-load msg/s\tp50 DATA→250\tp99 DATA→250\tpeak RSS\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f\t%.0f µs\t%.0f µs\t%.0f %%\t%.0f\t%s\t%s\t%s\t\n", r.server, r.sessions, r.round, r.sourceRate,
			float64(r.serverCPU)/float64(time.Microsecond), float64(r.clientCPU)/float64(time.Microsecond), 100*r.idle, r.load.rate(),
			ms(r.load.percentile(50)), ms(r.load.percentile(99)), mib(r.peak))
	}
	tw.Flush()
	fmt.Fprintln(out)
	find := func(server string, s, round int) *row {
		for i := range rows {
			if rows[i].server == server && rows[i].sessions == s && rows[i].round == round {
				return &rows[i]
			}
		}
		return nil
	}
	for _, s := range f.sessions {
		var vsD, vsK, loadD, loadK []float64
		var p99 time.Duration
		for round := 1; ; round++ {
			b, d, k := find("bouncer", s, round), find("go-smtp discard", s, round), find("smtp-sink", s, round)
			if b == nil {
				break
			}
			vsD, vsK = append(vsD, b.sourceRate/d.sourceRate), append(vsK, b.sourceRate/k.sourceRate)
			loadD, loadK = append(loadD, b.load.rate()/d.load.rate()), append(loadK, b.load.rate()/k.load.rate())
			p99 = max(p99, b.load.percentile(99))
			fmt.Fprintf(out, "%d sessions, round %d (smtp-source rates): bouncer/go-smtp discard %.0f %%, bouncer/smtp-sink %.0f %%", s, round, 100*vsD[round-1], 100*vsK[round-1])
			fmt.Fprintf(out, "  (go-load: %.0f %%, %.0f %%)\n", 100*loadD[round-1], 100*loadK[round-1])
		}
		if s == 20 {
			mD, mK := median(vsD), median(vsK)
			goal(out, fmt.Sprintf("bouncer ≥ 60 %% of go-smtp discard at 20 sessions: %.0f %% (median of %d rounds; go-load %.0f %%)", 100*mD, len(vsD), 100*median(loadD)), mD >= goalVsDiscard)
			goal(out, fmt.Sprintf("bouncer ≥ 45 %% of smtp-sink at 20 sessions: %.0f %% (median of %d rounds; go-load %.0f %%)", 100*mK, len(vsK), 100*median(loadK)), mK >= goalVsSink)
			goal(out, fmt.Sprintf("bouncer p99 end of DATA → 250 ≤ 20 ms at 20 sessions: %s (worst round)", ms(p99)), p99 <= goalP99)
		}
		for _, v := range f.variants {
			var vsK, vsB []float64
			var p99 time.Duration
			for round := 1; ; round++ {
				x, b, k := find(v.server(), s, round), find("bouncer", s, round), find("smtp-sink", s, round)
				if x == nil {
					break
				}
				vsK, vsB = append(vsK, x.sourceRate/k.sourceRate), append(vsB, x.sourceRate/b.sourceRate)
				p99 = max(p99, x.load.percentile(99))
			}
			fmt.Fprintf(out, "%d sessions, %s (smtp-source rates, median of %d rounds): %.0f %% of smtp-sink, %.0f %% of bouncer; p99 DATA→250 %s (worst round)\n",
				s, v.server(), len(vsK), 100*median(vsK), 100*median(vsB), ms(p99))
		}
	}
	fmt.Fprintf(out, "memory check: %d sessions, %d messages of %d bytes: %.0f msg/s (%.1f MiB/s), p50 %s p99 %s, %d records stored\n",
		f.rssSessions, rss.load.Sent, bigSize, rss.load.rate(), rss.load.rate()*float64(bigSize)/(1<<20),
		ms(rss.load.percentile(50)), ms(rss.load.percentile(99)), rss.stored)
	goal(out, fmt.Sprintf("bouncer peak RSS ≤ 100 MiB with %d × %d-byte messages: %s", f.rssSessions, bigSize, mib(rss.peak)), rss.peak <= goalRSS)
}

// median returns the middle value of v (the mean of the two middle ones
// for an even count).
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}

func goal(out io.Writer, what string, met bool) {
	verdict := "NOT MET"
	if met {
		verdict = "met"
	}
	fmt.Fprintf(out, "goal: %s — %s\n", what, verdict)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
