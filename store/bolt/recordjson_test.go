package bolt

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/bouncer/bouncer/store"

	"github.com/bouncer/bouncer/parse"
)

// hostileStrings are strings every byte class of encoding/json's string
// escaping meets: quotes and backslashes, control bytes (with and without
// a short escape), DEL, the HTML-unsafe '<', '>' and '&', U+2028 and
// U+2029, invalid UTF-8 (a lone continuation byte, a cut sequence, an
// encoded surrogate, an over-long form, 0xff), a valid U+FFFD and other
// multi-byte characters.
var hostileStrings = []string{
	"",
	"user@example.com",
	`say "hi" \ back\slash \u0041`,
	"\x00\x01\x07\b\t\n\v\f\r\x0e\x1b\x1f \x7f",
	"<script>a && b</script> > <",
	"line\u2028sep\u2029para \u2027\u202a",
	"bad \x80 cut \xe2\x80 end",
	"surrogate \xed\xa0\x80 overlong \xc0\xaf ff \xff\xfe",
	"valid \ufffd é 日本 😀",
	"\xe2\x80\xa8\xe2\x80",
	allBytes(),
}

// allBytes returns the bytes 0 to 255 in order.
func allBytes() string {
	b := make([]byte, 256)
	for i := range b {
		b[i] = byte(i)
	}
	return string(b)
}

// checkRecordJSON fails t unless appendDiskRecord writes d as json.Marshal
// does, or fails as it does.
func checkRecordJSON(t testing.TB, name string, d *diskRecord) {
	t.Helper()
	checkAppender(t, name, d, appendDiskRecord)
}

// checkAppender fails t unless app writes v after a prefix as json.Marshal
// writes v, or fails as it does, leaving the prefix alone.
func checkAppender[T any](t testing.TB, name string, v *T, app func([]byte, *T) ([]byte, error)) {
	t.Helper()
	want, werr := json.Marshal(v)
	prefix := []byte("prefix")
	got, gerr := app(prefix, v)
	if werr != nil || gerr != nil {
		if werr == nil || gerr == nil || werr.Error() != gerr.Error() {
			t.Fatalf("%s: error %v, json.Marshal's %v", name, gerr, werr)
		}
		if !bytes.Equal(got, prefix) {
			t.Fatalf("%s: failed, but left %q", name, got)
		}
		return
	}
	if !bytes.HasPrefix(got, prefix) {
		t.Fatalf("%s: dst not kept: %q", name, got)
	}
	if got := got[len(prefix):]; !bytes.Equal(got, want) {
		t.Fatalf("%s: differs from json.Marshal at byte %d:\n got %s\nwant %s", name, firstDiff(got, want), around(got, want), around(want, got))
	}
}

// firstDiff returns the index of the first byte where a and b differ.
func firstDiff(a, b []byte) int {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	return i
}

// around returns a with "..." for what is more than 60 bytes away from
// where it first differs from b.
func around(a, b []byte) string {
	i := firstDiff(a, b)
	lo, hi, pre, post := max(i-60, 0), min(i+60, len(a)), "", ""
	if lo > 0 {
		pre = "..."
	}
	if hi < len(a) {
		post = "..."
	}
	return pre + string(a[lo:hi]) + post
}

