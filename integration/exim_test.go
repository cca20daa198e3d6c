//go:build integration

package integration

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// eximUser is the user Debian's exim4 binary is built for; it looks the
// name up before it reads any config, so the user must exist.
const eximUser = "Debian-exim"

// TestExim runs Exim from its unpacked Debian package (BOUNCER_EXIM names
// the exim4 binary, else exim4 in PATH) as a loopback daemon with the
// config in testdata/exim.conf, submits the scenario and checks the DSNs.
// Exim writes "Status: 5.0.0" with the real code in Diagnostic-Code;
// bouncer must record 5.4.3.
func TestExim(t *testing.T) {
	t.Parallel()
	exim := os.Getenv("BOUNCER_EXIM")
	if exim == "" {
		exim = lookMTA("exim4", "/usr/sbin/exim4")
	}
	if _, err := os.Stat(exim); exim == "" || err != nil {
		t.Skip("SKIP: exim4 not found; set BOUNCER_EXIM to the exim4 binary of an unpacked exim4-daemon-light (.ci/run does this)")
	}
	requireRoot(t, "exim")
	u, err := user.Lookup(eximUser)
	if err != nil {
		t.Skipf("SKIP: user %s does not exist (Debian's exim4 needs it; .ci/run creates it): %v", eximUser, err)
	}
	// The binary's shared libraries (libidn12 among them) must be
	// installed: deliveries re-exec the setuid binary, which ignores
	// LD_LIBRARY_PATH.
	if out, err := exec.Command(exim, "-C", "/dev/null", "-bV").CombinedOutput(); err != nil {
		t.Skipf("SKIP: %s -bV fails (missing libraries? apt-get install libidn12): %v: %s", exim, err, out)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)

	b := startBouncer(t)
	st := startStub(t)
	p := freePort(t)
	dir := mtaDir(t, "bouncer-exim-")
	for _, d := range []string{"spool", "log"} {
		tcheck(t, os.Mkdir(filepath.Join(dir, d), 0o750), "making "+d)
		tcheck(t, os.Chown(filepath.Join(dir, d), uid, gid), "chown "+d)
	}
	tcheck(t, os.Mkdir(filepath.Join(dir, "forward"), 0o755), "making forward")
	fill(t, "exim-aliases", filepath.Join(dir, "aliases"), nil)
	fill(t, "exim-forward", filepath.Join(dir, "forward", "fwd"), nil)
	conf := filepath.Join(dir, "exim.conf")
	fill(t, "exim.conf", conf, map[string]string{
		"DIR":          dir,
		"EXIM":         exim,
		"PORT":         strconv.Itoa(p),
		"STUB_PORT":    port(t, st.addr),
		"BOUNCER_PORT": port(t, b.smtpAddr),
	})
	t.Cleanup(func() {
		if t.Failed() {
			logFile(t, filepath.Join(dir, "log", "mainlog"))
			logFile(t, filepath.Join(dir, "log", "paniclog"))
			st.mu.Lock()
			t.Logf("stub saw:\n%s", strings.Join(st.log, "\n"))
			st.mu.Unlock()
		}
	})
	startExim(t, exim, conf, p)
	addr := fmt.Sprintf("127.0.0.1:%d", p)
	waitListen(t, addr, 20*time.Second)

	e := expect{mta: "exim", reporting: "exim.example.test", literal543: "5.0.0", final: 2 * time.Minute,
		list: "list@alias.test", fwd: "fwd@fwd.test", dsnNamesAlias: true,
		nobody: "no-such-user@alias.test", nobodyStatus: "5.0.0"}
	sendScenario(t, addr, e)
	sendShapes(t, addr, e)
	checkScenario(t, b, e)
	checkShapes(t, b, e)
}

// startExim runs the daemon in the foreground (-bdf) with queue runs every
// 2s, in its own process group, and stops that group at cleanup.
func startExim(t *testing.T, exim, conf string, p int) {
	t.Helper()
	cmd := exec.Command(exim, "-C", conf, "-bdf", "-q2s", "-oX", strconv.Itoa(p))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	tcheck(t, cmd.Start(), "starting exim")
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		pgid := cmd.Process.Pid
		syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			syscall.Kill(-pgid, syscall.SIGKILL)
			<-done
		}
		if s := out.String(); s != "" && t.Failed() {
			t.Logf("exim output:\n%s", s)
		}
	})
}
