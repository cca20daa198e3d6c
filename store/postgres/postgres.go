// Package postgres keeps bouncer's store in a PostgreSQL database, so that
// several MX hosts share one suppression list, one outbox and one storm
// guard. It meets store.Store with the semantics of store/bolt (whose doc
// comments are the reference for each method).
//
// # Schema
//
// Every table lives in a schema of its own (Options.Schema, "bouncer" by
// default), so bouncer can share listmonk's database without touching
// listmonk's tables. The tables are created by versioned SQL migrations
// embedded in the binary (migrations/NNNN_name.sql, described in
// 0001_init.sql); Open applies the missing ones under a session advisory
// lock, so two hosts starting together do not race, and records each in
// schema_version.
//
// # Writes
//
// Save queues the delivery to one writer goroutine per DB, which takes
// what is queued (up to Options.MaxBatch) into one READ COMMITTED
// transaction (group commit): it first takes the writer lock,
// pg_advisory_xact_lock, then for each delivery runs store.Rules.Plan
// over SELECTs in that transaction (state.go) and applies the Changes
// with INSERT and UPDATE; Save returns once COMMIT has returned. If a
// delivery of a group fails, the group is rolled back and each of its
// deliveries retried alone, so one bad delivery fails only its caller.
//
// The writer lock serialises the writers of every host on the schema.
// The rules read and write a few hot rows (a big provider's domain
// aggregate and storm counters change with nearly every delivery), so
// SERIALIZABLE would abort most concurrent transactions and retry them;
// one lock and group commit give the same order at the cost of one lock
// wait per group, and make each rule read see every committed change
// (READ COMMITTED takes a new snapshot per statement, after the lock).
// Every other transaction that writes what the rules read (suppressions,
// holds, targets, MX health, pruning of dedupe keys and soft counters)
// takes the same lock. Record IDs come from the idgen row, read and
// advanced under the lock: 8 bytes of Unix nanoseconds (never going
// back) and a 4-byte sequence, unique and in commit order across hosts.
//
// # Outbox leases
//
// OutboxDue leases what it returns: it picks due events with
// SELECT ... FOR UPDATE SKIP LOCKED, skipping events whose lease_until
// is after now, and sets lease_until to now + Options.Lease in the same
// transaction, so two hosts never get the same event, and an event
// leased by a host that died is due again when the lease ends.
// OutboxUpdate clears the lease with the outcome.
//
// # Faults
//
// When the server cannot be reached (refused, reset, shut down, or a
// transaction not finished within Options.Timeout) every method returns
// an error wrapping store.ErrUnavailable; pgxpool drops broken connections
// and dials again on the next use, so intake resumes by itself.
package postgres

