package parse

import (
	"bytes"
	"testing"
)

// BenchmarkCorpus decodes every maildir sample of the corpus once per
// iteration; it reports messages per second and, through -benchmem,
// bytes allocated per message (B/op divided by msgs/op).
func BenchmarkCorpus(b *testing.B) {
	files := corpusFiles(b)
	msgs := make([][]byte, 0, len(files))
	size := 0
	for _, m := range files {
		msgs = append(msgs, m)
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
