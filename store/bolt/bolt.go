// Package store keeps bounce records durably in a bbolt file: the raw
// message, the envelope, the decoded report (one Record per recipient),
// indexes for the queries of `bouncer query` and `bouncer domains`, and the
// suppression list.
//
// # Bucket layout
//
// Keys named K below are record keys: 12 bytes, an 8-byte big-endian
// Unix-nanosecond time followed by a 4-byte big-endian sequence number, so
// they sort in arrival order. Record.ID and Record.MsgID are K in lower-case
// hex (24 characters). lp(s) is s cut to 255 bytes, preceded by one length
// byte, so that a prefix scan for one value never matches another.
//
//	meta        "version" → schema version (decimal ASCII)
//	raw         K(msg) part → part of codec byte (0 stored, 1 DEFLATE,
//	            RFC 1951, 2 zstd with dict/raw-1.txt, 3 CRC-32C and S2
//	            with the same dictionary; compress.go) + raw message: part is a 4-byte big-endian
//	            number from 0, each part at most a quarter page (raw.go);
//	            schema 4 wrote the value whole under K(msg)
//	records     K → Record as JSON (plain, or behind codec byte 1, zstd,
//	            or 2, CRC-32C and S2; compress.go), without "id" (K) and "domain" (the
//	            address's) and without empty envelope fields; the second
//	            and later records of a message leave out the message's
//	            fields (received, envelope, per-message DSN fields,
//	            original, feedback, parse_error) and name the first record
//	            in "base"
//	idx_rcpt    lp(recipient) K → ""
//	idx_domain  lp(domain) K → ""
//	idx_status  lp(status) K → ""
//	idx_dstatus lp(domain) lp(status) K → ""
//	suppress    address → Suppression as JSON
//	sup_domain  lp(domain) address → ""
//	soft        address → soft counter as JSON (recent soft event times)
//	domains     domain → DomainStat, binary (encodeDomainStat in
//	            domains.go: codec byte 1, varint fields); schema 3 wrote
//	            JSON, which is still read
//	dom_status  lp(status) domain → ""
//	dom_time    last seen (8-byte big-endian Unix nanoseconds) domain → "":
//	            one key per aggregate, moved when its LastSeen changes, so
//	            RecentDomains reads the most recently bounced domains first
//	seen        dedupe key (16 bytes) → K of the first record with it
//	meta "raw_pruned_before" → Unix nanoseconds (decimal) before which
//	            PruneRaw deleted raw messages
//	meta "wal_seq" → number (decimal) of the last frame of an old
//	            version's write-ahead log committed to the file (wal.go)
//
// Buckets created on first use, described in the file that owns them:
//
//	storm_count  kind, lp(key), lp(status) → recent addresses (storm.go)
//	storm_flag   domain → Storm as JSON (storm.go)
//	held         lp(domain) address → Hold as JSON (storm.go)
//	mx_health    domain → last MX check and recovery (mxhealth.go)
//	outbox_targets, outbox, outbox_dead  push events (outbox.go)
//
// The primary key is time ordered, so the records bucket is the time
// index. Index keys cut over-long values (an attacker chooses addresses and
// status strings), so a query through an index always checks the record
// itself before returning it.
//
// All writes of one message (raw, records, indexes, counters, suppressions,
// domain aggregates) happen in one transaction. Saves are queued to one
// writer goroutine that applies everything queued to a transaction
// (group commit), commits it (bbolt syncs the file), and only then lets
// Save return; readers see every Save that returned. Older versions
// could instead acknowledge from a write-ahead log PATH-wal: Open still
// applies such a log and removes it (wal.go).
// When a group can't be committed, each delivery in it is retried
// alone, so one bad delivery fails only its own caller; but when a write
// or sync of the file fails (EIO, ENOSPC), nothing is retried: every
// Save fails (ErrFailed) until the writer has closed the file and opened
// it again from disk (reopen.go). The writer
// compresses raw messages of up to 8 KB (S2 with a dictionary); Save
// compresses larger ones (zstd with the same dictionary) in the caller's
// goroutine with one of at most Options.Compressors pooled encoders (about
// 1 MB each), waiting for one under its context, so memory for
// compression does not grow with the number of sessions.
//
// `bouncer domains` reads RecentDomains: the dom_time index walked
// backwards gives the most recently bounced domains first, and only the
// aggregates returned are decoded. Domains lists them all, in domain
// order, for exports and the MX re-check.
//
// # Duplicate reports
//
// The same report delivered again (a retry after a lost 250, a copy sent
// to two MX hosts, a regenerated DSN) is stored, raw message included, but
// marked Duplicate with Verdict "duplicate" and DuplicateOf the first
// record; it never reaches the policy, the soft counters, the storm guard,
// the domain aggregates or the outbox. Each record has one dedupe key,
// SHA-256 cut to 16 bytes, of:
//
//   - when the report names the attempt it is about (Arrival-Date,
//     Last-Attempt-Date, Final-Log-ID, Original-Envelope-Id, the returned
//     Message-ID, or an ARF Arrival-Date): the envelope's VERP address,
//     the per-message DSN fields (RFC 3464 §2.2), the recipient's fields
//     (§2.3: Final- and Original-Recipient, Action, the literal Status,
//     Remote-MTA, Diagnostic-Code, Last-Attempt-Date, Will-Retry-Until,
//     Final-Log-ID), the returned Message-ID and Date and the RFC 5965
//     fields. Fields the decoder derives (kind, class, reason) are left
//     out, so a decoder upgrade between two copies changes nothing;
//   - otherwise: the message with its top-level trace and transit header
//     fields (Received, Return-Path, Delivered-To, Authentication-Results,
//     ARC-*, DKIM-Signature, ...) left out and CRLF read as LF, the VERP
//     address, the recipient's addresses and its position in the report. Two text bounces about two sends
//     that say exactly the same thing are thus not merged unless the
//     messages are identical below their trace fields.
//
// The seen bucket maps a key to the first record's key, whose time prefix
// says when it was seen; keys older than Options.DedupeWindow (30 days by
// default) no longer match and PruneSeen deletes them.
//
// A record whose envelope carries a VERP address while its report's
// Final-Recipient and Original-Recipient both name another mailbox
// (compared without case and without a "+tag") is marked Mismatch with
// Verdict "mismatch" and is only recorded, like a duplicate: a forged or
// misrouted report must not suppress the VERP address. The campaign of a
// signed token is not checked against the returned message's
// X-Listmonk-Campaign: the two ids come from different id spaces (a short
// token id, listmonk's UUID), so a difference contradicts nothing.
//
// # Retention
//
// Records, indexes, suppressions and domain aggregates are kept. Prune
// (run periodically by `bouncer serve`) deletes raw messages older than
// Options.RawRetention (never if 0) in transactions of 1000 keys, so that
// Saves wait at most for one of them; the meta key raw_pruned_before then
// lets Raw answer ErrRawPruned instead of a bare ErrNotFound. It also
// deletes dedupe keys older than the dedupe window and soft counters
// whose events have all decayed. bbolt reuses the freed pages; the file
// does not shrink (`bbolt compact` does that offline).
//
// Files are created with 16 KB pages (compressed raw messages of 1-2 KB
// fill them far better than 4 KB pages). Query helpers read in chunks of
// short read transactions, so exports never hold the file open against the
// writer.
package bolt

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bouncer/bouncer/store"

	bbolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// SchemaVersion is the version of the bucket layout written by this code.
