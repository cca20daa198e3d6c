package bolt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/bouncer/bouncer/store"

	"github.com/bouncer/bouncer/parse"
	bbolt "go.etcd.io/bbolt"
)

// domainNames lists the domains of ds, comma-separated.
func domainNames(ds []store.DomainStat) string {
	var names []string
	for _, d := range ds {
		names = append(names, d.Domain)
	}
	return strings.Join(names, ",")
}

// recentNames calls RecentDomains and lists the domains it returns.
func recentNames(t *testing.T, db *DB, f store.DomainFilter) string {
	t.Helper()
	ds, err := db.RecentDomains(f)
	tcheck(t, err, "recent domains")
	names := domainNames(ds)
	// The same through the dom_time walk: a limit of 0 is answered by a
	// pass over all the aggregates and a sort, a status held by few
	// domains from dom_status, and the rest by the walk.
	walk := f
	if walk.Limit == 0 {
		walk.Limit = math.MaxInt32
	}
	walked, err := db.recentDomains(walk, 0)
	tcheck(t, err, "recent domains, walking dom_time")
	if got := domainNames(walked); got != names {
		t.Errorf("%+v: walking dom_time gives %s, not %s", f, got, names)
	}
	return names
}

// domTimeKeys counts the keys of the dom_time bucket.
func domTimeKeys(t *testing.T, db *DB) int {
	t.Helper()
	n := 0
	tcheck(t, db.view(func(tx *bbolt.Tx) error {
		n = tx.Bucket(bucketDomTime).Stats().KeyN
		return nil
	}), "count dom_time")
	return n
}

func TestRecentDomains(t *testing.T) {
	t.Parallel()
	db, _ := mustOpen(t, Options{})
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	at := func(addr, status string, minute int) {
		t.Helper()
		d := bounce(addr, status, parse.KindBounce, parse.ClassHard)
		d.Received = t0.Add(time.Duration(minute) * time.Minute)
		save(t, db, d)
	}
	at("a@one.test", "5.1.1", 1)
	at("a@two.test", "5.4.3", 2)
	at("a@three.test", "5.1.1", 3)
	at("a@four.test", "5.4.3", 4)
	if got, want := recentNames(t, db, store.DomainFilter{}), "four.test,three.test,two.test,one.test"; got != want {
		t.Fatalf("all: %s, want %s", got, want)
	}
	// A new bounce moves one.test to the front; an older record arriving
	// late (minute 0) does not move three.test back.
	at("b@one.test", "5.4.3", 5)
	at("b@three.test", "5.4.3", 0)
	if got, want := recentNames(t, db, store.DomainFilter{}), "one.test,four.test,three.test,two.test"; got != want {
		t.Fatalf("after more bounces: %s, want %s", got, want)
	}
	if got, want := recentNames(t, db, store.DomainFilter{Limit: 2}), "one.test,four.test"; got != want {
		t.Fatalf("limit 2: %s, want %s", got, want)
	}
	if got, want := recentNames(t, db, store.DomainFilter{Status: "5.4.3", Limit: 3}), "one.test,four.test,three.test"; got != want {
		t.Fatalf("5.4.3 limit 3: %s, want %s", got, want)
	}
	if got, want := recentNames(t, db, store.DomainFilter{Status: "5.1.1"}), "one.test,three.test"; got != want {
		t.Fatalf("5.1.1: %s, want %s", got, want)
	}
	if got := recentNames(t, db, store.DomainFilter{Status: "2.0.0"}); got != "" {
		t.Fatalf("2.0.0: %s, want none", got)
	}
	ds, err := db.RecentDomains(store.DomainFilter{Limit: 1})
	tcheck(t, err, "recent")
	if ds[0].Total != 2 || !ds[0].LastSeen.Equal(t0.Add(5*time.Minute)) || !ds[0].FirstSeen.Equal(t0.Add(time.Minute)) {
		t.Fatalf("one.test aggregate: %+v", ds[0])
	}
	// Bounced at the same time: the greater name first, on every path.
	at("c@five.test", "5.1.1", 6)
	at("c@six.test", "5.1.1", 6)
	if got, want := recentNames(t, db, store.DomainFilter{}), "six.test,five.test,one.test,four.test,three.test,two.test"; got != want {
		t.Fatalf("same time: %s, want %s", got, want)
	}
	if got, want := recentNames(t, db, store.DomainFilter{Status: "5.1.1"}), "six.test,five.test,one.test,three.test"; got != want {
		t.Fatalf("same time, 5.1.1: %s, want %s", got, want)
	}
	if n := domTimeKeys(t, db); n != 6 {
		t.Fatalf("dom_time has %d keys, want one per domain (6)", n)
	}
	if _, err := db.RecentDomains(store.DomainFilter{Limit: -1}); err == nil {
		t.Fatalf("negative limit: no error")
	}
	tcheck(t, db.Check(), "check")
}

