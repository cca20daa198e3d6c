package parse

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/charset" // RFC 2046 charsets, for text parts too
)

// Message decodes one RFC 5322 message into a Report. It always returns a
// non-nil Report. The error is ErrNotBounce when nothing was recognised, or
// a decoding error (with whatever was decoded before it in the Report).
//
// Bodies that are not needed (attachments, the body of a returned message)
// are skipped while streaming; text parts are read up to lim.MaxPartBytes.
func Message(r io.Reader, lim Limits) (*Report, error) {
	lim = lim.withDefaults()
	rep := &Report{Kind: KindUnknown}
	d := newDecoder(lim, rep)
	defer d.release()
	err := d.run(r)
	d.finish()
	if err != nil {
		return rep, err
	}
	if rep.Kind == KindUnknown {
		return rep, ErrNotBounce
	}
	return rep, nil
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxDepth <= 0 {
		l.MaxDepth = d.MaxDepth
	}
	if l.MaxParts <= 0 {
		l.MaxParts = d.MaxParts
	}
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = d.MaxHeaderBytes
	}
	if l.MaxPartBytes <= 0 {
		l.MaxPartBytes = d.MaxPartBytes
	}
	if l.MaxRecipients <= 0 {
		l.MaxRecipients = d.MaxRecipients
	}
	return l
}

// Errors for limits that stop decoding. They wrap ErrLimit.
var (
	ErrLimit      = errors.New("limit exceeded")
	errDepth      = fmt.Errorf("mime nesting too deep: %w", ErrLimit)
	errParts      = fmt.Errorf("too many mime parts: %w", ErrLimit)
	errHeaderSize = fmt.Errorf("header too large: %w", ErrLimit)
)

// textPart is a text part kept for the non-standard rules. It is kept
// raw and decoded (transfer encoding, charset) only when a rule needs it:
// most reports never need their text.
type textPart struct {
	mediaType string
	h         fields // its header, turned into a message.Header to decode
	raw       string
	body      string // decoded, once decoded is set
	decoded   bool
	forwarded bool // inside a returned message that is itself a bounce
}

// decoder holds the state of decoding one message.
type decoder struct {
	lim   Limits
	rep   *Report
	parts int

	top       fields     // header of the outer message
	reportTyp string     // report-type of the first multipart/report
	texts     []textPart // text parts, in order, bounded
	textBytes int
	dsn       []dsnPart // delivery-status parts
	feedback  bool
	rcptTo    []string // RFC 5965 Original-Rcpt-To values
	returned  []fields // headers of returned messages
	permanent bool     // the plain-text notice calls the failure permanent
	forwarded int      // depth of returned bounces being decoded (returnedMessage)
	scratch   []byte   // read buffer reused by readAll
	hdr       headerScratch
}

// dsnPart is the raw body of a delivery-status part and how it was found.
type dsnPart struct {
	body     string
	global   bool // RFC 6533 message/global-delivery-status
	inReport bool // inside multipart/report
	mistyped bool // found in a part with another media type
}

func (d *decoder) run(r io.Reader) error {
	br := getReader(newLineReader(r))
	defer putReader(br)
	h, err := readHeader(br, d.lim.MaxHeaderBytes, keepTop, &d.hdr)
	if err != nil {
		return fmt.Errorf("reading message header: %w", err)
	}
	d.top = h
	d.rep.Subject = decodeWords(h.get("Subject"))
	d.rep.From = decodeWords(h.get("From"))
	return d.entity(h, &src{br: br}, 0, "")
}

// readerPool holds the 4 KB read buffers of messages being decoded, for
// the next message: a buffer is used only while its message is read,
// and what the Report keeps is copied out of it. A buffer that holds all
// of a short message never fills, so ReadSlice and Peek return what they
// would with a larger one.
var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4096) }}

// getReader returns a pooled read buffer reading r; putReader gives it
// back once nothing reads from it.
func getReader(r io.Reader) *bufio.Reader {
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(r)
	return br
}

