package verp

import (
	"net/netip"
	"slices"
	"sync"
	"time"
)

// GuardOptions configure a Guard. Zero values take the defaults noted.
type GuardOptions struct {
	MaxBad     int           // bad tokens within Window that ban a client; default 5
	Window     time.Duration // how long bad tokens are remembered; default 10m
	Ban        time.Duration // how long a ban lasts; default 1h
	MaxTracked int           // clients remembered at most; default 65536
}

// Guard counts bad signed tokens per client and bans a client that sends
// too many, so that nobody can brute-force MACs at RCPT. IPv4 clients are
// counted per address, IPv6 clients per /64, since one host usually holds
// a whole /64. Memory is bounded by MaxTracked. It is safe for concurrent
// use.
//
// The server asks Banned when a connection opens (and at RCPT), and calls
// Bad for every RCPT refused with ErrBadMAC, ErrUnknownKey or ErrExpired;
// when Bad returns true it answers 421 4.7.0 and closes the connection.
type Guard struct {
	o       GuardOptions
	mu      sync.Mutex
	clients map[netip.Prefix]*guardEntry
}

type guardEntry struct {
	bad         int       // bad tokens since windowStart
	windowStart time.Time // first bad token still counted
	bannedUntil time.Time
	lastSeen    time.Time
}

// NewGuard returns a Guard for o.
func NewGuard(o GuardOptions) *Guard {
	if o.MaxBad <= 0 {
		o.MaxBad = 5
	}
	if o.Window <= 0 {
		o.Window = 10 * time.Minute
	}
	if o.Ban <= 0 {
		o.Ban = time.Hour
	}
	if o.MaxTracked <= 0 {
		o.MaxTracked = 65536
	}
	return &Guard{o: o, clients: map[netip.Prefix]*guardEntry{}}
}

// clientKey maps an address to the prefix it is counted under.
func clientKey(ip netip.Addr) netip.Prefix {
	ip = ip.Unmap().WithZone("")
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, err := ip.Prefix(bits)
	if err != nil { // the zero Addr
		return netip.Prefix{}
	}
	return p
}

// Banned reports whether ip is banned at now.
func (g *Guard) Banned(ip netip.Addr, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	e := g.clients[clientKey(ip)]
	return e != nil && now.Before(e.bannedUntil)
}

// Bad records one bad token from ip at now and reports whether ip is
// banned afterwards.
func (g *Guard) Bad(ip netip.Addr, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	k := clientKey(ip)
	e := g.clients[k]
	if e == nil {
		if len(g.clients) >= g.o.MaxTracked {
			g.evict(now)
		}
		e = &guardEntry{}
		g.clients[k] = e
	}
	e.lastSeen = now
	if now.Before(e.bannedUntil) {
		return true
	}
	if e.bad == 0 || now.Sub(e.windowStart) > g.o.Window {
		e.bad, e.windowStart = 0, now
	}
	e.bad++
	if e.bad >= g.o.MaxBad {
		e.bad = 0
		e.bannedUntil = now.Add(g.o.Ban)
		return true
	}
	return false
}

// Len returns how many clients are tracked.
func (g *Guard) Len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.clients)
}

// evict drops entries that no longer matter and, if that frees less than a
// quarter of the table, the least recently seen quarter, so that a flood
// of new clients costs amortized O(log n) per client.
func (g *Guard) evict(now time.Time) {
	for k, e := range g.clients {
		if !now.Before(e.bannedUntil) && now.Sub(e.windowStart) > g.o.Window {
			delete(g.clients, k)
		}
	}
	if len(g.clients) > g.o.MaxTracked*3/4 {
		type kv struct {
			k netip.Prefix
			t time.Time
		}
		all := make([]kv, 0, len(g.clients))
		for k, e := range g.clients {
			all = append(all, kv{k, e.lastSeen})
		}
		slices.SortFunc(all, func(a, b kv) int { return a.t.Compare(b.t) })
		for _, x := range all[:len(all)-g.o.MaxTracked*3/4] {
			delete(g.clients, x.k)
		}
	}
}
