package parse

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzMessage feeds arbitrary bytes to Message: it must not panic or hang,
// must always return a Report, and must keep its recipient limit. Seeds are
// the golden samples and a selection of the corpus.
func FuzzMessage(f *testing.F) {
	paths, _ := filepath.Glob("testdata/golden/*.eml")
	more, _ := filepath.Glob(filepath.Join(corpusDir, "maildir", "bsd", "*-0[1-3].eml"))
	for _, p := range append(paths, more...) {
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