func putReader(br *bufio.Reader) {
	br.Reset(nil)
	readerPool.Put(br)
}

// decoderPool holds decoders for the next message, for their buffers:
// readAll's scratch buffer and the field arena of headerScratch. What a
// decoder held of its message is dropped when it is released; a buffer
// that grew past maxPooled bytes is left to the collector.
var decoderPool = sync.Pool{New: func() any { return new(decoder) }}

const maxPooled = 64 << 10

func newDecoder(lim Limits, rep *Report) *decoder {
	d := decoderPool.Get().(*decoder)
	d.lim, d.rep = lim, rep
	return d
}

// release clears d but for its buffers and puts it back in the pool.
func (d *decoder) release() {
	scratch, hdr := d.scratch[:0], d.hdr
	clear(hdr.arena)
	if cap(scratch) > maxPooled {
		scratch = nil
	}
	if cap(hdr.arena) > maxPooled/32 { // a headerField is two strings, 32 bytes
		hdr.arena = nil
	}
	if cap(hdr.b) > maxPooled {
		hdr.b = nil
	}
	if cap(hdr.spans) > maxPooled/32 {
		hdr.spans = nil
	}
	*d = decoder{scratch: scratch}
	d.hdr = headerScratch{arena: hdr.arena[:0], b: hdr.b[:0], spans: hdr.spans[:0]}
	decoderPool.Put(d)
}

func (d *decoder) warn(format string, args ...any) {
	if len(d.rep.Warnings) < 20 {
		d.rep.Warnings = append(d.rep.Warnings, fmt.Sprintf(format, args...))
	}
}

// decodeWords decodes RFC 2047 encoded words in a header value, or
// returns it as it is when it has none or they cannot be decoded.
func decodeWords(v string) string {
	if !strings.Contains(v, "=?") {
		return v
	}
	dec := mime.WordDecoder{CharsetReader: wordCharsetReader}
	s, err := dec.DecodeHeader(v)
	if err != nil {
		return v
	}
	return s
}

// wordCharsetReader is charset.Reader for the text of one encoded word,
// decoded at once: mime.WordDecoder copies from the reader it returns
// with io.Copy, which allocates a 32 KB buffer for a reader that is not
// an io.WriterTo, as a *bytes.Reader is.
func wordCharsetReader(cs string, input io.Reader) (io.Reader, error) {
	r, err := charset.Reader(cs, input)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	return bytes.NewReader(b), nil
}

// entity decodes one MIME entity whose header is h and whose body is read
// from s. parent is the media type of the enclosing multipart, if any.
// Only leaf parts that are decoded get a go-message header (readBody).
//
// entity, multipart and returnedMessage call each other for nested
// entities; leaf parts are read by leaf, so that its locals are not on
// the stack once per nesting level.
func (d *decoder) entity(h fields, s *src, depth int, parent string) error {
	if depth > d.lim.MaxDepth {
		return errDepth
	}
	ct := h.mediaType()
	mt := ct.typ
	if strings.HasPrefix(mt, "multipart/") {
		return d.multipart(&ct, s, depth)
	}
	b := &body{s: s}
	defer b.drain()
	switch mt {
	case "message/rfc822", "message/global", "text/rfc822-headers", "message/global-headers", "text/rfc822-header":
		return d.returnedMessage(h, s, b, depth, mt)
	}
	return d.leaf(h, b, mt, parent)
}

