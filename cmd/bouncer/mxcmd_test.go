package main

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// startDNS serves a tiny zone on loopback: good.test has an MX whose
// address is 127.0.0.1; everything else does not exist.
func startDNS(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	tcheck(t, err, "listening udp")
	mux := dns.NewServeMux()
	mux.HandleFunc(".", func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		switch {
		case q.Name == "good.test." && q.Qtype == dns.TypeMX:
			m.Answer = append(m.Answer, &dns.MX{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeMX, Class: dns.ClassINET, Ttl: 60}, Preference: 10, Mx: "mx.good.test."})
		case q.Name == "mx.good.test." && q.Qtype == dns.TypeA:
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.ParseIP("127.0.0.1")})
		case strings.HasSuffix(q.Name, "good.test."):
		default:
			m.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(m)
	})
	srv := &dns.Server{PacketConn: pc, Handler: mux}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

// startGreeter answers every connection with a 220 greeting.
func startGreeter(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	tcheck(t, err, "listening tcp")
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			fmt.Fprint(c, "220 mx.good.test ESMTP test\r\n")
			c.Close()
		}
	}()
	return l.Addr().(*net.TCPAddr).Port
}

func TestMXCommand(t *testing.T) {
	resolver := startDNS(t)
	port := startGreeter(t)
	cfg := writeConfig(t, t.TempDir(), fmt.Sprintf("[mx]\nresolver = %q\nport = %d\ntimeout = \"2s\"\nipv6 = false\n", resolver, port))

	out, code := runCLI(t, "mx", "-config", cfg, "good.test")
	if code != 0 || !strings.Contains(out, "mx.good.test") || !strings.Contains(out, "220") {
		t.Errorf("mx good.test: exit %d\n%s", code, out)
	}
	out, code = runCLI(t, "mx", "-config", cfg, "--json", "gone.test")
	if code != 1 || !strings.Contains(out, "nxdomain") {
		t.Errorf("mx gone.test: exit %d\n%s", code, out)
	}
}
