package verp

import "strings"

// maxWrappers bounds how many nested wrappers are removed.
const maxWrappers = 4

// Unwrap removes BATV and SRS wrappers from an address and returns the
// address the original sender used. Tags and hashes are not checked:
// bouncer did not add them and holds no secret for them.
//
//   - BATV (draft-levine-smtp-batv): prvs=TAG=local@domain, and the variants
//     msprvs1=TAG=local@domain and Barracuda's btv1==TAG==local@domain,
//     become local@domain.
//   - SRS0=HHH=TT=orig-domain=orig-local@forwarder becomes
//     orig-local@orig-domain (the separator after SRS0 may be =, + or -).
//   - SRS1=HHH=first-forwarder==HHH=TT=orig-domain=orig-local@forwarder
//     likewise becomes orig-local@orig-domain.
//
// Tags are matched without regard to case. An address with no wrapper is
// returned as it is.
func Unwrap(addr string) string {
	local, domain := addr, ""
	if at := strings.LastIndexByte(addr, '@'); at >= 0 {
		local, domain = addr[:at], addr[at+1:]
	}
	local = unquoteLocal(local)
	inner, innerDomain, wrappers := unwrap(local)
	if wrappers == "" {
		return addr
	}
	if innerDomain != "" {
		domain = innerDomain
	}
	if domain == "" && !strings.Contains(addr, "@") {
		return inner
	}
	return inner + "@" + domain
}

// unwrapLocal removes wrappers from a local part and names them.
func unwrapLocal(local string) (string, string) {
	inner, _, wrappers := unwrap(local)
	return inner, wrappers
}

// unwrap removes up to maxWrappers wrappers from local, returning the inner
// local part, the domain an SRS wrapper carried ("" if none) and the
// wrapper names, outermost first, joined by commas.
func unwrap(local string) (string, string, string) {
	var domain string
	var names []string
	for range maxWrappers {
		inner, dom, name := unwrapOne(local)
		if name == "" {
			break
		}
		local = inner
		if dom != "" {
			domain = dom
		}
		names = append(names, name)
	}
	return local, domain, strings.Join(names, ",")
}

// unwrapOne removes one wrapper, returning "" as the name if there is none.
func unwrapOne(local string) (inner, domain, name string) {
	l := lowerASCII(local)
	switch {
	case strings.HasPrefix(l, "prvs="), strings.HasPrefix(l, "msprvs1="):
		name = l[:strings.IndexByte(l, '=')]
		rest := local[len(name)+1:]
		if i := strings.IndexByte(rest, '='); i > 0 && i < len(rest)-1 {
			return rest[i+1:], "", name
		}
	case strings.HasPrefix(l, "btv1=="):
		rest := local[len("btv1=="):]
		if i := strings.Index(rest, "=="); i > 0 && i < len(rest)-2 {
			return rest[i+2:], "", "btv1"
		}
	case isSRSTag(l, "srs0"):
		if loc, dom, ok := srs0Opaque(local[5:]); ok {
			return loc, dom, "srs0"
		}
	case isSRSTag(l, "srs1"):
		// HHH=first-forwarder=<sep><SRS0 opaque part>
		p := strings.SplitN(local[5:], "=", 3)
		if len(p) == 3 && p[0] != "" && p[1] != "" && len(p[2]) > 1 && strings.IndexByte("=+-", p[2][0]) >= 0 {
			if loc, dom, ok := srs0Opaque(p[2][1:]); ok {
				return loc, dom, "srs1"
			}
		}
	}
	return "", "", ""
}

// isSRSTag reports whether l starts with tag and one of SRS's separators.
func isSRSTag(l, tag string) bool {
	return len(l) > len(tag) && strings.HasPrefix(l, tag) && strings.IndexByte("=+-", l[len(tag)]) >= 0
}

// srs0Opaque splits "HHH=TT=domain=local" into local and domain.
func srs0Opaque(s string) (string, string, bool) {
	p := strings.SplitN(s, "=", 4)
	if len(p) != 4 || p[0] == "" || p[1] == "" || p[2] == "" || p[3] == "" {
		return "", "", false
	}
	return p[3], p[2], true
}
