package bolt

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bouncer/bouncer/store"

	"github.com/bouncer/bouncer/parse"
	bbolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

func TestConcurrentSaves(t *testing.T) {
	t.Parallel()
	db, _ := mustOpen(t, Options{})
	const workers, each = 20, 40
	var (
		mu   sync.Mutex
		seen = map[string]bool{}
		wg   sync.WaitGroup
		errs = make(chan error, workers)
	)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				addr := fmt.Sprintf("w%d-%d@d%d.example", w, i, i%5)
				recs, err := db.Save(context.Background(), bounce(addr, "5.4.3", parse.KindBounce, parse.ClassHard))
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				for _, r := range recs {
					if seen[r.ID] {
						errs <- fmt.Errorf("duplicate id %s", r.ID)
					}
					seen[r.ID] = true
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	n := 0
	tcheck(t, db.ForEach(store.Filter{}, func(store.Record) error { n++; return nil }), "foreach")
	if n != workers*each || len(seen) != n {
		t.Fatalf("stored %d records, ids %d, want %d", n, len(seen), workers*each)
	}
	doms, err := db.Domains("5.4.3")
	tcheck(t, err, "domains")
	total := 0
	for _, d := range doms {
		total += d.Counts["5.4.3"]
	}
	if len(doms) != 5 || total != n {
		t.Fatalf("domains: %d with %d records", len(doms), total)
	}
	sups := 0
	tcheck(t, db.Suppressions("", func(store.Suppression) error { sups++; return nil }), "suppressions")
	if sups != n {
		t.Fatalf("suppressions %d, want %d", sups, n)
	}
	tcheck(t, db.Check(), "check")
}

func TestReopen(t *testing.T) {
	t.Parallel()
	clock := newClock() // never advances: keys must still grow across reopen
	path := filepath.Join(t.TempDir(), "bouncer.db")
	db, err := Open(path, Options{Now: clock.Now})
	tcheck(t, err, "open")
	before := save(t, db, bounce("user@dead.test", "5.4.3", parse.KindBounce, parse.ClassHard))
	tcheck(t, db.Close(), "close")
	if _, err := db.Save(context.Background(), bounce("x@y.example", "5.1.1", parse.KindBounce, parse.ClassHard)); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("save after close: got %v, want ErrClosed", err)
	}
	tcheck(t, db.Close(), "second close")

	db, err = Open(path, Options{Now: clock.Now})
	tcheck(t, err, "reopen")
	defer db.Close()
	got, err := db.Record(before[0].ID)
	tcheck(t, err, "record after reopen")
	if got.Addr != "user@dead.test" || !got.Suppressed {
		t.Fatalf("record after reopen: %+v", got)
	}
	if _, err := db.Suppressed("user@dead.test"); err != nil {
		t.Fatalf("suppression after reopen: %v", err)
	}
	after := save(t, db, bounce("user@dead.test", "5.4.3", parse.KindBounce, parse.ClassHard))
	if after[0].MsgID <= before[0].ID || after[0].ID <= after[0].MsgID {
		t.Fatalf("keys did not grow across reopen: %s then %s", before[0].ID, after[0].ID)
	}
	if after[0].Suppressed {
		t.Fatalf("suppressed twice across reopen")
	}
	recs, err := db.Query(store.Filter{Recipient: "user@dead.test"})
	tcheck(t, err, "query")
	if len(recs) != 2 {
		t.Fatalf("query after reopen: %d records", len(recs))
	}
	tcheck(t, db.Check(), "check")
}

func TestLocked(t *testing.T) {
	t.Parallel()
	db, path := mustOpen(t, Options{})
	save(t, db, bounce("user@dead.test", "5.4.3", parse.KindBounce, parse.ClassHard))

	_, err := Open(path, Options{ReadOnly: true, LockTimeout: 100 * time.Millisecond})
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "locked by another process") {
		t.Fatalf("read-only open while held: got %v, want ErrLocked", err)
	}
	_, err = Open(path, Options{LockTimeout: 100 * time.Millisecond})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second writer: got %v, want ErrLocked", err)
	}
	tcheck(t, db.Close(), "close")

	ro, err := Open(path, Options{ReadOnly: true, LockTimeout: 100 * time.Millisecond})
	tcheck(t, err, "read-only open")
	defer ro.Close()
	if _, err := ro.Suppressed("user@dead.test"); err != nil {
		t.Fatalf("read-only query: %v", err)
	}
	if _, err := ro.Save(context.Background(), bounce("a@b.example", "5.1.1", parse.KindBounce, parse.ClassHard)); !errors.Is(err, store.ErrReadOnly) {
		t.Fatalf("save read-only: got %v", err)
	}
	if err := ro.AddSuppression(store.Suppression{Address: "a@b.example"}); err == nil {
		t.Fatalf("add suppression read-only succeeded")
	}
	// Two readers share the file.
	ro2, err := Open(path, Options{ReadOnly: true, LockTimeout: 100 * time.Millisecond})
	tcheck(t, err, "second reader")
	ro2.Close()
}

