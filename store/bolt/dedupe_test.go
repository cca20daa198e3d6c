package bolt

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bouncer/bouncer/store"

	"github.com/bouncer/bouncer/parse"
	bbolt "go.etcd.io/bbolt"
)

// realDSN returns the Postfix DSN of testdata with its status and action
// replaced, decoded by the real parser.
func realDSN(t *testing.T, status, action, received string) *store.Delivery {
	t.Helper()
	raw, err := os.ReadFile("testdata/postfix-5.1.1.eml")
	tcheck(t, err, "reading sample")
	raw = bytes.ReplaceAll(raw, []byte("5.1.1"), []byte(status))
	raw = bytes.Replace(raw, []byte("Action: failed"), []byte("Action: "+action), 1)
	if received != "" {
		raw = append([]byte("Received: "+received+"\r\n"), raw...)
	}
	rep, err := parse.Message(bytes.NewReader(raw), parse.Limits{})
	tcheck(t, err, "parsing sample")
	return &store.Delivery{Envelope: store.Envelope{RcptTo: []string{"bounces@bounce.example.org"}}, Raw: raw, Report: rep}
}

// dedupePolicy suppresses on 5.x.x and counts 4.x.x (two within a day
// suppress), so that a second count would show as a suppression.
func dedupePolicy(r *store.Record) store.Decision {
	switch {
	case strings.HasPrefix(r.Status, "5."):
		return store.Decision{Action: store.ActionSuppress, Rule: "5"}
	case strings.HasPrefix(r.Status, "4."):
		return store.Decision{Action: store.ActionCount, Threshold: 2, Window: 24 * time.Hour, Rule: "4"}
	}
	return store.Decision{Action: store.ActionRecord}
}