import (
	"context"
	"embed"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"math"
	"net"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bouncer/bouncer/store"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// ErrSchema is returned by Open when the database holds a schema version
// newer than this program knows.
var ErrSchema = errors.New("unsupported database schema version")

// Options configure Open. Zero fields take defaults.
type Options struct {
	// URL is the connection string (postgres://... or key=value).
	URL string
	// Schema is the PostgreSQL schema holding bouncer's tables (default
	// "bouncer"): lower-case letters, digits and '_'.
	Schema string
	// Rules decide what a delivery does.
	Rules store.Rules
	// Now is the clock (time.Now if nil).
	Now func() time.Time
	// Password, if set, replaces the connection string's password (so
	// that it can live in a file of its own).
	Password string
	// OnStorm, if set, is called with each storm a delivery started, once
	// its transaction has committed (from the writer goroutine).
	OnStorm func(store.Storm)
	// RawRetention is how long raw messages are kept (0: forever).
	RawRetention time.Duration
	// MaxBatch caps the deliveries committed in one transaction (default
	// 64); 1 gives one transaction per delivery.
	MaxBatch int
	// QueueLen is how many deliveries may wait for the writer (default 1024).
	QueueLen int
	// MaxConns caps the pool's connections (default pgxpool's: 4 or the
	// number of CPUs if greater).
	MaxConns int32
	// Timeout bounds one write transaction and one query (default 30s);
	// a server that does not answer in time counts as unavailable.
	Timeout time.Duration
	// Lease is how long an event returned by OutboxDue is kept from other
	// hosts (default 5 minutes): longer than one push attempt.
	Lease time.Duration
}

// DB is an open PostgreSQL store.
type DB struct {
	pool   *pgxpool.Pool
	opts   Options
	now    func() time.Time
	rules  store.Rules
	lockID int64 // key of the writer lock: pg_advisory_xact_lock

	queue *store.Queue[*request] // to the writer
	done  chan struct{}
}

var schemaName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// Open connects to the server, applies the missing migrations and starts
// the writer. The pool connects lazily after that, so a server that goes
// away later makes Saves fail with ErrUnavailable until it is back.
func Open(ctx context.Context, opts Options) (*DB, error) {
	if opts.Schema == "" {
		opts.Schema = "bouncer"
	}
	if !schemaName.MatchString(opts.Schema) {
		return nil, fmt.Errorf("opening postgres store: %w: schema %q", store.ErrInvalid, store.Truncate(opts.Schema, 80))
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 64
	}
	if opts.QueueLen <= 0 {
		opts.QueueLen = 1024
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	if opts.Lease <= 0 {
		opts.Lease = 5 * time.Minute
	}
	cfg, err := pgxpool.ParseConfig(opts.URL)
	if err != nil {
		return nil, fmt.Errorf("opening postgres store: parsing connection string: %w", err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = opts.Schema
	if opts.Password != "" {
		cfg.ConnConfig.Password = opts.Password
	}
	if opts.MaxConns > 0 {
		cfg.MaxConns = opts.MaxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("opening postgres store: %w", err)
	}
	db := &DB{pool: pool, opts: opts, now: opts.Now, rules: opts.Rules, lockID: lockKey("writer", opts.Schema)}
	if db.now == nil {
		db.now = time.Now
	}
	if err := db.migrate(ctx); err != nil {
		pool.Close()
		return nil, wrapErr("opening postgres store", err)
	}
	db.queue = store.NewQueue[*request](opts.QueueLen)
	db.done = make(chan struct{})
	go db.writer()
	return db, nil
}

// lockKey is the advisory lock key of what in schema: every bouncer
// install (schema) in a database has its own locks.
func lockKey(what, schema string) int64 {
	h := fnv.New64a()
	io.WriteString(h, "bouncer."+what+"."+schema)
	return int64(h.Sum64())
}

// migration is one embedded SQL file.
type migration struct {
	version int
	name    string
	sql     string
}

// migrations lists the embedded migrations in version order.
func migrations() ([]migration, error) {
	ents, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, err
	}
	var out []migration
	for _, e := range ents {
		num, _, ok := strings.Cut(e.Name(), "_")
		n, err := strconv.Atoi(num)
		if !ok || err != nil || !strings.HasSuffix(e.Name(), ".sql") {
			return nil, fmt.Errorf("migration %s: want NNNN_name.sql", e.Name())
		}
		b, err := migrationFiles.ReadFile("migrations/" + e.Name())
		if err != nil {
			return nil, err
		}
		out = append(out, migration{n, e.Name(), string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	for i, m := range out {
		if m.version != i+1 {
			return nil, fmt.Errorf("migration %s: want version %d", m.name, i+1)
		}
	}
	return out, nil
}

// SchemaVersion is the newest schema version this code writes.
func SchemaVersion() int {
	ms, _ := migrations()
	return len(ms)
}

// migrate applies the missing migrations, each in its own transaction,
// holding a session advisory lock so that one host migrates while the
// others wait and then find nothing to do.
func (db *DB) migrate(ctx context.Context) error {
	ms, err := migrations()
	if err != nil {
		return err
	}
	conn, err := db.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	// Fast path, one round trip: a schema that is up to date needs no
	// lock and no DDL (every CLI command opens the store; bouncer query
	// on PostgreSQL spent most of its time here). A missing schema or
	// table is an error here and goes the slow way.
	var have int
	if err := conn.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM schema_version").Scan(&have); err == nil {
		if have > len(ms) {
			return fmt.Errorf("%w: database has %d, this program knows up to %d", ErrSchema, have, len(ms))
		}
		if have == len(ms) {
			return nil
		}
	} else if unavailable(err) || ctx.Err() != nil {
		return err
	}
	key := lockKey("migrate", db.opts.Schema)
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", key); err != nil {
		return fmt.Errorf("taking migration lock: %w", err)
	}
	defer conn.Exec(context.Background(), "SELECT pg_advisory_unlock($1)", key)
	schema := pgx.Identifier{db.opts.Schema}.Sanitize()
	if _, err := conn.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+schema); err != nil {
		return fmt.Errorf("creating schema: %w", err)
	}
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
		version int PRIMARY KEY, name text NOT NULL, applied timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("creating schema_version: %w", err)
	}
	var cur int
	if err := conn.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM schema_version").Scan(&cur); err != nil {
		return fmt.Errorf("reading schema version: %w", err)
	}
	if cur > len(ms) {
		return fmt.Errorf("%w: database has %d, this program knows up to %d", ErrSchema, cur, len(ms))
	}
	for _, m := range ms[cur:] {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO schema_version (version, name) VALUES ($1, $2)", m.version, m.name)
			return err
		})
		if err != nil {
			return fmt.Errorf("applying migration %s: %w", m.name, err)
		}
	}
	return nil
}

