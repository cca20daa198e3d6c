package mx

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func tcheck(t testing.TB, err error, msg string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", msg, err)
	}
}

// zone is a tiny authoritative-looking DNS server for tests: records by
// owner name, a set of names that do not exist, names that fail, and
// names whose UDP answers are truncated.
type zone struct {
	mu       sync.Mutex
	rrs      map[string][]dns.RR
	nx       map[string]bool
	servfail map[string]bool
	truncate map[string]bool
	queries  map[string]int // "udp A name." → count
}

func newZone(t *testing.T, records string) *zone {
	t.Helper()
	z := &zone{rrs: map[string][]dns.RR{}, nx: map[string]bool{}, servfail: map[string]bool{},
		truncate: map[string]bool{}, queries: map[string]int{}}
	for l := range strings.SplitSeq(records, "\n") {
		if l = strings.TrimSpace(l); l == "" {
			continue
		}
		rr, err := dns.NewRR(l)
		tcheck(t, err, "parsing record "+l)
		name := strings.ToLower(rr.Header().Name)
		z.rrs[name] = append(z.rrs[name], rr)
	}
	return z
}

func (z *zone) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	if len(req.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	udp := w.LocalAddr().Network() == "udp"
	z.mu.Lock()
	z.queries[fmt.Sprintf("%s %s %s", w.LocalAddr().Network(), dns.TypeToString[q.Qtype], name)]++
	z.mu.Unlock()
	switch {
	case z.servfail[name]:
		m.Rcode = dns.RcodeServerFailure
	case z.nx[name]:
		m.Rcode = dns.RcodeNameError
	case z.truncate[name] && udp:
		m.Truncated = true
	default:
		for _, rr := range z.rrs[name] {
			if rr.Header().Rrtype == q.Qtype {
				m.Answer = append(m.Answer, rr)
			}
		}
		if len(m.Answer) == 0 && len(z.rrs[name]) == 0 {
			m.Rcode = dns.RcodeNameError // a name with no record does not exist
		}
	}
	w.WriteMsg(m)
}

// serve runs z on 127.0.0.1 over UDP and TCP on the same port and returns
// the address.
func (z *zone) serve(t *testing.T) string {
	t.Helper()
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		tcheck(t, err, "listening udp")
		l, err := net.Listen("tcp", pc.LocalAddr().String())
		if err != nil {
			pc.Close()
			continue // the TCP port is taken; try another
		}
		for _, srv := range []*dns.Server{{PacketConn: pc, Handler: z}, {Listener: l, Handler: z}} {
			started := make(chan struct{})
			srv.NotifyStartedFunc = func() { close(started) }
			go srv.ActivateAndServe()
			<-started
			t.Cleanup(func() { srv.Shutdown() })
		}
		return pc.LocalAddr().String()
	}
	t.Fatal("no free port for UDP and TCP")
	return ""
}

// greeter is an SMTP server that only greets: each connection gets
// reply, then it reads until the client closes.
func greeter(t *testing.T, ip string, port int, reply string) error {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
	if err != nil {
		return err
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				if reply != "" {
					c.Write([]byte(reply))
				}
				bufio.NewReader(c).ReadString('\n') // QUIT, or the client closing
			}()
		}
	}()
	return nil
}

// setup starts greeters on one port of several loopback addresses:
// 127.0.0.1 answers 220, 127.0.0.3 answers 554, 127.0.0.4 says nothing,
// 127.0.0.5 floods; nothing listens on 127.0.0.2.
func setup(t *testing.T) int {
	t.Helper()
	huge := strings.Repeat("220-", 1<<18)
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		tcheck(t, err, "listening")
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		err = greeter(t, "127.0.0.1", port, "220-mx.good.test ESMTP ready\r\n220 hello\r\n")
		if err == nil {
			err = greeter(t, "127.0.0.3", port, "554 5.3.2 no SMTP service here\r\n")
		}
		if err == nil {
			err = greeter(t, "127.0.0.4", port, "")
		}
		if err == nil {
			err = greeter(t, "127.0.0.5", port, huge)
		}
		if err == nil {
			return port
		}
	}
	t.Fatal("no port free on all loopback addresses")
	return 0
}

