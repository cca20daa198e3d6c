package bolt

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/bouncer/bouncer/store"

	"github.com/bouncer/bouncer/parse"
	bbolt "go.etcd.io/bbolt"
)

// The write-ahead log of older versions.
//
// Up to issue 15, a delivery was acknowledged once it was in this log and
// the log was synced; the writer kept one bbolt write transaction open
// across many groups and committed it every commit interval. Measured in
// the same runs, one bbolt commit per group (writer.go) came within 10 %
// of its ingest rate, so the log's write side is gone. What is left reads
// a log such a version left behind, so that its acknowledged deliveries
// are not lost: Open applies it, then removes it (bolt.go).
//
// The log is the file PATH-wal beside the database, a sequence of frames:
//
//	length  uint32, big endian: bytes of the body
//	crc     uint32, big endian: CRC-32C of the body
//	body    seq     uint64  frame number, 1, 2, ... never reused
//	        now     int64   the writer's clock for this delivery (Unix ns)
//	        idNanos uint64  the key generator before this delivery
//	        idSeq   uint32
//	        body    [32]byte bodyHash of the raw message
//	        metaLen uint32
//	        meta    JSON: received time, envelope, report, parse error
//	        raw     the rest: codec byte and stored raw message
//
// Each commit of the bbolt transaction stored in meta "wal_seq" the number
// of the last frame it held, in the same transaction; after the commit the
// log was written again from its start, leaving older frames after the
// new ones. Open replays frames numbered above wal_seq in order, from the
// same clock and key-generator state, so the replayed transaction writes
// the same keys and reaches the same verdicts (it starts from the same
// committed state). Reading stops at the first frame that is short, fails
// its CRC or does not follow its predecessor's number: a frame torn by a
// crash was never acknowledged. A frame damaged with good ones after it
// (never a crash) is reported, and the log kept aside as
// PATH-wal.damaged-TIME.

// keyWALSeq is the meta key of the last log frame applied to the file.
var keyWALSeq = []byte("wal_seq")

// maxFrame bounds a frame's body when reading the log back: a raw message
// larger than this was never accepted (the server's limits are far lower),
// so a longer length is a corrupt log.
const maxFrame = 1 << 30

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// walPath is the log file of the database at path.
func walPath(path string) string { return path + "-wal" }

// walMeta is the JSON part of a frame.
type walMeta struct {
	Received   time.Time      `json:"received"`
	Envelope   store.Envelope `json:"envelope"`
	Report     *parse.Report  `json:"report,omitempty"`
	ParseError string         `json:"parse_error,omitempty"`
}

// readOldLog reads the log of the database at path and returns the
// frames numbered above applied; an error wrapping os.ErrNotExist when
// there is no log. A damaged log (a bad frame with good ones after it, or
// frames that do not follow the file's) is copied aside first; info says
// what was applied and dropped.
func readOldLog(path string, applied uint64, now time.Time) ([]*request, LogInfo, error) {
	p := walPath(path)
	info := LogInfo{Path: p}
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, info, fmt.Errorf("reading log: %w", err)
	}
	first, err := firstFrame(bytes.NewReader(data), int64(len(data)))
	if err != nil || !(first > applied || first == 0 && len(data) > 0) {
		// Frames were written from the start after each commit: when
		// the first is applied, so are all the whole ones after it.
		return nil, info, err
	}
	sc := scanFrames(data, applied)
	if sc.damaged == "" && first > applied+1 && len(sc.reqs) > 0 {
		sc.damaged = fmt.Sprintf("the log starts at frame %d, the database holds frames up to %d: frames between are missing (applied the log anyway: its deliveries were acknowledged)", first, applied)
	}
	info.Damaged, info.Dropped, info.Torn = sc.damaged, sc.dropped, sc.torn
	if sc.damaged != "" {
		if info.KeptAs, err = keepDamagedLog(p, data, now); err != nil {
			return nil, info, fmt.Errorf("reading log: %w", err)
		}
	}
	info.Applied = len(sc.reqs)
	return sc.reqs, info, nil
}

