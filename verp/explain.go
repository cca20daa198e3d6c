package verp

import (
	"fmt"
	"strings"
	"time"
)

// Explanation is a human-readable account of one return-path address, for
// "bouncer verp verify ADDR". It never contains the MAC a token should have
// had, so it cannot be used as a signing oracle.
type Explanation struct {
	Input     string // the address as given
	Unwrapped string // the address after BATV/SRS unwrapping
	Result    Result // fields as far as they were parsed, even when refused
	KeyKnown  bool   // a signed token's key id is configured
	AgeDays   int    // a signed token's age in days (negative: dated ahead)
	Date      string // a signed token's day as YYYY-MM-DD
	Detail    string // what was found, or why the address is refused
	Err       error  // the error Decode returns, nil if it accepts
}

// Explain decodes addr (local@domain, or a bare local part) as Decode would
// and describes every field and the verdict.
func (d *Decoder) Explain(addr string) Explanation {
	x := Explanation{Input: addr, Unwrapped: Unwrap(addr)}
	local := addr
	if at := strings.LastIndexByte(addr, '@'); at >= 0 {
		local = addr[:at]
	}
	x.Result, x.Detail, x.Err = d.decode(local)
	if x.Result.Signed && x.Result.KeyID != "" {
		_, x.KeyKnown = d.keys[x.Result.KeyID]
	}
	if x.Result.Signed && x.Result.KeyID != "" && x.Detail != detailBadHeader {
		today := epochDay(d.opts.Now())
		age := int(((today-int64(x.Result.Day))%dayMod + dayMod) % dayMod)
		if age >= dayMod-futureDays {
			age -= dayMod
		}
		x.AgeDays = age
		x.Date = time.Unix((today-int64(age))*86400, 0).UTC().Format(time.DateOnly)
	}
	return x
}

// Verdict is one line: "valid", "accepted", "not VERP" or "refused".
func (x Explanation) Verdict() string {
	switch {
	case x.Err != nil:
		return "refused (550 5.7.1): " + x.Err.Error()
	case x.Result.Verified:
		return "valid"
	case x.Result.Form == FormPlain:
		return "accepted, unverified"
	}
	return "not VERP: the recipient will come from the report"
}

// String formats the explanation as aligned "name: value" lines.
func (x Explanation) String() string {
	var b strings.Builder
	line := func(k, v string) {
		if v != "" {
			fmt.Fprintf(&b, "%-10s %s\n", k+":", v)
		}
	}
	r := x.Result
	line("address", x.Input)
	if x.Unwrapped != x.Input {
		line("unwrapped", x.Unwrapped)
	}
	line("wrappers", r.Wrapper)
	line("form", string(r.Form))
	line("prefix", r.Prefix)
	line("recipient", r.Recipient)
	if r.RecipientHash != "" {
		line("addr hash", r.RecipientHash+" (the recipient comes from the report and must hash to this)")
	}
	line("campaign", r.Campaign)
	line("list", r.List)
	if r.KeyID != "" {
		known := "not configured"
		if x.KeyKnown {
			known = "configured"
		}
		line("key", r.KeyID+" ("+known+")")
	}
	if x.Date != "" {
		line("day", fmt.Sprintf("%s (stamp %s, %d days old)", x.Date, encodeDay(int64(r.Day)), x.AgeDays))
	}
	line("detail", x.Detail)
	line("verdict", x.Verdict())
	return b.String()
}
