// Package mx checks whether a domain has a working mail route: it looks
// up the domain's MX records (RFC 5321 §5.1, RFC 7505 null MX), the
// addresses of each exchange, connects to the SMTP port of each address
// and reads its greeting (RFC 5321 §4.2, §3.1: 220 means service ready).
//
// DNS queries go through github.com/miekg/dns to a configurable resolver,
// so tests can run a DNS server and SMTP greeters on loopback.
//
// The package keeps no state and does not log. All work is bounded: the
// number of exchanges and addresses checked is capped, every query and
// connection has a timeout, and at most a few KiB of a greeting are read.
package mx

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/idna"
)

// Verdict sums up a check.
type Verdict string

const (
	Valid       Verdict = "valid"       // every checked address greets with 220
	Partial     Verdict = "partial"     // some exchanges or addresses do not resolve, connect or greet
	Unreachable Verdict = "unreachable" // exchanges resolve, but no address greets
	Nowhere     Verdict = "mx_nowhere"  // MX records exist, but no exchange resolves
	NoMX        Verdict = "no_mx"       // no MX records and no address: mail cannot be delivered
	NullMX      Verdict = "null_mx"     // RFC 7505 null MX: the domain accepts no mail
	NXDomain    Verdict = "nxdomain"    // the domain does not exist
	DNSError    Verdict = "dns_error"   // the MX lookup failed; nothing is known
)

// Describe is the verdict in words, for people.
func (v Verdict) Describe() string {
	switch v {
	case Valid:
		return "valid route"
	case Partial:
		return "some MX unreachable"
	case Unreachable:
		return "all MX unreachable"
	case Nowhere:
		return "MX points nowhere (no exchange resolves)"
	case NoMX:
		return "no MX and no address"
	case NullMX:
		return "null MX: domain accepts no mail (RFC 7505)"
	case NXDomain:
		return "domain does not exist (NXDOMAIN)"
	case DNSError:
		return "DNS lookup failed"
	}
	return string(v)
}

// Routed reports whether the verdict says mail can reach the domain.
func (v Verdict) Routed() bool { return v == Valid || v == Partial }

// Result is what one check found.
type Result struct {
	Domain  string    `json:"domain"` // ASCII (A-label) form, no trailing dot
	Verdict Verdict   `json:"verdict"`
	Checked time.Time `json:"checked"`
	// Implicit is set when the domain has no MX records and its own
	// address is used as the exchange (RFC 5321 §5.1).
	Implicit bool   `json:"implicit,omitempty"`
	Hosts    []Host `json:"hosts,omitempty"` // in preference order
	// Error says why the lookup failed (Verdict DNSError).
	Error string `json:"error,omitempty"`
	// Notes lists what was skipped or odd: caps reached, a null MX mixed
	// with other records.
	Notes []string `json:"notes,omitempty"`
}

// Host is one exchange.
type Host struct {
	Name     string `json:"name"` // no trailing dot
	Pref     uint16 `json:"pref"`
	Resolves bool   `json:"resolves"`
	// Error says why the exchange does not resolve.
	Error string `json:"error,omitempty"`
	Addrs []Addr `json:"addrs,omitempty"`
}

// Addr is one address of an exchange and what connecting to it gave.
type Addr struct {
	IP       string `json:"ip"`
	Connects bool   `json:"connects"`
	Greets   bool   `json:"greets"` // greeted with 220
	// Greeting is the first line of the greeting, or of the refusal.
	Greeting string `json:"greeting,omitempty"`
	Error    string `json:"error,omitempty"`
	// Skipped is set when the MaxAddrs cap left the address unchecked.
	Skipped bool `json:"skipped,omitempty"`
}