// TestRecordJSONCorpus encodes every record of the sample messages (the
// sisimai maildir and parse's golden files), as the first of its message
// and as another, with appendDiskRecord and through encodeRecord, with a
// new buffer and with one buffer for all as the writer has: all as
// json.Marshal writes them, the stored values checked after the last so
// that one aliasing the buffer would show.
func TestRecordJSONCorpus(t *testing.T) {
	t.Parallel()
	files := corpusFiles(t)
	golden, err := filepath.Glob("../../parse/testdata/golden/*.eml")
	tcheck(t, err, "listing golden files")
	files = append(files, golden...)
	files = append(files, "testdata/postfix-5.1.1.eml", "../../cmd/bouncer/testdata/postfix-543.eml")
	now := time.Date(2025, 3, 1, 12, 0, 0, 123456000, time.UTC)
	type stored struct {
		name    string
		v, want []byte
	}
	var all []stored
	var buf []byte
	n := 0
	for _, f := range files {
		d := corpusDelivery(t, f)
		d.Envelope.VERP, d.Envelope.Verified, d.Envelope.Campaign = "user@dead.test", n%2 == 0, "c<1>"
		recs := store.BuildRecords(d, now)
		for i := range recs {
			rec := &recs[i]
			rec.ID, rec.MsgID = encodeID([]byte{byte(n), byte(i), 0, 0, 0, 0, 0, 1}), encodeID([]byte{byte(n), 0, 0, 0, 0, 0, 0, 0})
			rec.Verdict, rec.Rule, rec.Suppressed = store.ActionSuppress, "hard & <5.1.1>", n%3 == 0
			for _, base := range []string{"", recs[0].ID} {
				var env diskEnvelope
				dr := diskRecordOf(rec, base, &env)
				checkRecordJSON(t, f, &dr)
				want, err := json.Marshal(&dr)
				tcheck(t, err, "marshal")
				v, err := encodeRecord(rec, base, nil)
				tcheck(t, err, "encoding "+f)
				all = append(all, stored{f, v, want})
				v, err = encodeRecord(rec, base, &buf)
				tcheck(t, err, "encoding "+f)
				all = append(all, stored{f + " (shared buffer)", v, want})
				n++
			}
		}
	}
	for _, s := range all {
		got, err := recordJSONOf(s.v)
		tcheck(t, err, "decompressing "+s.name)
		if !bytes.Equal(got, s.want) {
			t.Fatalf("%s: encodeRecord differs from json.Marshal at byte %d:\n got %s\nwant %s", s.name, firstDiff(got, s.want), around(got, s.want), around(s.want, got))
		}
	}
	t.Logf("%d records of %d messages", n, len(files))
}

// filler sets the exported fields of a value to non-zero values, in
// depth-first order of its leaves (strings, bools, numbers, times, map
// entries). With only >= 0 it sets leaf only alone; pointers and slices
// on the way are set either way.
type filler struct {
	t    *testing.T
	str  string // prefix of each string
	only int
	leaf int // leaves seen so far
}

// next says whether the next leaf is to be set.
func (f *filler) next() bool {
	f.leaf++
	return f.only < 0 || f.leaf-1 == f.only
}

// text returns a string for the next leaf: the prefix, a hostile string
// and the leaf's number, so that no two fields have the same value.
func (f *filler) text() string {
	return f.str + hostileStrings[f.leaf%len(hostileStrings)] + strconv.Itoa(f.leaf)
}

var timeType = reflect.TypeFor[time.Time]()

func (f *filler) fill(v reflect.Value) {
	if v.Type() == timeType {
		if f.next() {
			v.Set(reflect.ValueOf(time.Date(2025, 3, 1, 12, 0, 0, 120000000+f.leaf, time.FixedZone("", 5*3600+30*60))))
		}
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				f.fill(v.Field(i))
			}
		}
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		f.fill(v.Elem())
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 3, 3))
		for i := range 3 {
			f.fill(v.Index(i))
		}
	case reflect.Map:
		v.Set(reflect.MakeMap(v.Type()))
		for range 4 {
			k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
			f.fill(k)
			f.fill(e)
			if !k.IsZero() {
				v.SetMapIndex(k, e)
			}
		}
	case reflect.String:
		if f.next() {
			v.SetString(f.text())
		}
	case reflect.Bool:
		if f.next() {
			v.SetBool(true)
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if f.next() {
			v.SetInt(-int64(f.leaf) - 1)
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if f.next() {
			v.SetUint(uint64(f.leaf) + 1)
		}
	case reflect.Float32, reflect.Float64:
		if f.next() {
			v.SetFloat(float64(f.leaf) + 0.5)
		}
	default:
		f.t.Fatalf("filler: no value for a %s (a new field type?)", v.Type())
	}
}

