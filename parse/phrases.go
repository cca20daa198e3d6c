package parse

// phraseSet finds, in one pass over a text, where the first of a set of
// lower-case phrases occurs. Phrases are looked up by their first two
// bytes at each position that does not follow a letter or digit, so a
// phrase matches at the start of a word (or of a run of punctuation).
type phraseSet struct {
	first [256]bool // the first bytes of the phrases, in both cases
	pairs pairBits
	m     map[[2]byte][]string
}

func newPhraseSet(phrases ...string) *phraseSet {
	ps := &phraseSet{m: map[[2]byte][]string{}}
	for _, p := range phrases {
		k := [2]byte{p[0], p[1]}
		ps.m[k] = append(ps.m[k], p)
		ps.pairs.set(k)
		ps.first[p[0]] = true
		if isLetter(p[0]) {
			ps.first[p[0]&^0x20] = true
		}
	}
	return ps
}

// index returns the offset of the first phrase found in s, compared
// ignoring ASCII case, or -1.
func (ps *phraseSet) index(s string) int {
	for i := 0; i+1 < len(s); i++ {
		c := s[i]
		if ps.first[c] {
			k := [2]byte{lowerASCII(c), lowerASCII(s[i+1])}
			if ps.pairs.has(k) {
				for _, p := range ps.m[k] {
					if hasPrefixFoldString(s[i:], p) {
						return i
					}
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

// pairBits is a set of two-byte keys, one bit each: most positions of a
// text start no phrase, and a bit test is cheaper than the map lookup
// that finds the phrases of a key.
type pairBits [1 << 16 / 64]uint64

func (b *pairBits) set(k [2]byte) {
	n := int(k[0])<<8 | int(k[1])
	b[n/64] |= 1 << (n % 64)
}

func (b *pairBits) has(k [2]byte) bool {
	n := int(k[0])<<8 | int(k[1])
	return b[n/64]&(1<<(n%64)) != 0
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
