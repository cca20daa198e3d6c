package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bouncer/bouncer/parse"
	"github.com/bouncer/bouncer/store"
	"github.com/bouncer/bouncer/store/bolt"
)

// seedHelo marks the seeded records (their envelope's HELO).
const seedHelo = "soak-seed"

// seed stores n copies (and returns the records they made) of the samples in a new database at path before
// bouncer starts, dated evenly from `from` over span, so that the server's
// prune deletes their raw messages a few at a time all through the run
// (raw_retention cannot be shorter than an hour, so messages the soak
// sends itself are pruned only in runs longer than that).
func seed(ctx context.Context, path string, samples []*sample, n int, from time.Time, span time.Duration) (int, error) {
	var clock atomic.Int64
	clock.Store(from.UnixNano())
	db, err := bolt.Open(path, bolt.Options{Now: func() time.Time { return time.Unix(0, clock.Load()) }})
	if err != nil {
		return 0, fmt.Errorf("seeding: %w", err)
	}
	var records atomic.Int64
	const batch = 64
	var firstErr error
	for start := 0; start < n && firstErr == nil; start += batch {
		at := from.Add(time.Duration(float64(span) * float64(start) / float64(n)))
		clock.Store(at.UnixNano())
		var wg sync.WaitGroup
		var mu sync.Mutex
		for i := start; i < min(start+batch, n); i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s := samples[i%len(samples)]
				raw, _ := s.message(uint64(i), 1)
				raw = bytes.ReplaceAll(raw, []byte(".soak.test"), []byte(".seed.soak.test"))
				d := &store.Delivery{Received: at, Raw: raw,
					Envelope: store.Envelope{RcptTo: []string{"bounces@localhost"}, Helo: seedHelo}}
				rep, err := parse.Message(bytes.NewReader(raw), parse.DefaultLimits())
				switch {
				case err == nil || errors.Is(err, parse.ErrNotBounce):
					d.Report = rep
				default:
					d.ParseError = err.Error()
				}
				recs, err := db.Save(ctx, d)
				if err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
				}
				records.Add(int64(len(recs)))
			}()
		}
		wg.Wait()
	}
	if err := db.Close(); err != nil && firstErr == nil {
		firstErr = err
	}
	if firstErr != nil {
		return 0, fmt.Errorf("seeding: %w", firstErr)
	}
	return int(records.Load()), nil
}
