package postgres

import (
	"context"
	"time"

	"github.com/bouncer/bouncer/store"
	"github.com/jackc/pgx/v5"
)

// queueDaily queues the additions to the daily counters.
func queueDaily(b *pgx.Batch, counts []store.DayCount) {
	for _, c := range counts {
		b.Queue(`INSERT INTO daily (day, key, n) VALUES ($1, $2, $3)
			ON CONFLICT (day, key) DO UPDATE SET n = daily.n + excluded.n`, c.Day, c.Key, int64(c.N))
	}
}

// Daily implements store.Store.
func (db *DB) Daily(from, to time.Time) ([]store.Day, error) {
	ctx, cancel := db.ctx()
	defer cancel()
	rows, err := db.pool.Query(ctx, "SELECT day, key, n FROM daily WHERE day >= $1 AND day <= $2 ORDER BY day, key",
		store.DayOf(from), store.DayOf(to))
	if err != nil {
		return nil, wrapErr("reading daily counters", err)
	}
	var out []store.Day
	var day, key string
	var n int64
	_, err = pgx.ForEachRow(rows, []any{&day, &key, &n}, func() error {
		if len(out) == 0 || out[len(out)-1].Day != day {
			out = append(out, store.Day{Day: day, Counts: map[string]int{}})
		}
		out[len(out)-1].Counts[key] = int(n)
		return nil
	})
	if err != nil {
		return nil, wrapErr("reading daily counters", err)
	}
	return out, nil
}

// ExpireStorms ends the storms that have lasted StormOptions.HoldFor at
// now, dropping their holds, and returns how many it ended.
func (db *DB) ExpireStorms(ctx context.Context, now time.Time) (int, error) {
	storms, err := db.Storms()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, st := range storms {
		if !db.rules.Storm.Expired(&st, now) {
			continue
		}
		if _, err := db.endStorm(st.Domain, false); err != nil {
			return n, err
		}
		n++
	}
	return n, ctx.Err()
}
