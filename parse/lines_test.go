package parse

import (
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/iotest"
)

// TestLineReader checks the line-ending conversion on random texts of
// CR, LF and letters, read whole, one byte at a time and in halves (a
// CR at the end of one read and its LF at the start of the next).
func TestLineReader(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for n := 0; n < 2000; n++ {
		b := make([]byte, rng.IntN(40))
		for i := range b {
			b[i] = "\r\nab"[rng.IntN(4)]
		}
		in := string(b)
		want := strings.ReplaceAll(strings.ReplaceAll(in, "\r\n", "\n"), "\r", "\n")
		readers := map[string]io.Reader{
			"whole":    strings.NewReader(in),
			"one byte": iotest.OneByteReader(strings.NewReader(in)),
			"halves":   io.MultiReader(strings.NewReader(in[:len(in)/2]), strings.NewReader(in[len(in)/2:])),
		}
		for name, r := range readers {
			got, err := io.ReadAll(newLineReader(r))
			if err != nil || string(got) != want {
				t.Fatalf("%s: %q: got %q, %v; want %q", name, in, got, err, want)
			}
		}
	}
}

// TestCollapseSpace checks collapseSpace against strings.Fields and
// strings.Join on random texts of letters, ASCII and Unicode spaces.
func TestCollapseSpace(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	parts := []string{"a", "b", " ", "  ", "\t", "\n", "\u00a0", "\u3000", "é", "\xff"}
	for n := 0; n < 20000; n++ {
		var sb strings.Builder
		for k := rng.IntN(10); k > 0; k-- {
			sb.WriteString(parts[rng.IntN(len(parts))])
		}
		s := sb.String()
		if got, want := collapseSpace(s), strings.Join(strings.Fields(s), " "); got != want {
			t.Fatalf("collapseSpace(%q) = %q, want %q", s, got, want)
		}
	}
}

// TestASCIILower checks asciiLower against a byte-wise lower-casing.
func TestASCIILower(t *testing.T) {
	for _, s := range []string{"", "a", "A", "abc", "ABC", "aBc D", "Ünïcode É", "\xffX", "x-Failed-Recipients: USER@EXAMPLE.COM"} {
		b := []byte(s)
		for i, c := range b {
			if c >= 'A' && c <= 'Z' {
				b[i] = c + 32
			}
		}
		if got := asciiLower(s); got != string(b) {
			t.Errorf("asciiLower(%q) = %q, want %q", s, got, b)
		}
	}
}
