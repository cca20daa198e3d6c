package server

import (
	"bytes"
	"errors"
	"io"
	"math"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// Message bodies are read, and budget is taken, in chunks: a first one of
// firstChunk bytes, which holds most bounces whole, then chunkSize bytes at
// a time.
const (
	firstChunk = 16 << 10
	chunkSize  = 64 << 10
)

// chunks are the read buffers, reused across messages. A chunk never
// leaves the session that took it: the message handed to the Saver is
// always a buffer of its own.
var (
	firstChunks = sync.Pool{New: func() any { b := make([]byte, firstChunk); return &b }}
	chunks      = sync.Pool{New: func() any { b := make([]byte, chunkSize); return &b }}
)

// maxExact is the largest SIZE= for which the whole buffer is allocated
// (and its budget taken) before the body arrives. A larger declared size
// is read in chunks like an undeclared one, so a client cannot hold much
// of the budget by announcing a big message and sending it slowly: beyond
// this, it holds only what it has sent.
const maxExact = 256 << 10

// errNoMemory means the in-memory DATA budget stayed exhausted for longer
// than Options.DataMemoryWait.
var errNoMemory = errors.New("data memory budget exhausted")

// bodyReader reads one message body within the DATA budget. Bytes go into
// pooled chunks (16 KiB, then 64 KiB each) and are copied once, at the
// end, into a buffer of the exact size; when the client declared a SIZE= (RFC 1870) of at most
// maxExact the body is read straight into a buffer of that size instead,
// and not copied at all if it fits.
type bodyReader struct {
	c    *conn
	g    *grant
	max  int64
	wait time.Duration

	exact  []byte    // the SIZE= buffer, if any
	pooled []*[]byte // chunks after exact, in order
	last   []byte    // the chunk being filled: *pooled[len-1][:filled]
	n      int64     // bytes read in all
}

// take takes n bytes of budget, moving the data-rate clock on by the time
// spent waiting, since the client was not being read meanwhile.
func (b *bodyReader) take(n int64) bool {
	before := b.g.waited
	ok := b.g.take(n, b.wait)
	if d := b.g.waited - before; d > 0 {
		b.c.pauseData(d)
	}
	return ok
}

// read reads r to the end. size is the client's SIZE= or 0. It returns the
// body with bare CR and LF turned into CRLF (RFC 5321 §2.3.8) and how many
// it changed. The body holds cap(body) bytes of budget until the grant is
// released. On error the bytes read so far are dropped.
func (b *bodyReader) read(r io.Reader, size int64) ([]byte, int, error) {
	defer b.free()
	// One byte more than the limit is read, so an over-long body is
	// seen. The sum is kept from overflowing: a wrapped, negative N would
	// make the reader end at once and an empty body would be stored and
	// acknowledged (issue 21, max_message_bytes = 2^63-1).
	lr := &io.LimitedReader{R: r, N: b.max}
	if lr.N < math.MaxInt64 {
		lr.N++
	}
	if size > maxExact {
		size = 0
	}
	if size > 0 {
		// One byte more than declared, so a body of exactly that size
		// ends (io.EOF) without a chunk being taken.
		size = min(size, b.max) + 1
		if !b.take(size) {
			return nil, 0, errNoMemory
		}
		b.exact = make([]byte, 0, size)
		if err := fill(lr, &b.exact, &b.n); err != nil {
			return nil, 0, err
		}
	}
	for size == 0 || len(b.exact) == cap(b.exact) {
		pool, size := &chunks, int64(chunkSize)
		if len(b.pooled) == 0 {
			pool, size = &firstChunks, firstChunk
		}
		if !b.take(size) {
			return nil, 0, errNoMemory
		}
		p := pool.Get().(*[]byte)
		b.pooled = append(b.pooled, p)
		b.last = (*p)[:0]
		if err := fill(lr, &b.last, &b.n); err != nil {
			return nil, 0, err
		}
		if len(b.last) < len(*p) {
			break
		}
	}
	if lr.N <= 0 || b.n > b.max {
		// The limit, not the end of the body, stopped the reader: never
		// acknowledge a body that was cut short.
		return nil, 0, smtp.ErrDataTooLarge
	}
	var ends lineEnds
	for _, seg := range b.segments() {
		ends.count(seg)
	}
	bare := ends.finish()
	if b.n+int64(bare) > b.max {
		// go-smtp enforces the limit for DATA and BDAT itself; this is
		// a second fence, which also holds the normalised body.
		return nil, 0, smtp.ErrDataTooLarge
	}
	if bare == 0 && len(b.pooled) == 0 {
		return b.exact, 0, nil
	}
	out, err := b.assemble(bare)
	return out, bare, err
}

// segments are the parts of the body read so far, in order.
func (b *bodyReader) segments() [][]byte {
	segs := make([][]byte, 0, 1+len(b.pooled))
	if len(b.exact) > 0 {
		segs = append(segs, b.exact)
	}
	for _, p := range b.pooled[:max(0, len(b.pooled)-1)] {
		segs = append(segs, *p)
	}
	if len(b.last) > 0 {
		segs = append(segs, b.last)
	}
	return segs
}

// fill reads from r into the free capacity of *buf until it is full or r
// ends (nil error).
func fill(r io.Reader, buf *[]byte, total *int64) error {
	for len(*buf) < cap(*buf) {
		m, err := r.Read((*buf)[len(*buf):cap(*buf)])
		*buf = (*buf)[:len(*buf)+m]
		*total += int64(m)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return &readError{err}
		}
	}
	return nil
}

