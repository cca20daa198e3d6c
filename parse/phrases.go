package parse

import "math/bits"

// phraseSet finds, in one pass over a text, where the first of a set of
// lower-case phrases occurs. Phrases are looked up by their first two
// bytes at each position that does not follow a letter or digit, so a
// phrase matches at the start of a word (or of a run of punctuation).
type phraseSet struct{ t *phraseTable }

func newPhraseSet(phrases ...string) *phraseSet {
	refs := make([]phraseRef, len(phrases))
	for i, p := range phrases {
		refs[i] = phraseRef{phrase: p}
	}
	return &phraseSet{newPhraseTable(refs)}
}

// index returns the offset of the first phrase found in s, compared
// ignoring ASCII case, or -1.
func (ps *phraseSet) index(s string) int {
	t := ps.t
	for i := 0; i+1 < len(s); i++ {
		c := s[i]
		if t.first[c] {
			for _, p := range t.at(c, s[i+1]) {
				if hasRestFold(s[i:], p.phrase) {
					return i
				}
			}
		}
		if alnumByte[c] {
			i = skipWord(s, i)
		}
	}
	return -1
}

// contains reports whether s has one of the phrases.
func (ps *phraseSet) contains(s string) bool { return ps.index(s) >= 0 }

// phraseRef is a phrase and the rule it belongs to (see textReasons).
type phraseRef struct {
	rule   int
	phrase string
}

// phraseTable finds the phrases that can start at a position of a text
// by the position's first two bytes. A key is one bit of bits (most
// positions of a text start no phrase, and a bit test is cheaper than a
// map's hash); the phrases of a key are at the count of keys before it,
// which rank and a popcount give.
type phraseTable struct {
	first [256]bool // the first bytes of the phrases, in both cases
	bits  [1 << 16 / 64]uint64
	rank  [1 << 16 / 64]uint16 // keys in the words before each word of bits
	lists [][]phraseRef        // by key order, each in the order given
}

func newPhraseTable(refs []phraseRef) *phraseTable {
	t := &phraseTable{}
	byKey := map[int][]phraseRef{}
	for _, r := range refs {
		p := r.phrase
		n := int(p[0])<<8 | int(p[1])
		byKey[n] = append(byKey[n], r)
		t.bits[n/64] |= 1 << (n % 64)
		t.first[p[0]] = true
		if isLetter(p[0]) {
			t.first[p[0]&^0x20] = true
		}
	}
	count := 0
	for w := range t.bits {
		t.rank[w] = uint16(count)
		for b := range 64 {
			if t.bits[w]&(1<<b) != 0 {
				t.lists = append(t.lists, byKey[w*64+b])
				count++
			}
		}
	}
	return t
}

// at returns the phrases whose first two bytes are a and b, ignoring
// ASCII case.
func (t *phraseTable) at(a, b byte) []phraseRef {
	n := uint(lowerByte[a])<<8 | uint(lowerByte[b])
	w := t.bits[n/64]
	if w>>(n%64)&1 == 0 {
		return nil
	}
	// The keys of this word up to n, n included, are the top bits of w
	// shifted left by 63-n%64.
	return t.lists[int(t.rank[n/64])+bits.OnesCount64(w<<(63-n%64))-1]
}

// lowerByte is lowerASCII as a table.
var lowerByte = func() (t [256]byte) {
	for c := range 256 {
		t[c] = lowerASCII(byte(c))
	}
	return t
}()

// hasRestFold is hasPrefixFoldString for a prefix whose first two bytes
// are known to match.
func hasRestFold(s, prefix string) bool {
	if len(s) < len(prefix) {
		return false
	}
	for i := 2; i < len(prefix); i++ {
		if lowerASCII(s[i]) != prefix[i] {
			return false
		}
	}
	return true
}

// skipWord returns, for a word (letters and digits) starting at s[i],
// the offset of the byte after it: the rest of the word, and that byte,
// follow a letter or digit, so no phrase starts there, and a scan that
// goes on after the returned offset skips them.
func skipWord(s string, i int) int {
	i++
	for i+1 < len(s) && alnumByte[s[i]] {
		i++
	}
	return i
}

// alnumByte marks the ASCII letters and digits: the phrase scanners test
// the byte before each position, and a table is cheaper than the ranges.
var alnumByte = func() (t [256]bool) {
	for c := range 256 {
		t[c] = isAlnum(byte(c))
	}
	return t
}()