// saveConcurrently saves n copies of d, each with its own Received
// header, from n goroutines, and returns the records.
func saveConcurrently(t *testing.T, db *DB, n int, d func(i int) *store.Delivery) []store.Record {
	t.Helper()
	ds := make([]*store.Delivery, n)
	for i := range ds {
		ds[i] = d(i)
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		all  []store.Record
		errs []error
	)
	for _, d := range ds {
		wg.Go(func() {
			recs, err := db.Save(context.Background(), d)
			mu.Lock()
			defer mu.Unlock()
			all = append(all, recs...)
			if err != nil {
				errs = append(errs, err)
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		t.Fatalf("save: %v", err)
	}
	return all
}

// originals checks that exactly one of recs is not a duplicate and that
// the others point to it, and returns it.
func originals(t *testing.T, recs []store.Record) store.Record {
	t.Helper()
	var first []store.Record
	for _, r := range recs {
		if !r.Duplicate {
			first = append(first, r)
		}
	}
	if len(first) != 1 {
		t.Fatalf("%d of %d records are not duplicates, want 1", len(first), len(recs))
	}
	for _, r := range recs {
		if r.Duplicate && (r.DuplicateOf != first[0].ID || r.Verdict != store.ActionDuplicate || r.Suppressed) {
			t.Fatalf("duplicate record: duplicate_of %q verdict %q suppressed %v, want %q duplicate false",
				r.DuplicateOf, r.Verdict, r.Suppressed, first[0].ID)
		}
	}
	return first[0]
}

func TestDuplicatesConcurrent(t *testing.T) {
	t.Parallel()
	db, _ := mustOpen(t, Options{Decide: dedupePolicy})
	tcheck(t, db.SetOutboxTargets([]store.OutboxTarget{{Name: "app", Events: []string{store.EventHard, store.EventSoft}}}), "targets")

	// A hard bounce five times, via five relays.
	recs := saveConcurrently(t, db, 5, func(i int) *store.Delivery {
		return realDSN(t, "5.4.3", "failed", fmt.Sprintf("from relay%d.example by mx.bounce.example.org; Fri, 27 Nov 2026 08:0%d:00 +0000", i, i))
	})
	hard := originals(t, recs)
	if !hard.Suppressed || hard.Verdict != store.ActionSuppress {
		t.Fatalf("first hard bounce: verdict %q suppressed %v", hard.Verdict, hard.Suppressed)
	}

	// A soft bounce for another address five times, the same bytes.
	soft := func(i int) *store.Delivery {
		d := realDSN(t, "4.4.1", "delayed", "")
		d.Report.Recipients[0].FinalRecipient = "slow@example.net"
		return d
	}
	softRecs := saveConcurrently(t, db, 5, soft)
	first := originals(t, softRecs)
	if first.Verdict != store.ActionCount || first.Suppressed {
		t.Fatalf("first soft bounce: verdict %q suppressed %v", first.Verdict, first.Suppressed)
	}
	if n := softEvents(t, db, "slow@example.net"); n != 1 {
		t.Fatalf("soft counter has %d events, want 1", n)
	}
	if s, err := db.Suppressed("slow@example.net"); err == nil {
		t.Fatalf("soft bounce counted more than once: suppressed %+v", s)
	}

	var sups []store.Suppression
	tcheck(t, db.Suppressions("", func(s store.Suppression) error { sups = append(sups, s); return nil }), "suppressions")
	if len(sups) != 1 || sups[0].RecordID != hard.ID {
		t.Fatalf("suppressions: %+v, want one for record %s", sups, hard.ID)
	}
	evs := outboxEvents(t, db, false)
	if len(evs) != 2 || evs[0].RecordID == evs[1].RecordID {
		t.Fatalf("outbox: %d events, want one per report: %+v", len(evs), evs)
	}
	for _, ev := range evs {
		if ev.RecordID != hard.ID && ev.RecordID != first.ID {
			t.Fatalf("outbox event for record %s, a duplicate", ev.RecordID)
		}
	}
	stats, err := db.Domains("")
	tcheck(t, err, "domains")
	for _, st := range stats {
		if st.Total != 1 {
			t.Fatalf("domain %s counts %d records, want 1", st.Domain, st.Total)
		}
	}
	// Every copy is kept, raw message included.
	all, err := db.Query(store.Filter{})
	tcheck(t, err, "query")
	if len(all) != 10 {
		t.Fatalf("stored %d records, want 10", len(all))
	}
	for _, r := range all {
		if _, err := db.Raw(r.MsgID); err != nil {
			t.Fatalf("raw of %s: %v", r.ID, err)
		}
	}

	// Another report about the same address (a later attempt, so
	// another Arrival-Date) is not a duplicate and counts.
	d := soft(0)
	d.Raw = bytes.Replace(d.Raw, []byte("Arrival-Date: Thu, 29 Apr"), []byte("Arrival-Date: Fri, 30 Apr"), 1)
	d.Report, err = parse.Message(bytes.NewReader(d.Raw), parse.Limits{})
	tcheck(t, err, "parsing")
	d.Report.Recipients[0].FinalRecipient = "slow@example.net"
	next := save(t, db, d)[0]
	if next.Duplicate || !next.Suppressed {
		t.Fatalf("second soft report: duplicate %v suppressed %v, want counted and suppressed", next.Duplicate, next.Suppressed)
	}
	tcheck(t, db.Check(), "check")
}

func softEvents(t *testing.T, db *DB, addr string) int {
	t.Helper()
	var c store.SoftCounter
	tcheck(t, db.view(func(tx *bbolt.Tx) error {
		if v := tx.Bucket(bucketSoft).Get([]byte(addr)); v != nil {
			return json.Unmarshal(v, &c)
		}
		return nil
	}), "reading soft counter")
	return len(c.Events)
}

func TestBodyHash(t *testing.T) {
	t.Parallel()
	base := "From: a@example.org\r\nSubject: x\r\n\r\nbody line\r\nmore\r\n"
	same := []string{
		"Received: from a by b; Fri, 27 Nov 2026 08:00:00 +0000\r\n\tfor <x@y>\r\n" + base,
		"Return-Path: <>\r\nDelivered-To: b@example.org\r\nRECEIVED: from c\r\n" + base,
		strings.ReplaceAll(base, "\r\n", "\n"),
		"From: a@example.org\r\nDKIM-Signature: v=1;\r\n b=xyz\r\nSubject: x\r\n\r\nbody line\r\nmore\r\n",
	}
	want := store.BodyHash([]byte(base))
	for _, s := range same {
		if store.BodyHash([]byte(s)) != want {
			t.Errorf("hash differs for %q", s)
		}
	}
	differ := []string{
		"From: a@example.org\r\nSubject: y\r\n\r\nbody line\r\nmore\r\n",
		base + "x",
		// A Received line in the body is content, not trace.
		"From: a@example.org\r\nSubject: x\r\n\r\nReceived: z\r\nbody line\r\nmore\r\n",
		"",
	}
	for _, s := range differ {
		if store.BodyHash([]byte(s)) == want {
			t.Errorf("hash equal for %q", s)
		}
	}
}

func TestDuplicateWithoutDates(t *testing.T) {
	t.Parallel()
	db, _ := mustOpen(t, Options{Decide: dedupePolicy})
	// Reports without dates, ids or Message-ID are duplicates only when
	// the messages are identical apart from trace fields.
	d := bounce("user@plain.example", "4.2.2", parse.KindBounce, parse.ClassSoft)
	first := save(t, db, d)[0]
	again := *d
	again.Raw = append([]byte("Received: from elsewhere\r\n"), d.Raw...)
	if r := save(t, db, &again)[0]; !r.Duplicate || r.DuplicateOf != first.ID {
		t.Fatalf("retried copy: duplicate %v of %q, want of %s", r.Duplicate, r.DuplicateOf, first.ID)
	}
	other := bounce("user@plain.example", "4.2.2", parse.KindBounce, parse.ClassSoft)
	other.Raw = append(other.Raw, "second send\r\n"...)
	if r := save(t, db, other)[0]; r.Duplicate || !r.Suppressed {
		t.Fatalf("other report: duplicate %v suppressed %v, want counted to suppression", r.Duplicate, r.Suppressed)
	}
}

func TestDedupeWindow(t *testing.T) {
	t.Parallel()
	clock := newClock()
	db, _ := mustOpen(t, Options{Decide: dedupePolicy, Now: clock.Now, DedupeWindow: time.Hour})
	d := realDSN(t, "4.4.1", "delayed", "")
	if r := save(t, db, d)[0]; r.Duplicate {
		t.Fatal("first copy is a duplicate")
	}
	clock.Add(30 * time.Minute)
	if r := save(t, db, d)[0]; !r.Duplicate {
		t.Fatal("copy within the window is not a duplicate")
	}
	clock.Add(2 * time.Hour)
	if r := save(t, db, d)[0]; r.Duplicate {
		t.Fatal("copy after the window is a duplicate")
	}
}

func TestMismatch(t *testing.T) {
	t.Parallel()
	db, _ := mustOpen(t, Options{Decide: dedupePolicy})
	tcheck(t, db.SetOutboxTargets([]store.OutboxTarget{{Name: "app", Events: []string{store.EventHard, store.EventSuppressed}}}), "targets")
	d := realDSN(t, "5.4.3", "failed", "")
	d.Envelope.VERP = "victim@example.com" // the report is about kijitora@gmail.com
	r := save(t, db, d)[0]
	if r.Verdict != store.ActionMismatch || r.Suppressed || r.Mismatch != "verp recipient victim@example.com != final recipient kijitora@gmail.com" {
		t.Fatalf("mismatch: verdict %q suppressed %v mismatch %q", r.Verdict, r.Suppressed, r.Mismatch)
	}
	if _, err := db.Suppressed("victim@example.com"); err == nil {
		t.Fatal("mismatched report suppressed its VERP address")
	}
	if evs := outboxEvents(t, db, false); len(evs) != 0 {
		t.Fatalf("mismatched report queued %d events", len(evs))
	}

	// Case and a +tag do not make a mismatch; Original-Recipient may match
	// when Final-Recipient is a forwarding target.
	for i, tc := range []struct{ verp, final, orig string }{
		{"Kijitora+News@GMAIL.com", "kijitora@gmail.com", ""},
		{"kijitora@gmail.com", "kijitora+x@gmail.com", ""},
		{"user@old.example", "user@new.example", "user@old.example"},
	} {
		d := realDSN(t, "5.4.3", "failed", fmt.Sprintf("from relay%d", i))
		d.Report.ArrivalDate = fmt.Sprint(i) // another report each time
		d.Envelope.VERP = tc.verp
		d.Report.Recipients[0].FinalRecipient = tc.final
		d.Report.Recipients[0].OriginalRecipient = tc.orig
		r := save(t, db, d)[0]
		if r.Mismatch != "" || r.Verdict != store.ActionSuppress {
			t.Errorf("verp %s, final %s: verdict %q mismatch %q", tc.verp, tc.final, r.Verdict, r.Mismatch)
		}
	}
	tcheck(t, db.Check(), "check")
}

func TestCheckOtherBuckets(t *testing.T) {
	t.Parallel()
	db, _ := mustOpen(t, Options{Decide: dedupePolicy, Storm: store.StormOptions{Threshold: 1}})
	tcheck(t, db.SetOutboxTargets([]store.OutboxTarget{{Name: "app", Events: []string{store.EventHard, store.EventSoft}}}), "targets")
	for i := range 3 {
		save(t, db, bounce(fmt.Sprintf("u%d@storm.example", i), "5.4.3", parse.KindBounce, parse.ClassHard))
	}
	save(t, db, bounce("soft@x.example", "4.2.2", parse.KindBounce, parse.ClassSoft))
	if h, err := db.Holds(""); err != nil || len(h) == 0 {
		t.Fatalf("holds: %v %v, want some", h, err)
	}
	tcheck(t, db.Check(), "check before damage")

	tcheck(t, db.update(func(tx *bbolt.Tx) error {
		puts := []struct {
			bucket []byte
			k, v   string
		}{
			{bucketSeen, "0123456789abcdef", "000000000000"},
			{bucketOutbox, string(seqKey(999)), `{"seq":1}`},
			{bucketOutboxDead, string(seqKey(5)), `not json`},
			{bucketHeld, string(lp(nil, "storm.example")) + "other@storm.example", `{"address":"u1@storm.example","domain":"storm.example"}`},
			{bucketDomains, "wrong.example", `{"domain":"right.example"}`},
			{bucketSoft, "soft@x.example", `{"t":[3,2,1]}`},
			{bucketStormFlag, "storm.example", `{"domain":`},
			{bucketDomStatus, string(lp(nil, "5.4.3")) + "nowhere.example", ""},
		}
		for _, p := range puts {
			if err := tx.Bucket(p.bucket).Put([]byte(p.k), []byte(p.v)); err != nil {
				return err
			}
		}
		return nil
	}), "damage")
	err := db.Check()
	if err == nil {
		t.Fatal("check after damage: no error")
	}
	for _, want := range []string{
		`seen "0123456789abcdef": record 303030303030303030303030 missing`,
		"outbox \"\\x00\\x00\\x00\\x00\\x00\\x00\\x03\\xe7\": key does not match event 1",
		"outbox_dead",
		`held "\rstorm.exampleother@storm.example": key does not match hold of u1@storm.example`,
		`domains "wrong.example": value names "right.example"`,
		`soft "soft@x.example": events out of order`,
		`storm_flag "storm.example": unexpected end of JSON input`,
		`dom_status "\x055.4.3nowhere.example": no domain aggregate`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("check does not report %q; got:\n%v", want, err)
		}
	}
}

func TestMessageFieldsStoredOnce(t *testing.T) {
	t.Parallel()
	db, _ := mustOpen(t, Options{})
	d := sample(t)
	d.Envelope.VERP = ""
	d.Report.Feedback = &parse.Feedback{FeedbackType: "abuse"}
	d.ParseError = "partly decoded"
	rc := d.Report.Recipients[0]
	for _, a := range []string{"b@x.example", "c@y.example"} {
		rc.FinalRecipient, rc.OriginalRecipient = a, ""
		d.Report.Recipients = append(d.Report.Recipients, rc)
	}
	saved := save(t, db, d)
	if len(saved) != 3 {
		t.Fatalf("%d records, want 3", len(saved))
	}
	got, err := db.Query(store.Filter{})
	tcheck(t, err, "query")
	if len(got) != 3 {
		t.Fatalf("query: %d records, want 3", len(got))
	}
	for i, r := range got {
		want := saved[len(saved)-1-i] // newest first
		if a, b := mustJSON(t, r), mustJSON(t, want); a != b {
			t.Errorf("record read back differs:\n got %s\nwant %s", a, b)
		}
	}
	one, err := db.Record(saved[2].ID)
	tcheck(t, err, "record")
	if one.Envelope.Helo != "nyaaan.example.com" || one.Original == nil || one.ReportingMTA != "nyaaan.example.com" || one.ParseError == "" {
		t.Fatalf("third record lacks its message's fields: %+v", one)
	}
	tcheck(t, db.view(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketRecords)
		for i, r := range saved {
			k, _ := decodeID(r.ID)
			j, err := recordJSONOf(b.Get(k))
			tcheck(t, err, "decompressing record")
			v := string(j)
			if has := strings.Contains(v, `"envelope"`) || strings.Contains(v, `"original"`); has != (i == 0) {
				t.Errorf("record %d stores message fields: %v (%s)", i, has, v)
			}
		}
		return nil
	}), "reading stored values")
	tcheck(t, db.Check(), "check")
}

