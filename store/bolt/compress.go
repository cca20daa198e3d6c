package bolt

// Compression of stored values. A raw message is stored behind a codec
// byte (rawStored, rawDeflate, rawZstd1); a record is stored as plain
// JSON (its first byte is '{') or behind recordZstd1.
//
// The zstd codecs (RFC 8878) use raw-content dictionaries embedded from
// dict/: text written for this project (header and field names, RFC 3464
// structure, MIME boilerplate, short SMTP replies) for raw messages, and
// records in this package's own JSON format for records. A dictionary is
// part of the file format: once a file holds values made with it, it can
// never change, or those values no longer decode. A better dictionary is
// a new file with a new codec byte; TestDictionaryHashes pins the bytes
// of every dictionary in use. The old codecs are read forever.

import (
	"context"
	_ "embed"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"runtime"
	"sync"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// Raw codecs: the first byte of a value in the raw bucket.
const (
	rawStored  = 0 // the message as is
	rawDeflate = 1 // DEFLATE (RFC 1951), written before rawZstd1
	rawZstd1   = 2 // a zstd frame made with dict/raw-1.txt
	rawS2      = 3 // CRC-32C of the message, then an S2 block with dict/raw-1.txt
)

// rawS2Max is the largest message compressed with S2 rather than zstd.
// For the 1,720-byte Postfix DSN of the SMTP benchmark S2 gives 482 bytes
// in about 4 µs, zstd 395 bytes in 8-15 µs, most of it spent resetting
// the encoder's 256 KB match table to the dictionary's; that cost is per
// message, so for larger messages zstd's better ratio wins.
const rawS2Max = 8 << 10

// Record codecs: the first byte of a value in the records bucket.
const (
	recordJSON  = '{' // plain JSON, written before recordZstd1
	recordZstd1 = 1   // a zstd frame of the JSON, made with dict/record-1.json
	recordS2    = 2   // CRC-32C of the JSON (4 bytes, big endian), then an S2 block of it with the same dictionary
)

// recordDict is recordDict1 as an S2 dictionary. S2 with it stores the
// benchmark's record in 283 bytes, against 267 with zstd, but encodes it
// in 0.9 µs instead of 9 µs and decodes it in 0.2 µs instead of 2.5 µs
// (BenchmarkRecordCodec), and records are encoded in the writer goroutine,
// which every Save waits for.
var recordDict = sync.OnceValue(func() *s2.Dict { return mustS2Dict(recordDict1) })

// rawS2Dict is rawDict1 as an S2 dictionary, for rawS2.
var rawS2Dict = sync.OnceValue(func() *s2.Dict { return mustS2Dict(rawDict1) })

// mustS2Dict makes an S2 dictionary of one of the embedded ones.
func mustS2Dict(b []byte) *s2.Dict {
	d := s2.MakeDict(b, nil)
	if d == nil {
		panic("store: an embedded dictionary is not a valid S2 dictionary")
	}
	return d
}

// s2Encode returns codec, CRC-32C of src (4 bytes, big endian) and src
// encoded with S2 and dictionary d.
func s2Encode(codec byte, d *s2.Dict, src []byte) []byte {
	// Encode writes at the start of the buffer it is given when it is
	// large enough, which MaxEncodedLen makes sure of.
	out := make([]byte, 5+s2.MaxEncodedLen(len(src)))
	out[0] = codec
	binary.BigEndian.PutUint32(out[1:], crc32.Checksum(src, crcTable))
	n := len(d.Encode(out[5:], src))
	return out[: 5+n : 5+n]
}

// s2Decode undoes s2Encode for v without its codec byte, refusing a
// content of more than limit bytes and a checksum that does not match
// (S2 blocks have none of their own).
func s2Decode(d *s2.Dict, v []byte, limit int) ([]byte, error) {
	if len(v) < 4 {
		return nil, errors.New("short value")
	}
	n, err := s2.DecodedLen(v[4:])
	if err != nil {
		return nil, err
	}
	if n > limit {
		return nil, fmt.Errorf("content size %d is more than %d bytes", n, limit)
	}
	out, err := d.Decode(make([]byte, n), v[4:])
	if err != nil {
		return nil, err
	}
	if crc32.Checksum(out, crcTable) != binary.BigEndian.Uint32(v) {
		return nil, errors.New("checksum mismatch")
	}
	return out, nil
}

// Dictionary IDs written in the zstd frame headers, so that a frame made
// with another dictionary is refused instead of decoded into garbage.
const (
	rawDictID1    = 1
	recordDictID1 = 2
)

var (
	// rawDict1 is the dictionary of rawZstd1. Never change it.
	//go:embed dict/raw-1.txt
	rawDict1 []byte
	// recordDict1 is the dictionary of recordZstd1. Never change it.
	//go:embed dict/record-1.json
	recordDict1 []byte
)

// maxScratch is the largest output buffer a pooled compressor keeps
// between messages; a larger one (a message of several MB) is dropped.
const maxScratch = 4 << 20

// compressor is a zstd encoder with its output buffer. Each holds about
// 1 MB of tables and history once used (BenchmarkCompressRaw/memory: 0.96
// MB with a 256 KB window, 4.9 MB with the default 8 MB window), so Open
// makes at most Options.Compressors.
type compressor struct {
	enc *zstd.Encoder
	buf []byte
}

// rawWindow is the zstd window of raw messages: matches reach at most
// this far back. Bounces are mostly a few KB; for the 534 sisimai samples
// 256 KB compresses as well as the default 8 MB.
const rawWindow = 256 << 10

// newRawEncoder returns an encoder for rawZstd1 that compresses one
// message at a time. The fastest level: BenchmarkCompressRaw gives for
// the 1,720-byte Postfix DSN of the SMTP benchmark 395 bytes in about
// 8 µs, against 825 bytes in 14 µs for DEFLATE level 1. Every frame is
// one segment, which puts the content size in the header (unzstd needs
// it).
func newRawEncoder() (*zstd.Encoder, error) {
	return zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1),
		zstd.WithLowerEncoderMem(true), zstd.WithWindowSize(rawWindow), zstd.WithSingleSegment(true),
		zstd.WithEncoderDictRaw(rawDictID1, rawDict1))
}

