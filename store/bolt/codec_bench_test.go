package bolt

import (
	"bytes"
	"compress/flate"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/bouncer/bouncer/store"

	"github.com/bouncer/bouncer/parse"
	"github.com/klauspost/compress/zstd"
)

// BenchmarkCompressRaw compares the raw codecs per message: zstd with
// dict/raw-1.txt (what Save writes) and DEFLATE level 1 (what it wrote
// before), on the DSN of the SMTP benchmark and on the sisimai samples,
// with the bytes per message; and reports the heap one zstd compressor
// holds once it has compressed a message.
//
//	go test -run '^$' -bench CompressRaw ./store/
func BenchmarkCompressRaw(b *testing.B) {
	postfix, err := os.ReadFile("../../cmd/bouncer/testdata/postfix-543.eml")
	tcheck(b, err, "reading")
	var corpus [][]byte
	for _, f := range corpusFiles(b) {
		raw, err := os.ReadFile(f)
		tcheck(b, err, "reading")
		corpus = append(corpus, raw)
	}
	inputs := []struct {
		name string
		msgs [][]byte
	}{{"postfix-543", [][]byte{postfix}}, {"sisimai", corpus}}
	for _, in := range inputs {
		b.Run("zstd-dict1/"+in.name, func(b *testing.B) {
			enc, err := newRawEncoder()
			tcheck(b, err, "encoder")
			var buf []byte
			out := 0
			for i := range b.N {
				buf = enc.EncodeAll(in.msgs[i%len(in.msgs)], buf[:0])
				out += len(buf)
			}
			b.ReportMetric(float64(out)/float64(b.N), "bytes/msg")
		})
		b.Run("deflate1/"+in.name, func(b *testing.B) {
			var buf bytes.Buffer
			w, _ := flate.NewWriter(&buf, flate.BestSpeed)
			out := 0
			for i := range b.N {
				buf.Reset()
				w.Reset(&buf)
				w.Write(in.msgs[i%len(in.msgs)])
				w.Close()
				out += buf.Len()
			}
			b.ReportMetric(float64(out)/float64(b.N), "bytes/msg")
		})
		b.Run("unzstd-dict1/"+in.name, func(b *testing.B) {
			enc, err := newRawEncoder()
			tcheck(b, err, "encoder")
			var zs [][]byte
			for _, m := range in.msgs {
				zs = append(zs, enc.EncodeAll(m, nil))
			}
			for i := range b.N {
				if _, err := unzstd(zs[i%len(zs)], rawDictID1, maxRawBytes); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("memory", func(b *testing.B) {
		const n = 8
		for range b.N {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			encs := make([]*zstd.Encoder, n)
			for i := range encs {
				encs[i], _ = newRawEncoder()
				encs[i].EncodeAll(postfix, nil)
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "heap-bytes/compressor")
			runtime.KeepAlive(encs)
		}
	})
}

// BenchmarkRecordCodec times the record codec per record of the Postfix
// DSN of the SMTP benchmark: encodeRecord (JSON and zstd, in the writer's
// transaction) and decodeOwn (zstd and JSON, for queries and exports),
// against plain JSON, which records were before.
//
//	go test -run '^$' -bench RecordCodec ./store/
func BenchmarkRecordCodec(b *testing.B) {
	raw, err := os.ReadFile("../../cmd/bouncer/testdata/postfix-543.eml")
	tcheck(b, err, "reading")
	rep, err := parse.Message(bytes.NewReader(raw), parse.DefaultLimits())
	tcheck(b, err, "parsing")
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	d := &store.Delivery{Received: now, Raw: raw, Report: rep,
		Envelope: store.Envelope{RcptTo: []string{"bounces+user=dead.test@localhost"}, ClientIP: "127.0.0.1", Helo: "mx.example.net", VERP: "user@dead.test"}}
	rec := store.BuildRecords(d, now)[0]
	key := make([]byte, keyLen)
	rec.ID, rec.MsgID, rec.Verdict = encodeID(key), encodeID(key), store.ActionSuppress
	v, err := encodeRecord(&rec, "", nil)
	tcheck(b, err, "encoding")
	j, err := recordJSONOf(v)
	tcheck(b, err, "decompressing")
	b.Run("encode", func(b *testing.B) {
		var buf []byte // as the writer keeps one (txWriter.recJSON)
		for range b.N {
			if _, err := encodeRecord(&rec, "", &buf); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(len(v)), "bytes/record")
	})
	b.Run("decode", func(b *testing.B) {
		for range b.N {
			if _, _, err := decodeOwn(key, v); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode-json", func(b *testing.B) {
		for range b.N {
			if _, _, err := decodeOwn(key, j); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(len(j)), "bytes/record")
	})
}
