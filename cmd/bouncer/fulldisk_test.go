package main

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/bouncer/bouncer/store"
	"github.com/bouncer/bouncer/store/bolt"
)

// mountTmpfs mounts a small tmpfs for a test, or skips when it cannot
// (not root, no mount): a full disk needs a file system that can fill up.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "mnt")
	tcheck(t, os.Mkdir(dir, 0o700), "making mount point")
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("SKIP: cannot mount a tmpfs to fill up (%v: %s); needs root", err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// fill writes a file until the file system is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	tcheck(t, err, "creating filler")
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			return
		}
	}
}

// bigBounce is the Postfix DSN for addr with an incompressible returned
// message of about n bytes, so that storing it needs new pages.
func bigBounce(t *testing.T, addr string, n int) []byte {
	t.Helper()
	msg := bytes.ReplaceAll(readTestdata(t, "postfix-543.eml"), []byte("user@dead.test"), []byte(addr))
	noise := make([]byte, n*3/4)
	rand.Read(noise)
	enc := base64.StdEncoding.EncodeToString(noise)
	var body strings.Builder
	for len(enc) > 76 {
		body.WriteString("X-Noise: " + enc[:76] + "\r\n")
		enc = enc[76:]
	}
	return bytes.Replace(msg, []byte("X-Campaign: 7\n"), []byte("X-Campaign: 7\n"+body.String()), 1)
}

// TestFullDisk fills the database's file system while the server runs: a
// message that cannot be committed gets 451 4.3.0 without internals, the
// failed write is counted and /readyz says 503; once space is freed the
// store reopens its files from disk and delivery works again without a
// restart; nothing acknowledged is lost.
func TestFullDisk(t *testing.T) {
	mnt := mountTmpfs(t, "8m")
	cfg := writeConfig(t, t.TempDir(), fmt.Sprintf(`
[smtp]
listen = "127.0.0.1:0"
domains = ["localhost"]
[http]
listen = "127.0.0.1:0"
[store]
path = %q
min_free_bytes = 0
`, filepath.Join(mnt, "bouncer.db")))
	ts := newTestServerConfig(t, cfg)

	var acked []string
	send := func(i int) error {
		addr := fmt.Sprintf("full%d@dead.test", i)
		err := deliver(t, ts.smtpAddr, "bounces+"+strings.Replace(addr, "@", "=", 1)+"@localhost", bigBounce(t, addr, 256<<10))
		if err == nil {
			acked = append(acked, addr)
		}
		return err
	}
	tcheck(t, send(0), "delivering before the disk fills")
	fill(t, filepath.Join(mnt, "filler"))

	var refused error
	for i := 1; i <= 40 && refused == nil; i++ {
		refused = send(i)
	}
	var se *smtp.SMTPError
	if !errors.As(refused, &se) {
		t.Fatalf("no delivery failed on a full disk (last error %v)", refused)
	}
	if se.Code != 451 || se.EnhancedCode != (smtp.EnhancedCode{4, 3, 0}) {
		t.Fatalf("full disk: got %d %v %q, want 451 4.3.0", se.Code, se.EnhancedCode, se.Message)
	}
	for _, leak := range []string{"space", "device", "bbolt", "write", mnt} {
		if strings.Contains(strings.ToLower(se.Message), strings.ToLower(leak)) {
			t.Errorf("451 text %q shows internals (%q)", se.Message, leak)
		}
	}

	if writeErrs := scrape(t, ts.httpAddr, "bouncer_store_write_errors_total", map[string]string{"op": "commit"}); writeErrs == 0 {
		t.Error("the refused delivery was not counted in bouncer_store_write_errors_total")
	}
	if got := httpStatus(t, ts.httpAddr, "/readyz"); got != 503 {
		t.Errorf("/readyz on a full disk: %d, want 503", got)
	}

	tcheck(t, os.Remove(filepath.Join(mnt, "filler")), "freeing space")
	var last error
	for i := 100; i < 200; i++ { // the store reopens after a back-off (at most 5s)
		if last = send(i); last == nil || !errors.As(last, &se) || se.Code != 451 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	tcheck(t, last, "delivering after space was freed")
	if n := scrape(t, ts.httpAddr, "bouncer_store_reopens_total", map[string]string{"result": "ok"}); n < 1 {
		t.Errorf("bouncer_store_reopens_total{result=ok} = %v after the disk recovered", n)
	}

	ts.stop(t)
	db, err := bolt.Open(filepath.Join(mnt, "bouncer.db"), bolt.Options{ReadOnly: true})
	tcheck(t, err, "opening the store")
	defer db.Close()
	tcheck(t, db.Check(), "checking the store")
	for _, a := range acked {
		if recs, err := db.Query(store.Filter{Recipient: a, Limit: 1}); err != nil || len(recs) == 0 {
			t.Errorf("%s got 250 but is not in the store (%v)", a, err)
		}
	}
}
