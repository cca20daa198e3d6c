package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is a server under test, started as its own process.
type proc struct {
	name string
	addr string
	cmd  *exec.Cmd
	done chan error
	cfg  string // bouncer's config file
}

// startSink runs Postfix's smtp-sink on a free loopback port. As root it
// must drop privileges (-u); it takes a listen backlog argument.
func startSink(sinkPath, logPath string) (*proc, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	args := []string{addr, "1024"}
	if os.Geteuid() == 0 {
		args = append([]string{"-u", "nobody"}, args...)
	}
	p, err := startProc("smtp-sink", logPath, nil, sinkPath, args...)
	if err != nil {
		return nil, err
	}
	p.addr = addr
	if err := waitDial(p, addr); err != nil {
		p.stop()
		return nil, err
	}
	return p, nil
}

// startDiscard runs this program's discard subcommand and reads back the
// address it listens on.
func startDiscard(self, logPath string) (*proc, error) {
	pr, pw := io.Pipe()
	p, err := startProc("go-smtp discard", logPath, pw, self, "discard", "-listen", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr, err := scanAddr(pr, regexp.MustCompile(`^listening (\S+)`), p)
	if err != nil {
		p.stop()
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
	p, err := startProc("bouncer", logPath, nil, bouncerPath, "serve", "-config", cfg)
	if err != nil {
		return nil, err
	}
	p.cfg = cfg
	addr, err := logAddr(logPath, regexp.MustCompile(`msg="bouncer listening".* smtp=(\S+)`), p)
	if err != nil {
		p.stop()
		return nil, err
	}
	p.addr = addr
	return p, nil
}

// startProc starts a command with stderr to logPath and stdout to w (or
// logPath if w is nil).
func startProc(name, logPath string, w io.Writer, path string, args ...string) (*proc, error) {
	return start(name, logPath, w, path, args...)
}

func start(name, logPath string, w io.Writer, path string, args ...string) (*proc, error) {
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	if w != nil {
		cmd.Stdout = io.MultiWriter(lf, w)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan error, 1)}
	go func() {
		err := cmd.Wait()
		lf.Close()
		if c, ok := w.(io.Closer); ok {
			c.Close()
		}
		p.done <- err
	}()
	return p, nil
}

// scanAddr reads lines from r until re matches, and keeps draining r
// afterwards so the process never blocks on its output.
func scanAddr(r io.Reader, re *regexp.Regexp, p *proc) (string, error) {
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(r)
		sent := false
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil && !sent {
				found <- m[1]
				sent = true
			}
		}
		io.Copy(io.Discard, r)
	}()
	select {
	case a := <-found:
		return a, nil
	case err := <-p.done:
		p.done <- err
		return "", fmt.Errorf("%s exited before listening: %v", p.name, err)
	case <-time.After(30 * time.Second):
		return "", fmt.Errorf("%s did not report its address within 30s", p.name)
	}
}

// logAddr reads the log file at path every 10 ms until a line matches re,
// and returns the match's first group.
func logAddr(path string, re *regexp.Regexp, p *proc) (string, error) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", err
		}
		if m := re.FindSubmatch(b); m != nil {
			return string(m[1]), nil
		}
		select {
		case err := <-p.done:
			p.done <- err
			return "", fmt.Errorf("%s exited before listening: %v", p.name, err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	return "", fmt.Errorf("%s did not log its address within 30s (%s)", p.name, path)
}

// waitDial waits until addr accepts connections.
func waitDial(p *proc, addr string) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case err := <-p.done:
			p.done <- err
			return fmt.Errorf("%s exited: %v", p.name, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s not accepting on %s after 10s", p.name, addr)
}

// peakRSS returns the process's peak resident set (VmHWM) in bytes.
func (p *proc) peakRSS() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmHWM:" && f[2] == "kB" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", p.cmd.Process.Pid)
}

// cpuTime returns the CPU time (user and system, all threads) the process
// has used, from /proc/PID/stat, in clock ticks of 10 ms (USER_HZ is 100 on
// Linux's architectures).
func (p *proc) cpuTime() (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: count the
	// fields after it. utime and stime are fields 14 and 15.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", p.cmd.Process.Pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", p.cmd.Process.Pid)
	}
	var ticks int64
	for _, v := range f[11:13] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", p.cmd.Process.Pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond, nil
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

// stop sends SIGTERM and waits up to 30s, then kills the process group.
func (p *proc) stop() error {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		if ee, ok := err.(*exec.ExitError); ok && ee.Sys().(syscall.WaitStatus).Signaled() {
			return nil // smtp-sink dies of SIGTERM
		}
		return err
	case <-time.After(30 * time.Second):
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		return fmt.Errorf("%s did not stop within 30s of SIGTERM; killed", p.name)
	}
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
