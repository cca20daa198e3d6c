package mx

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/miekg/dns"
)

// resolvConf is where the default nameservers are read from.
const resolvConf = "/etc/resolv.conf"

// ednsSize is the UDP payload size advertised with EDNS(0) (RFC 6891); 1232
// avoids IP fragmentation on common paths. Truncated answers are retried
// over TCP (RFC 7766).
const ednsSize = 1232

// errNoAddress is the Host.Error of an exchange without A or AAAA records.
var errNoAddress = errors.New("no address (no A or AAAA records)")

// resolver sends queries to a list of servers.
type resolver struct {
	servers []string
	opts    Options
}

func newResolver(opts Options) (*resolver, error) {
	if opts.Resolver != "" {
		s := opts.Resolver
		if _, _, err := net.SplitHostPort(s); err != nil {
			s = net.JoinHostPort(strings.Trim(s, "[]"), "53")
		}
		return &resolver{servers: []string{s}, opts: opts}, nil
	}
	conf, err := dns.ClientConfigFromFile(resolvConf)
	if err != nil {
		return nil, fmt.Errorf("finding a resolver: %w", err)
	}
	if len(conf.Servers) == 0 {
		return nil, fmt.Errorf("finding a resolver: no nameserver in %s", resolvConf)
	}
	r := &resolver{opts: opts}
	for _, s := range conf.Servers {
		r.servers = append(r.servers, net.JoinHostPort(s, conf.Port))
	}
	return r, nil
}

// query asks the servers in turn for name/qtype until one answers, over
// UDP and then over TCP if the answer was truncated. It returns the answer
// whatever its rcode.
func (r *resolver) query(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.RecursionDesired = true
	m.SetEdns0(ednsSize, false)
	var last error
	for _, s := range r.servers {
		resp, err := r.exchange(ctx, m, s, "udp")
		if err == nil && resp.Truncated {
			resp, err = r.exchange(ctx, m, s, "tcp")
		}
		if err == nil {
			return resp, nil
		}
		last = err
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("querying %s %s: %w", dns.TypeToString[qtype], name, last)
}

func (r *resolver) exchange(ctx context.Context, m *dns.Msg, server, network string) (*dns.Msg, error) {
	c := &dns.Client{Net: network, Timeout: r.opts.DNSTimeout, UDPSize: ednsSize}
	ctx, cancel := context.WithTimeout(ctx, r.opts.DNSTimeout)
	defer cancel()
	resp, _, err := c.ExchangeContext(ctx, m, server)
	return resp, err
}

// lookupMX returns the rcode and the MX records of name. An rcode other
// than NOERROR and NXDOMAIN is an error.
func (r *resolver) lookupMX(ctx context.Context, name string) (int, []*dns.MX, error) {
	resp, err := r.query(ctx, name, dns.TypeMX)
	if err != nil {
		return 0, nil, err
	}
	switch resp.Rcode {
	case dns.RcodeSuccess:
	case dns.RcodeNameError:
		return resp.Rcode, nil, nil
	default:
		return resp.Rcode, nil, fmt.Errorf("querying MX %s: %s", name, dns.RcodeToString[resp.Rcode])
	}
	var mxs []*dns.MX
	for _, rr := range resp.Answer {
		if mx, ok := rr.(*dns.MX); ok {
			mxs = append(mxs, mx)
		}
	}
	return resp.Rcode, mxs, nil
}

// lookupAddrs returns the A (and AAAA unless NoIPv6) addresses of name,
// sorted, without duplicates. The answer may come through a CNAME chain.
func (r *resolver) lookupAddrs(ctx context.Context, name string) ([]string, error) {
	types := []uint16{dns.TypeA, dns.TypeAAAA}
	if r.opts.NoIPv6 {
		types = types[:1]
	}
	var addrs []string
	var errs []error
	nx := 0
	for _, t := range types {
		resp, err := r.query(ctx, name, t)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		switch resp.Rcode {
		case dns.RcodeSuccess:
		case dns.RcodeNameError:
			nx++
			continue
		default:
			errs = append(errs, fmt.Errorf("querying %s %s: %s", dns.TypeToString[t], name, dns.RcodeToString[resp.Rcode]))
			continue
		}
		for _, rr := range resp.Answer {
			switch rr := rr.(type) {
			case *dns.A:
				addrs = append(addrs, rr.A.String())
			case *dns.AAAA:
				addrs = append(addrs, rr.AAAA.String())
			}
		}
	}
	slices.Sort(addrs)
	addrs = slices.Compact(addrs)
	switch {
	case len(addrs) > 0:
		return addrs, nil
	case len(errs) > 0:
		return nil, errors.Join(errs...)
	case nx > 0:
		return nil, fmt.Errorf("%s does not exist (NXDOMAIN)", name)
	}
	return nil, errNoAddress
}

// resolveHosts looks up the addresses of hosts in parallel.
func (r *resolver) resolveHosts(ctx context.Context, hosts []Host) {
	parallel(len(hosts), func(i int) {
		h := &hosts[i]
		addrs, err := r.lookupAddrs(ctx, h.Name)
		if err != nil {
			h.Error = err.Error()
			return
		}
		h.Resolves = true
		if len(addrs) > r.opts.MaxAddrs {
			addrs = addrs[:r.opts.MaxAddrs]
		}
		for _, a := range addrs {
			h.Addrs = append(h.Addrs, Addr{IP: a})
		}
	})
}
