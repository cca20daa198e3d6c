package postgres

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/bouncer/bouncer/store"
	"github.com/bouncer/bouncer/store/faulttest"
	"github.com/bouncer/bouncer/store/postgres/pgtest"
)

// TestFaultSuite runs the engines' fault-injection suite on the private
// server: killed mid-commit and started again, killed backends (crash
// recovery), a restart, and connections cut while deliveries commit. The
// store is never reopened by the caller.
func TestFaultSuite(t *testing.T) {
	if cluster == nil {
		t.Skip(pgtest.SkipMessage)
	}
	t.Cleanup(func() {
		if !cluster.Running() {
			tcheck(t, cluster.Start(), "starting postgres after the suite")
		}
	})
	opts := func(url string) Options { return Options{URL: url, Timeout: 10 * time.Second} }
	reopen := func(t *testing.T, s store.Store) store.Store {
		url := s.(*DB).opts.URL
		s.Close()
		return mustOpen(t, opts(url))
	}
	// server opens a store whose fault acts on the whole server.
	server := func(name string, persistent bool, start func(*testing.T, string), stop func(*testing.T)) faulttest.Fault {
		return faulttest.Fault{Name: name, Persistent: persistent, Open: func(t *testing.T) (store.Store, faulttest.Injector) {
			url := cluster.Database(t)
			db := mustOpen(t, opts(url))
			return db, faulttest.Injector{
				Start:  func(t *testing.T) { start(t, url) },
				Stop:   func(t *testing.T) store.Store { stop(t); return db },
				Reopen: reopen,
			}
		}}
	}
	startAgain := func(t *testing.T) { tcheck(t, cluster.Start(), "starting postgres") }
	faulttest.Run(t, []faulttest.Fault{
		server("server killed mid-commit", true,
			func(t *testing.T, _ string) { tcheck(t, cluster.Kill(), "killing postgres") }, startAgain),
		server("server restarted", true,
			func(t *testing.T, _ string) { tcheck(t, cluster.Stop(), "stopping postgres") }, startAgain),
		server("backends killed mid-commit", false,
			func(t *testing.T, url string) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				n, err := cluster.KillBackends(ctx, url)
				tcheck(t, err, "killing backends")
				if n == 0 {
					t.Fatal("no backend to kill: the store has no session")
				}
			}, func(*testing.T) {}),
		cutConnections(),
	})
}

// cutConnections terminates the store's sessions (pg_terminate_backend)
// again and again until the fault stops.
func cutConnections() faulttest.Fault {
	return faulttest.Fault{Name: "connections cut", Open: func(t *testing.T) (store.Store, faulttest.Injector) {
		url := cluster.Database(t)
		db := mustOpen(t, Options{URL: url, Timeout: 10 * time.Second})
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var cut int
		return db, faulttest.Injector{
			Start: func(t *testing.T) {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
						n, _ := cluster.Terminate(ctx, url)
						cancel()
						cut += n
						time.Sleep(2 * time.Millisecond)
					}
				}()
			},
			Stop: func(t *testing.T) store.Store {
				close(stop)
				wg.Wait()
				if cut == 0 {
					t.Error("no session was cut")
				}
				t.Logf("%d sessions cut", cut)
				return db
			},
			Reopen: func(t *testing.T, s store.Store) store.Store {
				s.Close()
				return mustOpen(t, Options{URL: url, Timeout: 10 * time.Second})
			},
		}
	}}
}