// assemble copies the body, normalising bare line ends, into one buffer of
// its final size: the one copy of the message.
func (b *bodyReader) assemble(bare int) ([]byte, error) {
	if !b.take(b.n + int64(bare)) {
		return nil, errNoMemory
	}
	out := make([]byte, 0, b.n+int64(bare))
	var ends lineEnds
	for _, seg := range b.segments() {
		if bare == 0 {
			out = append(out, seg...)
		} else {
			out = ends.appendCRLF(out, seg)
		}
	}
	if bare > 0 {
		out = ends.finishCRLF(out)
	}
	if cap(b.exact) > 0 {
		b.g.give(int64(cap(b.exact)))
		b.exact = nil
	}
	return out, nil
}

// free returns the chunks to the pool and their budget to the grant; the
// SIZE= buffer's budget stays taken if it became the body.
func (b *bodyReader) free() {
	var n int64
	for _, p := range b.pooled {
		n += int64(len(*p))
		if len(*p) == firstChunk {
			firstChunks.Put(p)
		} else {
			chunks.Put(p)
		}
	}
	b.g.give(n)
	b.pooled, b.last = nil, nil
}

// lineEnds follows line ends across the segments of a body: a bare CR is
// a CR not followed by LF, a bare LF one not preceded by CR. RFC 5321
// §2.3.8 allows CR and LF only as a pair; each bare one becomes CRLF.
type lineEnds struct {
	cr   bool // the previous byte was CR
	bare int
}

// count counts the bare line ends in p, a line at a time: bytes.IndexByte
// and bytes.Count scan many bytes per step, and a body of CRLF lines needs
// nothing else.
func (e *lineEnds) count(p []byte) {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			// No LF: a CR before p is bare, and so is every CR in p
			// but a last one, which the next segment decides.
			crs := bytes.Count(p, crByte)
			last := p[len(p)-1] == '\r'
			if e.cr {
				e.bare++
			}
			if last {
				crs--
			}
			e.bare += crs
			e.cr = last
			return
		}
		line := p[:i]
		crs := bytes.Count(line, crByte)
		switch {
		case i == 0 && e.cr:
			// The CR before p and this LF are a pair.
		case i > 0 && line[i-1] == '\r':
			crs-- // this line's CR pairs with the LF
			if e.cr {
				e.bare++ // the CR before p was followed by line[0]
			}
		default:
			e.bare++ // a bare LF
			if e.cr && i > 0 {
				e.bare++
			}
		}
		e.bare += crs
		e.cr = false
		p = p[i+1:]
	}
}

var crByte = []byte{'\r'}

// finish returns the count, a CR at the very end included.
func (e *lineEnds) finish() int {
	if e.cr {
		e.bare++
		e.cr = false
	}
	return e.bare
}

// appendCRLF appends p to out with every bare CR and LF made CRLF.
func (e *lineEnds) appendCRLF(out, p []byte) []byte {
	for _, c := range p {
		switch {
		case e.cr && c != '\n':
			out = append(out, '\n')
		case !e.cr && c == '\n':
			out = append(out, '\r')
		}
		out = append(out, c)
		e.cr = c == '\r'
	}
	return out
}

// finishCRLF completes a CR at the very end.
func (e *lineEnds) finishCRLF(out []byte) []byte {
	if e.cr {
		out = append(out, '\n')
		e.cr = false
	}
	return out
}