// TestRecentDomainsGroup saves many bounces of few domains concurrently,
// so that one transaction changes an aggregate several times: dom_time
// must still hold one key per domain, at its LastSeen.
func TestRecentDomainsGroup(t *testing.T) {
	t.Parallel()
	db, _ := mustOpen(t, Options{})
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	saveConcurrently(t, db, 200, func(i int) *store.Delivery {
		d := bounce(fmt.Sprintf("u%d@d%d.test", i, i%7), "5.1.1", parse.KindBounce, parse.ClassHard)
		d.Received = t0.Add(time.Duration(i) * time.Second)
		return d
	})
	// The last bounce of d<k> is at second 193+k.
	if got, want := recentNames(t, db, store.DomainFilter{}), "d3.test,d2.test,d1.test,d0.test,d6.test,d5.test,d4.test"; got != want {
		t.Fatalf("order: %s, want %s", got, want)
	}
	if n := domTimeKeys(t, db); n != 7 {
		t.Fatalf("dom_time has %d keys, want 7", n)
	}
	tcheck(t, db.Check(), "check")
}

func TestCheckDomTime(t *testing.T) {
	t.Parallel()
	db, _ := mustOpen(t, Options{})
	save(t, db, bounce("a@one.test", "5.1.1", parse.KindBounce, parse.ClassHard))
	tcheck(t, db.update(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketDomTime).Put(domTimeKey(time.Unix(5, 0), "one.test"), nil)
	}), "add stale key")
	err := db.Check()
	if err == nil || !strings.Contains(err.Error(), "time differs") || !strings.Contains(err.Error(), "2 keys for 1 domain") {
		t.Fatalf("check: %v", err)
	}
}

// TestSchemaUpgrade opens a version 3 file (no dom_time bucket): a
// read-write Open fills the index and writes version 4; a read-only Open
// refuses it.
func TestSchemaUpgrade(t *testing.T) {
	t.Parallel()
	db, path := mustOpen(t, Options{})
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for i, dom := range []string{"b.test", "c.test", "a.test"} {
		d := bounce("x@"+dom, "5.1.1", parse.KindBounce, parse.ClassHard)
		d.Received = t0.Add(time.Duration(i) * time.Hour)
		save(t, db, d)
	}
	tcheck(t, db.update(func(tx *bbolt.Tx) error {
		if err := tx.DeleteBucket(bucketDomTime); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(keyVersion, []byte("3"))
	}), "make version 3")
	tcheck(t, db.Close(), "close")

	if _, err := Open(path, Options{ReadOnly: true}); !errors.Is(err, ErrSchema) {
		t.Fatalf("read-only open of version 3: %v, want ErrSchema", err)
	}
	db, err := Open(path, Options{})
	tcheck(t, err, "open version 3")
	defer db.Close()
	if got, want := recentNames(t, db, store.DomainFilter{}), "a.test,c.test,b.test"; got != want {
		t.Fatalf("after upgrade: %s, want %s", got, want)
	}
	tcheck(t, db.Check(), "check")
	tcheck(t, db.view(func(tx *bbolt.Tx) error {
		n, err := fileVersion(tx)
		if err == nil && n != SchemaVersion {
			err = fmt.Errorf("version %d", n)
		}
		return err
	}), "version after upgrade")
}

// fullStat is an aggregate with every stored field set.
func fullStat() store.DomainStat {
	return store.DomainStat{
		Domain: "dead.test", Total: 42,
		Counts:        map[string]int{"5.4.3": 40, "": 1, "other": 1},
		Kinds:         map[string]int{"bounce": 41, "unknown": 1},
		FirstSeen:     time.Date(2026, 3, 1, 12, 0, 0, 123, time.UTC),
		LastSeen:      time.Date(2026, 3, 2, 8, 30, 0, 0, time.UTC),
		RemoteMTAs:    []string{"mx1.dead.test", "mx2.dead.test"},
		ReportingMTAs: []string{"relay.example"},
		MTAsCapped:    true,
	}
}