// Ping checks that the server answers.
func (db *DB) Ping(ctx context.Context) error {
	return wrapErr("pinging postgres", db.pool.Ping(ctx))
}

// Close waits for queued Saves, stops the writer and closes the pool.
func (db *DB) Close() error {
	if !db.queue.Close() {
		return nil
	}
	<-db.done
	db.pool.Close()
	return nil
}

// ctx returns a context bounded by Options.Timeout.
func (db *DB) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), db.opts.Timeout)
}

// update runs fn in a transaction holding the writer lock.
func (db *DB) update(what string, fn func(ctx context.Context, tx pgx.Tx) error) error {
	ctx, cancel := db.ctx()
	defer cancel()
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", db.lockID); err != nil {
			return err
		}
		return fn(ctx, tx)
	})
	return wrapErr(what, err)
}

// wrapErr prefixes err with what, and marks it store.ErrUnavailable when
// it says the server cannot be reached. Errors of package store (such as
// ErrNotFound) are returned as they are.
func wrapErr(what string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrExists) ||
		errors.Is(err, store.ErrInvalid) || errors.Is(err, store.ErrClosed) || errors.Is(err, store.ErrUnavailable):
		return err
	case unavailable(err):
		return fmt.Errorf("%s: %w: %w", what, store.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// unavailable reports whether err says the server is down, restarting,
// unreachable or not answering.
func unavailable(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		// Class 08: connection exception; 57P01-03: shutdown, crash,
		// cannot connect now; 53300: too many connections.
		return strings.HasPrefix(pe.Code, "08") || pe.Code == "57P01" || pe.Code == "57P02" ||
			pe.Code == "57P03" || pe.Code == "53300"
	}
	var ce *pgconn.ConnectError
	var ne net.Error
	return errors.As(err, &ce) || errors.As(err, &ne) || pgconn.Timeout(err) || pgconn.SafeToRetry(err) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "conn closed")
}

// keyLen is the length of a record or message ID in bytes.
const keyLen = 12

// idGen hands out increasing IDs from the idgen row.
type idGen struct {
	nanos int64
	seq   int64
}

// next returns an ID not before now and after every ID handed out.
func (g *idGen) next(now time.Time) []byte {
	if n := now.UnixNano(); n > g.nanos {
		g.nanos, g.seq = n, 0
	}
	k := make([]byte, keyLen)
	binary.BigEndian.PutUint64(k, uint64(g.nanos))
	binary.BigEndian.PutUint32(k[8:], uint32(g.seq))
	if g.seq >= math.MaxUint32 {
		g.nanos, g.seq = g.nanos+1, 0
	} else {
		g.seq++
	}
	return k
}

// timeKey is the smallest ID at time t.
func timeKey(t time.Time) []byte {
	k := make([]byte, keyLen)
	binary.BigEndian.PutUint64(k, uint64(max(t.UnixNano(), 0)))
	return k
}

// keyTime is the time of an ID.
func keyTime(k []byte) time.Time {
	if len(k) < 8 {
		return time.Time{}
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(k)))
}

func encodeID(k []byte) string { return hex.EncodeToString(k) }

func decodeID(id string) ([]byte, error) {
	k, err := hex.DecodeString(id)
	if err != nil || len(k) != keyLen {
		return nil, fmt.Errorf("%w: id %q: want %d hex digits", store.ErrInvalid, store.Truncate(id, 40), 2*keyLen)
	}
	return k, nil
}

// maxIndexValue caps a value used in an indexed column.
const maxIndexValue = 255

// ix is s as an indexed column holds it: cut to maxIndexValue bytes.
func ix(s string) []byte {
	if len(s) > maxIndexValue {
		s = s[:maxIndexValue]
	}
	return []byte(s)
}

// nanos is t in Unix nanoseconds, with the zero time before every other.
func nanos(t time.Time) int64 {
	if t.IsZero() {
		return math.MinInt64
	}
	return t.UnixNano()
}

// The PostgreSQL engine meets the store's contract.
var _ store.Store = (*DB)(nil)