func TestSchema(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"99", "0", "1", "2", "garbage", ""} {
		t.Run(v, func(t *testing.T) {
			db, path := mustOpen(t, Options{})
			tcheck(t, db.update(func(tx *bbolt.Tx) error {
				return tx.Bucket(bucketMeta).Put(keyVersion, []byte(v))
			}), "set version")
			tcheck(t, db.Close(), "close")
			for _, ro := range []bool{false, true} {
				_, err := Open(path, Options{ReadOnly: ro})
				if !errors.Is(err, ErrSchema) {
					t.Fatalf("version %q read-only %v: got %v, want ErrSchema", v, ro, err)
				}
			}
		})
	}
	t.Run("foreign file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "other.db")
		b, err := bbolt.Open(path, 0o600, nil)
		tcheck(t, err, "bolt open")
		tcheck(t, b.Update(func(tx *bbolt.Tx) error {
			_, err := tx.CreateBucket([]byte("something"))
			return err
		}), "create bucket")
		b.Close()
		if _, err := Open(path, Options{}); err == nil || !strings.Contains(err.Error(), "not a bouncer database") {
			t.Fatalf("foreign file: got %v", err)
		}
	})
	t.Run("missing file read-only", func(t *testing.T) {
		if _, err := Open(filepath.Join(t.TempDir(), "none.db"), Options{ReadOnly: true}); err == nil {
			t.Fatalf("read-only open of a missing file succeeded")
		}
	})
}