// leaf reads the body b of a part that is not a container, with header h
// and media type mt, when decoding needs it.
func (d *decoder) leaf(h fields, b *body, mt, parent string) error {
	switch {
	case mt == "message/delivery-status" || mt == "message/global-delivery-status":
		raw, err := d.readBody(h, b)
		if err != nil {
			return err
		}
		d.dsn = append(d.dsn, dsnPart{body: raw, global: mt == "message/global-delivery-status",
			inReport: parent == "multipart/report"})
	case mt == "message/feedback-report":
		raw, err := d.readBody(h, b)
		if err != nil {
			return err
		}
		d.feedback = true
		d.parseFeedback(raw)
	case strings.HasPrefix(mt, "text/"):
		if mt == "text/html" && d.hasPlainText() {
			return nil // the text/plain alternative says the same
		}
		if d.textBytes > 2*d.lim.MaxPartBytes || len(d.texts) >= 8 {
			return nil
		}
		raw, err := d.readAll(b, d.lim.MaxPartBytes)
		if err != nil {
			d.warn("reading part body: %v", err)
		}
		d.textBytes += len(raw)
		d.texts = append(d.texts, textPart{mediaType: mt, h: h, raw: raw, forwarded: d.forwarded > 0})
	}
	return nil
}

// guessMediaType returns the media type of a Content-Type value that
// mime.ParseMediaType refused (a bad parameter, say).
func guessMediaType(ct string) string {
	if i := strings.IndexAny(ct, "; \t"); i >= 0 {
		ct = ct[:i]
	}
	return strings.ToLower(ct)
}

// guessBoundary digs the boundary parameter out of a Content-Type value
// that mime.ParseMediaType refused.
func guessBoundary(ct string) string {
	i := indexFold(ct, "boundary=")
	if i < 0 {
		return ""
	}
	v := ct[i+len("boundary="):]
	if strings.HasPrefix(v, `"`) {
		if j := strings.IndexByte(v[1:], '"'); j >= 0 {
			return v[1 : j+1]
		}
		return ""
	}
	if j := strings.IndexAny(v, "; \t"); j >= 0 {
		v = v[:j]
	}
	return v
}

// multipart decodes the parts of a multipart entity (RFC 2046 §5.1). When
// the declared boundary never appears, the preamble is searched for a
// delimiter line and decoded again with it, or kept as text.
func (d *decoder) multipart(ct *mediaType, s *src, depth int) error {
	mt, boundary := ct.typ, ct.boundary
	if mt == "multipart/report" && d.reportTyp == "" {
		d.reportTyp = asciiLower(ct.reportType)
	}
	if boundary == "" {
		d.warn("%s without boundary", mt)
		return d.preamble(mt, s, nil, depth)
	}
	in := &src{br: s.br, delims: make([][]byte, 0, len(s.delims)+1)}
	in.delims = append(in.delims, []byte("--"+boundary))
	in.delims = append(in.delims, s.delims...)
	// Preamble: skip to the first delimiter.
	found, err := d.skipPreamble(mt, in, depth)
	if !found || err != nil {
		return err
	}
	for {
		if closing, _ := d.delimLine(in); closing {
			return nil
		}
		d.parts++
		if d.parts > d.lim.MaxParts {
			return errParts
		}
		ph, err := readHeaderUntil(in, d.lim.MaxHeaderBytes, keepPart, &d.hdr)
		if err != nil {
			return fmt.Errorf("reading part header: %w", err)
		}
		if err := d.entity(ph, in, depth+1, mt); err != nil {
			return err
		}
		// Skip what the part left unread, up to the next delimiter.
		(&body{s: in}).drain()
		if i := in.atDelim(); i != 0 {
			if i < 0 {
				d.warn("%s: missing closing delimiter", mt)
			}
			return nil // EOF, or a parent's delimiter: this multipart is over
		}
	}
}

// delimLine consumes the delimiter line the reader is at and reports
// whether it is a closing delimiter ("--boundary--").
func (d *decoder) delimLine(in *src) (closing bool, err error) {
	p, _ := in.br.Peek(len(in.delims[0]) + 2)
	closing = bytes.HasSuffix(p, []byte("--")) && len(p) == len(in.delims[0])+2
	return closing, in.skipLine()
}

// skipPreamble skips to the first delimiter of the multipart in. It
// reports whether one was found; if not, what it skipped is decoded by
// preamble.
func (d *decoder) skipPreamble(mt string, in *src, depth int) (bool, error) {
	var kept []byte
	for {
		i := in.atDelim()
		if i == 0 {
			return true, nil
		}
		if i > 0 {
			break
		}
		line, err := in.br.ReadSlice('\n')
		if len(kept) < d.lim.MaxPartBytes {
			kept = append(kept, line...)
		}
		if err != nil && err != bufio.ErrBufferFull {
			break
		}
	}
	d.warn("%s: boundary not found", mt)
	return false, d.preamble(mt, in, kept, depth)
}

