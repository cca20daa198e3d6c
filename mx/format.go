package mx

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
)

// Format writes r as a table for people: one line per address (or per
// exchange that does not resolve), then the notes.
//
//	example.com: valid route
//	PREF  EXCHANGE          ADDRESS    RESOLVES  CONNECTS  GREETS  DETAIL
//	10    mx1.example.com   192.0.2.1  yes       yes       yes     220 mx1.example.com ESMTP
//	20    mx2.example.com   -          no        -         -       mx2.example.com does not exist (NXDOMAIN)
func Format(w io.Writer, r Result) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s\n", clean(r.Domain, 253), r.Verdict.Describe())
	if r.Error != "" {
		fmt.Fprintf(&b, "error: %s\n", clean(r.Error, 400))
	}
	if r.Implicit {
		b.WriteString("no MX records: the domain's own address is the route (RFC 5321 §5.1)\n")
	}
	if len(r.Hosts) > 0 {
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "PREF\tEXCHANGE\tADDRESS\tRESOLVES\tCONNECTS\tGREETS\tDETAIL")
		for _, h := range r.Hosts {
			pref := strconv.Itoa(int(h.Pref))
			if r.Implicit {
				pref = "-"
			}
			name := clean(h.Name, 253)
			if !h.Resolves {
				fmt.Fprintf(tw, "%s\t%s\t-\tno\t-\t-\t%s\n", pref, name, clean(h.Error, 200))
				continue
			}
			for _, a := range h.Addrs {
				detail := a.Greeting
				if a.Error != "" {
					detail = strings.TrimSpace(a.Error + " " + a.Greeting)
				}
				if a.Skipped {
					fmt.Fprintf(tw, "%s\t%s\t%s\tyes\t-\t-\tnot checked (limit)\n", pref, name, a.IP)
					continue
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\tyes\t%s\t%s\t%s\n", pref, name, a.IP,
					yesNo(a.Connects), yesNo(a.Greets), clean(detail, 200))
			}
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "note: %s\n", clean(n, 200))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func yesNo(v bool) string {
	if v {
		return "yes"
	}
	return "no"
}