// gate blocks the writer's first transaction until released, so that
// tests can fill the queue.
type gate struct {
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func newGate() *gate {
	return &gate{entered: make(chan struct{}), release: make(chan struct{})}
}

func (g *gate) wait() {
	g.once.Do(func() {
		close(g.entered)
		<-g.release
	})
}

// waitQueued waits until n requests are in the writer's queue.
func waitQueued(t *testing.T, db *DB, n int) {
	t.Helper()
	for len(db.queue.C()) < n {
		time.Sleep(time.Millisecond)
	}
}

// saveAsync runs Save in a goroutine and returns its outcome channel.
func saveAsync(ctx context.Context, db *DB, d *store.Delivery) chan error {
	ch := make(chan error, 1)
	go func() {
		_, err := db.Save(ctx, d)
		ch <- err
	}()
	return ch
}

func TestGroupFailureRetriesAlone(t *testing.T) {
	t.Parallel()
	g := newGate()
	var mu sync.Mutex
	sizes := []int{}
	opts := Options{beforeCommit: func(batch []*request) error {
		g.wait()
		mu.Lock()
		sizes = append(sizes, len(batch))
		mu.Unlock()
		for _, r := range batch {
			if r.d.Envelope.MailFrom == "poison@example.com" {
				return errors.New("poisoned")
			}
		}
		return nil
	}}
	db, _ := mustOpen(t, opts)
	first := saveAsync(context.Background(), db, bounce("first@x.example", "5.1.1", parse.KindBounce, parse.ClassHard))
	<-g.entered
	var chans []chan error
	for i := range 5 {
		d := bounce(fmt.Sprintf("u%d@x.example", i), "5.1.1", parse.KindBounce, parse.ClassHard)
		if i == 2 {
			d.Envelope.MailFrom = "poison@example.com"
		}
		chans = append(chans, saveAsync(context.Background(), db, d))
		waitQueued(t, db, i+1)
	}
	close(g.release)
	tcheck(t, <-first, "first save")
	for i, ch := range chans {
		err := <-ch
		if (i == 2) != (err != nil) {
			t.Fatalf("save %d: got %v", i, err)
		}
		if i == 2 && !strings.Contains(err.Error(), "poisoned") {
			t.Fatalf("poisoned save: got %v", err)
		}
	}
	mu.Lock()
	got := slices.Clone(sizes)
	mu.Unlock()
	if len(got) < 2 || got[1] != 5 {
		t.Fatalf("group sizes %v: the five queued saves were not grouped", got)
	}
	n := 0
	tcheck(t, db.ForEach(store.Filter{}, func(r store.Record) error {
		if r.Envelope.MailFrom == "poison@example.com" {
			t.Fatalf("poisoned delivery was stored")
		}
		n++
		return nil
	}), "foreach")
	if n != 5 {
		t.Fatalf("stored %d records, want 5", n)
	}
	tcheck(t, db.Check(), "check")
}

func TestCommitFailureFailsAll(t *testing.T) {
	t.Parallel()
	g := newGate()
	fail := errors.New("disk on fire")
	db, _ := mustOpen(t, Options{beforeCommit: func([]*request) error {
		g.wait()
		return fail
	}})
	first := saveAsync(context.Background(), db, bounce("first@x.example", "5.1.1", parse.KindBounce, parse.ClassHard))
	<-g.entered
	var chans []chan error
	for i := range 4 {
		chans = append(chans, saveAsync(context.Background(), db, bounce(fmt.Sprintf("u%d@x.example", i), "5.4.3", parse.KindBounce, parse.ClassHard)))
		waitQueued(t, db, i+1)
	}
	close(g.release)
	for _, ch := range append(chans, first) {
		if err := <-ch; !errors.Is(err, fail) {
			t.Fatalf("got %v, want %v", err, fail)
		}
	}
	recs, err := db.Query(store.Filter{})
	tcheck(t, err, "query")
	if len(recs) != 0 {
		t.Fatalf("%d records stored by failed transactions", len(recs))
	}
	if _, err := db.Suppressed("u0@x.example"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("suppression from failed transaction: %v", err)
	}
}

func TestClosedFileFailsSaves(t *testing.T) {
	t.Parallel()
	db, _ := mustOpen(t, Options{})
	tcheck(t, db.bolt.Close(), "closing bolt under the writer")
	var chans []chan error
	for i := range 10 {
		chans = append(chans, saveAsync(context.Background(), db, bounce(fmt.Sprintf("u%d@x.example", i), "5.1.1", parse.KindBounce, parse.ClassHard)))
	}
	for _, ch := range chans {
		if err := <-ch; !errors.Is(err, berrors.ErrDatabaseNotOpen) {
			t.Fatalf("got %v, want ErrDatabaseNotOpen", err)
		}
	}
}

func TestSaveCancelWhileQueued(t *testing.T) {
	t.Parallel()
	g := newGate()
	db, _ := mustOpen(t, Options{beforeCommit: func([]*request) error { g.wait(); return nil }})
	first := saveAsync(context.Background(), db, bounce("first@x.example", "5.1.1", parse.KindBounce, parse.ClassHard))
	<-g.entered
	ctx, cancel := context.WithCancel(context.Background())
	cancelled := saveAsync(ctx, db, bounce("cancelled@x.example", "5.4.3", parse.KindBounce, parse.ClassHard))
	waitQueued(t, db, 1)
	kept := saveAsync(context.Background(), db, bounce("kept@x.example", "5.1.1", parse.KindBounce, parse.ClassHard))
	waitQueued(t, db, 2)
	cancel()
	if err := <-cancelled; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled save: got %v", err)
	}
	close(g.release)
	tcheck(t, <-first, "first")
	tcheck(t, <-kept, "kept")
	if recs, _ := db.Query(store.Filter{Recipient: "cancelled@x.example"}); len(recs) != 0 {
		t.Fatalf("cancelled delivery was stored")
	}
	if _, err := db.Suppressed("cancelled@x.example"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("cancelled delivery suppressed: %v", err)
	}
	if recs, _ := db.Query(store.Filter{Recipient: "kept@x.example"}); len(recs) != 1 {
		t.Fatalf("delivery queued after a cancelled one was not stored")
	}
}