// preamble decodes the body of a multipart whose boundary is missing or
// wrong: with a delimiter line found in it, or else as plain text.
func (d *decoder) preamble(mt string, s *src, kept []byte, depth int) error {
	if kept == nil {
		b := &body{s: s}
		var err error
		kept, err = io.ReadAll(io.LimitReader(b, int64(d.lim.MaxPartBytes)))
		b.drain()
		if err != nil {
			return nil
		}
	}
	if bd := findDelimiter(kept); bd != "" && depth < d.lim.MaxDepth {
		br := getReader(bytes.NewReader(kept))
		defer putReader(br)
		return d.multipart(&mediaType{typ: mt, boundary: bd}, &src{br: br}, depth+1)
	}
	d.addText("text/plain", kept)
	return nil
}

// findDelimiter returns the boundary of the first line that looks like a
// MIME delimiter ("--" and a boundary of RFC 2046 §5.1.1 length) and is
// followed by a header line.
func findDelimiter(b []byte) string {
	for len(b) > 0 {
		line := b
		rest := []byte(nil)
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, rest = b[:i], b[i+1:]
		}
		b = rest
		line = bytes.TrimRight(line, " \t")
		if len(line) < 4 || len(line) > 72 || line[0] != '-' || line[1] != '-' || bytes.ContainsAny(line, " \t") {
			continue
		}
		if bytes.HasSuffix(line, []byte("--")) {
			continue
		}
		next := rest
		if n := bytes.IndexByte(next, '\n'); n >= 0 {
			next = next[:n]
		}
		if c := bytes.IndexByte(next, ':'); c > 0 && c < 40 {
			return string(line[2:])
		}
	}
	return ""
}

// readBody returns the transfer- and charset-decoded body of a leaf part,
// at most MaxPartBytes of it; the rest is skipped.
func (d *decoder) readBody(h fields, b io.Reader) (string, error) {
	r := b
	if !plainBody(h) {
		e, err := message.New(h.header(), b)
		if err != nil {
			if !message.IsUnknownCharset(err) && !message.IsUnknownEncoding(err) {
				return "", fmt.Errorf("decoding part: %w", err)
			}
			d.warn("%v", err)
		}
		r = e.Body
	}
	out, err := d.readAll(r, d.lim.MaxPartBytes)
	if err != nil {
		d.warn("reading part body: %v", err)
	}
	d.checkTruncated(out)
	return out, nil
}

// checkTruncated warns when a part body read up to MaxPartBytes may have
// been cut there.
func (d *decoder) checkTruncated(body string) {
	if len(body) >= d.lim.MaxPartBytes {
		d.warn("part truncated at %d bytes", d.lim.MaxPartBytes)
	}
}

// plainBody reports whether message.New would return the body of a part
// with header h as it is, so that no go-message header is needed: its
// transfer encoding is an identity one (RFC 2045 §6.2) and its media type
// is not text/*, the only types a charset applies to (RFC 2046 §4.1.2),
// or is text/* in a charset go-message passes through (UTF-8, US-ASCII).
// A delivery-status part and most text parts are such parts.
func plainBody(h fields) bool {
	switch asciiLower(h.get("Content-Transfer-Encoding")) {
	case "", "7bit", "8bit", "binary":
	default:
		return false
	}
	ct := strings.TrimSpace(h.get("Content-Type"))
	if ct == "" {
		return true // text/plain without a charset (RFC 2045 §5.2)
	}
	if !hasPrefixFoldString(ct, "text/") {
		return true
	}
	m, ok := parseMediaType(ct)
	if !ok {
		return false // left to message.New
	}
	cs := asciiLower(m.charset)
	return !m.hasCharset || cs == "utf-8" || cs == "us-ascii"
}