// Options configure Check. Zero fields take defaults.
type Options struct {
	// Resolver is the DNS server ("host:port", or "host" for port 53).
	// Default: the nameservers of /etc/resolv.conf, tried in order.
	Resolver string
	// Port is the SMTP port connected to (default 25).
	Port int
	// DNSTimeout bounds each DNS query (default 5s).
	DNSTimeout time.Duration
	// ConnectTimeout bounds each TCP connect (default 10s).
	ConnectTimeout time.Duration
	// GreetingTimeout bounds the wait for the greeting once connected
	// (default 10s; RFC 5321 §4.5.3.2.1 lets a client wait 5 minutes, but
	// a check wants an answer).
	GreetingTimeout time.Duration
	// MaxMX caps the exchanges checked, lowest preference first
	// (default 10).
	MaxMX int
	// MaxAddrs caps the addresses connected to, in all (default 16).
	MaxAddrs int
	// NoIPv6 skips AAAA records, for hosts without IPv6 connectivity.
	NoIPv6 bool
}

// Defaults of Options.
const (
	DefaultPort            = 25
	DefaultDNSTimeout      = 5 * time.Second
	DefaultConnectTimeout  = 10 * time.Second
	DefaultGreetingTimeout = 10 * time.Second
	DefaultMaxMX           = 10
	DefaultMaxAddrs        = 16
)

// parallelism caps concurrent DNS queries and connections of one check.
const parallelism = 8

func (o *Options) setDefaults() {
	if o.Port <= 0 {
		o.Port = DefaultPort
	}
	if o.DNSTimeout <= 0 {
		o.DNSTimeout = DefaultDNSTimeout
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = DefaultConnectTimeout
	}
	if o.GreetingTimeout <= 0 {
		o.GreetingTimeout = DefaultGreetingTimeout
	}
	if o.MaxMX <= 0 {
		o.MaxMX = DefaultMaxMX
	}
	if o.MaxAddrs <= 0 {
		o.MaxAddrs = DefaultMaxAddrs
	}
}

// Check looks up the mail route of domain and tries every address of it.
// It returns an error (with Verdict DNSError) when the domain is not a
// valid name, no resolver is configured, or the MX lookup itself fails
// (timeout, SERVFAIL, REFUSED); a domain that does not exist or has no
// route is a verdict, not an error.
func Check(ctx context.Context, domain string, opts Options) (Result, error) {
	opts.setDefaults()
	res := Result{Domain: domain, Verdict: DNSError, Checked: time.Now()}
	name, err := Normalize(domain)
	if err != nil {
		res.Error = err.Error()
		return res, err
	}
	res.Domain = name
	r, err := newResolver(opts)
	if err != nil {
		res.Error = err.Error()
		return res, err
	}
	rcode, mxs, err := r.lookupMX(ctx, name)
	if err != nil {
		res.Error = err.Error()
		return res, fmt.Errorf("checking %s: %w", name, err)
	}
	if rcode == dns.RcodeNameError {
		res.Verdict = NXDomain
		return res, nil
	}
	if len(mxs) == 0 {
		return r.implicit(ctx, res, opts)
	}
	if isNull(mxs) {
		res.Verdict = NullMX
		return res, nil
	}
	res.Hosts, res.Notes = exchanges(mxs, opts.MaxMX)
	r.resolveHosts(ctx, res.Hosts)
	res.Notes = append(res.Notes, probeAll(ctx, res.Hosts, opts)...)
	res.Verdict = verdict(res.Hosts)
	return res, nil
}

// implicit checks a domain without MX records: its own address is the
// exchange (RFC 5321 §5.1), with preference 0.
func (r *resolver) implicit(ctx context.Context, res Result, opts Options) (Result, error) {
	h := []Host{{Name: res.Domain}}
	r.resolveHosts(ctx, h)
	if !h[0].Resolves {
		res.Verdict = NoMX
		if h[0].Error != "" && h[0].Error != errNoAddress.Error() {
			res.Notes = append(res.Notes, "address lookup: "+h[0].Error)
		}
		return res, nil
	}
	res.Implicit = true
	res.Hosts = h
	res.Notes = append(res.Notes, probeAll(ctx, res.Hosts, opts)...)
	res.Verdict = verdict(res.Hosts)
	return res, nil
}