func TestCloseDrainsQueue(t *testing.T) {
	t.Parallel()
	g := newGate()
	path := filepath.Join(t.TempDir(), "bouncer.db")
	db, err := Open(path, Options{beforeCommit: func([]*request) error { g.wait(); return nil }})
	tcheck(t, err, "open")
	first := saveAsync(context.Background(), db, bounce("first@x.example", "5.1.1", parse.KindBounce, parse.ClassHard))
	<-g.entered
	var chans []chan error
	for i := range 8 {
		chans = append(chans, saveAsync(context.Background(), db, bounce(fmt.Sprintf("u%d@x.example", i), "5.1.1", parse.KindBounce, parse.ClassHard)))
		waitQueued(t, db, i+1)
	}
	closed := make(chan error, 1)
	go func() { closed <- db.Close() }()
	close(g.release)
	tcheck(t, <-closed, "close")
	for _, ch := range append(chans, first) {
		tcheck(t, <-ch, "queued save")
	}
	db, err = Open(path, Options{ReadOnly: true})
	tcheck(t, err, "reopen")
	defer db.Close()
	recs, err := db.Query(store.Filter{})
	tcheck(t, err, "query")
	if len(recs) != 9 {
		t.Fatalf("after close: %d records, want 9", len(recs))
	}
}

func TestDomains(t *testing.T) {
	t.Parallel()
	clock := newClock()
	db, _ := mustOpen(t, Options{Now: clock.Now})
	t0 := clock.Now()
	for i := range 40 {
		d := bounce(fmt.Sprintf("u%d@Dead.Test", i), "5.4.3", parse.KindBounce, parse.ClassHard)
		d.Received = t0.Add(time.Duration(i) * time.Minute)
		d.Report.Recipients[0].RemoteMTA = fmt.Sprintf("MX%d.dead.test", i)
		d.Report.ReportingMTA = "relay" + fmt.Sprint(i%3) + ".example"
		save(t, db, d)
	}
	save(t, db, bounce("a@live.test", "5.1.1", parse.KindBounce, parse.ClassHard))
	save(t, db, bounce("b@live.test", "4.4.1", parse.KindDelay, parse.ClassSoft))
	// A hostile sender varies the status: the map stays bounded.
	for i := range store.MaxDomainStatuses + 10 {
		save(t, db, bounce("x@noisy.test", fmt.Sprintf("5.9.%d", i), parse.KindBounce, parse.ClassHard))
	}

	all, err := db.Domains("")
	tcheck(t, err, "domains")
	if len(all) != 3 || all[0].Domain != "dead.test" || all[1].Domain != "live.test" || all[2].Domain != "noisy.test" {
		t.Fatalf("domains: %+v", all)
	}
	dead := all[0]
	if dead.Total != 40 || dead.Counts["5.4.3"] != 40 || dead.Kinds["bounce"] != 40 {
		t.Fatalf("dead.test counts: %+v", dead)
	}
	if !dead.FirstSeen.Equal(t0) || !dead.LastSeen.Equal(t0.Add(39*time.Minute)) {
		t.Fatalf("dead.test seen %v .. %v", dead.FirstSeen, dead.LastSeen)
	}
	if len(dead.RemoteMTAs) != store.MaxDomainMTAs || !dead.MTAsCapped || dead.RemoteMTAs[0] != "mx0.dead.test" {
		t.Fatalf("remote MTAs: %d capped %v first %q", len(dead.RemoteMTAs), dead.MTAsCapped, dead.RemoteMTAs[0])
	}
	if len(dead.ReportingMTAs) != 3 {
		t.Fatalf("reporting MTAs: %v", dead.ReportingMTAs)
	}
	if all[1].Counts["5.1.1"] != 1 || all[1].Counts["4.4.1"] != 1 || all[1].Total != 2 {
		t.Fatalf("live.test: %+v", all[1])
	}
	noisy := all[2]
	if len(noisy.Counts) != store.MaxDomainStatuses+1 || noisy.Counts["other"] != 10 || noisy.Total != store.MaxDomainStatuses+10 {
		t.Fatalf("noisy.test: %d statuses, other %d", len(noisy.Counts), noisy.Counts["other"])
	}

	for status, wantDoms := range map[string][]string{
		"5.4.3": {"dead.test"}, "4.4.1": {"live.test"}, "5.9.0": {"noisy.test"}, "2.0.0": nil,
	} {
		got, err := db.Domains(status)
		tcheck(t, err, "domains by status")
		var names []string
		for _, d := range got {
			names = append(names, d.Domain)
		}
		if strings.Join(names, ",") != strings.Join(wantDoms, ",") {
			t.Fatalf("domains(%s): %v, want %v", status, names, wantDoms)
		}
	}
}

