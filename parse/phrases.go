package parse

// phraseSet finds, in one pass over a text, where the first of a set of
// lower-case phrases occurs. Phrases are looked up by their first two
// bytes at each position that does not follow a letter or digit, so a
// phrase matches at the start of a word (or of a run of punctuation).
type phraseSet map[[2]byte][]string

func newPhraseSet(phrases ...string) phraseSet {
	m := phraseSet{}
	for _, p := range phrases {
		k := [2]byte{p[0], p[1]}
		m[k] = append(m[k], p)
	}
	return m
}

// index returns the offset of the first phrase found in s, compared
// ignoring ASCII case, or -1.
func (m phraseSet) index(s string) int {
	for i := 0; i+1 < len(s); i++ {
		if i > 0 && isAlnum(s[i-1]) {
			continue
		}
		for _, p := range m[[2]byte{lowerASCII(s[i]), lowerASCII(s[i+1])}] {
			if hasPrefixFoldString(s[i:], p) {
				return i
			}
		}
	}
	return -1
}

// contains reports whether s has one of the phrases.
func (m phraseSet) contains(s string) bool { return m.index(s) >= 0 }
