package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/bouncer/bouncer/server"
	"github.com/bouncer/bouncer/store"
)

// readiness answers the admin API's /readyz: whether a delivery arriving
// now could be committed. It is made of what serve can see without the
// store's help: the last Save's result, the free-disk floor, and a small
// synced write beside the database (a full or read-only file system
// fails it).
type readiness struct {
	dir     string
	minFree int64
	// ping, if set, asks the store itself (PostgreSQL) instead of the
	// disk beside a bbolt file.
	ping func(context.Context) error
	// failed, if set, says whether the store refuses deliveries after a
	// failed write (bbolt, until it has reopened its files).
	failed func() bool
	// lastFail and lastOK are the Unix nanoseconds of the last Save that
	// failed and the last that succeeded.
	lastFail, lastOK atomic.Int64
}

// saver wraps s so that readiness sees every Save's result.
func (r *readiness) saver(s server.Saver) server.Saver { return readySaver{s, r} }

type readySaver struct {
	s server.Saver
	r *readiness
}

func (rs readySaver) Save(ctx context.Context, d *store.Delivery) ([]store.Record, error) {
	recs, err := rs.s.Save(ctx, d)
	now := time.Now().UnixNano()
	if err != nil && ctx.Err() == nil {
		rs.r.lastFail.Store(now)
	} else if err == nil {
		rs.r.lastOK.Store(now)
	}
	return recs, err
}

// failWindow is how long a failed Save without a later success keeps the
// server not ready.
const failWindow = time.Minute

// check is the readiness check.
func (r *readiness) check(ctx context.Context) error {
	if f := r.lastFail.Load(); f > r.lastOK.Load() && time.Since(time.Unix(0, f)) < failWindow {
		return errors.New("the last delivery could not be saved")
	}
	if r.failed != nil && r.failed() {
		return errors.New("a write to the database failed: reopening it from disk")
	}
	if r.ping != nil {
		return r.ping(ctx)
	}
	if r.minFree > 0 {
		free, err := freeSpace(r.dir)
		if err == nil && free < r.minFree {
			return fmt.Errorf("free disk space %d is below store.min_free_bytes %d", free, r.minFree)
		}
	}
	return probeWrite(r.dir)
}

// probeWrite writes, syncs and removes a 4 KiB file in dir.
func probeWrite(dir string) error {
	f, err := os.CreateTemp(dir, ".bouncer-ready-*")
	if err != nil {
		return fmt.Errorf("creating probe file: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if _, err := f.Write(make([]byte, 4096)); err != nil {
		return fmt.Errorf("writing probe file: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("syncing probe file: %w", err)
	}
	return nil
}
