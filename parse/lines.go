package parse

import (
	"bytes"
	"io"
)

// lineReader turns CRLF and lone CR line endings into LF, so messages
// stored with any of the three conventions decode the same.
type lineReader struct {
	r  io.Reader
	cr bool // the last byte returned was a CR turned into LF
}

func newLineReader(r io.Reader) *lineReader { return &lineReader{r: r} }

func (l *lineReader) Read(p []byte) (int, error) {
	for {
		n, err := l.r.Read(p)
		if !l.cr && bytes.IndexByte(p[:n], '\r') < 0 {
			return n, err
		}
		// Move the bytes between CRs down over the dropped ones, a run
		// at a time: a CR becomes LF, and an LF right after a CR (here
		// or at the end of the last read) is dropped.
		j, i := 0, 0
		if l.cr && n > 0 {
			l.cr = false
			if p[0] == '\n' {
				i = 1
			}
		}
		for i < n {
			k := bytes.IndexByte(p[i:n], '\r')
			if k < 0 {
				j += copy(p[j:], p[i:n])
				break
			}
			j += copy(p[j:], p[i:i+k])
			p[j] = '\n'
			j++
			i += k + 1
			if i == n {
				l.cr = true
			} else if p[i] == '\n' {
				i++
			}
		}
		if j > 0 || err != nil || n == 0 {
			return j, err
		}
	}
}