// Version 2 stored records without their ID and domain (see diskRecord)
// and added the seen bucket; version 3 stores the message's fields only
// in the first record of a message; version 4 adds the dom_time index
// (Open upgrades a version 3 file by filling it); version 5 stores raw
// messages in parts (raw.go), and reads the whole values of version 4,
// so Open upgrades a version 4 file by writing the version only.
const SchemaVersion = 5

var (
	// ErrLocked is returned by Open when another process holds the file.
	ErrLocked = errors.New("database is locked by another process")
	// ErrSchema is returned by Open when the file's schema version is not
	// SchemaVersion.
	ErrSchema = errors.New("unsupported database schema version")
	// ErrUnapplied is returned by a read-only Open when the write-ahead
	// log of an older version holds acknowledged deliveries that the
	// file lacks (its writer stopped before committing them) and they
	// could not be applied.
	ErrUnapplied = errors.New("database log not applied")
)

var (
	bucketMeta       = []byte("meta")
	bucketRaw        = []byte("raw")
	bucketRecords    = []byte("records")
	bucketIdxRcpt    = []byte("idx_rcpt")
	bucketIdxDomain  = []byte("idx_domain")
	bucketIdxStatus  = []byte("idx_status")
	bucketIdxDStatus = []byte("idx_dstatus")
	bucketSuppress   = []byte("suppress")
	bucketSupDomain  = []byte("sup_domain")
	bucketSoft       = []byte("soft")
	bucketDomains    = []byte("domains")
	bucketDomStatus  = []byte("dom_status")

	keyVersion = []byte("version")
)

