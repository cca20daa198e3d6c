package server

import (
	"bytes"
	"fmt"
	"math"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/bouncer/bouncer/store"
	"github.com/bouncer/bouncer/verp"
)

// TestHugeMessageLimitKeepsContent is finding 6 of issue 21: with
// MaxMessageBytes = 2^63-1 every message got "250 bounce stored" and was
// saved with size 0, because max+1 wrapped to a negative read limit. A
// message must be stored whole or refused, never acknowledged empty.
func TestHugeMessageLimitKeepsContent(t *testing.T) {
	opts := testOptions()
	opts.MaxMessageBytes = math.MaxInt64
	opts.MaxDataMemory = math.MaxInt64
	saver := &memSaver{}
	ts := newTestServer(t, opts, saver)
	c := dial(t, ts.addr)
	msg := crlf(readTestdata(t, "lhost-postfix-03.eml"))
	_, err := send(c, "", []string{"x@" + bounceDomain}, msg)
	tcheck(t, err, "sending with a 2^63-1 limit")
	ds := saver.all()
	if len(ds) != 1 || !bytes.Equal(ds[0].Raw, msg) {
		t.Fatalf("stored %d deliveries, first of %d bytes; want 1 of %d bytes", len(ds), rawLen(ds), len(msg))
	}
}

// TestBodyReaderNeverCutsShort reads a body with the largest limit
// directly (New would lower it): the body comes back whole.
func TestBodyReaderNeverCutsShort(t *testing.T) {
	b := newBudget(math.MaxInt64, DataReserve(math.MaxInt64))
	g := &grant{b: b}
	defer g.release()
	br := bodyReader{g: g, max: math.MaxInt64}
	body := strings.Repeat("line of a bounce\r\n", 5000)
	got, _, err := br.read(strings.NewReader(body), 0)
	tcheck(t, err, "reading")
	if string(got) != body {
		t.Fatalf("read %d bytes, want %d", len(got), len(body))
	}
}

func rawLen(ds []*store.Delivery) int {
	if len(ds) == 0 {
		return 0
	}
	return len(ds[0].Raw)
}

// dialFrom connects a go-smtp client from the loopback address ip.
func dialFrom(t *testing.T, addr, ip string) *smtp.Client {
	t.Helper()
	nc, err := (&net.Dialer{LocalAddr: localAddr(ip), Timeout: 5 * time.Second}).Dial("tcp", addr)
	tcheck(t, err, "dialing from "+ip)
	c := smtp.NewClient(nc)
	t.Cleanup(func() { c.Close() })
	c.CommandTimeout = 10 * time.Second
	c.SubmissionTimeout = 10 * time.Second
	tcheck(t, c.Hello("client.test"), "ehlo from "+ip)
	return c
}

// TestConnectionsPerNetwork is finding 3 of issue 21: clients spread over
// the addresses of one network share its connection limit (IPv4 /24),
// while another network is still served.
func TestConnectionsPerNetwork(t *testing.T) {
	opts := testOptions()
	opts.MaxConnsPerIP = 5
	opts.MaxConnsPerNet = 10
	ts := newTestServer(t, opts, &memSaver{})
	for _, ip := range []string{"127.0.0.1", "127.0.0.2"} {
		for range 5 {
			dialRaw(t, ts.addr, localAddr(ip))
		}
	}
	c := connectRaw(t, ts.addr, localAddr("127.0.0.3"))
	c.expect(421, "4.7.0")
	c.expectClosed()

	other := dialFrom(t, ts.addr, "127.0.1.1")
	_, err := send(other, "", []string{"x@" + bounceDomain}, readTestdata(t, "lhost-postfix-03.eml"))
	tcheck(t, err, "sending from another network")
}

