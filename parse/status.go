package parse

import "strings"

// findEnhanced returns the first RFC 3463 enhanced status code in s
// ("class.subject.detail", class 2, 4 or 5, subject and detail of one to
// three digits) that stands on its own: not part of a longer dotted number
// such as an IP address or a version. A code that directly follows an SMTP
// reply code ("550 5.1.1", "550-5.1.1") is preferred.
func findEnhanced(s string) string {
	first := ""
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '2' && c != '4' && c != '5' {
			continue
		}
		if i > 0 && (isDigit(s[i-1]) || s[i-1] == '.' || isLetter(s[i-1])) {
			continue
		}
		n := codeLen(s[i:])
		if n == 0 {
			continue
		}
		code := s[i : i+n]
		if i >= 4 && isReplyCode(s[i-4:i-1]) && (s[i-1] == ' ' || s[i-1] == '-') {
			return code
		}
		if i >= 5 && (s[i-1] == '\'' || s[i-1] == '"') && isReplyCode(s[i-5:i-2]) && (s[i-2] == ' ' || s[i-2] == '-') {
			return code
		}
		if first == "" {
			first = code
		}
		i += n
	}
	return first
}

// failureEnhanced returns the first failure code (4.x.x, 5.x.x) in s
// (a transcript can hold "250 2.1.5 Ok" before "451 4.3.0"), else the
// first code.
func failureEnhanced(s string) string {
	c := findEnhanced(s)
	if c == "" || c[0] != '2' {
		return c
	}
	for i := 0; i < len(s); i++ {
		if (s[i] == '4' || s[i] == '5') && (i == 0 || !isDigit(s[i-1]) && s[i-1] != '.' && !isLetter(s[i-1])) {
			if n := codeLen(s[i:]); n > 0 {
				return s[i : i+n]
			}
		}
	}
	return c
}

// codeLen returns the length of the enhanced status code at the start of
// s, or 0.
func codeLen(s string) int {
	if len(s) < 5 || s[1] != '.' {
		return 0
	}
	j := 2
	k := digits(s[j:], 3)
	if k == 0 || j+k >= len(s) || s[j+k] != '.' {
		return 0
	}
	j += k + 1
	k = digits(s[j:], 3)
	if k == 0 {
		return 0
	}
	j += k
	if j < len(s) && (isDigit(s[j]) || s[j] == '.' && j+1 < len(s) && isDigit(s[j+1])) {
		return 0
	}
	return j
}

// digits counts up to max leading ASCII digits of s.
func digits(s string, max int) int {
	n := 0
	for n < len(s) && n <= max && isDigit(s[n]) {
		n++
	}
	if n > max {
		return 0
	}
	return n
}

func isDigit(c byte) bool  { return c >= '0' && c <= '9' }
func isLetter(c byte) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' }

// isReplyCode reports whether s is an RFC 5321 §4.2 reply code of a
// negative or positive completion (2yz, 4yz, 5yz).
func isReplyCode(s string) bool {
	return len(s) == 3 && (s[0] == '2' || s[0] == '4' || s[0] == '5') &&
		s[1] >= '0' && s[1] <= '5' && isDigit(s[2])
}

// findReplyCode returns the SMTP reply code that a diagnostic starts with
// ("550 ...", "550-...", "550"), or else the first one that stands on its
// own after "SMTP error" style words, or "".
func findReplyCode(s string) string {
	t := strings.TrimLeft(s, " \t<(#[")
	if len(t) >= 3 && isReplyCode(t[:3]) && (len(t) == 3 || !isDigit(t[3]) && t[3] != '.') {
		return t[:3]
	}
	for i := 0; i+3 <= len(s); i++ {
		// In running text only failure replies count: "222" or "250" in
		// a summary is too likely to be some other number.
		if s[i] == '2' || !isReplyCode(s[i:i+3]) {
			continue
		}
		if i > 0 && (isDigit(s[i-1]) || isLetter(s[i-1]) || s[i-1] == '.' || s[i-1] == '-' || s[i-1] == '+' || s[i-1] == ':' || s[i-1] == '/') {
			continue
		}
		if i+3 < len(s) && s[i+3] != ' ' && s[i+3] != '-' && s[i+3] != ']' && s[i+3] != ')' {
			continue
		}
		if i+4 < len(s) && s[i+3] == '-' && !isDigit(s[i+4]) && s[i+4] != '\'' && s[i+4] != '"' {
			continue
		}
		// Followed by an enhanced code or a word: "550 5.1.1", "550 Requested".
		rest := strings.TrimLeft(s[i+3:], " -'\"")
		if rest != "" && (isDigit(rest[0]) && codeLen(rest) > 0 || isLetter(rest[0]) || rest[0] == '<' || rest[0] == '#') {
			return s[i : i+3]
		}
	}
	return ""
}

