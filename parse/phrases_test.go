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