// keepDamagedLog writes a copy of a damaged log beside it, as
// PATH-wal.damaged-TIMESTAMP, and returns its name.
func keepDamagedLog(p string, data []byte, now time.Time) (string, error) {
	name := p + ".damaged-" + now.UTC().Format("20060102T150405.000000000Z")
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("keeping the damaged log: %w", err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = syncDir(filepath.Dir(p))
	}
	if err != nil {
		os.Remove(name)
		return "", fmt.Errorf("keeping the damaged log: %w", err)
	}
	return name, nil
}

// firstFrame returns the number of the first frame of the log file f of
// size bytes, or 0 if it starts with no whole frame. It reads one frame.
func firstFrame(f io.ReaderAt, size int64) (uint64, error) {
	var head [8]byte
	if size < 8 {
		return 0, nil
	}
	if _, err := f.ReadAt(head[:], 0); err != nil {
		return 0, err
	}
	n := int64(binary.BigEndian.Uint32(head[:]))
	if n < frameHead || n > maxFrame || n > size-8 {
		return 0, nil
	}
	frame := make([]byte, 8+n)
	if _, err := f.ReadAt(frame, 0); err != nil {
		return 0, err
	}
	_, last, err := readFrames(frame, 0)
	return last, err
}

// syncDir syncs a directory, so that a file created in it stays.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}

// readFrames decodes the whole frames at the start of data and returns the
// deliveries of those numbered above applied, and the last frame number
// read. A torn or corrupt tail ends the log; so does a frame that passes
// its CRC but does not decode, which is an error.
func readFrames(data []byte, applied uint64) ([]*request, uint64, error) {
	sc := scanFrames(data, applied)
	if sc.decodeErr != nil {
		return nil, 0, sc.decodeErr
	}
	return sc.reqs, sc.last, nil
}

// logScan is what scanFrames read of a log.
type logScan struct {
	reqs []*request // frames numbered above applied, in order
	last uint64     // number of the last good frame
	// damaged says why reading stopped before the end of the frames
	// ("" when they simply end: zeros, a torn tail, older frames);
	// dropped counts the frames not applied, numbered above last: the
	// damaged one when it is whole, and the good ones after it.
	damaged   string
	dropped   int
	torn      bool // the last frame is whole but fails its checksum
	decodeErr error
}

// scanFrames reads the good frames at the start of data, then looks past
// the first bad one: good frames numbered above it beyond mean the log
// was damaged in the middle (never by a crash, which tears only the
// last frame: frames after it were not written yet).
func scanFrames(data []byte, applied uint64) logScan {
	var sc logScan
	off := 0
	for off+8 <= len(data) {
		n := binary.BigEndian.Uint32(data[off:])
		if n < frameHead || n > maxFrame || int64(n) > int64(len(data)-off-8) {
			break // zeros past the end, or a torn frame
		}
		body := data[off+8 : off+8+int(n)]
		if crc32.Checksum(body, crcTable) != binary.BigEndian.Uint32(data[off+4:]) {
			sc.damaged = fmt.Sprintf("frame %d fails its checksum", sc.last+1)
			break
		}
		r, seq, err := decodeFrame(body)
		if err != nil {
			sc.decodeErr = fmt.Errorf("reading log frame after %d: %w", sc.last, err)
			sc.damaged = fmt.Sprintf("frame %d does not decode: %v", sc.last+1, err)
			break
		}
		if sc.last != 0 && seq != sc.last+1 {
			break // older frames, already applied
		}
		sc.last = seq
		if seq > applied {
			sc.reqs = append(sc.reqs, r)
		}
		off += 8 + int(n)
	}
	// Older frames left after the new ones are numbered at most applied.
	later := laterFrames(data, off+1, max(sc.last, applied))
	switch {
	case sc.damaged != "" && later == 0 && sc.decodeErr == nil:
		// A bad frame with nothing after it: a write torn by a crash
		// (never acknowledged), or the last frame damaged since.
		sc.damaged, sc.torn = "", true
	case sc.damaged != "":
		sc.dropped = 1 + later
	case later > 0:
		// A length that runs past the end or is too short: the frame
		// there is damaged, good ones follow.
		sc.damaged, sc.dropped = fmt.Sprintf("the frame after %d is damaged", sc.last), 1+later
	}
	return sc
}