const records = `
good.test.          MX   10 mx.good.test.
mx.good.test.       A    127.0.0.1
partial.test.       MX   10 mx.good.test.
partial.test.       MX   20 mx.dead.test.
partial.test.       MX   30 mx.nowhere.test.
dead.test.          MX   10 mx.dead.test.
dead.test.          MX   20 mx.dead.test.
mx.dead.test.       A    127.0.0.2
nowhere.test.       MX   10 mx.nowhere.test.
nowhere.test.       MX   20 mx2.nowhere.test.
mx2.nowhere.test.   TXT  "no address here"
implicit.test.      A    127.0.0.1
empty.test.         TXT  "exists, but no MX and no address"
nullmx.test.        MX   0 .
mixednull.test.     MX   0 .
mixednull.test.     MX   10 mx.good.test.
refused.test.       MX   10 mx.refused.test.
mx.refused.test.    A    127.0.0.3
silent.test.        MX   10 mx.silent.test.
mx.silent.test.     A    127.0.0.4
flood.test.         MX   10 mx.flood.test.
mx.flood.test.      A    127.0.0.5
v6.test.            MX   10 mx.v6.test.
mx.v6.test.         A    127.0.0.1
mx.v6.test.         AAAA ::1
tc.test.            MX   10 mx.good.test.
alias.test.         MX   10 mx.alias.test.
mx.alias.test.      CNAME mx.good.test.
mx.alias.test.      A    127.0.0.1
caps.test.          MX   10 mx.caps.test.
`

// newTest starts the DNS server and the greeters and returns options
// pointing at them.
func newTest(t *testing.T) (*zone, Options) {
	t.Helper()
	var rrs strings.Builder
	rrs.WriteString(records)
	for i := range 30 {
		fmt.Fprintf(&rrs, "many.test. MX %d mx%d.good.test.\nmx%d.good.test. A 127.0.0.1\n", i, i, i)
		fmt.Fprintf(&rrs, "mx.caps.test. A 127.0.1.%d\n", i+1)
	}
	z := newZone(t, rrs.String())
	z.nx["missing.test."] = true
	z.nx["mx.nowhere.test."] = true
	z.servfail["servfail.test."] = true
	z.truncate["tc.test."] = true
	opts := Options{
		Resolver:        z.serve(t),
		Port:            setup(t),
		DNSTimeout:      5 * time.Second,
		ConnectTimeout:  5 * time.Second,
		GreetingTimeout: 500 * time.Millisecond, // the silent greeter waits this long
	}
	return z, opts
}

