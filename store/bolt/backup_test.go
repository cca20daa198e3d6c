package bolt

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/bouncer/bouncer/parse"
)

// TestBackupUnderLoad backs up while eight goroutines save: every Save
// acknowledged before the backup started is in the copy, and the copy
// passes Check.
func TestBackupUnderLoad(t *testing.T) {
	t.Parallel()
	db, _ := mustOpen(t, Options{})
	var (
		mu    sync.Mutex
		acked []string
		stop  = make(chan struct{})
		wg    sync.WaitGroup
	)
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				recs, err := db.Save(context.Background(), bounce(fmt.Sprintf("w%d-%d@d%d.example", w, i, i%5), "5.1.1", parse.KindBounce, parse.ClassHard))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				acked = append(acked, recs[0].ID)
				mu.Unlock()
			}
		})
	}
	for {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 300 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	copyPath := filepath.Join(t.TempDir(), "copy.db")
	f, err := os.Create(copyPath)
	tcheck(t, err, "create")
	mu.Lock()
	before := append([]string(nil), acked...)
	mu.Unlock()
	n, err := db.Backup(f)
	tcheck(t, err, "backup")
	tcheck(t, f.Close(), "close copy")
	close(stop)
	wg.Wait()
	if fi, _ := os.Stat(copyPath); fi.Size() != n {
		t.Fatalf("backup says %d bytes, file has %d", n, fi.Size())
	}
	got := recordsByID(t, copyPath)
	for _, id := range before {
		if _, ok := got[id]; !ok {
			t.Fatalf("record %s acknowledged before the backup is not in the copy (%d of %d there)", id, len(got), len(before))
		}
	}
	c, err := Open(copyPath, Options{ReadOnly: true})
	tcheck(t, err, "open copy")
	defer c.Close()
	tcheck(t, c.Check(), "check copy")
	t.Logf("%d acknowledged before the backup, %d in the copy", len(before), len(got))
}
