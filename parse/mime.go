package parse

import (
	"bufio"
	"bytes"
	"io"
)

// src is where a MIME entity's body is read from: the shared buffered
// reader of the message, and the delimiter lines ("--boundary") of every
// enclosing multipart, innermost first. A body ends at the first line that
// starts with any of them, so a part with a broken or missing closing
// delimiter cannot swallow the parts of its parents (RFC 2046 §5.1.1).
type src struct {
	br     *bufio.Reader
	delims [][]byte
}

// atDelim reports which delimiter the next line starts with (its index in
// s.delims), without consuming it, or -1.
func (s *src) atDelim() int {
	if len(s.delims) == 0 {
		return -1
	}
	// Every delimiter starts with "--" (RFC 2046 §5.1.1): most lines are
	// ruled out by one short Peek.
	if p, _ := s.br.Peek(2); len(p) < 2 || p[0] != '-' || p[1] != '-' {
		return -1
	}
	for i, d := range s.delims {
		if p, _ := s.br.Peek(len(d) + 1); isDelim(p, d) {
			return i
		}
	}
	return -1
}

// isDelim reports whether p, the next len(d)+1 bytes of the input (fewer
// at its end), start a line with the delimiter d.
func isDelim(p, d []byte) bool {
	if len(p) < len(d) || !bytes.Equal(p[:len(d)], d) {
		return false
	}
	// RFC 2046 §5.1.1: the boundary is followed by "--", blanks or
	// the line end, so "--b" does not match a line "--b2".
	if len(p) == len(d) {
		return true
	}
	switch p[len(d)] {
	case '-', ' ', '\t', '\r', '\n':
		return true
	}
	return false
}

// skipLine consumes one line, however long.
func (s *src) skipLine() error {
	for {
		_, err := s.br.ReadSlice('\n')
		if err != bufio.ErrBufferFull {
			return err
		}
	}
}

// body reads an entity body up to the next delimiter line or EOF.
type body struct {
	s       *src
	buf     []byte // rest of the current line, inside br's buffer
	midLine bool   // the last ReadSlice stopped inside a long line
	done    bool
}

func (b *body) Read(p []byte) (int, error) {
	if len(b.buf) == 0 {
		if b.done {
			return 0, io.EOF
		}
		if !b.midLine && b.s.atDelim() >= 0 {
			b.done = true
			return 0, io.EOF
		}
		line, err := b.s.br.ReadSlice('\n')
		b.midLine = err == bufio.ErrBufferFull
		b.buf = line
		if err != nil && err != bufio.ErrBufferFull {
			b.done = true
			if len(line) == 0 {
				if err == io.EOF {
					return 0, io.EOF
				}
				return 0, err
			}
		}
	}
	n := copy(p, b.buf)
	b.buf = b.buf[n:]
	return n, nil
}

// buffered returns the rest of the body and consumes it, when all of it
// is in the reader's buffer (most parts of a message of a few KB) and it
// is at most max bytes: a part read this way is copied once, from the
// buffer, instead of line by line through Read. It reports false, having
// consumed nothing, when it cannot tell where the body ends without
// reading more.
func (b *body) buffered(max int) (string, bool) {
	if b.done || b.midLine || len(b.buf) > 0 || len(b.s.delims) == 0 {
		return "", false
	}
	p, _ := b.s.br.Peek(b.s.br.Buffered())
	for off := 0; off <= max; {
		// At a line start: what atDelim would peek is p[off:][:len(d)+1].
		rest := p[off:]
		for _, d := range b.s.delims {
			if len(rest) < len(d)+1 {
				return "", false
			}
			if isDelim(rest[:len(d)+1], d) {
				body := string(p[:off])
				b.s.br.Discard(off)
				b.done = true
				return body, true
			}
		}
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			return "", false
		}
		off += i + 1
	}
	return "", false
}

// drain skips the rest of a body.
func (b *body) drain() {
	if b.done {
		return
	}
	b.buf = nil
	if b.midLine {
		if b.s.skipLine() != nil {
			return
		}
	}
	for b.s.atDelim() < 0 {
		if b.s.skipLine() != nil {
			return
		}
	}
}
