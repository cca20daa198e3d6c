package parse

import (
	"math/rand/v2"
	"strings"
	"testing"
)

// TestPhraseSetIndex checks phraseSet.index against a plain search: the
// first offset where a phrase starts, ignoring ASCII case, that is the
// text's start or follows a byte that is no letter or digit.
func TestPhraseSetIndex(t *testing.T) {
	phrases := []string{"ab", "b-a", "-x", "> re", "a b"}
	ps := newPhraseSet(phrases...)
	want := func(s string) int {
		for i := 0; i+1 < len(s); i++ {
			if i > 0 && isAlnum(s[i-1]) {
				continue
			}
			for _, p := range phrases {
				if strings.HasPrefix(strings.ToLower(s[i:]), p) {
					return i
				}
			}
		}
		return -1
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for n := 0; n < 20000; n++ {
		b := make([]byte, rng.IntN(12))
		for i := range b {
			b[i] = "aAbBx- >rRe9"[rng.IntN(12)]
		}
		s := string(b)
		if got, w := ps.index(s), want(s); got != w {
			t.Fatalf("index(%q) = %d, want %d", s, got, w)
		}
	}
}

// TestScanNotice checks that the one pass of scanNotice finds what
// returnedSet, delaySet and saysGivenUp find one by one, on texts made
// of their phrases, words around them and case changes.
func TestScanNotice(t *testing.T) {
	parts := []string{"will be retried", "retry timeout exceeded", "before giving up", "until", "gave up",
		"copy of the message", "> received:", "has been delayed", "the", "mail", "\n", " ", "x", "-", "queue"}
	rng := rand.New(rand.NewPCG(5, 6))
	for n := 0; n < 20000; n++ {
		var b strings.Builder
		for range rng.IntN(8) {
			p := parts[rng.IntN(len(parts))]
			if rng.IntN(3) == 0 {
				p = strings.ToUpper(p)
			}
			b.WriteString(p)
			if rng.IntN(2) == 0 {
				b.WriteByte(' ')
			}
		}
		s := b.String()
		w := scanNotice(s)
		if want := returnedSet.index(s); w.returned != want {
			t.Fatalf("scanNotice(%q).returned = %d, want %d", s, w.returned, want)
		}
		text := s
		if w.returned >= 0 {
			text = s[:w.returned]
		}
		lower := asciiLower(text)
		if want := delaySet.index(lower); w.delay != want && (want >= 0 || w.delayEnd <= len(text)) {
			t.Fatalf("scanNotice(%q).delay = %d, want %d", s, w.delay, want)
		}
		if got, want := w.givenUp >= 0 && w.givenUpEnd <= len(text), saysGivenUp(lower); got != want {
			t.Fatalf("scanNotice(%q) given up %v, want %v", s, got, want)
		}
	}
}
