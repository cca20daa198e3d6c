package bolt

import (
	"bytes"
	"compress/flate"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bouncer/bouncer/store"

	"github.com/bouncer/bouncer/parse"
	"github.com/klauspost/compress/zstd"
	bbolt "go.etcd.io/bbolt"
)

// corpusFiles returns the sisimai maildir samples of the parse package.
func corpusFiles(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob("../../parse/testdata/sisimai/maildir/*/*")
	tcheck(t, err, "listing corpus")
	if len(files) < 100 {
		t.Fatalf("%d corpus files, want the sisimai maildir", len(files))
	}
	slices.Sort(files)
	return files
}

// corpusDelivery decodes one corpus file into a delivery.
func corpusDelivery(t testing.TB, path string) *store.Delivery {
	t.Helper()
	raw, err := os.ReadFile(path)
	tcheck(t, err, "reading "+path)
	d := &store.Delivery{
		Received: time.Date(2025, 3, 1, 11, 59, 0, 0, time.UTC),
		Envelope: store.Envelope{RcptTo: []string{"bounces@bounce.example.org"}, ClientIP: "192.0.2.1", Helo: "mx.example.net"},
		Raw:      raw,
	}
	rep, err := parse.Message(bytes.NewReader(raw), parse.DefaultLimits())
	if err != nil {
		d.ParseError = err.Error()
	}
	d.Report = rep
	return d
}

// storedSizes returns the stored size of a message's raw value and of
// its records' values.
func storedSizes(t *testing.T, db *DB, recs []store.Record) (raw, records int) {
	t.Helper()
	tcheck(t, db.view(func(tx *bbolt.Tx) error {
		mk, err := decodeID(recs[0].MsgID)
		if err != nil {
			return err
		}
		v, err := getRaw(tx.Bucket(bucketRaw), mk)
		raw = len(v)
		for _, r := range recs {
			k, _ := decodeID(r.ID)
			records += len(tx.Bucket(bucketRecords).Get(k))
		}
		return err
	}), "reading stored sizes")
	return raw, records
}

// TestCorpusRoundTrip saves every sisimai sample and reads back each raw
// message and each record, which must be what Save returned. It also
// checks that the dictionaries do their work: the raw messages take less
// room than with DEFLATE level 1 (the codec before) and both raw messages
// and records less than with zstd without a dictionary.
func TestCorpusRoundTrip(t *testing.T) {
	t.Parallel()
	db, _ := mustOpen(t, Options{})
	files := corpusFiles(t)
	saved := make([][]store.Record, len(files))
	ds := make([]*store.Delivery, len(files))
	errs := make([]error, len(files))
	var wg sync.WaitGroup
	for i, f := range files {
		ds[i] = corpusDelivery(t, f)
		wg.Go(func() { saved[i], errs[i] = db.Save(context.Background(), ds[i]) })
	}
	wg.Wait()
	var rawZ, rawFlate, rawNoDict, recZ, recJSON, recNoDict int
	fw, _ := flate.NewWriter(nil, flate.BestSpeed)
	noDict, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithSingleSegment(true))
	tcheck(t, err, "encoder")
	for i, f := range files {
		tcheck(t, errs[i], "saving "+f)
		got, err := db.Raw(saved[i][0].MsgID)
		tcheck(t, err, "raw of "+f)
		if !bytes.Equal(got, ds[i].Raw) {
			t.Errorf("%s: raw message read back differs", f)
		}
		for _, want := range saved[i] {
			r, err := db.Record(want.ID)
			tcheck(t, err, "record of "+f)
			// encoding/json writes invalid UTF-8 as the escape \ufffd
			// (a valid U+FFFD as its bytes): a record Save returns must
			// hold none (a field cut inside a character did, before
			// parse's truncate was fixed).
			w := mustJSON(t, want)
			if strings.Contains(w, `\ufffd`) {
				t.Errorf("%s: record holds invalid UTF-8: %s", f, w)
			}
			if got := mustJSON(t, r); got != w {
				t.Errorf("%s: record read back differs:\n got %s\nwant %s", f, got, w)
			}
			j, err := encodeRecord(&want, "", nil)
			tcheck(t, err, "encoding")
			j, err = recordJSONOf(j)
			tcheck(t, err, "decompressing")
			recJSON += len(j)
			recNoDict += 1 + len(noDict.EncodeAll(j, nil))
		}
		r, rec := storedSizes(t, db, saved[i])
		rawZ, recZ = rawZ+r, recZ+rec
		var buf bytes.Buffer
		fw.Reset(&buf)
		fw.Write(ds[i].Raw)
		fw.Close()
		rawFlate += 1 + min(buf.Len(), len(ds[i].Raw))
		rawNoDict += 1 + min(len(noDict.EncodeAll(ds[i].Raw, nil)), len(ds[i].Raw))
	}
	t.Logf("%d messages: raw %d bytes stored (DEFLATE-1 %d, zstd without dictionary %d), records %d bytes stored (JSON %d, zstd without dictionary %d)",
		len(files), rawZ, rawFlate, rawNoDict, recZ, recJSON, recNoDict)
	if rawZ >= rawFlate || rawZ >= rawNoDict {
		t.Errorf("raw messages take %d bytes, no less than %d with DEFLATE level 1 or %d with zstd without dictionary", rawZ, rawFlate, rawNoDict)
	}
	if recZ >= recNoDict {
		t.Errorf("records take %d bytes, no less than %d with zstd without dictionary", recZ, recNoDict)
	}
	tcheck(t, db.Check(), "check")
}

