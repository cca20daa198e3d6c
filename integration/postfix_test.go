//go:build integration

package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestPostfix runs a private Postfix instance (postfix -c DIR) on loopback
// whose transport map sends dead.test to the stub and bounce.test to
// bouncer, submits the scenario and checks the DSNs Postfix generated.
func TestPostfix(t *testing.T) {
	t.Parallel()
	postfix := lookMTA("postfix", "/usr/sbin/postfix")
	if postfix == "" {
		t.Skip("SKIP: postfix not found (apt-get install postfix; .ci/run does this)")
	}
	requireRoot(t, "postfix")

	b := startBouncer(t)
	st := startStub(t)
	smtpd := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	dir := startPostfix(t, postfix, map[string]string{
		"STUB_PORT":    port(t, st.addr),
		"BOUNCER_PORT": port(t, b.smtpAddr),
		"SMTPD":        smtpd,
	})
	t.Cleanup(func() {
		if t.Failed() {
			logFile(t, filepath.Join(dir, "maillog"))
			st.mu.Lock()
			t.Logf("stub saw:\n%s", strings.Join(st.log, "\n"))
			st.mu.Unlock()
		}
	})

	e := expect{mta: "postfix", reporting: "mta.example.test", literal543: "5.4.3", final: 2 * time.Minute,
		list: "list@alias.test", fwd: "fwd@local.test",
		nobody: "no-such-user@local.test", nobodyStatus: "5.1.1", softBounce: "unknown-s@soft.test"}
	sendScenario(t, smtpd, e)
	sendShapes(t, smtpd, e)
	checkScenario(t, b, e)
	checkShapes(t, b, e)
}

// startPostfix fills the testdata templates into a fresh config folder,
// starts the instance and stops it at cleanup. vars fills @STUB@,
// @BOUNCER@ and @SMTPD@; @DIR@ is the folder.
func startPostfix(t *testing.T, postfix string, vars map[string]string) string {
	t.Helper()
	dir := mtaDir(t, "bouncer-postfix-")
	vars["DIR"] = dir
	fill(t, "postfix-main.cf", filepath.Join(dir, "main.cf"), vars)
	fill(t, "postfix-master.cf", filepath.Join(dir, "master.cf"), vars)
	fill(t, "postfix-transport", filepath.Join(dir, "transport"), vars)
	fill(t, "postfix-virtual", filepath.Join(dir, "virtual"), vars)
	fill(t, "postfix-aliases", filepath.Join(dir, "aliases"), vars)
	tcheck(t, os.Mkdir(filepath.Join(dir, "queue"), 0o755), "making queue folder")

	// "postfix start" runs postfix-script check, which creates the queue
	// subfolders; without a tty its errors only reach the maillog.
	if err := runCmd(t, nil, postfix, "-c", dir, "start"); err != nil {
		logFile(t, filepath.Join(dir, "maillog"))
		t.Fatal(err)
	}
	t.Cleanup(func() { stopPostfix(t, postfix, dir) })
	waitListen(t, vars["SMTPD"], 20*time.Second)
	return dir
}

// stopPostfix stops this instance only: "postfix -c DIR stop" signals the
// master whose pid is in DIR's queue; if that fails, the master is killed
// by that pid.
func stopPostfix(t *testing.T, postfix, dir string) {
	pidFile := filepath.Join(dir, "queue", "pid", "master.pid")
	pid := readPid(pidFile)
	if err := runCmd(t, nil, postfix, "-c", dir, "stop"); err != nil {
		t.Logf("stopping postfix: %v", err)
	}
	if pid <= 0 {
		return
	}
	for i := 0; i < 50; i++ {
		if syscall.Kill(pid, 0) != nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("postfix master %d still runs after stop; killing it", pid)
	syscall.Kill(pid, syscall.SIGKILL)
}

func readPid(name string) int {
	b, err := os.ReadFile(name)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// lookMTA finds an MTA binary in PATH or at the Debian path (root's PATH in
// a container may lack /usr/sbin).
func lookMTA(name, debianPath string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if _, err := os.Stat(debianPath); err == nil {
		return debianPath
	}
	return ""
}

func logFile(t *testing.T, name string) {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Logf("%s: %v", name, err)
		return
	}
	t.Logf("%s:\n%s", name, b)
}