func TestCheck(t *testing.T) {
	z, opts := newTest(t)
	cases := []struct {
		domain   string
		want     Verdict
		implicit bool
		// per-exchange summary: name:resolves/connects/greets for each address
		hosts string
		note  string
	}{
		{domain: "good.test", want: Valid, hosts: "10 mx.good.test 127.0.0.1 yes yes yes"},
		{domain: "GOOD.test.", want: Valid, hosts: "10 mx.good.test 127.0.0.1 yes yes yes"},
		{domain: "partial.test", want: Partial, hosts: "10 mx.good.test 127.0.0.1 yes yes yes|20 mx.dead.test 127.0.0.2 yes no no|30 mx.nowhere.test - no"},
		{domain: "dead.test", want: Unreachable, hosts: "10 mx.dead.test 127.0.0.2 yes no no"},
		{domain: "nowhere.test", want: Nowhere, hosts: "10 mx.nowhere.test - no|20 mx2.nowhere.test - no"},
		{domain: "implicit.test", want: Valid, implicit: true, hosts: "0 implicit.test 127.0.0.1 yes yes yes"},
		{domain: "empty.test", want: NoMX},
		{domain: "missing.test", want: NXDomain},
		{domain: "nullmx.test", want: NullMX},
		{domain: "mixednull.test", want: Valid, hosts: "10 mx.good.test 127.0.0.1 yes yes yes", note: "null MX"},
		{domain: "refused.test", want: Unreachable, hosts: "10 mx.refused.test 127.0.0.3 yes yes no"},
		{domain: "silent.test", want: Unreachable, hosts: "10 mx.silent.test 127.0.0.4 yes yes no"},
		{domain: "flood.test", want: Unreachable, hosts: "10 mx.flood.test 127.0.0.5 yes yes no"},
		{domain: "v6.test", want: Partial, hosts: "10 mx.v6.test 127.0.0.1 yes yes yes|10 mx.v6.test ::1 yes no no"},
		{domain: "tc.test", want: Valid, hosts: "10 mx.good.test 127.0.0.1 yes yes yes"},
		{domain: "alias.test", want: Valid, hosts: "10 mx.alias.test 127.0.0.1 yes yes yes"},
	}
	t.Run("verdicts", func(t *testing.T) {
		for _, tc := range cases {
			t.Run(tc.domain, func(t *testing.T) {
				t.Parallel()
				res, err := Check(context.Background(), tc.domain, opts)
				tcheck(t, err, "check")
				if res.Verdict != tc.want || res.Implicit != tc.implicit {
					t.Fatalf("verdict %s implicit %v, want %s %v\n%s", res.Verdict, res.Implicit, tc.want, tc.implicit, format(t, res))
				}
				if got := summary(res); got != tc.hosts {
					t.Fatalf("hosts:\ngot  %s\nwant %s\n%s", got, tc.hosts, format(t, res))
				}
				if tc.note != "" && !strings.Contains(strings.Join(res.Notes, "\n"), tc.note) {
					t.Fatalf("notes %q lack %q", res.Notes, tc.note)
				}
			})
		}
	})
	t.Run("details", func(t *testing.T) {
		res, err := Check(context.Background(), "partial.test", opts)
		tcheck(t, err, "check")
		h := res.Hosts
		if !strings.HasPrefix(h[0].Addrs[0].Greeting, "220 mx.good.test ESMTP ready") {
			t.Errorf("greeting %q", h[0].Addrs[0].Greeting)
		}
		if !strings.Contains(h[1].Addrs[0].Error, "connection refused") {
			t.Errorf("dead MX error %q", h[1].Addrs[0].Error)
		}
		if !strings.Contains(h[2].Error, "NXDOMAIN") {
			t.Errorf("nowhere error %q", h[2].Error)
		}
		res, err = Check(context.Background(), "refused.test", opts)
		tcheck(t, err, "check")
		if a := res.Hosts[0].Addrs[0]; !strings.Contains(a.Error, "554") || !strings.Contains(a.Greeting, "no SMTP service") {
			t.Errorf("554 greeter: %+v", a)
		}
		res, err = Check(context.Background(), "silent.test", opts)
		tcheck(t, err, "check")
		if a := res.Hosts[0].Addrs[0]; !strings.Contains(a.Error, "timeout") {
			t.Errorf("silent greeter: %+v", a)
		}
		z.mu.Lock()
		udp, tcp := z.queries["udp MX tc.test."], z.queries["tcp MX tc.test."]
		z.mu.Unlock()
		if udp == 0 || tcp == 0 {
			t.Errorf("truncated answer: %d UDP and %d TCP queries, want both", udp, tcp)
		}
	})
}

// summary renders hosts as "pref name ip resolves connects greets|...".
func summary(r Result) string {
	var parts []string
	for _, h := range r.Hosts {
		if !h.Resolves {
			parts = append(parts, fmt.Sprintf("%d %s - no", h.Pref, h.Name))
			continue
		}
		for _, a := range h.Addrs {
			parts = append(parts, fmt.Sprintf("%d %s %s yes %s %s", h.Pref, h.Name, a.IP, yesNo(a.Connects), yesNo(a.Greets)))
		}
	}
	return strings.Join(parts, "|")
}

func format(t *testing.T, r Result) string {
	t.Helper()
	var b bytes.Buffer
	tcheck(t, Format(&b, r), "format")
	return b.String()
}