var allBuckets = [][]byte{
	bucketMeta, bucketRaw, bucketRecords, bucketIdxRcpt, bucketIdxDomain,
	bucketIdxStatus, bucketIdxDStatus, bucketSuppress, bucketSupDomain,
	bucketSoft, bucketDomains, bucketDomStatus, bucketSeen, bucketDomTime,
}

// Options configure Open. Zero fields take defaults.
type Options struct {
	// LockTimeout is how long Open waits for the file lock (default 5s).
	LockTimeout time.Duration
	// ReadOnly opens the file with a shared lock for queries; writes fail
	// with ErrReadOnly.
	ReadOnly bool
	// Decide gives the policy verdict for a record; DefaultDecide if nil.
	Decide func(*store.Record) store.Decision
	// Now is the clock (time.Now if nil); tests inject time through it.
	Now func() time.Time
	// MaxBatch caps the deliveries committed in one transaction (default
	// 256). 1 gives one transaction per delivery.
	MaxBatch int
	// QueueLen is the number of deliveries that may wait for the writer
	// (default 1024); Save blocks (respecting its context) when it is full.
	QueueLen int
	// OnStorm, if set, is called with each storm a delivery started, once
	// that delivery is durable (from the writer goroutine: keep it quick).
	OnStorm func(store.Storm)
	// Storm configures the storm guard (storm.go); zero switches it off.
	Storm store.StormOptions
	// DedupeWindow is how long a stored report is remembered, so that
	// the same report delivered again is marked a duplicate (default
	// DefaultDedupeWindow, 30 days). PruneSeen forgets older reports.
	DedupeWindow time.Duration
	// RawRetention is how long raw messages are kept; Prune deletes older
	// ones (records stay). 0 keeps them forever.
	RawRetention time.Duration
	// Compressors caps how many raw messages Save compresses at once
	// (default GOMAXPROCS); each compressor holds about 1 MB of zstd
	// tables and window, and its output buffer. Further Saves wait for one.
	Compressors int
	// OnLog, if set, is told what Open did with a write-ahead log left
	// by an older version when it applied frames from it or found it
	// damaged (wal.go); the caller logs it.
	OnLog func(LogInfo)
	// OnReopen, if set, is told the outcome of each attempt to open the
	// files again after a failed write (reopen.go): nil once the DB
	// accepts again, else why not (it tries again after a back-off).
	// It is called from the writer goroutine: keep it quick.
	OnReopen func(error)

	// files, if set, opens bbolt's file (tests inject disk faults
	// through it: faultfs_test.go).
	files *fileHooks

	// beforeCommit, if set, runs after a group of requests is applied
	// and before it is committed, with the group; an error fails the
	// group as a failed commit would. Tests use it to inject failures
	// and to see each request as applied (an old log's frames are built
	// from them: legacylog_test.go).
	beforeCommit func(batch []*request) error
}

// DB is an open bounce database.
type DB struct {
	bolt  *bbolt.DB
	opts  Options
	now   func() time.Time
	rules store.Rules // what a delivery does (package store)

	closed bool                   // set by Close (under closeMu)
	queue  *store.Queue[*request] // to the writer; nil when read-only
	done   chan struct{}          // closed when the writer has exited
	idgen  idGen                  // used by the writer goroutine only
	// compressors holds Options.Compressors slots for raw message
	// compressors (nil until first used); compressRaw waits for one.
	compressors chan *compressor
	rawPart     int // largest raw part (rawPartSize of the file's pages)
	closeMu     sync.Mutex

	// The writer's state (writer.go); only the writer goroutine uses it
	// once Open has returned.
	tx  *bbolt.Tx // write transaction of the group being applied, else nil
	txw *txWriter // writes into tx

	// The failed state (reopen.go). failErr, retryAt and backoff belong
	// to the writer; failed mirrors failErr for other goroutines.
	// fileMu is held for reading by view and update, and for writing by
	// the writer while it closes and opens bolt again.
	path    string
	fileMu  sync.RWMutex
	failErr *failedError
	failed  atomic.Pointer[failedError]
	retryAt time.Time
	backoff time.Duration
	faultc  chan error // failed commits of update, for the writer
	faults  faultCounters
}

