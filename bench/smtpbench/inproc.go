package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sync"
	"time"

	"github.com/bouncer/bouncer/server"
	"github.com/bouncer/bouncer/store/bolt"
)

// inprocCmd runs bouncer's server and store in this process (as bouncer
// serve wires them, limits as in the benchmark config) under the Go load
// generator, to profile them with pprof: a CPU profile of the run and the
// heap profile taken when the heap in use was largest.
func inprocCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("inproc", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sessions := fs.Int("s", 20, "sessions in parallel")
	count := fs.Int("m", 5000, "messages in all")
	file := fs.String("F", "cmd/bouncer/testdata/postfix-543.eml", "message `file`")
	grow := fs.Int("grow", 0, "grow the message to this many `bytes` as a RET=FULL bounce (0: as is)")
	cpuOut := fs.String("cpuprofile", "", "write a CPU profile to `file`")
	heapOut := fs.String("heapprofile", "", "write the heap profile at the largest heap to `file`")
	if err := fs.Parse(args); err != nil {
		return err
	}
	msg, err := os.ReadFile(*file)
	if err != nil {
		return err
	}
	if *grow > 0 {
		msg = bigBounce(msg, *grow)
	}
	dir, err := os.MkdirTemp("", "smtpbench-inproc-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	db, err := bolt.Open(filepath.Join(dir, "bouncer.db"), bolt.Options{LockTimeout: 5 * time.Second})
	if err != nil {
		return err
	}
	defer db.Close()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := server.New(server.Options{Hostname: "localhost", Domains: []string{"localhost"},
		MaxConns: *sessions + 10, MaxConnsPerIP: *sessions + 10, ConnectRate: 1e7, ConnectBurst: 100000}, db, logger)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go srv.Serve(l)
	defer srv.Close()

	if *cpuOut != "" {
		f, err := os.Create(*cpuOut)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	var (
		mu       sync.Mutex
		peak     uint64
		peakHeap bytes.Buffer
		done     = make(chan struct{})
		sampled  = make(chan struct{})
	)
	go func() { // keep the heap profile of the largest heap seen
		defer close(sampled)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak {
				mu.Lock()
				peak = ms.HeapInuse
				peakHeap.Reset()
				pprof.Lookup("heap").WriteTo(&peakHeap, 0)
				mu.Unlock()
			}
		}
	}()
	r := runLoad(ctx, loadOptions{Addr: l.Addr().String(), Sessions: *sessions, Count: *count,
		Rcpt: rcpt, Data: dataPayload(msg), Timeout: 5 * time.Minute})
	close(done)
	<-sampled
	fmt.Fprintf(stdout, "in process: sent %d failed %d: %.0f msg/s, p50 %s p99 %s, largest HeapInuse %.1f MiB\n",
		r.Sent, r.Failed, r.rate(), ms(r.percentile(50)), ms(r.percentile(99)), float64(peak)/(1<<20))
	if *heapOut != "" {
		if err := os.WriteFile(*heapOut, peakHeap.Bytes(), 0o644); err != nil {
			return err
		}
	}
	if r.FirstErr != nil {
		return fmt.Errorf("%d failed, first: %w", r.Failed, r.FirstErr)
	}
	return nil
}
