package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
)

// intake sends copies of the samples over SMTP at a steady rate from
// several sessions. Each session sends 1 to maxPerConn messages over one
// connection, then QUITs and dials again, as MTAs that reuse connections
// do. Every reply other than the expected one is an error.
type intake struct {
	addr       string
	samples    []*sample
	domains    int
	rate       float64
	sessions   int
	maxPerConn int

	next     atomic.Uint64 // copy number
	accepted atomic.Int64  // messages answered 250 to DATA
	records  atomic.Int64  // records the accepted messages must have made
	errs     errorLog

	mu     sync.Mutex
	perSmp map[string]int // accepted per sample
	recent []string       // addresses of recent copies, for the queries
}

// errorLog counts errors and keeps the first few.
type errorLog struct {
	mu    sync.Mutex
	n     int
	first []string
}

func (e *errorLog) add(what string, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.n++
	if len(e.first) < 10 {
		e.first = append(e.first, time.Now().UTC().Format("15:04:05 ")+what+": "+err.Error())
	}
}

func (e *errorLog) count() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.n
}

func (e *errorLog) list() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.first...)
}

// run sends until ctx ends.
func (in *intake) run(ctx context.Context) {
	in.perSmp = map[string]int{}
	tick := time.NewTicker(time.Duration(float64(time.Second) / in.rate))
	defer tick.Stop()
	var wg sync.WaitGroup
	for i := range in.sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 20))
			for ctx.Err() == nil {
				in.session(ctx, tick.C, 1+rng.IntN(in.maxPerConn))
			}
		}()
	}
	wg.Wait()
}

// session delivers up to n messages over one connection, each when a
// tick allows it.
func (in *intake) session(ctx context.Context, tick <-chan time.Time, n int) {
	select {
	case <-ctx.Done():
		return
	case <-tick:
	}
	c, err := smtp.Dial(in.addr)
	if err != nil {
		in.errs.add("dialing", err)
		time.Sleep(time.Second)
		return
	}
	defer c.Close()
	c.CommandTimeout, c.SubmissionTimeout = time.Minute, time.Minute
	if err := c.Hello("soak.localhost"); err != nil {
		in.errs.add("EHLO", err)
		return
	}
	for i := range n {
		if i > 0 {
			select {
			case <-ctx.Done():
				c.Quit()
				return
			case <-tick:
			}
		}
		if err := in.send(c); err != nil {
			in.errs.add("sending", err)
			return
		}
	}
	if err := c.Quit(); err != nil {
		in.errs.add("QUIT", err)
	}
}

// send delivers the next copy in one transaction.
func (in *intake) send(c *smtp.Client) error {
	n := in.next.Add(1)
	s := in.samples[int(n)%len(in.samples)]
	msg, rcpt := s.message(n, in.domains)
	if err := c.Mail("", nil); err != nil {
		return fmt.Errorf("MAIL: %w", err)
	}
	if err := c.Rcpt(rcpt, nil); err != nil {
		return fmt.Errorf("RCPT %s: %w", rcpt, err)
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	if _, err := w.Write(msg); err != nil {
		return fmt.Errorf("writing %s: %w", s.name, err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("end of DATA (%s): %w", s.name, err)
	}
	in.accepted.Add(1)
	in.records.Add(int64(s.records))
	in.mu.Lock()
	in.perSmp[s.name]++
	if s.addrs > 0 {
		if len(in.recent) >= 100 {
			in.recent = in.recent[1:]
		}
		in.recent = append(in.recent, addr(n, 0, in.domains))
	}
	in.mu.Unlock()
	return nil
}

// recentAddr returns an address of a recent copy ("" before the first).
func (in *intake) recentAddr(i int) string {
	in.mu.Lock()
	defer in.mu.Unlock()
	if len(in.recent) == 0 {
		return ""
	}
	return in.recent[i%len(in.recent)]
}
