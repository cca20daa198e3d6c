// Package faulttest is the fault-injection suite of the store engines:
// the same scenarios, run by store/bolt (a disk whose writes and syncs
// fail, a process stopped mid-commit) and store/postgres (the server
// killed mid-commit and started again, restarted, connections cut), on
// real storage, with reports decoded by the real parser.
//
// Each scenario saves from several goroutines, makes the storage fail
// while they do, lets it work again, and checks what every engine
// promises (250 is a promise):
//
//   - every Save that returned nil is readable after recovery, exactly
//     once, and after the store is opened again;
//   - every Save that returned an error is absent or present once: never
//     stored twice, never counted twice in the domain aggregates;
//   - while a persistent fault lasts, a Save fails (the server answers
//     451), it never succeeds without being durable;
//   - the store accepts again once the storage works, without the caller
//     reopening it (Fault.Stop may stand for a restarted process: then it
//     returns the store opened again).
package faulttest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/bouncer/bouncer/store"
	"github.com/bouncer/bouncer/store/storetest"
)

// Fault is one way an engine's storage fails.
type Fault struct {
	Name string
	// Open opens a store on new, empty storage and returns it with the
	// fault bound to it; the engine closes it at cleanup.
	Open func(t *testing.T) (store.Store, Injector)
	// Persistent says every Save fails from the first failure on until
	// Stop (a failing disk, a stopped server); a transient fault (a cut
	// connection) fails only the Saves it hits.
	Persistent bool
}

// Injector starts and ends a fault on one store.
type Injector struct {
	// Start makes the storage fail; it returns at once.
	Start func(t *testing.T)
	// Stop makes it work again and returns the store to use from then
	// on: the same one, or, for a fault that stands for the process
	// dying, the store opened again.
	Stop func(t *testing.T) store.Store
	// Reopen, if set, closes the store and opens it again on the same
	// storage (a restart after recovery).
	Reopen func(t *testing.T, s store.Store) store.Store
}

// Save timeouts and bounds of the waits, generous for a loaded machine:
// none of them is a measurement.
const (
	saveTimeout  = 20 * time.Second
	recoverAfter = 60 * time.Second
	workers      = 4
)

// Run runs every scenario for each fault, one after the other (a fault
// may stop a server other tests share).
func Run(t *testing.T, faults []Fault) {
	for _, f := range faults {
		t.Run(f.Name, func(t *testing.T) { run(t, f) })
	}
}

// outcome is what one Save returned.
type outcome struct {
	addr string
	err  error
}

// savers saves from several goroutines until stopped.
type savers struct {
	mu    sync.Mutex
	s     store.Store
	out   []outcome
	ok    int
	fails int
	stop  chan struct{}
	wg    sync.WaitGroup
	n     int // Saves attempted
	cond  *sync.Cond
}

func startSavers(t *testing.T, s store.Store) *savers {
	sv := &savers{s: s, stop: make(chan struct{})}
	sv.cond = sync.NewCond(&sv.mu)
	for w := range workers {
		sv.wg.Add(1)
		go func() {
			defer sv.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-sv.stop:
					return
				default:
				}
				addr := fmt.Sprintf("w%d-%d@d%d.example", w, i, i%3)
				d := storetest.Delivery(t, storetest.DSN(addr, "5.1.1", arrival(w*100000+i)))
				sv.mu.Lock()
				st := sv.s
				sv.mu.Unlock()
				ctx, cancel := context.WithTimeout(context.Background(), saveTimeout)
				_, err := st.Save(ctx, d)
				cancel()
				sv.mu.Lock()
				sv.out = append(sv.out, outcome{addr, err})
				sv.n++
				if err == nil {
					sv.ok++
				} else {
					sv.fails++
				}
				sv.cond.Broadcast()
				sv.mu.Unlock()
			}
		}()
	}
	return sv
}

