package parse

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkCorpus decodes the samples of the corpus (maildir files and
// the messages of the mbox files) in turn, one message per op: B/op is
// bytes allocated per message, msgs/s the decoding rate.
func BenchmarkCorpus(b *testing.B) {
	files := corpusFiles(b)
	msgs := make([][]byte, 0, len(files))
	for _, m := range files {
		msgs = append(msgs, m)
	}
	boxes, _ := filepath.Glob(filepath.Join(corpusDir, "mailbox", "*"))
	for _, p := range boxes {
		raw, err := os.ReadFile(p)
		tcheck(b, err, "reading mbox")
		tcheck(b, SplitMbox(bytes.NewReader(raw), func(m []byte) error {
			msgs = append(msgs, m)
			return nil
		}), "splitting mbox")
	}
	size := 0
	for _, m := range msgs {
		size += len(m)
	}
	b.SetBytes(int64(size / len(msgs)))
	b.ReportAllocs()
	b.ResetTimer()
	n := 0
	for b.Loop() {
		m := msgs[n%len(msgs)]
		n++
		if _, err := Message(bytes.NewReader(m), Limits{}); err != nil && err != ErrNotBounce {
			_ = err
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkPostfix decodes one typical Postfix DSN (the server's test
// message, 1.7 KB), one message per op.
func BenchmarkPostfix(b *testing.B) {
	raw, err := os.ReadFile("../cmd/bouncer/testdata/postfix-543.eml")
	tcheck(b, err, "reading sample")
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Message(bytes.NewReader(raw), Limits{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPostfixGoroutine is BenchmarkPostfix with each message decoded
// in a goroutine of its own, as the server's session goroutine does: a
// new goroutine starts with a small stack, so this also counts the stack
// growth (runtime.newstack, copystack) that decoding's deepest path causes.
// Run it with GODEBUG=adaptivestackstart=0 to start every goroutine at
// the minimum size whatever the other benchmarks did.
func BenchmarkPostfixGoroutine(b *testing.B) {
	raw, err := os.ReadFile("../cmd/bouncer/testdata/postfix-543.eml")
	tcheck(b, err, "reading sample")
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	done := make(chan error)
	for b.Loop() {
		go func() {
			_, err := Message(bytes.NewReader(raw), Limits{})
			done <- err
		}()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
}
