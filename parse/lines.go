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
		j := 0
		for i := 0; i < n; i++ {
			c := p[i]
			if l.cr {
				l.cr = false
				if c == '\n' {
					continue
				}
			}
			if c == '\r' {
				l.cr = true
				c = '\n'
			}
			p[j] = c
			j++
		}
		if j > 0 || err != nil || n == 0 {
			return j, err
		}
	}
}