func TestCheckErrors(t *testing.T) {
	_, opts := newTest(t)
	res, err := Check(context.Background(), "servfail.test", opts)
	if err == nil || res.Verdict != DNSError || !strings.Contains(err.Error(), "SERVFAIL") || res.Error == "" {
		t.Fatalf("servfail: verdict %s err %v", res.Verdict, err)
	}
	for _, bad := range []string{"", " ", "a..b", "192.0.2.1", "[::1]", strings.Repeat("a", 64) + ".test", strings.Repeat("abc.", 70) + "test", "bad domain.test", "x\x00y.test"} {
		res, err := Check(context.Background(), bad, opts)
		if err == nil || res.Verdict != DNSError {
			t.Errorf("%q: verdict %s err %v, want an error", bad, res.Verdict, err)
		}
	}
	// A resolver that does not answer: the query times out with an error.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	tcheck(t, err, "listening")
	defer pc.Close()
	o := opts
	o.Resolver = pc.LocalAddr().String()
	o.DNSTimeout = 200 * time.Millisecond
	if _, err := Check(context.Background(), "good.test", o); err == nil {
		t.Fatal("no error from a silent resolver")
	}
	// A cancelled context stops the check with an error.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Check(ctx, "good.test", opts); err == nil || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

func TestCaps(t *testing.T) {
	_, opts := newTest(t)
	opts.MaxMX = 3
	opts.MaxAddrs = 2
	res, err := Check(context.Background(), "many.test", opts)
	tcheck(t, err, "check")
	if len(res.Hosts) != 3 || res.Hosts[0].Name != "mx0.good.test" || res.Hosts[2].Name != "mx2.good.test" {
		t.Fatalf("hosts: %s", summary(res))
	}
	if !res.Hosts[2].Addrs[0].Skipped || res.Hosts[1].Addrs[0].Skipped {
		t.Fatalf("want only the third address skipped: %+v", res.Hosts)
	}
	if res.Verdict != Valid {
		t.Fatalf("verdict %s, want valid (skipped addresses do not count)", res.Verdict)
	}
	notes := strings.Join(res.Notes, "\n")
	if !strings.Contains(notes, "27 more MX records not checked") || !strings.Contains(notes, "1 more addresses not checked") {
		t.Fatalf("notes: %q", res.Notes)
	}
	// 30 addresses for one exchange: only MaxAddrs are kept.
	res, err = Check(context.Background(), "caps.test", opts)
	tcheck(t, err, "check")
	if len(res.Hosts) != 1 || len(res.Hosts[0].Addrs) != 2 || res.Verdict != Unreachable {
		t.Fatalf("caps.test: %s\n%s", summary(res), format(t, res))
	}
}

func TestNoIPv6(t *testing.T) {
	_, opts := newTest(t)
	opts.NoIPv6 = true
	res, err := Check(context.Background(), "v6.test", opts)
	tcheck(t, err, "check")
	if res.Verdict != Valid || summary(res) != "10 mx.v6.test 127.0.0.1 yes yes yes" {
		t.Fatalf("verdict %s hosts %s", res.Verdict, summary(res))
	}
}

func TestFormat(t *testing.T) {
	_, opts := newTest(t)
	res, err := Check(context.Background(), "partial.test", opts)
	tcheck(t, err, "check")
	// The table is the same after a JSON round trip, as when cmd prints a
	// stored result.
	b, err := json.Marshal(res)
	tcheck(t, err, "marshal")
	var back Result
	tcheck(t, json.Unmarshal(b, &back), "unmarshal")
	out := format(t, back)
	if out != format(t, res) {
		t.Fatalf("format differs after a JSON round trip:\n%s\n%s", out, format(t, res))
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	want := []struct{ prefix, contains string }{
		{"partial.test: some MX unreachable", ""},
		{"PREF EXCHANGE ADDRESS RESOLVES CONNECTS GREETS DETAIL", ""},
		{"10 mx.good.test 127.0.0.1 yes yes yes", "220 mx.good.test ESMTP ready"},
		{"20 mx.dead.test 127.0.0.2 yes no no", "connect: connection refused"},
		{"30 mx.nowhere.test - no - -", "NXDOMAIN"},
	}
	if len(lines) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(want), out)
	}
	for i, w := range want {
		if l := strings.Join(strings.Fields(lines[i]), " "); !strings.HasPrefix(l, w.prefix) || !strings.Contains(l, w.contains) {
			t.Errorf("line %d %q: want prefix %q containing %q", i+1, lines[i], w.prefix, w.contains)
		}
	}
	res, err = Check(context.Background(), "implicit.test", opts)
	tcheck(t, err, "check")
	if out := format(t, res); !strings.Contains(out, "RFC 5321 §5.1") || !strings.Contains(strings.Join(strings.Fields(out), " "), "- implicit.test 127.0.0.1 yes yes yes") {
		t.Fatalf("implicit:\n%s", out)
	}
}

func TestReserved(t *testing.T) {
	for d, want := range map[string]bool{
		"dead.test": true, "TEST": true, "a.b.example": true, "x.invalid.": true, "localhost": true,
		"mx.localhost": true, "example.com": true, "bounce.example.org": true, "www.Example.NET": true,
		"printer.local": true, "abc.onion": true, "router.home.arpa": true,
		"gmail.com": false, "example.co": false, "myexample.com": false, "test.com": false,
		"contest": false, "localhost.com": false, "arpa": false, "": false,
	} {
		if got := Reserved(d); got != want {
			t.Errorf("Reserved(%q) = %v, want %v", d, got, want)
		}
	}
}
