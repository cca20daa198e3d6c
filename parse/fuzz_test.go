package parse

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"testing/iotest"
)

// FuzzMessage feeds arbitrary bytes to Message: it must not panic or hang,
// must always return a Report, and must keep its recipient limit. Seeds are
// the golden samples, a selection of the corpus and of the other
// projects' samples (one of each flufl.bounce layout, AOL's bare names).
func FuzzMessage(f *testing.F) {
	paths, _ := filepath.Glob("testdata/golden/*.eml")
	more, _ := filepath.Glob(filepath.Join(corpusDir, "maildir", "bsd", "*-0[1-3].eml"))
	flufl, _ := filepath.Glob("testdata/flufl/*_01.txt")
	aol, _ := filepath.Glob("testdata/bounceparser/aol*.msg")
	paths = append(append(append(paths, more...), flufl...), aol...)
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err == nil {
			f.Add(b)
		}
	}
	lim := Limits{MaxDepth: 5, MaxParts: 20, MaxHeaderBytes: 4096, MaxPartBytes: 16 << 10, MaxRecipients: 5}
	f.Fuzz(func(t *testing.T, b []byte) {
		rep, err := Message(bytes.NewReader(b), lim)
		if rep == nil {
			t.Fatal("nil report")
		}
		if len(rep.Recipients) > lim.MaxRecipients {
			t.Fatalf("%d recipients over the limit", len(rep.Recipients))
		}
		if err == nil && rep.Kind == KindUnknown {
			t.Fatal("no error for an unknown message")
		}
		if errors.Is(err, ErrNotBounce) && len(rep.Recipients) > 0 {
			t.Fatal("ErrNotBounce with recipients")
		}
		_ = SplitMbox(bytes.NewReader(b), func([]byte) error { return nil })
	})
}

// FuzzReaders decodes arbitrary bytes from a *bytes.Reader (a read buffer
// sized to the input, parts read from the buffer by body.buffered) and
// one byte per Read (parts read line by line): the reports must be equal.
func FuzzReaders(f *testing.F) {
	paths, _ := filepath.Glob("testdata/golden/*.eml")
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("Content-Type: multipart/report; boundary=\"a\nb\"\n\n--a\nb\n\n--a\nb--\n"))
	lim := Limits{MaxDepth: 5, MaxParts: 20, MaxHeaderBytes: 4096, MaxPartBytes: 1 << 10, MaxRecipients: 5}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, gotErr := Message(bytes.NewReader(b), lim)
		want, wantErr := Message(iotest.OneByteReader(bytes.NewReader(b)), lim)
		if !reflect.DeepEqual(got, want) || fmt.Sprint(gotErr) != fmt.Sprint(wantErr) {
			t.Fatalf("from a bytes.Reader: %+v, %v; one byte per read: %+v, %v", got, gotErr, want, wantErr)
		}
	})
}
