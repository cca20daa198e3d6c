package main

import (
	"bytes"
	"errors"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bouncer/bouncer/parse"
	"github.com/bouncer/bouncer/push"
)

func tcheck(t *testing.T, err error, msg string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", msg, err)
	}
}

// TestGrows judges synthetic series: a steady leak fails however noisy,
// a flat sawtooth, a warm-up within the first third and one late spike
// pass, and a leak smaller than the tolerance passes.
func TestGrows(t *testing.T) {
	const n = 90
	mk := func(f func(i int) float64) []float64 {
		v := make([]float64, n)
		for i := range v {
			v[i] = f(i)
		}
		return v
	}
	saw := func(i int) float64 { return float64(i%7) * 3 } // 0..18
	cases := []struct {
		name string
		v    []float64
		tol  tolerance
		want bool
	}{
		{"flat sawtooth", mk(func(i int) float64 { return 100 + saw(i) }), tolerance{abs: 5}, false},
		{"steady leak under noise", mk(func(i int) float64 { return 100 + saw(i) + float64(i) }), tolerance{abs: 5}, true},
		{"warm-up in the first third", mk(func(i int) float64 { return 100 * math.Min(1, float64(i+1)/20) }), tolerance{abs: 5}, false},
		{"one spike in the last third", mk(func(i int) float64 {
			if i == 80 {
				return 1e6
			}
			return 100
		}), tolerance{abs: 5}, false},
		{"slow growth within the tolerance", mk(func(i int) float64 { return 100 + float64(i)/10 }), tolerance{abs: 10}, false},
		{"the same growth, no tolerance", mk(func(i int) float64 { return 100 + float64(i)/10 }), tolerance{}, true},
		{"relative tolerance", mk(func(i int) float64 { return 1000 + float64(i) }), tolerance{rel: 0.1}, false},
		{"a step up that stays", mk(func(i int) float64 {
			if i > 45 {
				return 200
			}
			return 100
		}), tolerance{abs: 50}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, why := grows(c.v, c.tol, num)
			if got != c.want {
				t.Fatalf("grows = %v (%s), want %v", got, why, c.want)
			}
		})
	}
	if g, why := grows([]float64{1, 2, 3, 4, 5}, tolerance{}, num); g || why != "too few samples" {
		t.Fatalf("five samples: %v %q", g, why)
	}
}

// TestDBGrows: a file that grows by the same bytes per record in both
// halves passes, one that grows four times as fast per record in the
// second half fails, and so does one with no records stored in a half.
func TestDBGrows(t *testing.T) {
	const n = 60
	records := make([]float64, n)
	steady := make([]float64, n)
	faster := make([]float64, n)
	for i := range n {
		records[i] = float64(1000 * i)
		steady[i] = 4<<20 + 2000*records[i]
		faster[i] = steady[i]
		if i > n/2 {
			faster[i] = steady[n/2] + 4*2000*(records[i]-records[n/2]) // 8000 B/record
		}
	}
	if g, why := dbGrows(steady, records); g {
		t.Errorf("steady: %s", why)
	}
	if g, why := dbGrows(faster, records); !g {
		t.Errorf("four times as fast: %s", why)
	}
	flat := make([]float64, n)
	for i := range flat {
		flat[i] = 5000
	}
	if g, _ := dbGrows(steady, flat); !g {
		t.Error("no records: passed")
	}
	// bbolt's steps: 16 MiB at once, then nothing, within the slack.
	stepped := make([]float64, n)
	for i := range stepped {
		stepped[i] = 16 << 20
		if i >= n-3 {
			stepped[i] = 32 << 20
		}
	}
	if g, why := dbGrows(stepped, records); g {
		t.Errorf("one bbolt step: %s", why)
	}
}

func TestSlopePerHour(t *testing.T) {
	var ts []time.Duration
	var v []float64
	for i := range 20 {
		ts = append(ts, time.Duration(i)*time.Minute)
		v = append(v, 5+float64(i)*2) // 2 per minute
	}
	if got := slopePerHour(ts, v); math.Abs(got-120) > 1e-9 {
		t.Fatalf("slope %v, want 120/h", got)
	}
}

// TestJudge prints the table of a run whose goroutines leak and checks
// that the verdict names that series only.
func TestJudge(t *testing.T) {
	var pts []point
	for i := range 30 {
		pts = append(pts, point{at: time.Duration(i) * 10 * time.Second, rss: 50 << 20, anon: 20 << 20, fds: 20,
			goroutines: float64(20 + 10*i), dbSize: float64(8<<20 + 3000*i*100), walSize: 1 << 20, records: float64(100 * i)})
	}
	var out bytes.Buffer
	bad := judge(&out, pts)
	if len(bad) != 1 || bad[0] != "goroutines" {
		t.Fatalf("bad %v, want [goroutines]\n%s", bad, out.String())
	}
	if !strings.Contains(out.String(), "FAIL grows") {
		t.Fatalf("no FAIL in the table:\n%s", out.String())
	}
}

func TestParseMetrics(t *testing.T) {
	text := `# HELP go_goroutines Number of goroutines.
# TYPE go_goroutines gauge
go_goroutines 42
bouncer_records_total{class="hard",kind="bounce",status="5.1.1"} 7
bouncer_records_total{class="",kind="unknown",status="a}b"} 3
bouncer_outbox_queued 0
`
	m, err := parseMetrics(strings.NewReader(text))
	tcheck(t, err, "parsing")
	if m["go_goroutines"] != 42 || m["bouncer_records_total"] != 10 || m["bouncer_outbox_queued"] != 0 {
		t.Fatalf("got %v", m)
	}
	if _, err := parseMetrics(strings.NewReader("x{a=\"b\" 1\n")); err == nil {
		t.Fatal("a line without its closing brace: no error")
	}
}

