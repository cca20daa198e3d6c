package main

import (
	"bytes"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/bouncer/bouncer/parse"
	"github.com/emersion/go-smtp"
)

func tcheck(t *testing.T, err error, msg string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", msg, err)
	}
}

func TestDataPayload(t *testing.T) {
	got := dataPayload([]byte("a\n.b\r\n..c\nd\n\n"))
	want := "a\r\n..b\r\n...c\r\nd\r\n"
	if string(got) != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// TestBigBounce checks that the grown message is still the same DSN to the
// decoder, at the size asked for.
func TestBigBounce(t *testing.T) {
	msg, err := os.ReadFile("../../cmd/bouncer/testdata/postfix-543.eml")
	tcheck(t, err, "reading sample")
	big := bigBounce(msg, 1<<20)
	if len(big) < 1<<20 || len(big) > 1<<20+200 {
		t.Fatalf("size %d, want about %d", len(big), 1<<20)
	}
	rep, err := parse.Message(bytes.NewReader(big), parse.DefaultLimits())
	tcheck(t, err, "decoding grown bounce")
	if len(rep.Recipients) != 1 || rep.Recipients[0].FinalRecipient != "user@dead.test" || rep.Recipients[0].Status != "5.4.3" {
		t.Fatalf("recipients %+v, want user@dead.test 5.4.3", rep.Recipients)
	}
	if rep.Original == nil {
		t.Fatalf("no returned message decoded")
	}
}

func serve(t *testing.T, s *smtp.Server) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	tcheck(t, err, "listen")
	go s.Serve(l)
	t.Cleanup(func() { s.Close() })
	return l.Addr().String()
}

func TestLoadDiscard(t *testing.T) {
	addr := serve(t, newDiscardServer(os.Stderr))
	r := runLoad(t.Context(), loadOptions{Addr: addr, Sessions: 3, Count: 30, Rcpt: rcpt,
		Data: dataPayload([]byte("Subject: x\n\n.dot\n")), Timeout: 10 * time.Second})
	if r.Sent != 30 || r.Failed != 0 || len(r.Latency) != 30 {
		t.Fatalf("sent %d failed %d latencies %d (%v), want 30 0 30", r.Sent, r.Failed, len(r.Latency), r.FirstErr)
	}
	if r.percentile(50) > r.percentile(99) || r.percentile(99) > r.percentile(100) {
		t.Fatalf("percentiles out of order: %v %v %v", r.percentile(50), r.percentile(99), r.percentile(100))
	}
}

type refuseBackend struct{}

func (refuseBackend) NewSession(*smtp.Conn) (smtp.Session, error) { return refuseSession{}, nil }

type refuseSession struct{ discardSession }

func (refuseSession) Rcpt(string, *smtp.RcptOptions) error {
	return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no"}
}

// TestLoadCountsRefusals checks that a refused message is a failure, not a
// sent message with a latency.
func TestLoadCountsRefusals(t *testing.T) {
	addr := serve(t, smtp.NewServer(refuseBackend{}))
	r := runLoad(t.Context(), loadOptions{Addr: addr, Sessions: 2, Count: 4, Rcpt: rcpt,
		Data: dataPayload([]byte("Subject: x\n\nbody\n")), Timeout: 10 * time.Second})
	if r.Sent != 0 || r.Failed != 4 || r.FirstErr == nil {
		t.Fatalf("sent %d failed %d err %v, want 0 4 and an error", r.Sent, r.Failed, r.FirstErr)
	}
	var ne net.Error
	if errors.As(r.FirstErr, &ne) {
		t.Fatalf("want the 550 reply, got a network error: %v", r.FirstErr)
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{0.5, 0.1, 0.9}, 0.5}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

// TestCPUTicks reads /proc/stat's cpu line: idle and iowait are idle, the
// first eight fields the total (guest time is already in user), and a
// line of another shape is an error, not zeros.
func TestCPUTicks(t *testing.T) {
	t0, err := parseCPUTicks([]byte("cpu  100 5 50 800 20 3 7 15 40 0\ncpu0 50 2 25 400 10 1 3 7 20 0\n"))
	tcheck(t, err, "parsing")
	if want := (cpuTicks{idle: 820, total: 1000}); t0 != want {
		t.Fatalf("got %+v, want %+v", t0, want)
	}
	t1, err := parseCPUTicks([]byte("cpu  160 5 60 820 30 3 7 15\n"))
	tcheck(t, err, "parsing a line without guest fields")
	if got := t1.idleSince(t0); got != 0.3 {
		t.Errorf("idle share %v, want 0.3 (30 of 100 ticks)", got)
	}
	if got := t0.idleSince(t1); got != 0 {
		t.Errorf("idle share backwards %v, want 0", got)
	}
	for _, bad := range []string{"", "intr 1 2 3", "cpu 1 2 3", "cpu 1 2 3 4 5 6 7 x"} {
		if _, err := parseCPUTicks([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	m, err := machineCPU()
	tcheck(t, err, "reading /proc/stat")
	if m.total == 0 || m.idle > m.total {
		t.Errorf("this machine: %+v", m)
	}
}

func TestVariant(t *testing.T) {
	v, err := parseVariant(`pg=driver = "postgres"\nschema = "b_{round}"`)
	if err != nil {
		t.Fatal(err)
	}
	if v.server() != "bouncer pg" {
		t.Errorf("server %q", v.server())
	}
	if got, want := v.keys("bouncer-pg-20-3"), "driver = \"postgres\"\nschema = \"b_bouncer_pg_20_3\""; got != want {
		t.Errorf("keys %q, want %q", got, want)
	}
	for _, bad := range []string{"nokeys", "=x", "a b=x"} {
		if _, err := parseVariant(bad); err == nil {
			t.Errorf("parseVariant(%q) accepted", bad)
		}
	}
}
