package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestBackupWhileServing delivers from four clients while `bouncer backup`
// copies the database through the running server's API: every bounce
// that got 250 before the backup started is in the copy, which passes
// `bouncer check`; with the server stopped, backup reads the file.
func TestBackupWhileServing(t *testing.T) {
	ts := newTestServerWith(t, "max_conns_per_ip = 1000\nconnect_rate = 1000000.0\nconnect_burst = 100000\n", "")
	msg := readTestdata(t, "postfix-543.eml")
	var (
		mu    sync.Mutex
		acked []string
		stop  = make(chan struct{})
		wg    sync.WaitGroup
	)
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				addr := fmt.Sprintf("w%d-%d@dead.test", w, i)
				m := bytes.ReplaceAll(msg, []byte("user@dead.test"), []byte(addr))
				if err := deliver(t, ts.smtpAddr, "bounces@localhost", m); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				acked = append(acked, addr)
				mu.Unlock()
			}
		})
	}
	for deadline := time.Now().Add(20 * time.Second); ; {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 40 {
			break
		}
		if time.Now().After(deadline) {
			close(stop)
			wg.Wait()
			t.Fatalf("only %d deliveries in 20s", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	mu.Lock()
	before := append([]string(nil), acked...)
	mu.Unlock()
	copyPath := filepath.Join(t.TempDir(), "copy.db")
	out, code := runCLI(t, "backup", "-config", ts.cliConfig, copyPath)
	close(stop)
	wg.Wait()
	if code != 0 || !strings.Contains(out, "from the running server") {
		t.Fatalf("backup: exit %d: %s", code, out)
	}
	copyCfg := writeConfig(t, t.TempDir(), fmt.Sprintf("[http]\nlisten = \"\"\n[store]\npath = %q\n", copyPath))
	if out, code := runCLI(t, "check", "-config", copyCfg); code != 0 {
		t.Fatalf("check of the copy: exit %d: %s", code, out)
	}
	got := map[string]bool{}
	for _, r := range queryJSON(t, "-config", copyCfg, "--limit", "10000") {
		got[r.Addr] = true
	}
	for _, a := range before {
		if !got[a] {
			t.Fatalf("%s got 250 before the backup but is not in the copy (%d of %d there)", a, len(got), len(before))
		}
	}
	if out, code := runCLI(t, "backup", "-config", ts.cliConfig, copyPath); code == 0 {
		t.Fatalf("backup over an existing file: %s", out)
	}

	ts.stop(t)
	second := filepath.Join(t.TempDir(), "second.db")
	if out, code := runCLI(t, "backup", "-config", ts.cliConfig, second); code != 0 || !strings.Contains(out, "from the file") {
		t.Fatalf("backup without a server: exit %d: %s", code, out)
	}
	if _, err := os.Stat(second); err != nil {
		t.Fatal(err)
	}
}
