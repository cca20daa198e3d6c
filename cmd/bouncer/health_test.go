package main

import (
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/bouncer/bouncer/store"
)

// startSwitchDNS serves dead.test on loopback: while up is true it has an
// MX whose address is 127.0.0.1, else it does not exist.
func startSwitchDNS(t *testing.T) (string, *atomic.Bool) {
	t.Helper()
	up := new(atomic.Bool)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	tcheck(t, err, "listening udp")
	mux := dns.NewServeMux()
	mux.HandleFunc(".", func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: 60}
		switch {
		case !up.Load() || !strings.HasSuffix(q.Name, "dead.test."):
			m.Rcode = dns.RcodeNameError
		case q.Name == "dead.test." && q.Qtype == dns.TypeMX:
			hdr.Rrtype = dns.TypeMX
			m.Answer = append(m.Answer, &dns.MX{Hdr: hdr, Preference: 10, Mx: "mx.dead.test."})
		case q.Name == "mx.dead.test." && q.Qtype == dns.TypeA:
			hdr.Rrtype = dns.TypeA
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: net.ParseIP("127.0.0.1")})
		}
		w.WriteMsg(m)
	})
	srv := &dns.Server{PacketConn: pc, Handler: mux}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String(), up
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
	resolver, up := startSwitchDNS(t)
	port := startGreeter(t)
	mxConf := fmt.Sprintf("[mx]\nresolver = %q\nport = %d\ntimeout = \"2s\"\nipv6 = false\nrecheck_interval = \"200ms\"\nlift_on_recovery = true\n", resolver, port)
	ts := newTestServer(t, mxConf)
	cfg := writeConfig(t, t.TempDir(), fmt.Sprintf("[http]\nlisten = %q\n[store]\npath = %q\n%s",
		ts.httpAddr, filepath.Join(ts.dir, "bouncer.db"), mxConf))

	tcheck(t, deliver(t, ts.smtpAddr, "bounces+user=dead.test@localhost", readTestdata(t, "postfix-543.eml")), "delivering DSN")
	if _, code := runCLI(t, "suppressed", "-config", cfg, "user@dead.test"); code != 0 {
		t.Fatalf("5.4.3 did not suppress: exit %d", code)
	}

	// The domain does not exist: --check (through the API) stores that.
	out, code := runCLI(t, "domains", "--check", "--json", "-config", cfg)
	var rc routeCheck
	if code != 0 || json.Unmarshal([]byte(out), &rc) != nil || rc.Domain != "dead.test" || rc.Verdict != "nxdomain" || rc.Recovered {
		t.Fatalf("domains --check: exit %d %q", code, out)
	}
	if d := domainJSON(t, cfg, "dead.test"); d.LastMX == nil || d.LastMX.Verdict != "nxdomain" || d.Recovered != nil {
		t.Fatalf("after failed check: %+v recovered %v", d.LastMX, d.Recovered)
	}

	// The route comes back: the periodic re-check marks the domain
	// recovered and, with lift_on_recovery, lifts the 5.4.3 suppression.
	up.Store(true)
	deadline := time.Now().Add(20 * time.Second)
	var d store.DomainStat
	for {
		d = domainJSON(t, cfg, "dead.test")
		if d.Recovered != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery marked within 20s: last check %+v", d.LastMX)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !d.LastMX.Routed || d.LastMX.Verdict != "valid" || !strings.Contains(string(d.LastMX.Result), "mx.dead.test") {
		t.Errorf("recovering check: %+v", d.LastMX)
	}
	if _, code := runCLI(t, "suppressed", "-config", cfg, "user@dead.test"); code != 1 {
		t.Errorf("suppression not lifted on recovery: exit %d", code)
	}
	if out, _ := runCLI(t, "domains", "-config", cfg); !strings.Contains(out, "valid") || !strings.Contains(out, "recovered") {
		t.Errorf("domains table does not show the check:\n%s", out)
	}

	// Server stopped, route gone again: --check from the file clears the
	// recovery.
	ts.stop(t)
	up.Store(false)
	if out, code := runCLI(t, "domains", "--check", "-config", cfg); code != 0 || !strings.Contains(out, "nxdomain") {
		t.Fatalf("domains --check from the file: exit %d %q", code, out)
	}
	if d := domainJSON(t, cfg, "dead.test"); d.Recovered != nil || d.LastMX.Routed {
		t.Errorf("after the route failed again: %+v recovered %v", d.LastMX, d.Recovered)
	}
}
