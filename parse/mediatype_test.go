package parse

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// slowMediaType is how mediaType was made before parseMediaType: from
// contentType (go-message), or guessed when that refuses the field.
func slowMediaType(f fields) mediaType {
	typ, params, err := f.contentType()
	if err != nil || typ == "" {
		v := f.get("Content-Type")
		return mediaType{typ: guessMediaType(v), boundary: guessBoundary(v)}
	}
	m := mediaType{typ: typ, boundary: params["boundary"], reportType: params["report-type"]}
	m.charset, m.hasCharset = params["charset"]
	return m
}

// checkMediaType fails when mediaType and slowMediaType differ for the
// Content-Type value v, and returns whether parseMediaType took it.
func checkMediaType(t *testing.T, v string) bool {
	t.Helper()
	f := fields{f: []headerField{{key: "Content-Type", value: v}}}
	if v == "" {
		f = fields{}
	}
	got, want := f.mediaType(), slowMediaType(f)
	if got != want {
		t.Errorf("%q: got %+v, want %+v", v, got, want)
	}
	_, ok := parseMediaType(v)
	return ok
}

// mediaTypeSamples returns the Content-Type values of the golden samples
// and of the corpus, unfolded as readHeader unfolds them.
func mediaTypeSamples(t *testing.T) []string {
	paths, _ := filepath.Glob("testdata/golden/*.eml")
	var msgs [][]byte
	for _, p := range paths {
		b, err := os.ReadFile(p)
		tcheck(t, err, "reading sample")
		msgs = append(msgs, b)
	}
	for _, b := range corpusFiles(t) {
		msgs = append(msgs, b)
	}
	seen := map[string]bool{}
	var out []string
	for _, b := range msgs {
		lines := bytes.Split(b, []byte("\n"))
		for i, l := range lines {
			if !hasPrefixFold(l, "content-type:") {
				continue
			}
			blk := append([]byte(nil), l...)
			for _, c := range lines[i+1:] {
				if len(c) == 0 || c[0] != ' ' && c[0] != '\t' {
					break
				}
				blk = append(append(blk, '\n'), c...)
			}
			h, _ := readHeader(bufio.NewReader(bytes.NewReader(append(blk, "\n\n"...))), 1<<20, keepPart, new(headerScratch))
			if v := h.get("Content-Type"); !seen[v] {
				seen[v] = true
				out = append(out, v)
			}
		}
	}
	return out
}

// TestMediaTypeAsGoMessage checks that mediaType, with its fast path,
// gives what go-message's parsing (and the guesses when it fails) gives.
func TestMediaTypeAsGoMessage(t *testing.T) {
	samples := mediaTypeSamples(t)
	fast := 0
	for _, v := range samples {
		if checkMediaType(t, v) {
			fast++
		}
	}
	// The fast path must take nearly all real fields, or it is useless.
	if fast < len(samples)*9/10 {
		t.Errorf("parseMediaType took %d of %d sample fields", fast, len(samples))
	}
	t.Logf("parseMediaType took %d of %d sample fields", fast, len(samples))

	common := []string{
		"text/plain", "text/plain; charset=us-ascii", "TEXT/Plain; Charset=UTF-8", "message/delivery-status",
		"multipart/report; report-type=delivery-status;\tboundary=\"4A1B2C3D.1732694400/mx.example.net\"",
		`multipart/mixed; boundary="----=_Part_1"`, "text/rfc822-headers", "text/plain;", "text/plain ; charset = x ;  ",
		`text/plain; charset=""`, "multipart/report; report-type=delivery-status; report-type=delivery-status; boundary=b",
		"text",
	}
	for _, v := range common {
		if !checkMediaType(t, v) {
			t.Errorf("%q: parseMediaType did not take it", v)
		}
	}
	odd := []string{
		"", ";", "; x=y", "text/", "/plain", "text/plain/x", "text /plain", "text/plain x", "text/plain;;", "text/plain; ;",
		"text/plain; charset", "text/plain; charset=", "text/plain; charset=;", "text/plain; =x", "text/plain; charset=a b",
		"text/plain; a=1; A=2", "text/plain; a=1; A=1", "multipart/mixed; boundary=a; BOUNDARY=b",
		"multipart/mixed; boundary==?utf-8?q?x?=", "multipart/mixed; boundary*=utf-8''%3D%3Futf-8%3Fq%3Fy%3F%3D",
		"multipart/mixed; boundary*0=a; boundary*1=b", `multipart/mixed; boundary="a\"b"`, `multipart/mixed; boundary="a\b"`, `multipart/mixed; boundary="a\\b"`,
		`multipart/mixed; boundary="a\;b"`,
		"text/plain; charset=\"=?bogus?q?x?=\"", "multipart/mixed; boundary=\"unterminated", "multipart/mixed; boundary=\"a\nb\"",
		"multipart/mixed; boundary=\"=?utf-8?q?z?=\"", "téxt/plain", "text/plain; charset=é", "text/plain;\u00a0charset=x",
		"\u0085text/plain", "TEXT/PLAİN", "text/plain; a=1; b=2; c=3; d=4; e=5; f=6; g=7; h=8; i=9; boundary=z",
		"multipart/mixed boundary=x", "multipart/mixed; boundary=x y", "multipart/mixed;boundary=--=_x=--",
		"text/plain; charset=us-ascii (comment)", "text/plain;\r\n charset=x", "x/y; a=\x01", "x/y; a=\"\x01\"",
	}
	for _, v := range odd {
		checkMediaType(t, v)
	}
	// Variants of the samples: case, blanks and semicolons moved.
	for _, v := range append(samples, common...) {
		for _, w := range []string{strings.ToUpper(v), strings.ReplaceAll(v, "; ", ";"), strings.ReplaceAll(v, ";", " ; "),
			v + ";", v + "; ;", strings.ReplaceAll(v, "=", " = "), strings.ReplaceAll(v, `"`, ""), v + "; boundary=x"} {
			checkMediaType(t, w)
		}
	}
}

// FuzzMediaType checks mediaType against go-message's parsing (and the
// guesses when it fails) on arbitrary Content-Type values.
func FuzzMediaType(f *testing.F) {
	for _, v := range []string{
		"text/plain; charset=us-ascii", `multipart/report; report-type=delivery-status; boundary="a/b"`,
		"multipart/mixed; boundary*=utf-8''x", `text/plain; a="b\"c"; a=b`, "text/plain; charset==?utf-8?q?x?=;",
	} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v string) {
		checkMediaType(t, v)
	})
}

// TestTrimRightASCII checks trimRightASCII against strings.TrimRight and
// bytes.TrimRight.
func TestTrimRightASCII(t *testing.T) {
	for _, s := range []string{"", " ", "\t \r", "a", "a \t", "a\r\n", " a ", "a\t\r \r", "é ", "a b\t"} {
		for _, cut := range []string{" \t", " \t\r", "\r"} {
			if got, want := trimRightASCII(s, cut), strings.TrimRight(s, cut); got != want {
				t.Errorf("trimRightASCII(%q, %q) = %q, want %q", s, cut, got, want)
			}
			if got, want := trimRightASCII([]byte(s), cut), bytes.TrimRight([]byte(s), cut); !bytes.Equal(got, want) {
				t.Errorf("trimRightASCII([]byte(%q), %q) = %q, want %q", s, cut, got, want)
			}
		}
	}
}
