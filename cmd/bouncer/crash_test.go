package main

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bouncer/bouncer/store"
	"github.com/bouncer/bouncer/store/bolt"
)

// buildBinary builds the bouncer command into a temp dir.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "bouncer")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

var smtpAddrRE = regexp.MustCompile(`msg="bouncer listening" smtp=(\S+)`)

// startBinary starts "bouncer serve" and returns the process and its SMTP
// address, read back from its log line.
func startBinary(t *testing.T, bin, cfg string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(bin, "serve", "-config", cfg)
	stderr, err := cmd.StderrPipe()
	tcheck(t, err, "stderr pipe")
	tcheck(t, cmd.Start(), "starting bouncer")
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sent := false
		for sc.Scan() {
			if m := smtpAddrRE.FindStringSubmatch(sc.Text()); m != nil && !sent {
				addr <- m[1]
				sent = true
			}
		}
	}()
	select {
	case a := <-addr:
		return cmd, a
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatal("bouncer did not log its listening address within 30s")
		return nil, ""
	}
}

// TestCrashLosesNothing kills the real binary with SIGKILL while many
// clients deliver, several times over one database: every message that got
// 250 must be in the store afterwards, and the database must check clean.
func TestCrashLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the binary; skipped with -short")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	cfg := writeConfig(t, dir, `
[smtp]
listen = "127.0.0.1:0"
max_conns_per_ip = 1000
connect_rate = 1000000.0
connect_burst = 100000
[http]
listen = ""
[store]
path = "bouncer.db"
[log]
level = "info"
`)
	template := readTestdata(t, "postfix-543.eml")
	var acked []string
	for round := 0; round < 3; round++ {
		cmd, addr := startBinary(t, bin, cfg)
		var (
			mu   sync.Mutex
			wg   sync.WaitGroup
			stop = make(chan struct{})
		)
		for g := 0; g < 40; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					local := fmt.Sprintf("r%d-g%d-m%d", round, g, i)
					msg := bytes.ReplaceAll(template, []byte("user@dead.test"), []byte(local+"@dead.test"))
					if err := deliver(t, addr, "bounces+"+local+"=dead.test@localhost", msg); err != nil {
						return // the server is gone
					}
					mu.Lock()
					acked = append(acked, local+"@dead.test")
					mu.Unlock()
				}
			}()
		}
		time.Sleep(time.Duration(200+rand.IntN(600)) * time.Millisecond)
		tcheck(t, cmd.Process.Signal(syscall.SIGKILL), "killing bouncer")
		cmd.Wait()
		close(stop)
		wg.Wait()

		out, err := exec.Command(bin, "check", "-config", cfg).CombinedOutput()
		if err != nil {
			t.Fatalf("round %d: bouncer check after SIGKILL: %v\n%s", round, err, out)
		}
		db, err := bolt.Open(filepath.Join(dir, "bouncer.db"), bolt.Options{ReadOnly: true})
		tcheck(t, err, "opening the store after the crash")
		missing := 0
		for _, a := range acked {
			recs, err := db.Query(store.Filter{Recipient: a, Limit: 1})
			tcheck(t, err, "querying")
			if len(recs) == 0 {
				missing++
				t.Errorf("round %d: %s got 250 but is not in the store", round, a)
			}
		}
		db.Close()
		t.Logf("round %d: %d messages acknowledged so far, %d missing", round, len(acked), missing)
	}
	if len(acked) == 0 {
		t.Fatal("no message was acknowledged: the test proved nothing")
	}
}