// eachFilled calls check with a T whose exported fields (recursively) are
// all set ("all fields"), then with one for each leaf field set alone
// ("field N"), for each of three string prefixes. It fails t if fewer than
// 80 leaves were found: the types it is used on have more.
func eachFilled[T any](t *testing.T, check func(name string, v *T)) {
	t.Helper()
	for _, prefix := range []string{"", "\x00", "<\u2028\xff"} {
		all := &filler{t: t, str: prefix, only: -1}
		var v T
		all.fill(reflect.ValueOf(&v).Elem())
		if all.leaf < 80 {
			t.Fatalf("%d leaves filled, want all the fields of %T", all.leaf, v)
		}
		check("all fields", &v)
		for i := range all.leaf {
			one := &filler{t: t, str: prefix, only: i}
			var v T
			one.fill(reflect.ValueOf(&v).Elem())
			check("field "+strconv.Itoa(i), &v)
		}
	}
}

// TestRecordJSONAllFields sets every exported field of diskRecord, and of
// Record, Envelope, diskEnvelope, parse.Recipient, parse.Original and
// parse.Feedback under it, to non-zero values with hostile strings, all
// at once and one at a time, and compares appendDiskRecord with
// json.Marshal; so does the zero value. A field added to any of those
// types and not to appendDiskRecord fails it.
func TestRecordJSONAllFields(t *testing.T) {
	t.Parallel()
	eachFilled(t, func(name string, d *diskRecord) {
		checkRecordJSON(t, name, d)
		if name == "all fields" {
			// As encodeRecord fills it, from a Record with every field set.
			for _, base := range []string{"", "base\"id"} {
				var env diskEnvelope
				dr := diskRecordOf(d.Record, base, &env)
				checkRecordJSON(t, "record with all fields, base "+base, &dr)
			}
		}
	})
	checkRecordJSON(t, "zero", &diskRecord{})
	checkRecordJSON(t, "zero record", &diskRecord{Record: &store.Record{}})
	checkRecordJSON(t, "empty envelope, original and feedback", &diskRecord{Envelope: &diskEnvelope{}, Original: &parse.Original{}, Feedback: &parse.Feedback{}})
	checkRecordJSON(t, "empty lists", &diskRecord{Envelope: &diskEnvelope{RcptTo: []string{}}, Original: &parse.Original{XHeaders: map[string]string{}}})
	checkRecordJSON(t, "empty strings in lists", &diskRecord{Envelope: &diskEnvelope{RcptTo: []string{"", ""}}, Original: &parse.Original{XHeaders: map[string]string{"": "", "a": ""}}})
	for _, base := range []string{"", "b"} {
		var env diskEnvelope
		dr := diskRecordOf(&store.Record{}, base, &env)
		checkRecordJSON(t, "zero record, base "+base, &dr)
	}
}

// TestRecordJSONStrings compares the hostile strings, each byte on its own
// and each pair of bytes, and the map keys' order.
func TestRecordJSONStrings(t *testing.T) {
	t.Parallel()
	var ss []string
	ss = append(ss, hostileStrings...)
	for i := range 256 {
		ss = append(ss, string(rune(i)), string([]byte{byte(i)}))
		for j := range 256 {
			ss = append(ss, string([]byte{byte(i), byte(j)}))
		}
	}
	for _, s := range ss {
		want, err := json.Marshal(s)
		tcheck(t, err, "marshal")
		if got := appendString(nil, s); !bytes.Equal(got, want) {
			t.Fatalf("%q: got %s, want %s", s, got, want)
		}
	}
	x := map[string]string{}
	for _, s := range hostileStrings {
		x[s] = s
	}
	checkRecordJSON(t, "x headers", &diskRecord{Original: &parse.Original{XHeaders: x}})
}