// TestOldCodecs rewrites a stored message as the codecs before zstd wrote
// it (a DEFLATE raw value, plain-JSON records) and as a stored raw value:
// all read back the same.
func TestOldCodecs(t *testing.T) {
	t.Parallel()
	db, _ := mustOpen(t, Options{})
	d := sample(t)
	d.Report.Recipients = append(d.Report.Recipients, d.Report.Recipients[0])
	d.Report.Recipients[1].FinalRecipient = "sabatora@gmail.com"
	recs := save(t, db, d)
	var buf bytes.Buffer
	fw, _ := flate.NewWriter(&buf, flate.BestSpeed)
	fw.Write(d.Raw)
	fw.Close()
	for _, v := range [][]byte{append([]byte{rawDeflate}, buf.Bytes()...), append([]byte{rawStored}, d.Raw...)} {
		tcheck(t, db.update(func(tx *bbolt.Tx) error {
			b, records := tx.Bucket(bucketRaw), tx.Bucket(bucketRecords)
			mk, _ := decodeID(recs[0].MsgID)
			if err := b.Delete(rawKeys(t, db, recs[0].MsgID)[0]); err != nil {
				return err
			}
			if err := putRaw(b, mk, v, db.rawPart); err != nil {
				return err
			}
			for _, r := range recs {
				k, _ := decodeID(r.ID)
				j, err := recordJSONOf(records.Get(k))
				if err != nil {
					return err
				}
				if err := records.Put(k, j); err != nil {
					return err
				}
			}
			return nil
		}), "rewriting")
		got, err := db.Raw(recs[0].MsgID)
		tcheck(t, err, "raw")
		if !bytes.Equal(got, d.Raw) {
			t.Errorf("codec %d: raw message read back differs", v[0])
		}
		for _, want := range recs {
			r, err := db.Record(want.ID)
			tcheck(t, err, "record")
			if a, b := mustJSON(t, r), mustJSON(t, want); a != b {
				t.Errorf("plain JSON record read back differs:\n got %s\nwant %s", a, b)
			}
		}
		tcheck(t, db.Check(), "check")
	}
}

// damaged returns zstd values that must not decode: cut, with a byte
// changed, made with the other dictionary, without a content size, with a
// content size of 1 TiB, with a second frame after the first, and empty.
func damaged(t *testing.T, good []byte, otherDict uint32) map[string][]byte {
	t.Helper()
	flip := bytes.Clone(good)
	flip[len(flip)/2] ^= 0x55
	other, err := zstd.NewWriter(nil, zstd.WithEncoderDictRaw(otherDict, []byte("some other dictionary")), zstd.WithSingleSegment(true))
	tcheck(t, err, "encoder")
	noSize, err := zstd.NewWriter(nil, zstd.WithEncoderDictRaw(rawDictID1, rawDict1), zstd.WithSingleSegment(false))
	tcheck(t, err, "encoder")
	// Magic, a single-segment header with an 8-byte content size and a
	// 1-byte dictionary ID, then the size: 1 TiB.
	huge := append([]byte{0x28, 0xb5, 0x2f, 0xfd, 0xe0 | 1, byte(otherDict)}, 0, 0, 0, 0, 0, 1, 0, 0)
	return map[string][]byte{
		"cut":         good[:len(good)/2],
		"changed":     flip,
		"other dict":  other.EncodeAll([]byte("hello hello hello"), nil),
		"no size":     noSize.EncodeAll([]byte("short"), nil),
		"1 TiB":       huge,
		"two frames":  append(bytes.Clone(good), good...),
		"empty frame": {},
	}
}

// flipMiddle returns v with its middle byte changed.
func flipMiddle(v []byte) []byte {
	v = bytes.Clone(v)
	v[len(v)/2] ^= 0x55
	return v
}

