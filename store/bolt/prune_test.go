package bolt

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/bouncer/bouncer/store"

	"github.com/bouncer/bouncer/parse"
	bbolt "go.etcd.io/bbolt"
)

// fill stores n one-recipient bounces at the clock's time through the
// writer's transaction code, in batches, and returns the records.
func fill(t *testing.T, db *DB, n int, prefix string) []store.Record {
	t.Helper()
	var all []store.Record
	for i := 0; i < n; i += 500 {
		var reqs []*request
		for j := i; j < min(i+500, n); j++ {
			r, err := db.newRequest(context.Background(), bounce(fmt.Sprintf("%s%d@d%d.example", prefix, j, j%7), "5.1.1", parse.KindBounce, parse.ClassHard))
			tcheck(t, err, "request")
			reqs = append(reqs, r)
		}
		tcheck(t, db.fill(reqs), "filling")
		for _, r := range reqs {
			all = append(all, r.recs...)
		}
	}
	return all
}

func keyCount(t *testing.T, db *DB, name []byte) int {
	t.Helper()
	n := 0
	tcheck(t, db.view(func(tx *bbolt.Tx) error {
		n = tx.Bucket(name).Stats().KeyN
		return nil
	}), "counting keys")
	return n
}

func TestPruneRaw(t *testing.T) {
	t.Parallel()
	clock := newClock()
	db, _ := mustOpen(t, Options{Now: clock.Now, RawRetention: 48 * time.Hour, DedupeWindow: 24 * time.Hour})
	old := fill(t, db, 2100, "old") // more than two prune transactions
	clock.Add(72 * time.Hour)
	young := fill(t, db, 10, "new")

	// Deliveries keep being saved while the prune runs.
	saved := make(chan error, 1)
	go func() {
		for i := range 20 {
			if _, err := db.Save(context.Background(), bounce(fmt.Sprintf("during%d@x.example", i), "5.1.1", parse.KindBounce, parse.ClassHard)); err != nil {
				saved <- err
				return
			}
		}
		saved <- nil
	}()
	st, err := db.Prune(context.Background())
	tcheck(t, err, "prune")
	tcheck(t, <-saved, "saving during prune")
	if st.Raw != len(old) || st.Seen != len(old) {
		t.Fatalf("pruned %+v, want %d raw messages and %d dedupe keys", st, len(old), len(old))
	}
	if n := keyCount(t, db, bucketRaw); n != len(young)+20 {
		t.Fatalf("%d raw messages left, want %d", n, len(young)+20)
	}
	for _, r := range []store.Record{old[0], old[len(old)-1]} {
		_, err := db.Raw(r.MsgID)
		if !errors.Is(err, store.ErrRawPruned) || !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("raw of a pruned message: got %v, want ErrRawPruned and ErrNotFound", err)
		}
		if got, err := db.Record(r.ID); err != nil || got.Addr != r.Addr {
			t.Fatalf("record of a pruned message: %v %+v", err, got)
		}
	}
	if _, err := db.Raw(young[0].MsgID); err != nil {
		t.Fatalf("raw of a young message: %v", err)
	}
	if _, err := db.Raw("7fffffffffffffff00000000"); !errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrRawPruned) {
		t.Fatalf("raw of an unknown id: got %v, want ErrNotFound only", err)
	}
	tcheck(t, db.Check(), "check after prune")
	if st, err := db.Prune(context.Background()); err != nil || st.Raw != 0 || st.Seen != 0 {
		t.Fatalf("second prune: %+v %v, want nothing", st, err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := db.PruneRaw(ctx, clock.Now()); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled prune: got %v", err)
	}
}

func TestPruneKeepsRawByDefault(t *testing.T) {
	t.Parallel()
	clock := newClock()
	db, _ := mustOpen(t, Options{Now: clock.Now})
	recs := fill(t, db, 3, "u")
	clock.Add(10 * 365 * 24 * time.Hour)
	st, err := db.Prune(context.Background())
	tcheck(t, err, "prune")
	if st.Raw != 0 || st.Seen != 3 {
		t.Fatalf("pruned %+v, want no raw message and 3 dedupe keys", st)
	}
	if _, err := db.Raw(recs[0].MsgID); err != nil {
		t.Fatalf("raw without retention: %v", err)
	}
}

func TestPruneSoft(t *testing.T) {
	t.Parallel()
	clock := newClock()
	decide := func(r *store.Record) store.Decision {
		if r.Addr == "forever@x.example" {
			return store.Decision{Action: store.ActionCount, Threshold: 5}
		}
		return store.Decision{Action: store.ActionCount, Threshold: 5, Window: time.Hour}
	}
	db, _ := mustOpen(t, Options{Now: clock.Now, Decide: decide})
	save(t, db, bounce("forever@x.example", "4.2.2", parse.KindBounce, parse.ClassSoft))
	save(t, db, bounce("decays@x.example", "4.2.2", parse.KindBounce, parse.ClassSoft))
	clock.Add(30 * time.Minute)
	d := bounce("recent@x.example", "4.2.2", parse.KindBounce, parse.ClassSoft)
	d.Received = clock.Now()
	save(t, db, d)
	if n, err := db.PruneSoft(context.Background(), clock.Now()); err != nil || n != 0 {
		t.Fatalf("prune within the window: %d %v", n, err)
	}
	clock.Add(45 * time.Minute)
	n, err := db.PruneSoft(context.Background(), clock.Now())
	tcheck(t, err, "prune")
	if n != 1 {
		t.Fatalf("pruned %d soft counters, want 1", n)
	}
	for addr, want := range map[string]int{"forever@x.example": 1, "decays@x.example": 0, "recent@x.example": 1} {
		if got := softEvents(t, db, addr); got != want {
			t.Errorf("%s: %d events, want %d", addr, got, want)
		}
	}
}
