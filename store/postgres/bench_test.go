package postgres

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bouncer/bouncer/parse"
	"github.com/bouncer/bouncer/store"
)

// BenchmarkSave measures ingest: 32 concurrent callers (SMTP sessions),
// each Save answered after COMMIT, with group commit (MaxBatch 64) and
// without (1). Run with PGTEST_FSYNC=on for a durable server:
//
//	PGTEST_FSYNC=on go test -run '^$' -bench Save -benchtime 3000x ./store/postgres/
func BenchmarkSave(b *testing.B) {
	for _, batch := range []int{1, 64} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			db := mustOpen(b, Options{Rules: hardRules(), MaxBatch: batch})
			tcheck(b, db.SetOutboxTargets([]store.OutboxTarget{{Name: "l", Events: []string{store.EventHard}}}), "targets")
			const callers = 32
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for range callers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1)
						if i > int64(b.N) {
							return
						}
						d := bounce(fmt.Sprintf("u%d@d%d.example", i, i%50), "5.1.1", fmt.Sprint("a", i))
						if _, err := db.Save(context.Background(), d); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "saves/s")
		})
	}
}

// BenchmarkQuery measures the queries of `bouncer query`, `suppressed`
// and `domains` on n records (BENCH_RECORDS is not read: n is fixed so
// that the benchmark stays short; the figure is for 1M).
func BenchmarkQuery(b *testing.B) {
	db := mustOpen(b, Options{Rules: hardRules()})
	ctx := context.Background()
	const n = 200_000
	// Bulk load through SQL: the rules' path is BenchmarkSave's.
	_, err := db.pool.Exec(ctx, `INSERT INTO records (id, msg_id, addr, domain, status, kind, rec)
		SELECT decode(lpad(to_hex(1700000000000000000 + i * 1000), 16, '0') || '00000000', 'hex'),
		       decode(lpad(to_hex(1700000000000000000 + i * 1000), 16, '0') || '00000000', 'hex'),
		       convert_to('u' || i || '@d' || (i % 1000) || '.example', 'UTF8'),
		       convert_to('d' || (i % 1000) || '.example', 'UTF8'),
		       convert_to(CASE WHEN i % 7 = 0 THEN '4.2.2' ELSE '5.1.1' END, 'UTF8'), 'bounce'::bytea,
		       json_build_object('recipient', 'u' || i || '@d' || (i % 1000) || '.example', 'domain', 'd' || (i % 1000) || '.example',
		           'status', CASE WHEN i % 7 = 0 THEN '4.2.2' ELSE '5.1.1' END, 'kind', 'bounce')
		FROM generate_series(1, $1) i`, n)
	tcheck(b, err, "load records")
	_, err = db.pool.Exec(ctx, `INSERT INTO suppressions (address, domain, data)
		SELECT convert_to('u' || i || '@d' || (i % 1000) || '.example', 'UTF8'), convert_to('d' || (i % 1000) || '.example', 'UTF8'),
		       json_build_object('address', 'u' || i || '@d' || (i % 1000) || '.example')
		FROM generate_series(1, $1, 3) i`, n)
	tcheck(b, err, "load suppressions")
	_, err = db.pool.Exec(ctx, `INSERT INTO domains (domain, data, last_seen)
		SELECT convert_to('d' || i || '.example', 'UTF8'), json_build_object('domain', 'd' || i || '.example', 'total', 200), i
		FROM generate_series(0, 999) i;
		INSERT INTO dom_status SELECT '5.1.1'::bytea, domain FROM domains; ANALYZE`)
	tcheck(b, err, "load domains")
	for _, c := range []struct {
		name string
		fn   func() error
	}{
		{"query-recipient", func() error { _, err := db.Query(store.Filter{Recipient: "u777@d777.example"}); return err }},
		{"query-domain-100", func() error { _, err := db.Query(store.Filter{Domain: "d5.example", Limit: 100}); return err }},
		{"query-status-domain", func() error {
			_, err := db.Query(store.Filter{Domain: "d5.example", Status: "4.2.2", Limit: 100})
			return err
		}},
		{"query-newest-100", func() error { _, err := db.Query(store.Filter{}); return err }},
		{"suppressed", func() error { _, err := db.Suppressed("u1@d1.example"); return err }},
		{"domains-recent-100", func() error { _, err := db.RecentDomains(store.DomainFilter{Limit: 100}); return err }},
		{"domains-all", func() error { _, err := db.Domains(""); return err }},
	} {
		b.Run(c.name, func(b *testing.B) {
			for range b.N {
				tcheck(b, c.fn(), c.name)
			}
		})
	}
}

// BenchmarkImport measures the bulk path of bouncer copy: batches of 2000
// records with their raw messages (the 1.7 KB Postfix DSN of the SMTP
// benchmark), by COPY (a copy into an empty database) and by INSERT ...
// ON CONFLICT in one pipelined batch (-into-nonempty):
//
//	PGTEST_FSYNC=on go test -run '^$' -bench Import -benchtime 20x ./store/postgres/
func BenchmarkImport(b *testing.B) {
	raw, err := os.ReadFile("../../cmd/bouncer/testdata/postfix-543.eml")
	tcheck(b, err, "reading the sample")
	rep, err := parse.Message(bytes.NewReader(raw), parse.DefaultLimits())
	tcheck(b, err, "decoding the sample")
	d := &store.Delivery{Received: time.Now(), Raw: raw, Report: rep,
		Envelope: store.Envelope{RcptTo: []string{"bounces@bounce.example.org"}, ClientIP: "192.0.2.1"}}
	for _, mode := range []string{"copy", "insert"} {
		b.Run(mode, func(b *testing.B) {
			db := mustOpen(b, Options{})
			recs, err := db.Save(context.Background(), d)
			tcheck(b, err, "saving the sample")
			const batch = 2000
			items := make([]store.Item, 0, 2*batch)
			n := uint64(1)
			b.ResetTimer()
			start := time.Now()
			for range b.N {
				items = items[:0]
				for range batch {
					n++
					k := make([]byte, keyLen)
					binary.BigEndian.PutUint64(k, 1<<60+n)
					r := recs[0]
					r.ID, r.MsgID = encodeID(k), encodeID(k)
					r.Addr = fmt.Sprintf("u%d@d%d.example", n, n%50_000)
					r.Domain = store.AddrDomain(r.Addr)
					items = append(items, store.Item{Raw: &store.RawMessage{MsgID: r.MsgID, Data: raw}}, store.Item{Record: &r})
				}
				tcheck(b, db.Import(context.Background(), items, mode == "insert"), "import")
			}
			b.ReportMetric(float64(b.N*batch)/time.Since(start).Seconds(), "records/s")
		})
	}
}
