package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// loadOptions describe one load run: like smtp-source without -d, every
// message goes over a new connection (greeting, EHLO, MAIL, RCPT, DATA,
// QUIT), from Sessions connections in parallel.
type loadOptions struct {
	Addr     string
	Sessions int
	Count    int
	From     string // reverse path, "" for the null sender of a bounce
	Rcpt     string
	Data     []byte // the DATA payload, CRLF lines, dot-stuffed, without the final "."
	Timeout  time.Duration
}

// loadResult is what a load run measured. Latency is, per message, the time
// from writing the end-of-data line ".\r\n" to reading the 250 reply.
type loadResult struct {
	Sent     int
	Failed   int
	FirstErr error
	Elapsed  time.Duration
	Latency  []time.Duration // sorted
}

func (r loadResult) rate() float64 { return float64(r.Sent) / r.Elapsed.Seconds() }

// percentile returns the p-th percentile (nearest rank) of the latencies.
func (r loadResult) percentile(p float64) time.Duration {
	if len(r.Latency) == 0 {
		return 0
	}
	i := int(float64(len(r.Latency))*p/100+0.999999) - 1
	return r.Latency[min(max(i, 0), len(r.Latency)-1)]
}

// runLoad sends o.Count messages and waits for all of them. It stops early
// when ctx ends; failed messages are counted, not retried.
func runLoad(ctx context.Context, o loadOptions) loadResult {
	var (
		next   atomic.Int64
		mu     sync.Mutex
		res    loadResult
		wg     sync.WaitGroup
		latAll = make([][]time.Duration, o.Sessions)
	)
	start := time.Now()
	for w := range o.Sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, o.Count/o.Sessions+1)
			for ctx.Err() == nil && next.Add(1) <= int64(o.Count) {
				d, err := sendOne(o)
				if err != nil {
					mu.Lock()
					res.Failed++
					if res.FirstErr == nil {
						res.FirstErr = err
					}
					mu.Unlock()
					continue
				}
				lat = append(lat, d)
			}
			latAll[w] = lat
		}()
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	for _, l := range latAll {
		res.Latency = append(res.Latency, l...)
	}
	res.Sent = len(res.Latency)
	slices.Sort(res.Latency)
	return res
}

// sendOne delivers one message over a new connection and returns the time
// from the end of DATA to the 250 reply.
func sendOne(o loadOptions) (time.Duration, error) {
	conn, err := net.DialTimeout("tcp", o.Addr, o.Timeout)
	if err != nil {
		return 0, fmt.Errorf("dialing: %w", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(o.Timeout))
	br := bufio.NewReader(conn)
	step := func(cmd string, want int) error {
		if cmd != "" {
			if _, err := io.WriteString(conn, cmd+"\r\n"); err != nil {
				return fmt.Errorf("writing %s: %w", strings.Fields(cmd)[0], err)
			}
		}
		return expect(br, want, cmd)
	}
	if err := step("", 220); err != nil {
		return 0, err
	}
	for _, c := range []struct {
		cmd  string
		want int
	}{{"EHLO smtpbench.localhost", 250}, {"MAIL FROM:<" + o.From + ">", 250}, {"RCPT TO:<" + o.Rcpt + ">", 250}, {"DATA", 354}} {
		if err := step(c.cmd, c.want); err != nil {
			return 0, err
		}
	}
	if _, err := conn.Write(o.Data); err != nil {
		return 0, fmt.Errorf("writing message: %w", err)
	}
	t0 := time.Now()
	if err := step(".", 250); err != nil {
		return 0, err
	}
	lat := time.Since(t0)
	if err := step("QUIT", 221); err != nil {
		return 0, err
	}
	return lat, nil
}

// expect reads one (possibly multi-line) reply and checks its code.
func expect(br *bufio.Reader, want int, after string) error {
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return fmt.Errorf("reading reply to %q: %w", after, err)
		}
		var code int
		if len(line) < 4 || func() bool { _, err := fmt.Sscanf(line[:3], "%d", &code); return err != nil }() {
			return fmt.Errorf("malformed reply to %q: %q", after, line)
		}
		if line[3] == '-' {
			continue
		}
		if code != want {
			return fmt.Errorf("reply to %q: %s", after, strings.TrimSpace(line))
		}
		return nil
	}
}

// dataPayload turns a message file into DATA bytes: lines end in CRLF,
// lines starting with "." get another "." (RFC 5321 §4.5.2), as
// smtp-source -F does. The final "." line is sent separately.
func dataPayload(msg []byte) []byte {
	msg = bytes.TrimRight(msg, "\r\n")
	var b bytes.Buffer
	b.Grow(len(msg) + len(msg)/30)
	for line := range bytes.Lines(msg) {
		line = bytes.TrimRight(line, "\r\n")
		if len(line) > 0 && line[0] == '.' {
			b.WriteByte('.')
		}
		b.Write(line)
		b.WriteString("\r\n")
	}
	return b.Bytes()
}

// loadCmd runs the load generator alone and prints its figures.
func loadCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:2525", "server `address`")
	sessions := fs.Int("s", 20, "sessions in parallel")
	count := fs.Int("m", 1000, "messages in all")
	from := fs.String("f", "", "reverse path (\"\" is the null sender)")
	rcpt := fs.String("t", "bounces+user=dead.test@localhost", "recipient")
	file := fs.String("F", "", "message `file` (required)")
	grow := fs.Int("grow", 0, "grow the message to this many `bytes` as a RET=FULL bounce (0: as is)")
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
	r := runLoad(ctx, loadOptions{Addr: *addr, Sessions: max(*sessions, 1), Count: *count,
		From: *from, Rcpt: *rcpt, Data: dataPayload(msg), Timeout: time.Minute})
	fmt.Fprintf(stdout, "sent %d failed %d in %v: %.0f msg/s, end of DATA to 250: p50 %v p99 %v max %v\n",
		r.Sent, r.Failed, r.Elapsed.Round(time.Millisecond), r.rate(),
		r.percentile(50), r.percentile(99), r.percentile(100))
	if r.FirstErr != nil {
		return fmt.Errorf("%d messages failed, first: %w", r.Failed, r.FirstErr)
	}
	return nil
}