// laterFrames counts the good frames found from offset from on whose
// numbers follow after (after+1, after+2, ...): the first is searched
// byte by byte (a damaged length hides where it starts), the rest
// follow it.
func laterFrames(data []byte, from int, after uint64) int {
	for p := from; p+8+frameHead <= len(data); p++ {
		n := int(binary.BigEndian.Uint32(data[p:]))
		if n < frameHead || n > len(data)-p-8 {
			continue
		}
		seq := binary.BigEndian.Uint64(data[p+8:])
		if seq <= after || seq > after+1<<20 {
			continue
		}
		if crc32.Checksum(data[p+8:p+8+n], crcTable) != binary.BigEndian.Uint32(data[p+4:]) {
			continue
		}
		count, last := 0, seq-1
		for p+8 <= len(data) {
			n := int(binary.BigEndian.Uint32(data[p:]))
			if n < frameHead || n > len(data)-p-8 || binary.BigEndian.Uint64(data[p+8:]) != last+1 ||
				crc32.Checksum(data[p+8:p+8+n], crcTable) != binary.BigEndian.Uint32(data[p+4:]) {
				break
			}
			count, last, p = count+1, last+1, p+8+n
		}
		return count
	}
	return 0
}

// frameHead is the fixed part of a frame body.
const frameHead = 8 + 8 + 8 + 4 + sha256.Size + 4

// decodeFrame reads a frame body.
func decodeFrame(body []byte) (*request, uint64, error) {
	if len(body) < frameHead {
		return nil, 0, errors.New("short frame")
	}
	r := &request{d: &store.Delivery{}}
	seq := binary.BigEndian.Uint64(body)
	r.seq = seq
	r.now = time.Unix(0, int64(binary.BigEndian.Uint64(body[8:])))
	r.ids = idGen{nanos: binary.BigEndian.Uint64(body[16:]), seq: binary.BigEndian.Uint32(body[24:])}
	copy(r.body[:], body[28:])
	m := binary.BigEndian.Uint32(body[28+sha256.Size:])
	rest := body[frameHead:]
	if uint64(m) > uint64(len(rest)) {
		return nil, 0, errors.New("frame metadata overruns the frame")
	}
	var meta walMeta
	if err := json.Unmarshal(rest[:m], &meta); err != nil {
		return nil, 0, fmt.Errorf("frame metadata: %w", err)
	}
	r.d.Received, r.d.Envelope, r.d.Report, r.d.ParseError = meta.Received, meta.Envelope, meta.Report, meta.ParseError
	r.raw = append([]byte(nil), rest[m:]...)
	return r, seq, nil
}

// appliedSeq reads meta "wal_seq".
func appliedSeq(tx *bbolt.Tx) uint64 {
	v := tx.Bucket(bucketMeta).Get(keyWALSeq)
	n, _ := strconv.ParseUint(string(v), 10, 64)
	return n
}

// putAppliedSeq writes meta "wal_seq".
func putAppliedSeq(tx *bbolt.Tx, seq uint64) error {
	if err := tx.Bucket(bucketMeta).Put(keyWALSeq, strconv.AppendUint(nil, seq, 10)); err != nil {
		return fmt.Errorf("writing log position: %w", err)
	}
	return nil
}

// LogInfo says what Open did with the write-ahead log.
type LogInfo struct {
	Path    string // the log file
	Applied int    // frames applied to the database file
	// Dropped counts the whole frames after a damaged one, which were
	// not applied; Damaged says what was wrong ("" for a log that was
	// only replayed) and KeptAs where the damaged log was kept.
	Dropped int
	Damaged string
	KeptAs  string
	// Torn says the last frame was whole but failed its checksum, with
	// nothing after it: a write torn by a crash (so never acknowledged),
	// or that frame damaged since. It was not applied.
	Torn bool
}

// String says it in one line, for a log.
func (i LogInfo) String() string {
	s := fmt.Sprintf("log %s: applied %d frames", i.Path, i.Applied)
	if i.Torn {
		s += "; dropped its last frame, torn by a crash or damaged"
	}
	if i.Damaged != "" {
		s += fmt.Sprintf("; %s: dropped %d frames", i.Damaged, i.Dropped)
	}
	if i.KeptAs != "" {
		s += "; the damaged log is kept as " + i.KeptAs
	}
	return s
}
