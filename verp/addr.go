package verp

import (
	"crypto/sha256"
	"crypto/subtle"
	"strings"
	"unicode/utf8"
)

// isAtext reports whether c is an RFC 5322 §3.2.3 atext character.
func isAtext(c byte) bool {
	if isAlnum(c) {
		return true
	}
	return strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// lowerASCII folds A-Z to a-z and leaves every other byte alone, so the
// result does not depend on Unicode tables or locale.
func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if b[j] >= 'A' && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// isDotAtom reports whether s is an ASCII RFC 5322 dot-atom-text: atext
// runs separated by single dots.
func isDotAtom(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] != '.' && !isAtext(s[i]) {
			return false
		}
	}
	return true
}

// isLDHDomain reports whether s is an ASCII host name: labels of letters,
// digits and hyphens, 1-63 octets each, not starting or ending with a
// hyphen, 255 octets at most (RFC 1035 §2.3.4, RFC 5321 §4.1.2).
func isLDHDomain(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			if !isAlnum(label[i]) && label[i] != '-' {
				return false
			}
		}
	}
	return true
}

// validDomain accepts what may follow "@" in a plain VERP address: an LDH
// name, a UTF-8 name (RFC 6531) or an address literal in brackets. It is
// deliberately loose; it only keeps control characters, spaces and broken
// UTF-8 out of recipients.
func validDomain(s string) bool {
	if s == "" || len(s) > 255 || !utf8.ValidString(s) {
		return false
	}
	if s[0] == '[' {
		return s[len(s)-1] == ']' && !strings.ContainsAny(s[1:len(s)-1], "[]\\ ")
	}
	if s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for _, r := range s {
		if r < 0x80 && !isAlnum(byte(r)) && r != '-' && r != '.' {
			return false
		}
	}
	return true
}

// validPlainLocal accepts any valid UTF-8 without control characters or
// angle brackets and "@"; characters outside atext are quoted on output.
func validPlainLocal(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == '<' || r == '>' || r == '@' {
			return false
		}
	}
	return true
}

// quoteLocalIfNeeded returns s as a dot-atom if it is one (or UTF-8 text
// with no ASCII specials, RFC 6532 §3.2), else as a quoted-string
// (RFC 5321 §4.1.2).
func quoteLocalIfNeeded(s string) string {
	atom := s != "" && s[0] != '.' && s[len(s)-1] != '.' && !strings.Contains(s, "..")
	for i := 0; atom && i < len(s); i++ {
		c := s[i]
		atom = c >= 0x80 || c == '.' || isAtext(c)
	}
	if atom {
		return s
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('"')
	return b.String()
}

// unquoteLocal removes the quotes and backslash escapes of a quoted-string
// local part (RFC 5321 §4.1.2); anything else is returned as it is.
func unquoteLocal(s string) string {
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		return s
	}
	var b strings.Builder
	in := s[1 : len(s)-1]
	for i := 0; i < len(in); i++ {
		if in[i] == '\\' && i+1 < len(in) {
			i++
		}
		b.WriteByte(in[i])
	}
	return b.String()
}

// normalizeAddr turns a report address ("rfc822; <User@Example.COM>") into
// the form hashed and compared: no address type, no angle brackets, no
// surrounding space, ASCII lower case.
func normalizeAddr(addr string) string {
	addr = strings.TrimSpace(addr)
	if i := strings.IndexByte(addr, ';'); i > 0 && isAddrType(addr[:i]) {
		addr = strings.TrimSpace(addr[i+1:])
	}
	if len(addr) >= 2 && addr[0] == '<' && addr[len(addr)-1] == '>' {
		addr = strings.TrimSpace(addr[1 : len(addr)-1])
	}
	return lowerASCII(addr)
}

// isAddrType reports whether s looks like an RFC 3464 §2.3.2 address-type
// ("rfc822", "utf-8", "x-foo").
func isAddrType(s string) bool {
	s = strings.TrimSpace(s)
	if s == "" || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isAlnum(s[i]) && s[i] != '-' {
			return false
		}
	}
	return true
}

// AddressHash is the recipient hash carried by the compact form: the first
// 13 characters of the lower-case, unpadded base32 (RFC 4648 §6) of
// SHA-256 over the address with any address type and angle brackets
// removed and ASCII letters folded to lower case. See FORMAT.md.
func AddressHash(addr string) string {
	sum := sha256.Sum256([]byte(normalizeAddr(addr)))
	return b32.EncodeToString(sum[:])[:hashLen]
}

// constEq compares two strings in time that depends only on their lengths.
func constEq(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