// compressRaw returns raw compressed with zstd behind a codec byte, or
// stored as is when compression does not make it smaller. It waits for
// one of the pooled compressors, so that at most Options.Compressors run
// at once however many sessions save; the result is copied out of the
// compressor's buffer into a slice of its exact size.
func (db *DB) compressRaw(ctx context.Context, raw []byte) ([]byte, error) {
	var c *compressor
	select {
	case c = <-db.compressors:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if c == nil {
		enc, err := newRawEncoder()
		if err != nil {
			db.compressors <- nil
			return nil, fmt.Errorf("making compressor: %w", err)
		}
		c = &compressor{enc: enc}
	}
	c.buf = c.enc.EncodeAll(raw, c.buf[:0])
	var out []byte
	if n := len(c.buf); n < len(raw) {
		out = make([]byte, 1+n)
		out[0] = rawZstd1
		copy(out[1:], c.buf)
	} else {
		out = append(make([]byte, 0, 1+len(raw)), rawStored)
		out = append(out, raw...)
	}
	if cap(c.buf) > maxScratch {
		c.buf = nil
	}
	db.compressors <- c
	return out, nil
}

// compressSmall compresses a raw message of at most rawS2Max bytes with
// S2, or stores it as is if that is not smaller.
func compressSmall(raw []byte) []byte {
	if out := s2Encode(rawS2, rawS2Dict(), raw); len(out) < 1+len(raw) {
		return out
	}
	return append([]byte{rawStored}, raw...)
}

// codecs holds the zstd decoder of every dictionary and the record
// encoder. It is a package variable, against the rule of STYLE.md,
// because decoding happens in functions that have no DB (decodeRecord,
// decompressRaw) and the DB struct belongs to bbolt.go; what it holds
// does not change after it is made (the dictionaries are constants, and
// EncodeAll and DecodeAll are safe for concurrent use), so tests that run
// in parallel cannot see each other through it.
var codecs = sync.OnceValues(newCodecs)

type codecSet struct {
	dec       *zstd.Decoder // knows every dictionary, by ID
	recordEnc *zstd.Encoder
}

func newCodecs() (*codecSet, error) {
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(runtime.GOMAXPROCS(0)),
		zstd.WithDecoderMaxMemory(maxRawBytes), zstd.WithDecoderMaxWindow(maxRawBytes), zstd.WithDecodeAllCapLimit(true),
		zstd.WithDecoderDictRaw(rawDictID1, rawDict1), zstd.WithDecoderDictRaw(recordDictID1, recordDict1))
	if err != nil {
		return nil, fmt.Errorf("making zstd decoder: %w", err)
	}
	// Records are encoded by the DB's writer goroutine, one at a time;
	// a record is about 1 KB of JSON, so a small window is enough.
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1),
		zstd.WithLowerEncoderMem(true), zstd.WithWindowSize(64<<10), zstd.WithSingleSegment(true),
		zstd.WithEncoderDictRaw(recordDictID1, recordDict1))
	if err != nil {
		return nil, fmt.Errorf("making zstd encoder: %w", err)
	}
	return &codecSet{dec: dec, recordEnc: enc}, nil
}

// unzstd decodes the zstd frame v, which must have been made with the
// dictionary dictID and say its decoded size, at most limit bytes. The
// output is allocated once, at the size the header gives, so a damaged
// value cannot make it allocate more than limit.
func unzstd(v []byte, dictID uint32, limit uint64) ([]byte, error) {
	var h zstd.Header
	if err := h.Decode(v); err != nil {
		return nil, err
	}
	switch {
	case h.DictionaryID != dictID:
		return nil, fmt.Errorf("frame made with dictionary %d, want %d", h.DictionaryID, dictID)
	case !h.HasFCS:
		return nil, errors.New("frame without content size")
	case h.FrameContentSize > limit:
		return nil, fmt.Errorf("content size %d is more than %d bytes", h.FrameContentSize, limit)
	}
	c, err := codecs()
	if err != nil {
		return nil, err
	}
	out, err := c.dec.DecodeAll(v, make([]byte, 0, h.FrameContentSize))
	if err != nil {
		return nil, err
	}
	if uint64(len(out)) != h.FrameContentSize {
		return nil, fmt.Errorf("decoded %d bytes, header says %d", len(out), h.FrameContentSize)
	}
	return out, nil
}