func TestHostileLengths(t *testing.T) {
	t.Parallel()
	db, _ := mustOpen(t, Options{})
	long := strings.Repeat("a", 10_000) + "@" + strings.Repeat("b", 300) + ".example"
	longStatus := "5.4.3" + strings.Repeat("9", 1000)
	recs := save(t, db, bounce(long, "5.4.3", parse.KindBounce, parse.ClassHard))
	if recs[0].Suppressed {
		t.Fatalf("over-long address was put on the suppression list")
	}
	// Two addresses that share their first 255 bytes must not mix.
	other := strings.Repeat("a", 10_000) + "@" + strings.Repeat("b", 300) + ".other"
	save(t, db, bounce(other, longStatus, parse.KindBounce, parse.ClassHard))
	got, err := db.Query(store.Filter{Recipient: long})
	tcheck(t, err, "query long recipient")
	if len(got) != 1 || got[0].Addr != long {
		t.Fatalf("long recipient: %d records", len(got))
	}
	got, err = db.Query(store.Filter{Status: longStatus})
	tcheck(t, err, "query long status")
	if len(got) != 1 || got[0].Addr != other {
		t.Fatalf("long status: %d records", len(got))
	}
	got, err = db.Query(store.Filter{Status: "5.4.3" + strings.Repeat("9", 999)})
	tcheck(t, err, "query cut status")
	if len(got) != 0 {
		t.Fatalf("a status sharing the index prefix matched")
	}
	// Invalid UTF-8 in an address: stored, found and consistent.
	bad := "b\xffad@Bad\xfe.example"
	recs = save(t, db, bounce(bad, "5.4.3", parse.KindBounce, parse.ClassHard))
	if !recs[0].Suppressed {
		t.Fatalf("address with invalid UTF-8 not suppressed")
	}
	got, err = db.Query(store.Filter{Recipient: bad})
	tcheck(t, err, "query invalid UTF-8")
	if len(got) != 1 {
		t.Fatalf("invalid UTF-8 recipient: %d records", len(got))
	}
	if _, err := db.Suppressed(bad); err != nil {
		t.Fatalf("suppressed with invalid UTF-8: %v", err)
	}
	tcheck(t, db.Check(), "check")
}

func TestPanickingPolicy(t *testing.T) {
	t.Parallel()
	db, _ := mustOpen(t, Options{Decide: func(r *store.Record) store.Decision {
		if r.Addr == "boom@x.example" {
			panic("policy bug")
		}
		return store.DefaultDecide(r)
	}})
	if _, err := db.Save(context.Background(), bounce("boom@x.example", "5.1.1", parse.KindBounce, parse.ClassHard)); err == nil || !strings.Contains(err.Error(), "policy bug") {
		t.Fatalf("panicking policy: got %v", err)
	}
	// The writer still serves other callers.
	save(t, db, bounce("fine@x.example", "5.1.1", parse.KindBounce, parse.ClassHard))
	tcheck(t, db.Check(), "check")
}

func TestCheckFindsDamage(t *testing.T) {
	t.Parallel()
	db, _ := mustOpen(t, Options{})
	recs := save(t, db, bounce("user@dead.test", "5.4.3", parse.KindBounce, parse.ClassHard))
	tcheck(t, db.Check(), "check before damage")
	key, err := decodeID(recs[0].ID)
	tcheck(t, err, "decode id")
	tcheck(t, db.update(func(tx *bbolt.Tx) error {
		if err := tx.Bucket(bucketIdxStatus).Delete(indexKey(key, "5.4.3")); err != nil {
			return err
		}
		return tx.Bucket(bucketIdxDomain).Put(indexKey([]byte("000000000000"), "dead.test"), nil)
	}), "damage")
	err = db.Check()
	if err == nil || !strings.Contains(err.Error(), "entry missing in idx_status") || !strings.Contains(err.Error(), "idx_domain: entry for missing record") {
		t.Fatalf("check after damage: %v", err)
	}
}

