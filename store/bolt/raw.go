package bolt

// Raw messages. The value of a message, a codec byte followed by the
// compressed bytes (S2 or zstd with a dictionary, or, in older files,
// DEFLATE or stored; compress.go), is cut into parts of at most
// rawPartSize bytes stored under K(msg) followed by the 4-byte big-endian
// part number (0, 1, ...); the parts in key order, concatenated, are the
// value. bbolt never splits a leaf of four or fewer entries, so whole
// values of hundreds of KB (a RET=FULL bounce) made every commit rewrite
// the last leaf with up to four earlier messages in it; parts of a
// quarter page fill leaves of one page, and a commit rewrites at most the
// one page it appends to. Schema 4 stored the value whole under K; such
// keys are still read, pruned and checked.

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/bouncer/bouncer/store"

	bbolt "go.etcd.io/bbolt"
)

// rawPartKeyLen is the length of a raw part key: K and the part number.
const rawPartKeyLen = keyLen + 4

// maxRawBytes caps a decompressed raw message; nothing larger is stored
// by a server with sane limits, so more means a damaged file.
const maxRawBytes = 256 << 20

// rawPartSize is the largest raw part for a page size: four parts, each
// with its key and bbolt's 16-byte leaf element header, fill a page after
// its 16-byte header (4,060 bytes for 16 KB pages).
func rawPartSize(pageSize int) int {
	return max((pageSize-16)/4-16-rawPartKeyLen, 64)
}

// putRaw stores the value v of message msgKey in parts of at most size
// bytes. bbolt keeps the value slices until the commit, so v must not
// change before then.
func putRaw(b *bbolt.Bucket, msgKey, v []byte, size int) error {
	key := make([]byte, rawPartKeyLen)
	copy(key, msgKey)
	for part := uint32(0); ; part++ {
		n := min(len(v), size)
		binary.BigEndian.PutUint32(key[keyLen:], part)
		// bbolt copies the key.
		if err := b.Put(key, v[:n:n]); err != nil {
			return fmt.Errorf("writing raw message: %w", err)
		}
		v = v[n:]
		if len(v) == 0 {
			return nil
		}
	}
}

// rawKeyMsg returns the message key of a raw bucket key, or nil if k is
// neither a schema 4 key (K) nor a part key.
func rawKeyMsg(k []byte) []byte {
	if len(k) != keyLen && len(k) != rawPartKeyLen {
		return nil
	}
	return k[:keyLen]
}

// getRaw returns a copy of the stored value of message msgKey (the
// concatenated parts, or the schema 4 whole value), or nil if there is
// none. Parts that are not numbered 0, 1, ... are an error.
func getRaw(b *bbolt.Bucket, msgKey []byte) ([]byte, error) {
	c := b.Cursor()
	k, v := c.Seek(msgKey)
	if bytes.Equal(k, msgKey) {
		return bytes.Clone(v), nil
	}
	// Two passes: sizes first, so the value is allocated once.
	size, parts := 0, uint32(0)
	for ; len(k) == rawPartKeyLen && bytes.HasPrefix(k, msgKey); k, v = c.Next() {
		if binary.BigEndian.Uint32(k[keyLen:]) != parts {
			return nil, fmt.Errorf("reading raw message %s: part %d missing", encodeID(msgKey), parts)
		}
		size += len(v)
		parts++
	}
	if parts == 0 {
		return nil, nil
	}
	out := make([]byte, 0, size)
	for _, v = c.Seek(msgKey); len(out) < size; _, v = c.Next() {
		out = append(out, v...)
	}
	return out, nil
}

// Raw returns the raw message msgID (Record.MsgID), decompressed, or
// ErrNotFound; for a message deleted by the raw retention the error also
// matches ErrRawPruned.
func (db *DB) Raw(msgID string) ([]byte, error) {
	key, err := decodeID(msgID)
	if err != nil {
		return nil, err
	}
	var stored []byte
	err = db.view(func(tx *bbolt.Tx) error {
		v, err := getRaw(tx.Bucket(bucketRaw), key)
		if err != nil {
			return err
		}
		if v == nil && keyTime(key).Before(rawPrunedBefore(tx)) {
			return fmt.Errorf("raw message %s: %w (%w)", msgID, store.ErrRawPruned, store.ErrNotFound)
		}
		if v == nil {
			return store.ErrNotFound
		}
		stored = v
		return nil
	})
	if err != nil {
		return nil, err
	}
	return decompressRaw(stored)
}

// decompressRaw undoes compressRaw.
func decompressRaw(v []byte) ([]byte, error) {
	if len(v) == 0 {
		return nil, errors.New("reading raw message: empty value")
	}
	switch v[0] {
	case rawStored:
		return v[1:], nil
	case rawDeflate:
		r := flate.NewReader(bytes.NewReader(v[1:]))
		defer r.Close()
		b, err := io.ReadAll(io.LimitReader(r, maxRawBytes+1))
		if err != nil {
			return nil, fmt.Errorf("decompressing raw message: %w", err)
		}
		if len(b) > maxRawBytes {
			return nil, fmt.Errorf("decompressing raw message: more than %d bytes", maxRawBytes)
		}
		return b, nil
	}
	var b []byte
	var err error
	switch v[0] {
	case rawZstd1:
		b, err = unzstd(v[1:], rawDictID1, maxRawBytes)
	case rawS2:
		b, err = s2Decode(rawS2Dict(), v[1:], maxRawBytes)
	default:
		return nil, fmt.Errorf("reading raw message: unknown codec %d", v[0])
	}
	if err != nil {
		return nil, fmt.Errorf("decompressing raw message: %w", err)
	}
	return b, nil
}

// checkRaw checks the keys of the raw bucket: each is a schema 4 key or
// a part key, a message's parts are numbered from 0 without a gap and
// not mixed with a whole value, and each value starts with a known codec
// byte.
func checkRaw(tx *bbolt.Tx, add func(error) bool) bool {
	c := tx.Bucket(bucketRaw).Cursor()
	var prev []byte // message key of the previous key
	prevWhole := false
	next := uint32(0) // part number expected after the previous key
	for k, v := c.First(); k != nil; k, v = c.Next() {
		msg := rawKeyMsg(k)
		if msg == nil {
			if !add(fmt.Errorf("raw: key %x: wrong length", k)) {
				return false
			}
			continue
		}
		same := bytes.Equal(msg, prev)
		whole := len(k) == keyLen
		part := uint32(0)
		if !whole {
			part = binary.BigEndian.Uint32(k[keyLen:])
		}
		if !same {
			next = 0
		}
		var err error
		switch {
		case same && (whole || prevWhole):
			err = fmt.Errorf("raw message %s: stored whole and in parts", encodeID(msg))
		case !whole && part != next:
			err = fmt.Errorf("raw message %s: part %d missing", encodeID(msg), next)
		case !same && (len(v) == 0 || v[0] > rawS2):
			err = fmt.Errorf("raw message %s: unknown codec", encodeID(msg))
		}
		if err != nil && !add(err) {
			return false
		}
		prev, prevWhole, next = append(prev[:0], msg...), whole, part+1
	}
	return true
}