// TestSlowConnectionsEvicted is the load of finding 3: 50 networks hold 10
// silent connections each, all 500 of max_conns. A new honest client is
// served within seconds: the oldest connection that never had a command
// accepted makes room for it.
func TestSlowConnectionsEvicted(t *testing.T) {
	opts := testOptions()
	opts.MaxConns = 500
	opts.MaxConnsPerIP = 10
	saver := &memSaver{}
	ts := newTestServer(t, opts, saver)
	var held []*rawClient
	for n := range 50 {
		for range 10 {
			held = append(held, dialRaw(t, ts.addr, localAddr(fmt.Sprintf("127.0.%d.1", n+1))))
		}
	}
	start := time.Now()
	c := dialFrom(t, ts.addr, "127.0.200.1")
	_, err := send(c, "", []string{"x@" + bounceDomain}, readTestdata(t, "lhost-postfix-03.eml"))
	tcheck(t, err, "sending while 500 slow connections are open")
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the honest client took %v, want seconds", d)
	}
	// The first connection made room: it was told why.
	held[0].expect(421, "4.7.0")
	if st := ts.Stats(); st.Evicted != 1 || st.Stored != 1 {
		t.Errorf("stats: %d evicted, %d stored; want 1 and 1", st.Evicted, st.Stored)
	}
}

// TestStressIdleTimeout: near max_conns, connections that said EHLO and
// went quiet are not evicted but get the short idle limit, and are closed
// long before read_timeout.
func TestStressIdleTimeout(t *testing.T) {
	opts := testOptions()
	opts.MaxConns = 10
	opts.ReadTimeout = 5 * time.Minute
	opts.StressIdleTimeout = 300 * time.Millisecond
	ts := newTestServer(t, opts, &memSaver{})
	var held []*rawClient
	for i := range 10 {
		c := dialRaw(t, ts.addr, localAddr(fmt.Sprintf("127.0.%d.1", i+1)))
		c.cmd("EHLO slow.test", 250, "")
		held = append(held, c)
	}
	r := connectRaw(t, ts.addr, localAddr("127.0.100.1"))
	r.expect(421, "4.7.0") // all had a command accepted: nobody to evict
	start := time.Now()
	for _, c := range held {
		c.expect(421, "4.4.2")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("idle connections closed after %v under stress, want about 300ms", d)
	}
	c := dialFrom(t, ts.addr, "127.0.100.1")
	_, err := send(c, "", []string{"x@" + bounceDomain}, readTestdata(t, "lhost-postfix-03.eml"))
	tcheck(t, err, "sending after the idle connections were closed")
}

// TestMessageRate is finding 4: one client network may begin MessageBurst
// messages and then MessageRate a minute; more get 451 4.7.1 at MAIL (the
// sender retries), other networks and trusted relays are not affected.
func TestMessageRate(t *testing.T) {
	opts := testOptions()
	opts.MessageRate = 1 // per minute: no token comes back during the test
	opts.MessageBurst = 3
	opts.TrustedRelays = []netip.Prefix{netip.MustParsePrefix("127.0.2.0/24")}
	saver := &memSaver{}
	ts := newTestServer(t, opts, saver)
	msg := readTestdata(t, "lhost-postfix-03.eml")
	rcpt := []string{"x@" + bounceDomain}

	c := dialFrom(t, ts.addr, "127.0.0.1")
	for i := range 3 {
		_, err := send(c, "", rcpt, msg)
		tcheck(t, err, fmt.Sprintf("message %d within the burst", i+1))
	}
	wantCode(t, c.Mail("", nil), 451, smtp.EnhancedCode{4, 7, 1})
	// Another address of the same network shares the budget.
	wantCode(t, dialFrom(t, ts.addr, "127.0.0.9").Mail("", nil), 451, smtp.EnhancedCode{4, 7, 1})

	_, err := send(dialFrom(t, ts.addr, "127.0.1.1"), "", rcpt, msg)
	tcheck(t, err, "sending from another network")
	relay := dialFrom(t, ts.addr, "127.0.2.1")
	for i := range 6 {
		_, err := send(relay, "", rcpt, msg)
		tcheck(t, err, fmt.Sprintf("trusted relay, message %d", i+1))
	}
	if n := len(saver.all()); n != 10 {
		t.Errorf("stored %d messages, want 10", n)
	}
}