// fill writes reqs in one transaction of the calling goroutine, bypassing
// the writer: tests and benchmarks fill large databases with
// it (the writer must be idle).
func (db *DB) fill(reqs []*request) error {
	return db.update(func(tx *bbolt.Tx) error {
		w := newTxWriter(db, tx)
		for _, r := range reqs {
			if r.src != nil {
				r.raw, r.src = compressSmall(r.src), nil
			}
			r.now, r.ids = db.now(), db.idgen
			recs, err := w.write(r)
			if err != nil {
				return err
			}
			r.recs = recs
		}
		return w.flushDomains()
	})
}

// TestPanicInGroup: a delivery whose policy panics in the middle of a
// group fails alone; the transaction is rolled back and the group's
// others (those before it applied again to a new one) are stored once,
// beside what an earlier group committed.
func TestPanicInGroup(t *testing.T) {
	t.Parallel()
	g := newGate()
	var gated atomic.Bool
	db, _ := mustOpen(t, Options{
		Decide: func(r *store.Record) store.Decision {
			if r.Addr == "boom@x.example" {
				panic("policy bug")
			}
			return store.DefaultDecide(r)
		},
		beforeCommit: func(batch []*request) error {
			if gated.CompareAndSwap(false, true) {
				g.wait()
			}
			return nil
		}})
	gated.Store(true) // the first save passes
	save(t, db, bounce("logged@x.example", "5.1.1", parse.KindBounce, parse.ClassHard))
	gated.Store(false) // the next waits at the gate
	first := saveAsync(context.Background(), db, bounce("first@x.example", "5.1.1", parse.KindBounce, parse.ClassHard))
	<-g.entered
	var chans []chan error
	for i, addr := range []string{"a@x.example", "b@x.example", "boom@x.example", "c@x.example"} {
		chans = append(chans, saveAsync(context.Background(), db, bounce(addr, "5.4.3", parse.KindBounce, parse.ClassHard)))
		waitQueued(t, db, i+1)
	}
	close(g.release)
	tcheck(t, <-first, "first")
	for i, ch := range chans {
		err := <-ch
		if (i == 2) != (err != nil) {
			t.Fatalf("save %d: got %v", i, err)
		}
	}
	var addrs []string
	tcheck(t, db.ForEach(store.Filter{}, func(r store.Record) error {
		addrs = append(addrs, r.Addr)
		return nil
	}), "foreach")
	slices.Sort(addrs)
	if want := []string{"a@x.example", "b@x.example", "c@x.example", "first@x.example", "logged@x.example"}; !slices.Equal(addrs, want) {
		t.Fatalf("stored %v, want %v", addrs, want)
	}
	for _, a := range []string{"a@x.example", "b@x.example", "c@x.example"} {
		if _, err := db.Suppressed(a); err != nil {
			t.Errorf("%s not suppressed: %v", a, err)
		}
	}
	tcheck(t, db.Check(), "check")
}

// TestFailedSaveFreesWriteLock: a delivery whose group
// fails (here its commit) leaves no transaction open behind it: a write
// of its own (a suppression by hand) goes through at once, not after
// the next delivery.
func TestFailedSaveFreesWriteLock(t *testing.T) {
	t.Parallel()
	db, _ := mustOpen(t, Options{beforeCommit: func(batch []*request) error {
		for _, r := range batch {
			if r.d.Envelope.MailFrom == "poison@example.com" {
				return errors.New("poisoned")
			}
		}
		return nil
	}})
	d := bounce("u@x.example", "5.1.1", parse.KindBounce, parse.ClassHard)
	d.Envelope.MailFrom = "poison@example.com"
	if _, err := db.Save(context.Background(), d); err == nil {
		t.Fatal("the poisoned save succeeded")
	}
	done := make(chan error, 1)
	go func() {
		done <- db.AddSuppression(store.Suppression{Address: "hand@example.net", Reason: "by hand", Source: "test"})
	}()
	select {
	case err := <-done:
		tcheck(t, err, "adding a suppression after the failed save")
	case <-time.After(5 * time.Second):
		t.Fatal("a write after a failed save waited for the writer's transaction (still open)")
	}
	save(t, db, bounce("after@x.example", "5.1.1", parse.KindBounce, parse.ClassHard))
}