// TestRecordJSONTimes compares times: with and without a fraction of a
// second, in several zones, with a monotonic reading, zero in a zone, and
// those json.Marshal refuses (year outside 0-9999, offset of 24 hours).
func TestRecordJSONTimes(t *testing.T) {
	t.Parallel()
	zones := []*time.Location{time.UTC, time.Local, time.FixedZone("", 0), time.FixedZone("IST", 5*3600+30*60),
		time.FixedZone("", -(23*3600 + 59*60)), time.FixedZone("", 24*3600), time.FixedZone("", -24*3600),
		time.FixedZone("", 3600+30), time.FixedZone("", 100*3600)}
	times := []time.Time{time.Now(), {}, time.Unix(0, 0), time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC),
		time.Date(2025, 3, 1, 12, 0, 0, 1, time.UTC), time.Date(2025, 3, 1, 12, 0, 0, 100, time.UTC),
		time.Date(2025, 3, 1, 12, 0, 0, 999999999, time.UTC), time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC), time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)}
	for _, tm := range times {
		for _, z := range zones {
			checkRecordJSON(t, tm.In(z).String(), &diskRecord{Received: tm.In(z)})
		}
	}
}

// FuzzRecordJSON compares appendDiskRecord with json.Marshal on records
// with fuzzed strings in every kind of place (a member, a list, a map key
// and value, a pointed-to struct), fuzzed flags and a fuzzed time.
func FuzzRecordJSON(f *testing.F) {
	for i, s := range hostileStrings {
		f.Add(s, hostileStrings[(i+1)%len(hostileStrings)], "x", i%2 == 0, int64(1740830400+i), int64(i*1000), i*1800)
	}
	f.Fuzz(func(t *testing.T, a, b, c string, flag bool, sec, nsec int64, off int) {
		rec := &store.Record{
			ID: a, MsgID: b, Received: time.Unix(sec, nsec).In(time.FixedZone(c, off)),
			Envelope: store.Envelope{MailFrom: c, RcptTo: []string{a, b}, ClientIP: c, VERP: a, Verified: flag},
			Addr:     a, Domain: b, ReportingMTA: c, ParseError: b, Verdict: c, Suppressed: flag, DuplicateOf: a,
			Original: &parse.Original{Subject: a, XHeaders: map[string]string{a: b, b: c, c: a}},
			Feedback: &parse.Feedback{UserAgent: b, AuthenticationRes: c},
		}
		rec.Recipient = parse.Recipient{FinalRecipient: a, Action: parse.Action(b), StatusInferred: flag,
			DiagnosticCode: c, Kind: parse.Kind(a), Class: parse.Class(b), Reason: parse.Reason(c), DecodedBy: a}
		for _, base := range []string{"", a} {
			var env diskEnvelope
			d := diskRecordOf(rec, base, &env)
			checkRecordJSON(t, "fuzz", &d)
		}
		checkRecordJSON(t, "fuzz sparse", &diskRecord{ID: a, Base: b, Envelope: &diskEnvelope{Helo: c}, Original: &parse.Original{}})
	})
}

