package server

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/bouncer/bouncer/store"
)

// benchServer starts a quiet server for benchmarks.
func benchServer(b *testing.B, saver Saver) string {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	tcheck(b, err, "listen")
	opts := testOptions()
	opts.ConnectRate = 1e9
	opts.ConnectBurst = 1 << 30
	srv := New(opts, saver, slog.New(slog.DiscardHandler))
	go srv.Serve(l)
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return l.Addr().String()
}

// benchDeliver sends the Postfix DSN b.N times over parallel connections.
func benchDeliver(b *testing.B, saver Saver) {
	addr := benchServer(b, saver)
	dsn := crlf(readTestdata(b, "lhost-postfix-03.eml"))
	b.SetBytes(int64(len(dsn)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		c, err := smtp.Dial(addr)
		if err != nil {
			b.Error(err)
			return
		}
		defer c.Close()
		if err := c.Hello("bench.test"); err != nil {
			b.Error(err)
			return
		}
		for pb.Next() {
			if _, err := send(c, "", []string{"bounces+u=d.test@" + bounceDomain}, dsn); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkDeliveryMem measures the SMTP path and the decoder alone.
func BenchmarkDeliveryMem(b *testing.B) {
	benchDeliver(b, discardSaver{})
}

// BenchmarkDeliveryStore adds the real bbolt store (fsync per group commit).
func BenchmarkDeliveryStore(b *testing.B) {
	db, err := store.Open(b.TempDir()+"/bench.db", store.Options{})
	tcheck(b, err, "open")
	b.Cleanup(func() { db.Close() })
	benchDeliver(b, db)
}

type discardSaver struct{}

func (discardSaver) Save(context.Context, *store.Delivery) ([]store.Record, error) {
	return nil, nil
}
