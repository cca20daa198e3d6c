package push

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"github.com/bouncer/bouncer/store"
)

// Options configure a Worker. Zero fields take defaults.
type Options struct {
	Concurrency int           // requests in flight at once (default 4)
	Timeout     time.Duration // per request (default 10s)
	MinBackoff  time.Duration // wait after the first failure (default 5s)
	MaxBackoff  time.Duration // cap of the doubling wait (default 1h)
	MaxAttempts int           // failures before an event goes dead (default 20)
	Poll        time.Duration // outbox poll interval when idle (default 1s)
	Now         func() time.Time
}

func (o *Options) defaults() {
	if o.Concurrency <= 0 {
		o.Concurrency = 4
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 5 * time.Second
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(time.Hour, o.MinBackoff)
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 20
	}
	if o.Poll <= 0 {
		o.Poll = time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// TargetStats counts the outcomes of one target's attempts.
type TargetStats struct {
	Target    string
	Delivered int64
	Failed    int64 // failed attempts, retried or not
	Dead      int64 // events moved to the dead-letter list
}

// Outbox is the part of the store the worker uses. An engine shared by
// several hosts leases what OutboxDue returns, so each event is sent by
// one worker.
type Outbox interface {
	OutboxDue(now time.Time, limit, maxScan int, skip func(target string) bool) ([]store.OutboxEvent, error)
	OutboxUpdate(results []store.OutboxResult) (dead int, err error)
}

// Worker delivers the outbox of a store to its targets. It reads and
// updates the outbox in transactions of its own, so a slow or dead
// target never holds the store's writer.
type Worker struct {
	db      Outbox
	targets map[string]Target
	opts    Options
	log     *slog.Logger

	mu    sync.Mutex
	stats map[string]*TargetStats
}

// maxScan bounds the outbox entries one poll reads.
const maxScan = 10_000

// NewWorker returns a worker for db's outbox. Events for a target not in
// targets stay queued.
func NewWorker(db Outbox, targets map[string]Target, opts Options, logger *slog.Logger) *Worker {
	opts.defaults()
	w := &Worker{db: db, targets: targets, opts: opts, log: logger, stats: map[string]*TargetStats{}}
	for name := range targets {
		w.stats[name] = &TargetStats{Target: name}
	}
	return w
}

// Stats returns the counters per target, by name.
func (w *Worker) Stats() []TargetStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]TargetStats, 0, len(w.stats))
	for _, s := range w.stats {
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Target < out[j].Target })
	return out
}

// Run delivers until ctx is done. Store errors are logged and retried
// after a poll interval; it returns nil when ctx ends.
func (w *Worker) Run(ctx context.Context) error {
	for {
		n, err := w.Round(ctx)
		if err != nil && ctx.Err() == nil {
			w.log.Error("push round failed", "err", err)
		}
		if n > 0 && err == nil {
			continue // more may be due
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(w.opts.Poll):
		}
	}
}

// Round delivers the events due now, at most Concurrency at a time, and
// records the outcomes in one store transaction. It returns how many
// events it tried.
func (w *Worker) Round(ctx context.Context) (int, error) {
	skip := func(t string) bool { return w.targets[t] == nil }
	due, err := w.db.OutboxDue(w.opts.Now(), w.opts.Concurrency*8, maxScan, skip)
	if err != nil || len(due) == 0 {
		return 0, err
	}
	results := make([]store.OutboxResult, len(due))
	sem := make(chan struct{}, w.opts.Concurrency)
	var wg sync.WaitGroup
	for i, ev := range due {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			results[i] = w.attempt(ctx, ev)
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		// Shutting down: attempts cut short by ctx are not failures of
		// the target; leave those events as they were.
		kept := results[:0]
		for _, r := range results {
			if r.Err == nil || !errors.Is(r.Err, context.Canceled) {
				kept = append(kept, r)
			}
		}
		results = kept
	}
	if _, err := w.db.OutboxUpdate(results); err != nil {
		return len(due), err
	}
	return len(due), nil
}

// attempt delivers one event and decides what happens next.
func (w *Worker) attempt(ctx context.Context, ev store.OutboxEvent) store.OutboxResult {
	rctx, cancel := context.WithTimeout(ctx, w.opts.Timeout)
	err := w.targets[ev.Target].Deliver(rctx, ev)
	cancel()
	res := store.OutboxResult{Seq: ev.Seq, Err: err}
	w.mu.Lock()
	defer w.mu.Unlock()
	st := w.stats[ev.Target]
	if err == nil {
		st.Delivered++
		w.log.Debug("event pushed", "target", ev.Target, "event", ev.ID)
		return res
	}
	st.Failed++
	res.NextTry = w.opts.Now().Add(w.backoff(ev.Attempts))
	if IsPermanent(err) || ev.Attempts+1 >= w.opts.MaxAttempts {
		res.Dead = true
		st.Dead++
		w.log.Warn("event moved to dead letters", "target", ev.Target, "event", ev.ID,
			"attempts", ev.Attempts+1, "err", err)
	} else {
		w.log.Info("push failed, will retry", "target", ev.Target, "event", ev.ID,
			"attempts", ev.Attempts+1, "next", res.NextTry.Format(time.RFC3339), "err", err)
	}
	return res
}

// backoff is the wait after the (attempts+1)th failure: MinBackoff
// doubled per earlier failure, capped at MaxBackoff, minus up to 20%
// jitter so that events that failed together spread out.
func (w *Worker) backoff(attempts int) time.Duration {
	d := w.opts.MinBackoff
	for i := 0; i < attempts && d < w.opts.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, w.opts.MaxBackoff)
	return d - time.Duration(rand.Int64N(int64(d)/5+1))
}

// String describes the options, for the startup log line.
func (o Options) String() string {
	return fmt.Sprintf("concurrency=%d timeout=%s backoff=%s..%s max_attempts=%d",
		o.Concurrency, o.Timeout, o.MinBackoff, o.MaxBackoff, o.MaxAttempts)
}