// Open opens or creates the database at path. It fails with ErrLocked
// (wrapped) when another process holds the file longer than
// opts.LockTimeout, and with ErrSchema when the file was written by a
// different schema version.
func Open(path string, opts Options) (*DB, error) {
	db, err := open(path, opts)
	if !opts.ReadOnly || !errors.Is(err, ErrUnapplied) {
		return db, err
	}
	// Nobody writes the file (a writer would hold its lock): apply the
	// log with a read-write open, then open read-only again.
	rw := opts
	rw.ReadOnly = false
	wdb, werr := open(path, rw)
	if werr != nil {
		return nil, fmt.Errorf("%w (applying it: %w)", err, werr)
	}
	if werr := wdb.Close(); werr != nil {
		return nil, fmt.Errorf("%w (applying it: %w)", err, werr)
	}
	return open(path, opts)
}

// open is Open without applying the log of a read-only open.
func open(path string, opts Options) (*DB, error) {
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = 5 * time.Second
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 256
	}
	if opts.QueueLen <= 0 {
		opts.QueueLen = 1024
	}
	if opts.Compressors <= 0 {
		opts.Compressors = runtime.GOMAXPROCS(0)
	}
	db := &DB{opts: opts, now: opts.Now, path: path, faultc: make(chan error, 1)}
	db.rules = store.Rules{Decide: opts.Decide, Storm: opts.Storm, DedupeWindow: opts.DedupeWindow}
	if db.now == nil {
		db.now = time.Now
	}
	db.compressors = make(chan *compressor, opts.Compressors)
	for range opts.Compressors {
		db.compressors <- nil
	}
	if err := db.openFiles(); err != nil {
		return nil, err
	}
	if !opts.ReadOnly {
		db.queue = store.NewQueue[*request](opts.QueueLen)
		db.done = make(chan struct{})
		go db.writer()
	}
	return db, nil
}

// openFiles opens bbolt's file: it checks or creates the schema and,
// read-write, applies the frames of an old version's log that the file
// lacks. Open calls it, and the writer again after a failed write
// (reopen.go). On failure nothing is left open.
func (db *DB) openFiles() error {
	opts, path := db.opts, db.path
	bopts := &bbolt.Options{
		Timeout:      opts.LockTimeout,
		ReadOnly:     opts.ReadOnly,
		FreelistType: bbolt.FreelistMapType,
		// Compressed raw messages are 1-2 KB: a 4 KB page holds two and
		// wastes a third of the file; 16 KB pages hold ten. Applies only
		// when the file is created.
		PageSize: 16 << 10,
	}
	if h := opts.files; h != nil {
		bopts.OpenFile, bopts.InitialMmapSize = h.openDB, h.mmapSize
	}
	bdb, err := openGuarded(path, bopts)
	if errors.Is(err, berrors.ErrTimeout) {
		return fmt.Errorf("opening %s: %w (waited %s)", path, ErrLocked, opts.LockTimeout)
	}
	if err != nil {
		return fmt.Errorf("opening %s: %w", path, err)
	}
	db.bolt = bdb
	db.rawPart = rawPartSize(bdb.Info().PageSize)
	err = db.prepare(path)
	if err == nil && !opts.ReadOnly {
		db.idgen = idGen{}
		err = bdb.View(db.idgen.init)
	}
	if err == nil && !opts.ReadOnly {
		err = db.applyOldLog(path)
	}
	if err == nil && opts.ReadOnly {
		err = db.checkWAL(path)
	}
	if err != nil {
		db.rollback()
		bdb.Close()
		db.bolt = nil
		return fmt.Errorf("opening %s: %w", path, err)
	}
	return nil
}

// openGuarded is bbolt.Open with its panics on a damaged file turned
// into a *DamageError. (bbolt then keeps the file open and locked for
// this process: the caller is expected to stop.)
func openGuarded(path string, o *bbolt.Options) (db *bbolt.DB, err error) {
	if err := checkOpenPages(path); err != nil {
		return nil, err
	}
	defer guard(path, "", &err)
	return bbolt.Open(path, 0o600, o)
}

