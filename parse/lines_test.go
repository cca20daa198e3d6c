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
