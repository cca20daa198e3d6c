package mx

import "strings"

// reservedSuffixes are special-use names that public DNS never delegates
// to a mail host: RFC 2606 §2 and RFC 6761 §6 (test, example, invalid,
// localhost), RFC 2606 §3 (example.com, .net, .org), RFC 6762 (local,
// multicast DNS), RFC 7686 (onion) and RFC 8375 (home.arpa).
var reservedSuffixes = []string{
	"test", "example", "invalid", "localhost",
	"example.com", "example.net", "example.org",
	"local", "onion", "home.arpa",
}

// Reserved reports whether domain is, or is under, a special-use name
// (RFC 2606, RFC 6761). Mail to such a domain cannot have a public route,
// so an automatic check of it could only reach the local resolver's idea
// of it, or leak the name to the public DNS.
func Reserved(domain string) bool {
	d := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(domain), "."))
	for _, s := range reservedSuffixes {
		if d == s || strings.HasSuffix(d, "."+s) {
			return true
		}
	}
	return false
}
