package server

import (
	"context"
	"log/slog"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/bouncer/bouncer/store"
	"github.com/bouncer/bouncer/store/bolt"
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

// cpuTime is the CPU time this process has used (user and system).
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	tcheck(b, syscall.Getrusage(syscall.RUSAGE_SELF, &ru), "getrusage")
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the process's CPU time per message since start, client
// and server together: with two cores the rate alone hides how much work a
// message costs.
func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(cpuTime(b)-start)/float64(time.Microsecond)/float64(b.N), "cpu-µs/op")
}

// benchDeliver sends the Postfix DSN b.N times over parallel connections.
func benchDeliver(b *testing.B, saver Saver) {
	addr := benchServer(b, saver)
	dsn := crlf(readTestdata(b, "lhost-postfix-03.eml"))
	b.SetBytes(int64(len(dsn)))
	b.ResetTimer()
	defer reportCPU(b, cpuTime(b))
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

// BenchmarkDeliveryConn sends each message over a new connection (EHLO,
// MAIL, RCPT, DATA, QUIT), as the issue 8 benchmark does, to a Saver that
// drops it: the SMTP path and the decoder.
func BenchmarkDeliveryConn(b *testing.B) {
	addr := benchServer(b, discardSaver{})
	dsn := crlf(readTestdata(b, "lhost-postfix-03.eml"))
	b.SetBytes(int64(len(dsn)))
	b.ResetTimer()
	defer reportCPU(b, cpuTime(b))
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c, err := smtp.Dial(addr)
			if err != nil {
				b.Error(err)
				return
			}
			if err := c.Hello("bench.test"); err != nil {
				b.Error(err)
				return
			}
			if _, err := send(c, "", []string{"bounces+u=d.test@" + bounceDomain}, dsn); err != nil {
				b.Error(err)
				return
			}
			if err := c.Quit(); err != nil {
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
	db, err := bolt.Open(b.TempDir()+"/bench.db", bolt.Options{})
	tcheck(b, err, "open")
	b.Cleanup(func() { db.Close() })
	benchDeliver(b, db)
}

type discardSaver struct{}

func (discardSaver) Save(context.Context, *store.Delivery) ([]store.Record, error) {
	return nil, nil
}
