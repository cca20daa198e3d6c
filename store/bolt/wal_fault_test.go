package bolt

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bouncer/bouncer/parse"
)

// loggedOnly saves n deliveries (one record each) that only an old log
// holds and returns the crashed copy of the database.
func loggedOnly(t *testing.T, n int) string {
	t.Helper()
	_, crashed := withOldLog(t, Options{}, func(db *DB) {
		for i := range n {
			save(t, db, bounce(fmt.Sprintf("u%d@d.example", i), "5.1.1", parse.KindBounce, parse.ClassHard))
		}
	})
	return crashed
}

// openLogged opens path and returns what OnLog was told (zero if not
// called) and the number of records.
func openLogged(t *testing.T, path string) (LogInfo, int) {
	t.Helper()
	var info LogInfo
	calls := 0
	db, err := Open(path, Options{OnLog: func(li LogInfo) { info = li; calls++ }})
	tcheck(t, err, "opening "+path)
	defer db.Close()
	recs, _, _ := contents(t, db)
	tcheck(t, db.Check(), "check")
	if calls > 1 {
		t.Fatalf("OnLog called %d times", calls)
	}
	return info, len(recs)
}

// TestLogDamagedFrame flips a byte in each part of each frame of a log of
// six: the frames before the damaged one are applied, the damaged log is
// kept beside the database unless the damage is in the last frame (then
// indistinguishable from a write torn by a crash), and OnLog says how
// many frames were applied and dropped.
func TestLogDamagedFrame(t *testing.T) {
	t.Parallel()
	const frames = 6
	crashed := loggedOnly(t, frames)
	log, err := os.ReadFile(walPath(crashed))
	tcheck(t, err, "reading log")
	parts := map[string]func(start, end int) int{
		"length":     func(start, _ int) int { return start + 2 },
		"checksum":   func(start, _ int) int { return start + 5 },
		"seq":        func(start, _ int) int { return start + 15 },
		"metadata":   func(start, _ int) int { return start + 8 + frameHead + 3 },
		"raw":        func(_, end int) int { return end - 2 },
		"body hash":  func(start, _ int) int { return start + 8 + 30 },
		"length top": func(start, _ int) int { return start },
	}
	for i := 1; i <= frames; i++ {
		start, end := frameEnd(t, log, i-1), frameEnd(t, log, i)
		for part, at := range parts {
			t.Run(fmt.Sprintf("frame %d %s", i, part), func(t *testing.T) {
				t.Parallel()
				dir := t.TempDir()
				path := filepath.Join(dir, "bouncer.db")
				db, err := os.ReadFile(crashed)
				tcheck(t, err, "reading db")
				tcheck(t, os.WriteFile(path, db, 0o600), "writing db")
				b := bytes.Clone(log)
				b[at(start, end)] ^= 0x10
				tcheck(t, os.WriteFile(walPath(path), b, 0o600), "writing log")

				info, n := openLogged(t, path)
				if n != i-1 || info.Applied != i-1 {
					t.Fatalf("%d records, %d applied; want %d: %+v", n, info.Applied, i-1, info)
				}
				kept, _ := filepath.Glob(walPath(path) + ".damaged-*")
				if i == frames {
					// A length past the end reads as the end of the log.
					if (!info.Torn && part != "length top") || info.Damaged != "" || len(kept) != 0 {
						t.Fatalf("last frame damaged: %+v, kept %v; want a torn frame", info, kept)
					}
					return
				}
				if info.Damaged == "" || info.Dropped != frames-i+1 || len(kept) != 1 || info.KeptAs != kept[0] {
					t.Fatalf("got %+v, kept %v; want %d frames dropped and the log kept", info, kept, frames-i+1)
				}
				if got, _ := os.ReadFile(kept[0]); !bytes.Equal(got, b) {
					t.Fatal("the kept log is not the damaged one")
				}
				if !strings.Contains(info.String(), fmt.Sprintf("dropped %d frames", frames-i+1)) {
					t.Errorf("message: %s", info)
				}
				// The next open has nothing more to say.
				if again, n2 := openLogged(t, path); again != (LogInfo{}) || n2 != n {
					t.Fatalf("second open: %+v, %d records", again, n2)
				}
			})
		}
	}
}

// TestLogTornTails cuts the log at every few bytes of its last frame:
// the frames before are applied, nothing is kept aside.
func TestLogTornTails(t *testing.T) {
	t.Parallel()
	crashed := loggedOnly(t, 3)
	log, err := os.ReadFile(walPath(crashed))
	tcheck(t, err, "reading log")
	start, end := frameEnd(t, log, 2), frameEnd(t, log, 3)
	for cut := start; cut < end; cut += max(1, (end-start)/9) {
		t.Run(fmt.Sprint(cut-start), func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "bouncer.db")
			db, err := os.ReadFile(crashed)
			tcheck(t, err, "reading db")
			tcheck(t, os.WriteFile(path, db, 0o600), "writing db")
			b := bytes.Clone(log)
			clear(b[cut:]) // the preallocated zeros
			tcheck(t, os.WriteFile(walPath(path), b, 0o600), "writing log")
			info, n := openLogged(t, path)
			kept, _ := filepath.Glob(walPath(path) + ".damaged-*")
			if n != 2 || info.Applied != 2 || info.Damaged != "" || len(kept) != 0 {
				t.Fatalf("%d records, %+v, kept %v", n, info, kept)
			}
		})
	}
}

// TestLogLongerThanFile: the log starts after frames the file lacks (the
// file was restored from an older copy): its deliveries were
// acknowledged, so they are applied, and the log is kept and reported.
func TestLogLongerThanFile(t *testing.T) {
	t.Parallel()
	var l oldLog
	live, path := mustOpen(t, Options{beforeCommit: l.collect})
	for i := range 3 {
		save(t, live, bounce(fmt.Sprintf("u%d@d.example", i), "5.1.1", parse.KindBounce, parse.ClassHard))
	}
	l.take()
	crashed := snapshot(t, path) // frames 1-3 committed
	// The file says it holds frame 1 only.
	setAppliedSeq(t, crashed, 1)
	for i := 3; i < 5; i++ {
		save(t, live, bounce(fmt.Sprintf("u%d@d.example", i), "5.1.1", parse.KindBounce, parse.ClassHard))
	}
	tcheck(t, os.WriteFile(walPath(crashed), oldLogFile(frames(t, 4, l.take())), 0o600), "writing log")
	info, n := openLogged(t, crashed)
	if n != 5 || info.Applied != 2 || !strings.Contains(info.Damaged, "starts at frame 4") || info.KeptAs == "" {
		t.Fatalf("%d records, %+v", n, info)
	}
}