// TestDamagedValues stores damaged zstd values in place of a raw message
// and of a record: reading them gives an error, never a panic or a huge
// allocation.
func TestDamagedValues(t *testing.T) {
	t.Parallel()
	db, _ := mustOpen(t, Options{})
	d := sample(t)
	recs := save(t, db, d)
	mk, _ := decodeID(recs[0].MsgID)
	rk, _ := decodeID(recs[0].ID)
	var goodRaw, goodRec []byte
	tcheck(t, db.view(func(tx *bbolt.Tx) error {
		v, err := getRaw(tx.Bucket(bucketRaw), mk)
		goodRaw, goodRec = v, bytes.Clone(tx.Bucket(bucketRecords).Get(rk))
		return err
	}), "reading")
	if goodRaw[0] != rawS2 || goodRec[0] != recordS2 {
		t.Fatalf("stored codecs %d and %d, want %d and %d", goodRaw[0], goodRec[0], rawS2, recordS2)
	}
	raw, err := decompressRaw(goodRaw)
	tcheck(t, err, "decompressing")
	enc, err := newRawEncoder()
	tcheck(t, err, "encoder")
	s2Raw := goodRaw
	goodRaw = enc.EncodeAll(raw, []byte{rawZstd1})
	put := func(bucket []byte, k, v []byte) {
		t.Helper()
		tcheck(t, db.update(func(tx *bbolt.Tx) error {
			if bytes.Equal(bucket, bucketRaw) {
				return tx.Bucket(bucketRaw).Put(rawKeys(t, db, recs[0].MsgID)[0], v)
			}
			return tx.Bucket(bucket).Put(k, v)
		}), "damaging")
	}
	for name, z := range damaged(t, goodRaw[1:], recordDictID1) {
		put(bucketRaw, nil, append([]byte{rawZstd1}, z...))
		if _, err := db.Raw(recs[0].MsgID); err == nil || !strings.Contains(err.Error(), "decompressing raw message") {
			t.Errorf("raw message, %s: %v, want a decompressing error", name, err)
		}
	}
	for name, v := range map[string][]byte{"cut": s2Raw[:len(s2Raw)/2], "changed": flipMiddle(s2Raw),
		"huge": append([]byte{rawS2, 0, 0, 0, 0}, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 'x'), "empty": {rawS2}} {
		put(bucketRaw, nil, v)
		if _, err := db.Raw(recs[0].MsgID); err == nil || !strings.Contains(err.Error(), "decompressing raw message") {
			t.Errorf("S2 raw message, %s: %v, want a decompressing error", name, err)
		}
	}
	put(bucketRaw, nil, []byte{9, 'x'})
	if _, err := db.Raw(recs[0].MsgID); err == nil || !strings.Contains(err.Error(), "unknown codec 9") {
		t.Errorf("raw message, codec 9: %v", err)
	}
	// S2 blocks carry no checksum: a changed byte may decode to other
	// bytes, which then fail as JSON. Either way an error, no panic.
	s2Huge := append([]byte{recordS2}, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 'x')
	for name, v := range map[string][]byte{"cut": goodRec[:len(goodRec)/2], "changed": flipMiddle(goodRec),
		"huge": s2Huge, "empty": {recordS2}} {
		put(bucketRecords, rk, v)
		if _, err := db.Record(recs[0].ID); err == nil || !strings.Contains(err.Error(), "decoding record") {
			t.Errorf("S2 record, %s: %v, want a decoding error", name, err)
		}
	}
	j, err := recordJSONOf(goodRec)
	tcheck(t, err, "record JSON")
	c, err := codecs()
	tcheck(t, err, "codecs")
	goodZstd := c.recordEnc.EncodeAll(j, []byte{recordZstd1})
	put(bucketRecords, rk, goodZstd)
	if got, err := db.Record(recs[0].ID); err != nil || got.Addr != recs[0].Addr {
		t.Fatalf("zstd record (codec 1, still read): %+v, %v", got, err)
	}
	for name, z := range damaged(t, goodZstd[1:], rawDictID1) {
		put(bucketRecords, rk, append([]byte{recordZstd1}, z...))
		if _, err := db.Record(recs[0].ID); err == nil || !strings.Contains(err.Error(), "decompressing") {
			t.Errorf("record, %s: %v, want a decompressing error", name, err)
		}
	}
	for _, v := range [][]byte{{}, {9, 'x'}} {
		put(bucketRecords, rk, v)
		if _, err := db.Record(recs[0].ID); err == nil || !strings.Contains(err.Error(), "decoding record") {
			t.Errorf("record %q: %v, want a decoding error", v, err)
		}
	}
	if err := db.Check(); err == nil {
		t.Error("check passed a damaged record")
	}
}