// isGeneric reports whether an enhanced code is the generic x.0.0.
func isGeneric(code string) bool {
	return len(code) == 5 && code[1:] == ".0.0"
}

// resolveStatus sets the effective Status of a recipient (see the Status
// field): the literal code, a more specific one from the diagnostic when
// the literal one is generic, or one inferred (RFC 3463) from the reply code
// and the reason.
//
// permanent says the notice calls the failure permanent ("This is a
// permanent error", "Giving up"); it only matters for an expired delivery
// without any code.
func resolveStatus(rc *Recipient, permanent bool) {
	lit := rc.StatusLiteral
	if findEnhanced(lit) != lit {
		lit = ""
	}
	diag := failureEnhanced(rc.DiagnosticCode)
	if rc.ReplyCode == "" {
		rc.ReplyCode = findReplyCode(rc.DiagnosticCode)
	}
	switch {
	case lit != "" && diag != "" && diag[0] != lit[0] && rc.ReplyCode != "" && rc.ReplyCode[0] == diag[0] &&
		diag[0] != '2' && lit[0] != '2':
		// The remote server's reply ("550 5.5.0") contradicts the class
		// of the Status field: the reply is what happened.
		rc.Status = diag
	case lit != "" && !isGeneric(lit):
		rc.Status = lit
	case lit != "" && diag != "" && diag[0] == lit[0] && !isGeneric(diag):
		rc.Status = diag // RFC 3463 §3.1: x.0.0 is "other undefined"; the specific one says more
	case lit != "":
		rc.Status = lit
	case diag != "":
		rc.Status = diag
	default:
		rc.Status = inferStatus(rc.ReplyCode, rc.Action, rc.Reason, permanent)
		rc.StatusInferred = rc.Status != ""
	}
}

// inferStatus infers an enhanced status code when a report gives none.
// An expired delivery is 4.4.7 unless the notice calls it permanent.
// RFC 3463 §2 lets the class follow the SMTP reply (2yz → 2, 4yz → 4, 5yz →
// 5); the subject and detail come from the reply code where RFC 5321 §4.2.2
// gives it one meaning, else from the reason category (see reasonCodes).
func inferStatus(reply string, action Action, reason Reason, permanent bool) string {
	var class byte
	switch {
	case reply == "" && reason == ReasonExpired && action == Failed && permanent:
		return "5.4.7" // the reporting MTA itself calls it permanent
	case reply == "" && reason == ReasonExpired:
		// Queue lifetime ran out after temporary failures: Sendmail and
		// Postfix report 4.4.7 with Action failed (RFC 3463 X.4.7).
		return "4.4.7"
	case reply != "":
		class = reply[0]
	case action == Delayed:
		class = '4'
	case action == Delivered || action == Relayed || action == Expanded:
		return "2.0.0"
	case action == Failed || reason != "":
		class = '5'
	default:
		return ""
	}
	if s := inferDetail(class, reason); s != "" {
		return s
	}
	switch reply {
	case "421":
		return "4.3.2" // service not available: system not accepting network messages
	case "452":
		return "4.3.1" // insufficient system storage: mail system full
	case "552":
		return "5.2.2" // exceeded storage allocation: mailbox full
	case "553":
		return "5.1.3" // mailbox name not allowed: bad destination mailbox address syntax
	case "551":
		return "5.1.6" // user not local: mailbox has moved
	case "554", "550", "450", "451", "500", "501", "502", "503", "504":
	}
	return string(class) + ".0.0"
}

// inferDetail returns class.subject.detail for a reason that RFC 3463 names
// exactly, or "".
func inferDetail(class byte, reason Reason) string {
	if sd, ok := reasonCodes[reason]; ok {
		return string(class) + sd
	}
	return ""
}