// TestSampleCopies: every copy of every golden sample names new
// addresses, decodes to as many records as the sample, and a one-recipient
// copy goes to the VERP address of its recipient.
func TestSampleCopies(t *testing.T) {
	samples, err := loadSamples("../../parse/testdata/golden")
	tcheck(t, err, "loading")
	multi, verp := 0, 0
	for _, s := range samples {
		for _, n := range []uint64{1, 77} {
			msg, rcpt := s.message(n, 10)
			rep, err := parse.Message(bytes.NewReader(msg), parse.DefaultLimits())
			if err != nil && !errors.Is(err, parse.ErrNotBounce) {
				rep = nil
			}
			recs := 1
			if rep != nil {
				recs = max(1, len(rep.Recipients))
				// One of the two addresses suffices: a Final-Recipient
				// in RFC 6533 xtext (\x{7528}) is not found literally, the
				// Original-Recipient beside it is, and either makes the
				// report a new one.
				for _, rc := range rep.Recipients {
					if a := rc.Address(); strings.Contains(a, "@") && !strings.HasSuffix(rc.FinalRecipient, ".soak.test") &&
						!strings.HasSuffix(rc.OriginalRecipient, ".soak.test") {
						t.Errorf("%s copy %d: recipient %s not replaced", s.name, n, a)
					}
				}
			}
			if recs != s.records {
				t.Errorf("%s copy %d: %d records, the sample %d", s.name, n, recs, s.records)
			}
			if s.addrs > 0 && !bytes.Contains(msg, []byte(addr(n, 0, 10))) {
				t.Errorf("%s copy %d does not hold %s", s.name, n, addr(n, 0, 10))
			}
			if s.verpSlot >= 0 {
				local, domain, _ := strings.Cut(addr(n, s.verpSlot, 10), "@")
				if rcpt != "bounces+"+local+"="+domain+"@localhost" {
					t.Errorf("%s copy %d: rcpt %s", s.name, n, rcpt)
				}
			} else if rcpt != "bounces@localhost" {
				t.Errorf("%s copy %d: rcpt %s", s.name, n, rcpt)
			}
		}
		if s.records > 1 {
			multi++
		}
		if s.verpSlot >= 0 {
			verp++
		}
	}
	if multi == 0 || verp == 0 || len(samples) < 10 {
		t.Fatalf("%d samples, %d with several recipients, %d sent to VERP", len(samples), multi, verp)
	}
}

// TestReceiver posts signed events to the receiver over loopback: good
// ones are counted once per id, a bad signature is counted as bad, and
// every third request is answered 503.
func TestReceiver(t *testing.T) {
	rv := newReceiver("s3cret-s3cret-s3cret", 3)
	url, closeFn, err := rv.serve()
	tcheck(t, err, "serving")
	defer closeFn()
	post := func(id, secret string) int {
		t.Helper()
		body := []byte(`{"id":"` + id + `.soak","record_id":"` + id + `","type":"hard","recipient":"a@b.test","kind":"bounce","suppressed":true,"received":"2026-12-03T10:00:00Z"}`)
		req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
		tcheck(t, err, "request")
		ts := strconv.FormatInt(time.Now().Unix(), 10)
		req.Header.Set(push.TimestampHeader, ts)
		req.Header.Set(push.SignatureHeader, push.Sign(secret, ts, body))
		req.Header.Set(push.IdempotencyHeader, id+".soak")
		resp, err := http.DefaultClient.Do(req)
		tcheck(t, err, "posting")
		resp.Body.Close()
		return resp.StatusCode
	}
	codes := []int{post("r1", rv.secret), post("r1", rv.secret), post("r2", rv.secret), post("r3", "wrong-secret-wrong")}
	if want := []int{204, 204, 503, 400}; !equal(codes, want) {
		t.Fatalf("codes %v, want %v", codes, want)
	}
	st := rv.stats()
	if st.requests != 4 || st.failed != 1 || st.bad != 1 || st.unique != 1 || st.repeats != 1 || !rv.hasRecord("r1") || rv.hasRecord("r2") {
		t.Fatalf("stats %+v", st)
	}
}

func equal(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestLogWatch reads a log written in two goes, the second starting in
// the middle of a line.
func TestLogWatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	tcheck(t, os.WriteFile(path, []byte("time=x level=INFO msg=\"database pruned\" raw=12 seen=0 soft=0\ntime=x level=ERR"), 0o644), "writing")
	lw := logWatch{path: path}
	tcheck(t, lw.read(), "reading")
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	tcheck(t, err, "opening")
	f.WriteString("OR msg=\"pruning the database failed\"\ntime=x level=WARN msg=w\ntime=x level=INFO msg=\"database pruned\" raw=3 seen=1 soft=0\n")
	f.Close()
	tcheck(t, lw.read(), "reading again")
	if lw.pruned != 15 || lw.prunes != 2 || lw.nerr != 1 || lw.warns != 1 || !strings.Contains(lw.errors[0], "pruning the database failed") {
		t.Fatalf("%+v", lw)
	}
}