// waitFor waits until cond holds of sv (under its lock), or fails t
// after recoverAfter.
func (sv *savers) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(recoverAfter)
	timer := time.AfterFunc(recoverAfter, func() { sv.mu.Lock(); sv.cond.Broadcast(); sv.mu.Unlock() })
	defer timer.Stop()
	sv.mu.Lock()
	defer sv.mu.Unlock()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s (%d saves: %d ok, %d failed)", recoverAfter, what, sv.n, sv.ok, sv.fails)
		}
		sv.cond.Wait()
	}
}

func (sv *savers) halt() []outcome {
	close(sv.stop)
	sv.wg.Wait()
	return sv.out
}

// arrival is a distinct Arrival-Date for report n.
func arrival(n int) string {
	return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(n) * time.Second).Format(time.RFC1123Z)
}

func run(t *testing.T, f Fault) {
	s, inj := f.Open(t)
	before := []outcome{}
	for i := range 5 {
		addr := fmt.Sprintf("before%d@d0.example", i)
		_, err := s.Save(context.Background(), storetest.Delivery(t, storetest.DSN(addr, "5.1.1", arrival(-1-i))))
		if err != nil {
			t.Fatalf("save before the fault: %v", err)
		}
		before = append(before, outcome{addr, nil})
	}
	sv := startSavers(t, s)
	defer func() {
		select {
		case <-sv.stop:
		default:
			sv.halt()
		}
	}()
	sv.waitFor(t, "saves before the fault", func() bool { return sv.ok >= 2*workers })
	inj.Start(t)
	sv.mu.Lock()
	started := sv.n
	sv.mu.Unlock()
	if f.Persistent {
		sv.waitFor(t, "a save to fail", func() bool { return sv.fails > 0 })
		ctx, cancel := context.WithTimeout(context.Background(), saveTimeout)
		_, err := s.Save(ctx, storetest.Delivery(t, storetest.DSN("during@d0.example", "5.1.1", arrival(-100))))
		cancel()
		if err == nil {
			t.Fatal("a save succeeded while the storage was failing")
		}
		before = append(before, outcome{"during@d0.example", err})
	}
	// Let the fault meet a few saves of every worker.
	sv.waitFor(t, "saves during the fault", func() bool { return sv.n >= started+3*workers })
	s2 := inj.Stop(t)
	sv.mu.Lock()
	sv.s = s2
	stopped := sv.ok
	sv.mu.Unlock()
	sv.waitFor(t, "a save to succeed after the fault", func() bool { return sv.ok >= stopped+workers })
	outs := append(before, sv.halt()...)
	check(t, s2, outs, "after recovery")
	if inj.Reopen != nil {
		check(t, inj.Reopen(t, s2), outs, "opened again")
	}
}

// check verifies the invariant on s.
func check(t *testing.T, s store.Store, outs []outcome, when string) {
	t.Helper()
	count := map[string]int{}
	records := 0
	err := s.ForEach(store.Filter{}, func(r store.Record) error {
		count[r.Addr]++
		records++
		if r.Duplicate {
			t.Errorf("%s: record %s of %s is a duplicate: a delivery was stored twice", when, r.ID, r.Addr)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s: reading the records: %v", when, err)
	}
	okN, failN, storedFailed := 0, 0, 0
	for _, o := range outs {
		n := count[o.addr]
		switch {
		case o.err == nil && n != 1:
			t.Errorf("%s: %s was acknowledged and has %d records, want 1", when, o.addr, n)
		case o.err != nil && n > 1:
			t.Errorf("%s: %s failed (%v) and has %d records, want at most 1", when, o.addr, o.err, n)
		}
		if o.err == nil {
			okN++
		} else {
			failN++
			storedFailed += n
		}
	}
	doms, err := s.Domains("")
	if err != nil {
		t.Fatalf("%s: domains: %v", when, err)
	}
	total := 0
	for _, d := range doms {
		total += d.Total
	}
	if total != records {
		t.Errorf("%s: the domain aggregates count %d records, the store holds %d", when, total, records)
	}
	t.Logf("%s: %d saves acknowledged, %d failed (%d of those stored anyway); %d records", when, okN, failN, storedFailed, records)
}
