package proc

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func tcheck(t *testing.T, err error, msg string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", msg, err)
	}
}

// TestCPUTime reads the CPU time of a shell that counted to 100,000,
// opening /dev/null at each step (so that it uses system time too), and
// stopped itself, and compares it with what the kernel reports for the
// process when it is reaped (wait4's rusage).
func TestCPUTime(t *testing.T) {
	cmd := exec.Command("sh", "-c", "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); : >/dev/null; done; kill -STOP $$")
	tcheck(t, cmd.Start(), "starting sh")
	p := &Proc{Name: "sh", Cmd: cmd}
	stopped := false
	for range 600 {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", cmd.Process.Pid))
		tcheck(t, err, "reading stat")
		if f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:])); len(f) > 0 && f[0] == "T" {
			stopped = true
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !stopped {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal("the shell did not stop within 30 s")
	}
	got, err := p.CPUTime()
	tcheck(t, err, "CPUTime")
	tcheck(t, cmd.Process.Kill(), "kill")
	cmd.Wait()
	user, sys := cmd.ProcessState.UserTime(), cmd.ProcessState.SystemTime()
	want := user + sys
	if user < 30*time.Millisecond || sys < 30*time.Millisecond {
		t.Fatalf("the shell used %v user and %v system time: too little to compare", user, sys)
	}
	if d := got - want; d < -20*time.Millisecond || d > 20*time.Millisecond {
		t.Errorf("CPUTime %v, rusage %v", got, want)
	}
}

// TestStatusAndFiles reads this test process: its resident set, and one
// more open file after it opens one.
func TestStatusAndFiles(t *testing.T) {
	st, err := Status(os.Getpid())
	tcheck(t, err, "Status")
	if st["VmRSS"] <= 0 || st["RssAnon"] <= 0 || st["RssAnon"] > st["VmRSS"] {
		t.Fatalf("VmRSS %d RssAnon %d", st["VmRSS"], st["RssAnon"])
	}
	n0, err := OpenFiles(os.Getpid())
	tcheck(t, err, "OpenFiles")
	f, err := os.Open(os.DevNull)
	tcheck(t, err, "opening /dev/null")
	n1, err := OpenFiles(os.Getpid())
	f.Close()
	tcheck(t, err, "OpenFiles")
	if n1 != n0+1 {
		t.Fatalf("open files %d, then %d after one open", n0, n1)
	}
	if got := parseStatus([]byte("Name:\tx\nVmRSS:\t  1024 kB\nThreads:\t9\nBad:\tx kB\n")); len(got) != 1 || got["VmRSS"] != 1<<20 {
		t.Fatalf("parseStatus: %v", got)
	}
}