// Normalize returns the ASCII form of a domain name, lower case, without
// a trailing dot, or an error if it is not a valid host name.
func Normalize(domain string) (string, error) {
	d := strings.TrimSuffix(strings.TrimSpace(domain), ".")
	if d == "" {
		return "", errors.New("empty domain")
	}
	if len(d) > 253 {
		return "", fmt.Errorf("domain %q...: longer than 253 bytes", d[:40])
	}
	if _, err := netip.ParseAddr(strings.Trim(d, "[]")); err == nil {
		return "", fmt.Errorf("%q is an address, not a domain", d)
	}
	a, err := idna.Lookup.ToASCII(d)
	if err != nil {
		return "", fmt.Errorf("invalid domain %q: %w", clean(d, 80), err)
	}
	a = strings.ToLower(a)
	if n, ok := dns.IsDomainName(a); !ok || n < 1 || len(a) > 253 {
		return "", fmt.Errorf("invalid domain %q", clean(d, 80))
	}
	return a, nil
}

// isNull reports whether mxs is a null MX: a single record with the root
// as exchange (RFC 7505 §3).
func isNull(mxs []*dns.MX) bool {
	return len(mxs) == 1 && mxs[0].Mx == "."
}

// exchanges turns MX records into hosts in preference order (RFC 5321
// §5.1: lowest first; equal preferences by name here, for a stable
// table), without duplicates and at most max of them.
func exchanges(mxs []*dns.MX, max int) ([]Host, []string) {
	var notes []string
	hosts := make([]Host, 0, min(len(mxs), max))
	seen := map[string]bool{}
	for _, m := range mxs {
		name := strings.ToLower(strings.TrimSuffix(m.Mx, "."))
		if name == "" {
			notes = append(notes, "null MX (\".\") mixed with other MX records, ignored (RFC 7505 §3)")
			continue
		}
		if seen[name] {
			continue
		}
		seen[name] = true
		hosts = append(hosts, Host{Name: name, Pref: m.Preference})
	}
	slices.SortFunc(hosts, func(a, b Host) int {
		return cmp.Or(cmp.Compare(a.Pref, b.Pref), strings.Compare(a.Name, b.Name))
	})
	if len(hosts) > max {
		notes = append(notes, fmt.Sprintf("%d more MX records not checked (limit %d)", len(hosts)-max, max))
		hosts = hosts[:max]
	}
	return hosts, notes
}

// verdict sums up probed hosts.
func verdict(hosts []Host) Verdict {
	resolved, good, bad := 0, 0, 0
	for _, h := range hosts {
		if !h.Resolves {
			bad++
			continue
		}
		resolved++
		for _, a := range h.Addrs {
			switch {
			case a.Skipped:
			case a.Greets:
				good++
			default:
				bad++
			}
		}
	}
	switch {
	case resolved == 0:
		return Nowhere
	case good == 0:
		return Unreachable
	case bad > 0:
		return Partial
	}
	return Valid
}

// probeAll connects to each address of hosts, up to opts.MaxAddrs in
// preference order, in parallel, and returns a note if some were skipped.
func probeAll(ctx context.Context, hosts []Host, opts Options) []string {
	var targets []*Addr
	skipped := 0
	for i := range hosts {
		for j := range hosts[i].Addrs {
			if len(targets) == opts.MaxAddrs {
				hosts[i].Addrs[j].Skipped = true
				skipped++
				continue
			}
			targets = append(targets, &hosts[i].Addrs[j])
		}
	}
	parallel(len(targets), func(i int) {
		a := targets[i]
		*a = probe(ctx, a.IP, opts)
	})
	if skipped > 0 {
		return []string{fmt.Sprintf("%d more addresses not checked (limit %d)", skipped, opts.MaxAddrs)}
	}
	return nil
}

// parallel runs fn(0..n-1) with at most parallelism at once.
func parallel(n int, fn func(i int)) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, parallelism)
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			fn(i)
		})
	}
	wg.Wait()
}

// clean makes s safe to print: printable ASCII only, at most n bytes.
func clean(s string, n int) string {
	var b strings.Builder
	for _, c := range s {
		if b.Len() >= n {
			b.WriteString("...")
			break
		}
		if c < 0x20 || c >= 0x7f {
			c = '?'
		}
		b.WriteRune(c)
	}
	return b.String()
}

// portString is the SMTP port as a string.
func portString(p int) string { return strconv.Itoa(p) }