func TestDomainStatCodec(t *testing.T) {
	t.Parallel()
	for _, st := range []store.DomainStat{fullStat(), {Domain: "empty.test", Counts: map[string]int{}, Kinds: map[string]int{}}} {
		v := encodeDomainStat(&st)
		got, err := decodeDomainStat([]byte(st.Domain), v)
		tcheck(t, err, "decode")
		if mustJSON(t, got) != mustJSON(t, st) {
			t.Errorf("round trip:\n got %s\nwant %s", mustJSON(t, got), mustJSON(t, st))
		}
		// Every cut of the value, and a byte too many, is an error.
		for n := range len(v) {
			if _, err := decodeDomainStat([]byte(st.Domain), v[:n]); err == nil {
				t.Errorf("%s cut to %d of %d bytes decoded", st.Domain, n, len(v))
			}
		}
		if _, err := decodeDomainStat([]byte(st.Domain), append(v, 0)); err == nil {
			t.Errorf("%s with a trailing byte decoded", st.Domain)
		}
	}
	// A schema 3 (JSON) aggregate still decodes.
	st := fullStat()
	got, err := decodeDomainStat([]byte(st.Domain), []byte(mustJSON(t, st)))
	tcheck(t, err, "decode JSON")
	if mustJSON(t, got) != mustJSON(t, st) {
		t.Errorf("JSON aggregate: %s", mustJSON(t, got))
	}
	// A count that claims more items than bytes left fails without
	// allocating for it.
	hostile := []byte{domainCodec, 1, 'x', 0, 0xff, 0xff, 0xff, 0xff, 0x0f}
	if _, err := decodeDomainStat([]byte("x"), hostile); err == nil {
		t.Errorf("hostile count decoded")
	}
}

func FuzzDomainStat(f *testing.F) {
	st := fullStat()
	f.Add(encodeDomainStat(&st))
	f.Add([]byte(`{"domain":"a.test","total":1}`))
	f.Add([]byte{domainCodec})
	f.Fuzz(func(t *testing.T, v []byte) {
		st, err := decodeDomainStat([]byte("k"), v)
		if err != nil || (len(v) > 0 && v[0] == '{') {
			return
		}
		again, err := decodeDomainStat([]byte("k"), encodeDomainStat(&st))
		if err != nil {
			t.Fatalf("re-encoded value does not decode: %v", err)
		}
		if mustJSON(t, again) != mustJSON(t, st) {
			t.Fatalf("re-encoded value differs:\n%s\n%s", mustJSON(t, again), mustJSON(t, st))
		}
	})
}

// BenchmarkDomainStatDecode compares decoding one aggregate stored as
// JSON (schema 3) and in the binary form.
//
//	go test -run '^$' -bench DomainStatDecode ./store/
func BenchmarkDomainStatDecode(b *testing.B) {
	st := fullStat()
	for _, c := range []struct {
		name string
		v    []byte
	}{{"json", []byte(mustJSON(b, st))}, {"binary", encodeDomainStat(&st)}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportMetric(float64(len(c.v)), "bytes")
			for range b.N {
				if _, err := decodeDomainStat([]byte(st.Domain), c.v); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestUvarintString compares uvarintString with binary.Uvarint.
func TestUvarintString(t *testing.T) {
	t.Parallel()
	cases := [][]byte{{}, {0}, {1}, {0x7f}, {0x80}, {0x80, 1}, {0xff, 0xff, 0xff, 0xff, 0x0f}}
	for _, n := range []uint64{300, 1 << 35, math.MaxUint64} {
		cases = append(cases, binary.AppendUvarint(nil, n))
	}
	cases = append(cases, bytes.Repeat([]byte{0xff}, 11), append(bytes.Repeat([]byte{0xff}, 9), 2))
	for _, c := range cases {
		n, w := uvarintString(string(c))
		wn, ww := binary.Uvarint(c)
		if n != wn || w != ww {
			t.Errorf("%x: got %d, %d, want %d, %d", c, n, w, wn, ww)
		}
	}
}

func TestDomainStat(t *testing.T) {
	t.Parallel()
	db, _ := mustOpen(t, Options{})
	save(t, db, bounce("a@one.test", "5.4.3", parse.KindBounce, parse.ClassHard))
	save(t, db, bounce("b@one.test", "5.1.1", parse.KindBounce, parse.ClassHard))
	if _, _, err := db.SetMXCheck("one.test", store.MXCheck{Verdict: "no-mx", Checked: time.Now()}, false); err != nil {
		t.Fatalf("mx check: %v", err)
	}
	st, err := db.DomainStat("one.test")
	if err != nil || st.Total != 2 || st.Counts["5.4.3"] != 1 || st.LastMX == nil || st.LastMX.Verdict != "no-mx" {
		t.Fatalf("DomainStat: %+v, %v", st, err)
	}
	if _, err := db.DomainStat("two.test"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown domain: %v", err)
	}
}