// prepare checks or creates the schema, behind guard.
func (db *DB) prepare(path string) (err error) {
	defer guard(path, "meta", &err)
	if db.opts.ReadOnly {
		return db.bolt.View(checkSchema)
	}
	return db.bolt.Update(initSchema)
}

// applyOldLog commits the deliveries that a write-ahead log left by an
// older version (PATH-wal, wal.go) holds and the file lacks: they were
// acknowledged before the process stopped. Then it removes the log: the
// commit holds the number of its last frame, so a copy of the log that
// survives a crash before the removal is not applied again.
func (db *DB) applyOldLog(path string) error {
	reqs, info, err := readOldLog(path, db.appliedSeq(), db.now())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if len(reqs) > 0 {
		if err := db.replay(reqs); err != nil {
			return fmt.Errorf("replaying log: %w", err)
		}
	}
	if err := os.Remove(walPath(path)); err != nil {
		return fmt.Errorf("removing the applied log: %w", err)
	}
	if db.opts.OnLog != nil && (info.Applied > 0 || info.Torn || info.Damaged != "") {
		db.opts.OnLog(info)
	}
	return nil
}

// replay applies the frames reqs, in order, in one transaction with the
// number of the last, and commits it.
func (db *DB) replay(reqs []*request) error {
	if err := db.beginTx(); err != nil {
		return err
	}
	for _, r := range reqs {
		if _, err := db.applyAgain(r); err != nil {
			db.rollback()
			return fmt.Errorf("applying logged delivery %d: %w", r.seq, err)
		}
	}
	if err := putAppliedSeq(db.tx, reqs[len(reqs)-1].seq); err != nil {
		db.rollback()
		return err
	}
	return db.commit()
}

// appliedSeq reads meta "wal_seq" in a transaction of its own.
func (db *DB) appliedSeq() uint64 {
	var n uint64
	db.bolt.View(func(tx *bbolt.Tx) error { n = appliedSeq(tx); return nil })
	return n
}

// checkWAL fails a read-only open when the log holds deliveries the file
// lacks: a read-write Open (bouncer serve) applies them.
func (db *DB) checkWAL(path string) error {
	f, err := os.Open(walPath(path))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading log: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("reading log: %w", err)
	}
	first, err := firstFrame(f, fi.Size())
	if err != nil {
		return fmt.Errorf("reading log: %w", err)
	}
	if applied := db.appliedSeq(); first > applied {
		return fmt.Errorf("%w: its log holds deliveries from number %d on, the file those up to %d", ErrUnapplied, first, applied)
	}
	return nil
}

// checkSchema verifies the meta bucket of an existing database.
func checkSchema(tx *bbolt.Tx) error {
	n, err := fileVersion(tx)
	if err != nil {
		return err
	}
	if n != SchemaVersion {
		return fmt.Errorf("%w: file has %d, this program reads %d", ErrSchema, n, SchemaVersion)
	}
	return nil
}

// fileVersion reads the schema version of an existing database.
func fileVersion(tx *bbolt.Tx) (int, error) {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		return 0, errors.New("not a bouncer database: no meta bucket")
	}
	v := meta.Get(keyVersion)
	n, err := strconv.Atoi(string(v))
	if err != nil {
		return 0, fmt.Errorf("%w: %q", ErrSchema, store.Truncate(string(v), 20))
	}
	return n, nil
}

// upgradeSchema brings a version 3 or 4 file to SchemaVersion; other
// versions are left for checkSchema to refuse. Version 3 gets the
// dom_time index; the whole raw values of version 4 stay as they are
// (getRaw, PruneRaw and Check read both forms).
func upgradeSchema(tx *bbolt.Tx) error {
	n, err := fileVersion(tx)
	if err != nil || n < 3 || n >= SchemaVersion {
		return err
	}
	if n == 3 {
		if err := migrateDomTime(tx); err != nil {
			return fmt.Errorf("upgrading schema 3 to %d: %w", SchemaVersion, err)
		}
	}
	if err := tx.Bucket(bucketMeta).Put(keyVersion, []byte(strconv.Itoa(SchemaVersion))); err != nil {
		return fmt.Errorf("writing schema version: %w", err)
	}
	return nil
}

