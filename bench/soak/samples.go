package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/bouncer/bouncer/parse"
)

// sample is one real message the soak sends again and again. Each copy
// names other recipients, so that it is a new report to bouncer (not a
// duplicate): every recipient address the decoder found in it is replaced,
// wherever it occurs, by an address made from the copy's number.
type sample struct {
	name  string
	parts [][]byte // the message split at the addresses: parts[0] addr parts[1] addr ...
	slot  []int    // which of the sample's addresses sits before parts[i+1]
	addrs int      // distinct addresses replaced
	// verpSlot is the address whose VERP return path the copy is sent to
	// (the only recipient of the report), or -1: sent to a plain address,
	// and bouncer takes the recipients from the report.
	verpSlot int
	records  int // records bouncer stores for one copy: one per recipient, at least one
}

// loadSamples reads the *.eml files of dir.
func loadSamples(dir string) ([]*sample, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.eml"))
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	var out []*sample
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		s, err := newSample(filepath.Base(f), raw)
		if err != nil {
			return nil, fmt.Errorf("sample %s: %w", f, err)
		}
		out = append(out, s)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no *.eml samples in %s", dir)
	}
	return out, nil
}

// newSample decodes raw to find its recipient addresses and splits it at
// every occurrence of them (ASCII case ignored).
func newSample(name string, raw []byte) (*sample, error) {
	rep, err := parse.Message(bytes.NewReader(raw), parse.DefaultLimits())
	if err != nil && !errors.Is(err, parse.ErrNotBounce) {
		rep = nil // stored raw with the error: one record
	}
	s := &sample{name: name, verpSlot: -1, records: 1}
	var addrs []string
	if rep != nil {
		s.records = max(1, len(rep.Recipients))
		for _, rc := range rep.Recipients {
			for _, a := range []string{rc.FinalRecipient, rc.OriginalRecipient} {
				if strings.Contains(a, "@") && !slices.Contains(addrs, strings.ToLower(a)) {
					addrs = append(addrs, strings.ToLower(a))
				}
			}
		}
		if len(rep.Recipients) == 1 && rep.Recipients[0].FinalRecipient != "" {
			s.verpSlot = slices.Index(addrs, strings.ToLower(rep.Recipients[0].FinalRecipient))
		}
	}
	s.addrs = len(addrs)
	if len(addrs) == 0 {
		s.parts = [][]byte{raw}
		return s, nil
	}
	// Longest first, so that an address inside another is not cut out of it.
	quoted := make([]string, len(addrs))
	order := slices.Clone(addrs)
	slices.SortFunc(order, func(a, b string) int { return len(b) - len(a) })
	for i, a := range order {
		quoted[i] = regexp.QuoteMeta(a)
	}
	re := regexp.MustCompile(`(?i)` + strings.Join(quoted, "|"))
	prev := 0
	for _, m := range re.FindAllIndex(raw, -1) {
		s.parts = append(s.parts, raw[prev:m[0]])
		s.slot = append(s.slot, slices.Index(addrs, strings.ToLower(string(raw[m[0]:m[1]]))))
		prev = m[1]
	}
	s.parts = append(s.parts, raw[prev:])
	return s, nil
}

// addr is the address that stands for the sample's address slot in copy
// n. The domains repeat every domains copies.
func addr(n uint64, slot, domains int) string {
	return "s" + strconv.FormatUint(n, 10) + "r" + strconv.Itoa(slot) + "@d" + strconv.FormatUint(n%uint64(domains), 10) + ".soak.test"
}

// message returns copy n of the sample, and the recipient to send it to:
// the VERP return path of its recipient (bounces+LOCAL=DOMAIN@localhost),
// or bounces@localhost.
func (s *sample) message(n uint64, domains int) ([]byte, string) {
	var b bytes.Buffer
	b.Grow(len(s.parts[0]) * (len(s.parts) + 1))
	for i, p := range s.parts {
		b.Write(p)
		if i < len(s.slot) {
			b.WriteString(addr(n, s.slot[i], domains))
		}
	}
	rcpt := "bounces@localhost"
	if s.verpSlot >= 0 {
		local, domain, _ := strings.Cut(addr(n, s.verpSlot, domains), "@")
		rcpt = "bounces+" + local + "=" + domain + "@localhost"
	}
	return b.Bytes(), rcpt
}