// TestBodyHashPinned pins bodyHash on a few inputs: the hash is part of
// the stored dedupe keys, so a change would let a copy received after an
// upgrade count again. The values were computed by the first version.
func TestBodyHashPinned(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ in, want string }{
		{"Received: from a\r\n\tby b\r\nFrom: a@example.org\r\nSubject: x\r\n\r\nbody line\r\nmore\r\n", "ce72253fd7ad1b69bbb23ca3d7784aeed3f1b641a0c58fd56bc5142876263e6f"},
		{"From: a\n\nb\r\nc", "473fadc1256f28da266f8e237d6d927be10747895a0456de2e2e89a916912682"},
		{"X: y\r\r\n\r\nz\r\n", "4dee8cdaaffedef26b946b813cef605e93cbeaa23acd538ae1d8eccf22879dd9"},
	} {
		h := store.BodyHash([]byte(c.in))
		if got := hex.EncodeToString(h[:]); got != c.want {
			t.Errorf("bodyHash(%q) = %s, want %s", c.in, got, c.want)
		}
	}
}

// TestBodyHashLongLines hashes messages whose lines and bodies are longer
// than bodyHash's buffer, and trace names in odd case, against the same
// message built plainly.
func TestBodyHashLongLines(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 40<<10)
	plain := "Subject: " + long + "\n\n" + long + "\n" + long
	h := sha256.Sum256([]byte(plain))
	for _, s := range []string{
		"Subject: " + long + "\r\n\r\n" + long + "\r\n" + long,
		"ReCeIvEd: from a\r\nSubject: " + long + "\r\n\r\n" + long + "\r\n" + long,
		"Arc-Authentication-Results: i=1\r\nSubject: " + long + "\n\n" + long + "\r\n" + long,
		// U+212A KELVIN SIGN lower-cases to k, as strings.ToLower folds it.
		"D\u212aIM-Signature: v=1\r\nSubject: " + long + "\n\n" + long + "\r\n" + long,
	} {
		if store.BodyHash([]byte(s)) != h {
			t.Errorf("hash of %.60q... differs from the plain form's", s)
		}
	}
	if store.BodyHash([]byte("X-Arc-Authentication-Results-Long: 1\r\nSubject: "+long+"\n\n"+long+"\r\n"+long)) == h {
		t.Error("a field that is not a trace field was left out")
	}
}
