package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	benchproc "github.com/bouncer/bouncer/bench/proc"
)

// proc is a server under test, started as its own process.
type proc struct {
	*benchproc.Proc
	addr string
	cfg  string // bouncer's config file
}

// startSink runs Postfix's smtp-sink on a free loopback port. As root it
// must drop privileges (-u); it takes a listen backlog argument.
func startSink(sinkPath, logPath string) (*proc, error) {
	addr, err := benchproc.FreeAddr()
	if err != nil {
		return nil, err
	}
	args := []string{addr, "1024"}
	if os.Geteuid() == 0 {
		args = append([]string{"-u", "nobody"}, args...)
	}
	bp, err := benchproc.Start("smtp-sink", logPath, nil, sinkPath, args...)
	if err != nil {
		return nil, err
	}
	p := &proc{Proc: bp, addr: addr}
	if err := p.WaitDial(addr); err != nil {
		p.Stop()
		return nil, err
	}
	return p, nil
}

// startDiscard runs this program's discard subcommand and reads back the
// address it listens on.
func startDiscard(self, logPath string) (*proc, error) {
	pr, pw := io.Pipe()
	bp, err := benchproc.Start("go-smtp discard", logPath, pw, self, "discard", "-listen", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &proc{Proc: bp}
	addr, err := p.ScanAddr(pr, regexp.MustCompile(`^listening (\S+)`))
	if err != nil {
		p.Stop()
		return nil, err
	}
	p.addr = addr
	return p, nil
}

// bouncerConfig is the benchmark's bouncer configuration: defaults except
// the per-client limits, which one load generator on 127.0.0.1 would
// otherwise hit at once (max_conns_per_ip 10, connect_rate 120/min), and
// max_conns where the sessions need more than its default of 500.
const bouncerConfig = `[smtp]
listen = "127.0.0.1:0"
domains = ["localhost"]
max_conns = %d
max_conns_per_ip = %d
connect_rate = 1e7
connect_burst = 100000

[http]
listen = ""

[store]
path = %q
%s

[log]
level = "info"
`

// startBouncer runs bouncer serve on a new database in dir and reads the
// SMTP address from its "bouncer listening" log line. Its log goes to
// logPath (info level: a line per connection and per message, as in
// production).
// storeExtra is more [store] keys (smtpbench run -store).
func startBouncer(bouncerPath, dir, logPath string, perIP int, storeExtra string) (*proc, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "bouncer.toml")
	text := fmt.Sprintf(bouncerConfig, max(perIP, 500), perIP, filepath.Join(dir, "bouncer.db"), storeExtra)
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		return nil, err
	}
	// bouncer's log goes straight to its file, as in production: a pipe
	// through this process would cost CPU per log line on the same two
	// cores (it did: a regexp per line, while bouncer logs two lines a
	// message). The address is read back from the file.
	bp, err := benchproc.Start("bouncer", logPath, nil, bouncerPath, "serve", "-config", cfg)
	if err != nil {
		return nil, err
	}
	p := &proc{Proc: bp, cfg: cfg}
	m, err := p.LogMatch(logPath, regexp.MustCompile(`msg="bouncer listening".* smtp=(\S+)`))
	if err != nil {
		p.Stop()
		return nil, err
	}
	p.addr = m[1]
	return p, nil
}

// cpuTicks is the first line of /proc/stat: the machine's CPU time in
// clock ticks, all CPUs together.
type cpuTicks struct {
	idle  uint64 // idle and iowait
	total uint64 // every field but guest and guest_nice, which user and nice already count
}

// machineCPU reads the machine's CPU ticks from /proc/stat.
func machineCPU() (cpuTicks, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTicks{}, err
	}
	return parseCPUTicks(b)
}

// parseCPUTicks reads the "cpu" line of /proc/stat's text b: user nice
// system idle iowait irq softirq steal [guest guest_nice].
func parseCPUTicks(b []byte) (cpuTicks, error) {
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return cpuTicks{}, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var t cpuTicks
	for i, v := range f[1:9] {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return cpuTicks{}, fmt.Errorf("/proc/stat: %w", err)
		}
		t.total += n
		if i == 3 || i == 4 {
			t.idle += n
		}
	}
	return t, nil
}

// idleSince is the share of the CPU time between t0 and t that was idle.
func (t cpuTicks) idleSince(t0 cpuTicks) float64 {
	if t.total <= t0.total {
		return 0
	}
	return float64(t.idle-t0.idle) / float64(t.total-t0.total)
}