// initSchema creates the buckets of a new database, or checks the schema
// version of an existing one and creates buckets it lacks.
func initSchema(tx *bbolt.Tx) error {
	if tx.Bucket(bucketMeta) == nil {
		empty := true
		tx.ForEach(func([]byte, *bbolt.Bucket) error { empty = false; return nil })
		if !empty {
			return errors.New("not a bouncer database: no meta bucket")
		}
		meta, err := tx.CreateBucket(bucketMeta)
		if err != nil {
			return fmt.Errorf("creating meta bucket: %w", err)
		}
		if err := meta.Put(keyVersion, []byte(strconv.Itoa(SchemaVersion))); err != nil {
			return fmt.Errorf("writing schema version: %w", err)
		}
	} else if err := upgradeSchema(tx); err != nil {
		return err
	} else if err := checkSchema(tx); err != nil {
		return err
	}
	for _, name := range allBuckets {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("creating bucket %s: %w", name, err)
		}
	}
	return nil
}

// Close waits for queued Saves to be committed, stops the writer and
// closes the file. Saves after Close fail with ErrClosed.
func (db *DB) Close() error {
	db.closeMu.Lock()
	defer db.closeMu.Unlock()
	if db.closed {
		return nil
	}
	db.closed = true
	if db.queue != nil {
		db.queue.Close()
	}
	if db.done != nil {
		<-db.done
	}
	if db.bolt != nil {
		if err := db.bolt.Close(); err != nil {
			return fmt.Errorf("closing database: %w", err)
		}
	}
	return nil
}

// Path returns the file name of the database.
func (db *DB) Path() string { return db.path }

// keyLen is the length of a record or message key.
const keyLen = 12

// idGen hands out strictly increasing time-ordered keys.
type idGen struct {
	nanos uint64
	seq   uint32
}

// init continues after the largest key already stored, so that a clock
// that went backwards (or a fixed test clock) never reuses a key.
func (g *idGen) init(tx *bbolt.Tx) error {
	for _, name := range [][]byte{bucketRecords, bucketRaw} {
		k, _ := tx.Bucket(name).Cursor().Last()
		if len(k) != keyLen && len(k) != rawPartKeyLen {
			continue
		}
		n, s := binary.BigEndian.Uint64(k), binary.BigEndian.Uint32(k[8:])
		if n > g.nanos || (n == g.nanos && s >= g.seq) {
			g.nanos, g.seq = n, s+1
		}
	}
	return nil
}

// next returns a key not before now and after every key handed out.
func (g *idGen) next(now time.Time) []byte {
	n := uint64(now.UnixNano())
	if n > g.nanos {
		g.nanos, g.seq = n, 0
	}
	k := make([]byte, keyLen)
	binary.BigEndian.PutUint64(k, g.nanos)
	binary.BigEndian.PutUint32(k[8:], g.seq)
	if g.seq == ^uint32(0) {
		g.nanos, g.seq = g.nanos+1, 0
	} else {
		g.seq++
	}
	return k
}

// keyTime is the time encoded in a record key.
func keyTime(k []byte) time.Time {
	return time.Unix(0, int64(binary.BigEndian.Uint64(k)))
}

// encodeID renders a key as a Record.ID.
func encodeID(k []byte) string { return hex.EncodeToString(k) }

// decodeID parses a Record.ID or MsgID.
func decodeID(id string) ([]byte, error) {
	k, err := hex.DecodeString(id)
	if err != nil || len(k) != keyLen {
		return nil, fmt.Errorf("invalid id %q: want %d hex digits", store.Truncate(id, 40), 2*keyLen)
	}
	return k, nil
}

// maxIndexValue caps a value used in an index key.
const maxIndexValue = 255

// lp appends s, cut to maxIndexValue bytes and preceded by its length, to b.
func lp(b []byte, s string) []byte {
	if len(s) > maxIndexValue {
		s = s[:maxIndexValue]
	}
	b = append(b, byte(len(s)))
	return append(b, s...)
}

// indexKey builds an index key: lp of each value, then the record key.
func indexKey(k []byte, values ...string) []byte {
	n := len(k)
	for _, v := range values {
		n += 1 + min(len(v), maxIndexValue)
	}
	b := make([]byte, 0, n)
	for _, v := range values {
		b = lp(b, v)
	}
	return append(b, k...)
}

// prefixEnd returns the first key after every key with prefix p, or nil
// if there is none.
func prefixEnd(p []byte) []byte {
	end := bytes.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// The bbolt engine meets the store's contract.
var _ store.Store = (*DB)(nil)
