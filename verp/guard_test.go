package verp

import (
	"net/netip"
	"testing"
	"time"
)

func TestGuardBansAfterMaxBad(t *testing.T) {
	g := NewGuard(GuardOptions{MaxBad: 3, Window: 10 * time.Minute, Ban: time.Hour})
	ip := netip.MustParseAddr("192.0.2.7")
	other := netip.MustParseAddr("192.0.2.8")
	now := testNow
	for i := 1; i <= 2; i++ {
		if g.Bad(ip, now) {
			t.Fatalf("banned after %d bad tokens", i)
		}
	}
	if g.Banned(ip, now) {
		t.Fatal("banned before the limit")
	}
	if !g.Bad(ip, now.Add(time.Minute)) {
		t.Fatal("not banned after 3 bad tokens")
	}
	if !g.Banned(ip, now.Add(59*time.Minute)) {
		t.Fatal("ban lifted early")
	}
	if g.Banned(other, now) {
		t.Fatal("another address banned")
	}
	// The ban ends; the count starts again.
	later := now.Add(time.Minute + time.Hour)
	if g.Banned(ip, later) {
		t.Fatal("ban did not end")
	}
	if g.Bad(ip, later) {
		t.Fatal("banned by the first bad token after a ban")
	}
}

func TestGuardWindow(t *testing.T) {
	g := NewGuard(GuardOptions{MaxBad: 3, Window: 10 * time.Minute, Ban: time.Hour})
	ip := netip.MustParseAddr("198.51.100.1")
	// Bad tokens spread wider than the window never ban.
	for i := range 10 {
		if g.Bad(ip, testNow.Add(time.Duration(i)*6*time.Minute)) {
			t.Fatalf("banned at bad token %d spread over %v", i+1, time.Duration(i)*6*time.Minute)
		}
	}
}

func TestGuardIPv6Prefix(t *testing.T) {
	g := NewGuard(GuardOptions{MaxBad: 2})
	a := netip.MustParseAddr("2001:db8:1:2::1")
	b := netip.MustParseAddr("2001:db8:1:2:ffff::9")
	c := netip.MustParseAddr("2001:db8:1:3::1")
	g.Bad(a, testNow)
	if !g.Bad(b, testNow) {
		t.Fatal("two addresses of one /64 not counted together")
	}
	if !g.Banned(a, testNow) || g.Banned(c, testNow) {
		t.Fatal("ban does not cover exactly the /64")
	}
	// IPv4-mapped IPv6 counts as the IPv4 address.
	v4 := netip.MustParseAddr("192.0.2.1")
	g.Bad(netip.MustParseAddr("::ffff:192.0.2.1"), testNow)
	if !g.Bad(v4, testNow) {
		t.Fatal("IPv4-mapped address counted apart from IPv4")
	}
	// The zero Addr does not panic.
	g.Bad(netip.Addr{}, testNow)
}

func TestGuardMemoryBounded(t *testing.T) {
	g := NewGuard(GuardOptions{MaxBad: 2, MaxTracked: 100})
	banned := netip.MustParseAddr("203.0.113.1")
	g.Bad(banned, testNow)
	g.Bad(banned, testNow)
	for i := range 10000 {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		g.Bad(ip, testNow.Add(time.Duration(i)*time.Millisecond))
		if n := g.Len(); n > 100 {
			t.Fatalf("%d clients tracked, limit 100", n)
		}
	}
	// A flood evicts the least recently seen entries; expired ones go first.
	g2 := NewGuard(GuardOptions{MaxBad: 5, Window: time.Minute, Ban: time.Minute, MaxTracked: 10})
	for i := range 10 {
		g2.Bad(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), testNow)
	}
	fresh := netip.MustParseAddr("10.0.1.1")
	for range 4 {
		g2.Bad(fresh, testNow.Add(time.Hour))
	}
	if n := g2.Len(); n != 1 {
		t.Fatalf("%d entries after expiry, want 1", n)
	}
	if !g2.Bad(fresh, testNow.Add(time.Hour)) {
		t.Fatal("count lost for the fresh client")
	}
}
