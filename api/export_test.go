package api

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/bouncer/bouncer/parse"
	"github.com/bouncer/bouncer/store"
	"github.com/bouncer/bouncer/store/bolt"
)

// BenchmarkExportBounces streams a store of 20000 records as CSV through
// the API (b.N times) and reports records per second.
func BenchmarkExportBounces(b *testing.B) {
	const n = 20000
	db, err := bolt.Open(filepath.Join(b.TempDir(), "bouncer.db"), bolt.Options{})
	tcheck(b, err, "opening store")
	defer db.Close()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += 8 {
				_, err := db.Save(context.Background(), &store.Delivery{
					Received: time.Now(), Raw: fmt.Appendf(nil, "Subject: bounce %d\r\n\r\nx\r\n", i),
					Report: &parse.Report{Kind: parse.KindBounce, Recipients: []parse.Recipient{{
						FinalRecipient: fmt.Sprintf("u%d@d%d.example", i, i%50), Status: "5.1.1",
						Kind: parse.KindBounce, Class: parse.ClassHard, DiagnosticCode: "smtp; 550 5.1.1 no such user",
					}}},
				})
				if err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	srv := httptest.NewServer(New(db, nil, slog.New(slog.NewTextHandler(io.Discard, nil))))
	defer srv.Close()
	c := &Client{BaseURL: srv.URL}
	b.ResetTimer()
	for b.Loop() {
		cw := &countWriter{}
		tcheck(b, c.Export(context.Background(), "bounces", FormatCSV, store.Filter{}, cw), "export")
		if cw.lines != n+1 {
			b.Fatalf("export has %d lines, want %d", cw.lines, n+1)
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

type countWriter struct{ lines int }

func (w *countWriter) Write(p []byte) (int, error) {
	for _, c := range p {
		if c == '\n' {
			w.lines++
		}
	}
	return len(p), nil
}
