package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/bouncer/bouncer/mx"
	"github.com/bouncer/bouncer/store"
)

// routeDomain is the domain of TestRouteRecheck's bounces: not a reserved
// name, which would never be checked. Its DNS is served on loopback, so
// nothing leaves the machine.
const routeDomain = "deadroute.net"

// routeDSN is postfix-543.eml about user@deadroute.net.
func routeDSN(t *testing.T) []byte {
	t.Helper()
	return bytes.ReplaceAll(readTestdata(t, "postfix-543.eml"), []byte("dead.test"), []byte(routeDomain))
}

// switchDNS serves routeDomain on loopback: while up is true it has an MX
// whose address is 127.0.0.1, else it does not exist; every other name
// does not exist. It records the names asked for.
type switchDNS struct {
	addr string
	up   atomic.Bool
	mu   sync.Mutex
	seen []string
}

// queries returns the names asked for so far, lower case with the dot.
func (s *switchDNS) queries() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.seen)
}

func startSwitchDNS(t *testing.T) *switchDNS {
	t.Helper()
	s := &switchDNS{}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	tcheck(t, err, "listening udp")
	s.addr = pc.LocalAddr().String()
	mux := dns.NewServeMux()
	mux.HandleFunc(".", func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		s.mu.Lock()
		s.seen = append(s.seen, strings.ToLower(q.Name))
		s.mu.Unlock()
		hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: 60}
		switch {
		case !s.up.Load() || !strings.HasSuffix(q.Name, routeDomain+"."):
			m.Rcode = dns.RcodeNameError
		case q.Name == routeDomain+"." && q.Qtype == dns.TypeMX:
			hdr.Rrtype = dns.TypeMX
			m.Answer = append(m.Answer, &dns.MX{Hdr: hdr, Preference: 10, Mx: "mx." + routeDomain + "."})
		case q.Name == "mx."+routeDomain+"." && q.Qtype == dns.TypeA:
			hdr.Rrtype = dns.TypeA
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: net.ParseIP("127.0.0.1")})
		}
		w.WriteMsg(m)
	})
	srv := &dns.Server{PacketConn: pc, Handler: mux}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return s
}

// domainJSON returns the domains entry of dom.
func domainJSON(t *testing.T, cfg, dom string) store.DomainStat {
	t.Helper()
	out, code := runCLI(t, "domains", "-config", cfg, "--json")
	if code != 0 {
		t.Fatalf("domains: exit %d", code)
	}
	dec := json.NewDecoder(strings.NewReader(out))
	for dec.More() {
		var d store.DomainStat
		tcheck(t, dec.Decode(&d), "decoding domains")
		if d.Domain == dom {
			return d
		}
	}
	t.Fatalf("domain %s not listed:\n%s", dom, out)
	return store.DomainStat{}
}

func TestRouteRecheck(t *testing.T) {
	rdns := startSwitchDNS(t)
	up := &rdns.up
	port := startGreeter(t)
	mxConf := fmt.Sprintf("[mx]\nresolver = %q\nport = %d\ntimeout = \"2s\"\nipv6 = false\nrecheck = \"on\"\nrecheck_interval = \"200ms\"\nlift_on_recovery = true\n", rdns.addr, port)
	ts := newTestServer(t, mxConf)
	cfg := writeConfig(t, t.TempDir(), fmt.Sprintf("[http]\nlisten = %q\n[store]\npath = %q\n%s",
		ts.httpAddr, filepath.Join(ts.dir, "bouncer.db"), mxConf))

	tcheck(t, deliver(t, ts.smtpAddr, "bounces+user="+routeDomain+"@localhost", routeDSN(t)), "delivering DSN")
	if _, code := runCLI(t, "suppressed", "-config", cfg, "user@"+routeDomain); code != 0 {
		t.Fatalf("5.4.3 did not suppress: exit %d", code)
	}

	// The domain does not exist: --check (through the API) stores that.
	out, code := runCLI(t, "domains", "--check", "--json", "-config", cfg)
	var rc routeCheck
	if code != 0 || json.Unmarshal([]byte(out), &rc) != nil || rc.Domain != routeDomain || rc.Verdict != "nxdomain" || rc.Recovered {
		t.Fatalf("domains --check: exit %d %q", code, out)
	}
	if d := domainJSON(t, cfg, routeDomain); d.LastMX == nil || d.LastMX.Verdict != "nxdomain" || d.Recovered != nil {
		t.Fatalf("after failed check: %+v recovered %v", d.LastMX, d.Recovered)
	}

	// The route comes back: the periodic re-check marks the domain
	// recovered and, with lift_on_recovery, lifts the 5.4.3 suppression.
	up.Store(true)
	deadline := time.Now().Add(20 * time.Second)
	var d store.DomainStat
	for {
		d = domainJSON(t, cfg, routeDomain)
		if d.Recovered != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery marked within 20s: last check %+v", d.LastMX)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !d.LastMX.Routed || d.LastMX.Verdict != "valid" || !strings.Contains(string(d.LastMX.Result), "mx."+routeDomain) {
		t.Errorf("recovering check: %+v", d.LastMX)
	}
	if _, code := runCLI(t, "suppressed", "-config", cfg, "user@"+routeDomain); code != 1 {
		t.Errorf("suppression not lifted on recovery: exit %d", code)
	}
	if out, _ := runCLI(t, "domains", "-config", cfg, "--wide"); !strings.Contains(out, "valid") || !strings.Contains(out, "recovered") {
		t.Errorf("wide domains table does not show the check:\n%s", out)
	}
	if out, _ := runCLI(t, "domains", "-config", cfg); !strings.Contains(out, " recovered\n") {
		t.Errorf("domains table does not show the recovery:\n%s", out)
	}

	// Server stopped, route gone again: --check from the file clears the
	// recovery.
	ts.stop(t)
	up.Store(false)
	if out, code := runCLI(t, "domains", "--check", "-config", cfg); code != 0 || !strings.Contains(out, "nxdomain") {
		t.Fatalf("domains --check from the file: exit %d %q", code, out)
	}
	if d := domainJSON(t, cfg, routeDomain); d.Recovered != nil || d.LastMX.Routed {
		t.Errorf("after the route failed again: %+v recovered %v", d.LastMX, d.Recovered)
	}
}