// readAll reads at most max bytes of r and returns them as a string. A
// part body that is all in the message's read buffer is taken from there
// (body.buffered); others are read through the decoder's scratch buffer,
// which grows once per message instead of once per part.
func (d *decoder) readAll(r io.Reader, max int) (string, error) {
	if b, ok := r.(*body); ok {
		if s, ok := b.buffered(max); ok {
			return s, nil
		}
	}
	buf := d.scratch[:0]
	if cap(buf) == 0 {
		buf = make([]byte, 0, 2<<10)
	}
	lr := io.LimitReader(r, int64(max))
	var err error
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		var n int
		n, err = lr.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err != nil {
			break
		}
	}
	d.scratch = buf
	if err == io.EOF {
		err = nil
	}
	return string(buf), err
}

func (d *decoder) addText(mt string, b []byte) {
	if d.textBytes > 2*d.lim.MaxPartBytes || len(d.texts) >= 8 {
		return
	}
	d.textBytes += len(b)
	d.texts = append(d.texts, textPart{mediaType: mt, body: string(b), decoded: true, forwarded: d.forwarded > 0})
}

// textBodies returns the text parts, decoding those not decoded yet.
func (d *decoder) textBodies() []textPart {
	for i := range d.texts {
		t := &d.texts[i]
		if t.decoded {
			continue
		}
		b := t.raw // read with the limit readBody has
		if plainBody(t.h) {
			d.checkTruncated(b)
		} else {
			var err error
			b, err = d.readBody(t.h, strings.NewReader(t.raw))
			if err != nil {
				d.warn("%v", err)
			}
		}
		t.body, t.raw, t.decoded = b, "", true
	}
	return d.texts
}

// returnedMessage reads the header of a returned message (RFC 3464 §2.1,
// third part) and, when it is itself a report, decodes its body too.
func (d *decoder) returnedMessage(h fields, s *src, b *body, depth int, mt string) error {
	in := s
	if cte := asciiLower(strings.TrimSpace(h.get("Content-Transfer-Encoding"))); cte != "" &&
		cte != "7bit" && cte != "8bit" && cte != "binary" {
		// A transfer-encoded message: decode it into a reader of its own.
		e, err := message.New(h.header(), b)
		if err != nil {
			d.warn("%v", err)
			return nil
		}
		br := getReader(newLineReader(io.LimitReader(e.Body, int64(d.lim.MaxPartBytes))))
		defer putReader(br)
		in = &src{br: br}
	}
	ih, err := readHeaderUntil(in, d.lim.MaxHeaderBytes, keepReturned, &d.hdr)
	if err != nil {
		// A long trace of Received and signature fields is no reason to
		// lose the report: keep what was read, skip the rest.
		d.warn("reading returned header: %v", err)
		if ih.len() > 0 {
			d.returned = append(d.returned, ih)
		}
		return nil
	}
	if ih.len() > 0 {
		d.returned = append(d.returned, ih)
	}
	if mt != "message/rfc822" && mt != "message/global" {
		return nil
	}
	// A forwarded bounce: the report is inside the attached message.
	imt := guessMediaType(ih.get("Content-Type"))
	if imt == "multipart/report" || len(d.dsn) == 0 && isBounceHeader(ih) {
		d.forwarded++
		defer func() { d.forwarded-- }()
		return d.entity(ih, in, depth+1, "")
	}
	return nil
}

// isBounceHeader says whether a header looks like the header of a bounce.
func isBounceHeader(h fields) bool {
	from := strings.ToLower(h.get("From"))
	return strings.Contains(from, "mailer-daemon") || strings.Contains(from, "postmaster")
}

// truncate cuts s to at most n bytes, on a character boundary (a cut in
// the middle of a UTF-8 sequence made the stored text invalid).
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func (d *decoder) hasPlainText() bool {
	for _, t := range d.texts {
		if t.mediaType == "text/plain" {
			return true
		}
	}
	return false
}