// checkWALMetaJSON fails t unless the metadata m, in a frame of an old
// log, reads back as it was written (its JSON the same). Metadata that
// json.Marshal refuses was never written: the old writer failed the
// same way.
func checkWALMetaJSON(t testing.TB, name string, m *walMeta) {
	t.Helper()
	want, werr := json.Marshal(m)
	if werr == nil {
		// What a decoder can give back: invalid UTF-8 becomes U+FFFD,
		// which json.Marshal then writes as it is, not as \ufffd.
		var dec walMeta
		tcheck(t, json.Unmarshal(want, &dec), "decoding "+name)
		want, werr = json.Marshal(&dec)
	}
	r := &request{d: &store.Delivery{Received: m.Received, Envelope: m.Envelope, Report: m.Report, ParseError: m.ParseError},
		raw: []byte{rawStored, 'x'}, now: time.Unix(0, 42), ids: idGen{nanos: 7, seq: 3}}
	frame, err := appendFrame(nil, 9, r)
	if werr != nil {
		if err == nil {
			t.Fatalf("%s: framed metadata json.Marshal refuses (%v)", name, werr)
		}
		return
	}
	tcheck(t, err, "framing "+name)
	got, last, err := readFrames(frame, 0)
	tcheck(t, err, "reading frame of "+name)
	if last != 9 || len(got) != 1 {
		t.Fatalf("%s: read %d frames up to %d", name, len(got), last)
	}
	g := got[0]
	back, _ := json.Marshal(&walMeta{Received: g.d.Received, Envelope: g.d.Envelope, Report: g.d.Report, ParseError: g.d.ParseError})
	if !bytes.Equal(back, want) {
		t.Fatalf("%s: metadata read back differs:\n got %s\nwant %s", name, around(back, want), around(want, back))
	}
	if !g.now.Equal(r.now) || g.ids != r.ids || g.seq != 9 || !bytes.Equal(g.raw, r.raw) {
		t.Fatalf("%s: frame read back as now %v ids %+v seq %d raw %q", name, g.now, g.ids, g.seq, g.raw)
	}
}

// TestWALMetaJSONCorpus frames the metadata and raw message of every
// sample message as an old log did, and reads each frame back.
func TestWALMetaJSONCorpus(t *testing.T) {
	t.Parallel()
	files := corpusFiles(t)
	golden, err := filepath.Glob("../../parse/testdata/golden/*.eml")
	tcheck(t, err, "listing golden files")
	files = append(files, golden...)
	for i, f := range files {
		d := corpusDelivery(t, f)
		d.Envelope.VERP, d.Envelope.Verified = "user@dead.test", i%2 == 0
		m := &walMeta{Received: d.Received, Envelope: d.Envelope, Report: d.Report, ParseError: d.ParseError}
		checkWALMetaJSON(t, f, m)
		r := &request{d: d, raw: d.Raw, now: d.Received, ids: idGen{nanos: 7, seq: uint32(i)}}
		frame, err := appendFrame([]byte("x"), uint64(i+1), r)
		tcheck(t, err, "framing "+f)
		got, last, err := readFrames(frame[1:], 0)
		tcheck(t, err, "reading frame of "+f)
		if last != uint64(i+1) || len(got) != 1 {
			t.Fatalf("%s: read %d frames up to %d", f, len(got), last)
		}
		if !bytes.Equal(got[0].raw, d.Raw) {
			t.Fatalf("%s: raw message read back differs", f)
		}
	}
}

// TestWALMetaJSONAllFields is TestRecordJSONAllFields for an old log's
// metadata: every exported field of walMeta, Envelope and parse.Report
// (with its recipients, original and feedback) set, all at once and one
// at a time, and empty values, read back from a frame.
func TestWALMetaJSONAllFields(t *testing.T) {
	t.Parallel()
	eachFilled(t, func(name string, m *walMeta) { checkWALMetaJSON(t, name, m) })
	checkWALMetaJSON(t, "zero", &walMeta{})
	checkWALMetaJSON(t, "empty report", &walMeta{Report: &parse.Report{}})
	checkWALMetaJSON(t, "empty lists", &walMeta{Envelope: store.Envelope{RcptTo: []string{}},
		Report: &parse.Report{Recipients: []parse.Recipient{}, Warnings: []string{}, Original: &parse.Original{XHeaders: map[string]string{}}, Feedback: &parse.Feedback{}}})
	checkWALMetaJSON(t, "empty strings in lists", &walMeta{Envelope: store.Envelope{RcptTo: []string{"", ""}},
		Report: &parse.Report{Recipients: []parse.Recipient{{}, {}}, Warnings: []string{""}}})
	checkWALMetaJSON(t, "year 10000", &walMeta{Received: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)})
}