// TestRecheckStaysOnMachine: serve with a resolver that records queries.
// On loopback with the default mx.recheck ("auto") there is no query at
// all; with mx.recheck = "on" the real domain is checked, and a reserved
// one (dead.test, bounce.example.com) never is, in the background or by
// domains --check.
func TestRecheckStaysOnMachine(t *testing.T) {
	deliverBoth := func(t *testing.T, ts *testServer) {
		t.Helper()
		tcheck(t, deliver(t, ts.smtpAddr, "bounces+user=dead.test@localhost", readTestdata(t, "postfix-543.eml")), "delivering dead.test DSN")
		ex := bytes.ReplaceAll(readTestdata(t, "postfix-543.eml"), []byte("dead.test"), []byte("mx.example.com"))
		tcheck(t, deliver(t, ts.smtpAddr, "bounces+user=mx.example.com@localhost", ex), "delivering example.com DSN")
		tcheck(t, deliver(t, ts.smtpAddr, "bounces+user="+routeDomain+"@localhost", routeDSN(t)), "delivering DSN")
	}
	mxConf := func(resolver, recheck string) string {
		return fmt.Sprintf("[mx]\nresolver = %q\nport = 1\ntimeout = \"1s\"\nipv6 = false\nrecheck_interval = \"20ms\"\n%s", resolver, recheck)
	}

	t.Run("loopback default", func(t *testing.T) {
		rdns := startSwitchDNS(t)
		ts := newTestServer(t, mxConf(rdns.addr, ""))
		deliverBoth(t, ts)
		time.Sleep(500 * time.Millisecond) // 25 ticks of the re-check loop
		ts.stop(t)
		if q := rdns.queries(); len(q) > 0 {
			t.Fatalf("a default serve on loopback sent DNS queries: %v", q)
		}
	})

	t.Run("on", func(t *testing.T) {
		rdns := startSwitchDNS(t)
		ts := newTestServer(t, mxConf(rdns.addr, "recheck = \"on\"\n"))
		deliverBoth(t, ts)
		deadline := time.Now().Add(20 * time.Second)
		for !slices.Contains(rdns.queries(), routeDomain+".") {
			if time.Now().After(deadline) {
				t.Fatalf("mx.recheck = on: %s not checked within 20s (queries %v)", routeDomain, rdns.queries())
			}
			time.Sleep(20 * time.Millisecond)
		}
		cfg := writeConfig(t, t.TempDir(), fmt.Sprintf("[http]\nlisten = %q\n%s", ts.httpAddr, mxConf(rdns.addr, "")))
		out, code := runCLI(t, "domains", "--check", "-config", cfg)
		if code != 0 || !strings.Contains(out, routeDomain) || strings.Contains(out, "dead.test") || strings.Contains(out, "example.com") {
			t.Errorf("domains --check: exit %d\n%s", code, out)
		}
		ts.stop(t)
		for _, q := range rdns.queries() {
			if mx.Reserved(q) {
				t.Errorf("reserved name queried: %s", q)
			}
		}
	})
}

func TestRecheckOn(t *testing.T) {
	for _, c := range []struct {
		listen, recheck, interval string
		want                      bool
	}{
		{"127.0.0.1:2525", "auto", "24h", false},
		{"[::1]:2525", "auto", "24h", false},
		{"localhost:2525", "auto", "24h", false},
		{":25", "auto", "24h", true},
		{"192.0.2.1:25", "auto", "24h", true},
		{"127.0.0.1:2525", "on", "24h", true},
		{":25", "off", "24h", false},
		{":25", "on", "0s", false},
	} {
		cfg := defaultConfig()
		cfg.SMTP.Listen, cfg.MX.Recheck = c.listen, c.recheck
		tcheck(t, cfg.MX.RecheckInterval.UnmarshalText([]byte(c.interval)), "interval")
		if got, why := recheckOn(cfg); got != c.want {
			t.Errorf("listen %s recheck %s interval %s: on %v (%s), want %v", c.listen, c.recheck, c.interval, got, why, c.want)
		}
	}
}
