package parse

import "strings"

// Which address a record stands for, when its delivery-status fields
// give two: the Final-Recipient (RFC 3464 §2.3.2) unless it is no
// internet mailbox, then the Original-Recipient (§2.3.1) when that is
// one ("+original-address"). Sun ONE / iPlanet Messaging Server writes
// its internal route, "@store.example.net:user@ims_daemon", as the final
// recipient; a relay into a private network writes the inner name,
// "user@mailcluster.local".

// ruleOriginalAddress is appended to DecodedBy when Address returns the
// Original-Recipient for that reason.
const ruleOriginalAddress = "+original-address"

// privateSuffixes end names that exist only inside a network: RFC 6762
// .local, RFC 8375 home.arpa, RFC 6761 localhost, and the common private
// suffixes .localdomain, .internal, .intern, .lan.
var privateSuffixes = []string{".local", ".localdomain", ".localhost", ".internal", ".intern", ".lan", ".home.arpa"}

// isMailbox reports whether a is local@domain with a public domain name
// or an address literal: no source route (RFC 5321 §4.1.2 A-d-l, "@a:b@c"),
// a domain of letters, digits, hyphens and dots with at least one dot,
// not under a private suffix.
func isMailbox(a string) bool {
	i := strings.LastIndexByte(a, '@')
	if i <= 0 || i == len(a)-1 || a[0] == '@' || strings.ContainsAny(a[:i], " \t") {
		return false
	}
	d := strings.ToLower(a[i+1:])
	if d[0] == '[' {
		return d[len(d)-1] == ']'
	}
	if !strings.Contains(d, ".") || d[0] == '.' || d[len(d)-1] == '.' {
		return false
	}
	for j := 0; j < len(d); j++ {
		if c := d[j]; !isAlnum(c) && c != '.' && c != '-' {
			return false
		}
	}
	for _, s := range privateSuffixes {
		if strings.HasSuffix(d, s) {
			return false
		}
	}
	return true
}

// useOriginal reports whether a record stands for its Original-Recipient
// rather than its Final-Recipient.
func (r *Recipient) useOriginal() bool {
	return r.FinalRecipient != "" && !isMailbox(r.FinalRecipient) && isMailbox(r.OriginalRecipient)
}