// TestByteRate: message bytes count against the network's byte rate; once
// a message has put it in debt, the next MAIL gets 451 4.7.1.
func TestByteRate(t *testing.T) {
	opts := testOptions()
	opts.MaxMessageBytes = 48 << 10
	opts.ByteRate = 64 << 10 // per minute
	saver := &memSaver{}
	ts := newTestServer(t, opts, saver)
	msg := bigMessage(t, "rate", 40<<10, 1)
	rcpt := []string{"x@" + bounceDomain}
	c := dialFrom(t, ts.addr, "127.0.0.1")
	for i := range 2 {
		_, err := send(c, "", rcpt, msg)
		tcheck(t, err, fmt.Sprintf("message %d", i+1))
	}
	wantCode(t, c.Mail("", nil), 451, smtp.EnhancedCode{4, 7, 1})
	// A declared size over what is left is refused before any byte is sent.
	c2 := dialFrom(t, ts.addr, "127.0.1.1")
	tcheck(t, c2.Mail("", &smtp.MailOptions{Size: 30 << 10}), "SIZE within the budget")
	tcheck(t, c2.Reset(), "rset")
	_, err := send(c2, "", rcpt, msg)
	tcheck(t, err, "a message within the budget")
	wantCode(t, c2.Mail("", &smtp.MailOptions{Size: 30 << 10}), 451, smtp.EnhancedCode{4, 7, 1})
}

// TestDiskFloor is the free-disk floor of finding 4: below MinFreeBytes,
// MAIL gets 451 4.3.1; a message that would take the disk below it is
// refused after DATA with the same reply and not stored.
func TestDiskFloor(t *testing.T) {
	var free atomic.Int64
	free.Store(100 << 20)
	opts := testOptions()
	opts.MinFreeBytes = 1 << 20
	opts.FreeSpace = func() (int64, error) { return free.Load(), nil }
	saver := &memSaver{}
	ts := newTestServer(t, opts, saver)
	msg := readTestdata(t, "lhost-postfix-03.eml")
	rcpt := []string{"x@" + bounceDomain}
	c := dial(t, ts.addr)
	_, err := send(c, "", rcpt, msg)
	tcheck(t, err, "sending with room on the disk")

	free.Store(512 << 10)
	time.Sleep(1100 * time.Millisecond) // the value is read at most once a second
	wantCode(t, c.Mail("", nil), 451, smtp.EnhancedCode{4, 3, 1})

	free.Store(1<<20 + 100)
	time.Sleep(1100 * time.Millisecond)
	_, err = send(c, "", rcpt, msg)
	wantCode(t, err, 451, smtp.EnhancedCode{4, 3, 1})
	if n := len(saver.all()); n != 1 {
		t.Errorf("stored %d messages, want 1", n)
	}
	if st := ts.Stats(); st.LowDisk != 1 || st.RejectedBy[ReasonDisk] != 1 {
		t.Errorf("stats: LowDisk %d, rejected for disk %d; want 1 and 1", st.LowDisk, st.RejectedBy[ReasonDisk])
	}
}

// TestTrustedRelayNotBanned is finding 7: bad signed tokens that come
// through a trusted relay are refused one by one but never ban the relay,
// which carries everyone's bounces; an untrusted client is still banned.
func TestTrustedRelayNotBanned(t *testing.T) {
	key := verp.Key{ID: "a", Secret: "0123456789abcdef0123"}
	signer, err := verp.NewSigner(verp.SignerOptions{Key: key, Domain: bounceDomain})
	tcheck(t, err, "signer")
	good, err := signer.Sign("user@dead.test", "", "", time.Now())
	tcheck(t, err, "signing")
	bad := strings.Replace(good, "user=dead.test", "uses=dead.test", 1)

	opts := testOptions()
	opts.VERP = verp.NewDecoder(verp.Options{Keys: []verp.Key{key}})
	opts.Guard = verp.NewGuard(verp.GuardOptions{MaxBad: 2})
	opts.TrustedRelays = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	saver := &memSaver{}
	ts := newTestServer(t, opts, saver)

	relay := dialFrom(t, ts.addr, "127.0.0.1")
	tcheck(t, relay.Mail("", nil), "mail")
	for range 5 {
		wantCode(t, relay.Rcpt(bad, nil), 550, smtp.EnhancedCode{5, 7, 1})
	}
	tcheck(t, relay.Reset(), "rset")
	_, err = send(relay, "", []string{good}, readTestdata(t, "lhost-postfix-03.eml"))
	tcheck(t, err, "the relay still delivers")
	dialFrom(t, ts.addr, "127.0.0.1") // and may connect again

	other := dialFrom(t, ts.addr, "127.0.0.2")
	tcheck(t, other.Mail("", nil), "mail")
	wantCode(t, other.Rcpt(bad, nil), 550, smtp.EnhancedCode{5, 7, 1})
	wantCode(t, other.Rcpt(bad, nil), 421, smtp.EnhancedCode{4, 7, 0})
}
