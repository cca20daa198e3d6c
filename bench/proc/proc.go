// Package proc runs the servers the benchmarks measure (bouncer, smtp-sink,
// a discard server) as child processes, and reads what Linux's /proc says
// about them: resident memory, CPU time, open files. smtpbench and soak
// share it.
package proc

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Proc is a server under test, started as its own process group.
type Proc struct {
	Name string
	Cmd  *exec.Cmd
	done chan error
}

// Start starts path with args, stderr to logPath and stdout to w (or
// logPath if w is nil). w is closed when the process exits, if it is an
// io.Closer.
func Start(name, logPath string, w io.Writer, path string, args ...string) (*Proc, error) {
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
	p := &Proc{Name: name, Cmd: cmd, done: make(chan error, 1)}
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

// Pid is the process id.
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// Exited reports whether the process has exited, and how.
func (p *Proc) Exited() (bool, error) {
	select {
	case err := <-p.done:
		p.done <- err
		return true, err
	default:
		return false, nil
	}
}

// ScanAddr reads lines from r until re matches, and keeps draining r
// afterwards so the process never blocks on its output.
func (p *Proc) ScanAddr(r io.Reader, re *regexp.Regexp) (string, error) {
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
		return "", fmt.Errorf("%s exited before listening: %v", p.Name, err)
	case <-time.After(30 * time.Second):
		return "", fmt.Errorf("%s did not report its address within 30s", p.Name)
	}
}

// LogMatch reads the log file at path every 10 ms until a line matches
// re, and returns the match's groups (the whole match first).
func (p *Proc) LogMatch(path string, re *regexp.Regexp) ([]string, error) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		if m := re.FindSubmatch(b); m != nil {
			out := make([]string, len(m))
			for i, g := range m {
				out[i] = string(g)
			}
			return out, nil
		}
		select {
		case err := <-p.done:
			p.done <- err
			return nil, fmt.Errorf("%s exited before listening: %v", p.Name, err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil, fmt.Errorf("%s did not log its address within 30s (%s)", p.Name, path)
}

// WaitDial waits until addr accepts connections.
func (p *Proc) WaitDial(addr string) error {
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
			return fmt.Errorf("%s exited: %v", p.Name, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s not accepting on %s after 10s", p.Name, addr)
}

// Stop sends SIGTERM and waits up to 30s, then kills the process group.
// A process that dies of the SIGTERM (smtp-sink) has stopped cleanly.
func (p *Proc) Stop() error {
	p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
		if ee, ok := err.(*exec.ExitError); ok && ee.Sys().(syscall.WaitStatus).Signaled() {
			return nil
		}
		return err
	case <-time.After(30 * time.Second):
		syscall.Kill(-p.Pid(), syscall.SIGKILL)
		<-p.done
		return fmt.Errorf("%s did not stop within 30s of SIGTERM; killed", p.Name)
	}
}

// Status returns the fields of /proc/PID/status whose value is in kB
// (VmRSS, VmHWM, RssAnon, RssFile, ...), in bytes.
func Status(pid int) (map[string]int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	return parseStatus(b), nil
}

func parseStatus(b []byte) map[string]int64 {
	out := map[string]int64{}
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) != 3 || f[2] != "kB" || !strings.HasSuffix(f[0], ":") {
			continue
		}
		if kb, err := strconv.ParseInt(f[1], 10, 64); err == nil {
			out[strings.TrimSuffix(f[0], ":")] = kb << 10
		}
	}
	return out
}

// PeakRSS returns the process's peak resident set (VmHWM) in bytes.
func (p *Proc) PeakRSS() (int64, error) {
	st, err := Status(p.Pid())
	if err != nil {
		return 0, err
	}
	v, ok := st["VmHWM"]
	if !ok {
		return 0, fmt.Errorf("no VmHWM in /proc/%d/status", p.Pid())
	}
	return v, nil
}

// OpenFiles counts the entries of /proc/PID/fd.
func OpenFiles(pid int) (int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0, err
	}
	return len(ents), nil
}

// CPUTime returns the CPU time (user and system, all threads) the process
// has used, from /proc/PID/stat, in clock ticks of 10 ms (USER_HZ is 100 on
// Linux's architectures).
func (p *Proc) CPUTime() (time.Duration, error) {
	pid := p.Pid()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: count the
	// fields after it. utime and stime are fields 14 and 15.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	var ticks int64
	for _, v := range f[11:13] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond, nil
}

// FreeAddr returns a loopback address with a port that was free a moment ago.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
