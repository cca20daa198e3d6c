package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/bouncer/bouncer/store"
)

// bigMessage is a DSN with n bytes of pseudo-random text lines, tagged so
// the stored copy can be matched to it.
func bigMessage(t testing.TB, tag string, n int, seed uint64) []byte {
	t.Helper()
	var b bytes.Buffer
	b.Write(crlf(readTestdata(t, "lhost-postfix-03.eml")))
	fmt.Fprintf(&b, "X-Tag: %s\r\n", tag)
	r := rand.New(rand.NewPCG(seed, 1))
	for b.Len() < n {
		for i := 0; i < 12; i++ {
			b.WriteString([]string{"mail", "bounce", "x", "delivery", "status", "5.1.1"}[r.IntN(6)])
			b.WriteByte(' ')
		}
		b.WriteString("\r\n")
	}
	return b.Bytes()
}

// delaySaver holds every message for a while before storing it, so that
// sessions hold their budget long enough to get in each other's way.
type delaySaver struct {
	memSaver
	delay time.Duration
}

func (s *delaySaver) Save(ctx context.Context, d *store.Delivery) ([]store.Record, error) {
	time.Sleep(s.delay)
	return s.memSaver.Save(ctx, d)
}

// TestDataMemoryBudget sends large messages from many sessions at once
// through a budget that holds only a few of them: every message ends up
// stored byte for byte (after 452 4.3.1 replies, which the client
// retries in the same session), and the budget in use never passed the
// limit. With a long wait, nobody is refused at all: sessions that each
// hold part of their message never block each other for good.
func TestDataMemoryBudget(t *testing.T) {
	t.Run("short wait", func(t *testing.T) { testBudget(t, 300*time.Millisecond, true) })
	t.Run("long wait", func(t *testing.T) { testBudget(t, time.Minute, false) })
}

func testBudget(t *testing.T, wait time.Duration, retry bool) {
	const (
		sessions = 12
		perSess  = 2
		size     = 150 << 10
	)
	opts := testOptions()
	opts.MaxMessageBytes = 256 << 10
	opts.MaxDataMemory = 1 << 20 // the oldest session's reserve plus ~350 KiB
	opts.DataMemoryWait = wait
	opts.MaxConnsPerIP = sessions
	saver := &delaySaver{delay: 20 * time.Millisecond}
	ts := newTestServer(t, opts, saver)

	sent := make(map[string][]byte)
	var mu sync.Mutex
	var wg sync.WaitGroup
	refused := make([]int, sessions)
	for i := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := smtp.Dial(ts.addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			// A deadlock fails the test instead of hanging it.
			c.SubmissionTimeout = 20 * time.Second
			if err := c.Hello("client.test"); err != nil {
				t.Error(err)
				return
			}
			for j := range perSess {
				tag := fmt.Sprintf("s%d-m%d", i, j)
				msg := bigMessage(t, tag, size+i*1000, uint64(i*perSess+j))
				mu.Lock()
				sent[tag] = msg
				mu.Unlock()
				var mopts *smtp.MailOptions
				if i%2 == 1 {
					mopts = &smtp.MailOptions{Size: int64(len(msg))}
				}
				for try := 0; ; try++ {
					err := sendOpts(c, mopts, msg)
					if err == nil {
						break
					}
					var se *smtp.SMTPError
					if !retry || !errors.As(err, &se) || se.Code != 452 || se.EnhancedCode != (smtp.EnhancedCode{4, 3, 1}) || try == 50 {
						t.Errorf("%s: try %d: %v", tag, try, err)
						return
					}
					refused[i]++
				}
			}
		}()
	}
	wg.Wait()

	got := saver.all()
	if len(got) != sessions*perSess {
		t.Errorf("stored %d messages, want %d", len(got), sessions*perSess)
	}
	for _, d := range got {
		tag := tagOf(d.Raw)
		if want, ok := sent[tag]; !ok || !bytes.Equal(d.Raw, want) {
			t.Errorf("message %q: stored %d bytes, sent %d, equal %v", tag, len(d.Raw), len(want), bytes.Equal(d.Raw, want))
		}
	}
	st := ts.Stats()
	if st.DataMemoryPeak > opts.MaxDataMemory || st.DataMemoryPeak == 0 {
		t.Errorf("peak budget in use %d, limit %d", st.DataMemoryPeak, opts.MaxDataMemory)
	}
	if st.DataMemory != 0 {
		t.Errorf("budget in use after all sessions: %d, want 0", st.DataMemory)
	}
	total := 0
	for _, n := range refused {
		total += n
	}
	if st.NoMemory != int64(total) {
		t.Errorf("Stats.NoMemory %d, clients saw %d refusals", st.NoMemory, total)
	}
	t.Logf("peak budget %d of %d, %d refusals (retried)", st.DataMemoryPeak, opts.MaxDataMemory, total)
}

// sendOpts sends msg to one VERP recipient with the given MAIL options.
func sendOpts(c *smtp.Client, mopts *smtp.MailOptions, msg []byte) error {
	if err := c.Mail("", mopts); err != nil {
		return err
	}
	if err := c.Rcpt("bounces+u=d.test@"+bounceDomain, nil); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(msg); err != nil {
		return err
	}
	return w.Close()
}

func tagOf(raw []byte) string {
	_, rest, ok := bytes.Cut(raw, []byte("X-Tag: "))
	if !ok {
		return ""
	}
	tag, _, _ := bytes.Cut(rest, []byte("\r\n"))
	return string(tag)
}

// holdBudget starts a message on a raw connection and leaves it unfinished,
// so that this session, the oldest still reading, holds the first chunk of
// budget; it returns once the server has taken it.
func holdBudget(t *testing.T, ts *testServer) *rawClient {
	t.Helper()
	c := dialRaw(t, ts.addr, nil)
	c.startMessage()
	c.cmd("DATA", 354, "")
	c.write("Subject: first\r\n\r\npartial\r\n")
	for ts.Stats().DataMemory == 0 {
		time.Sleep(time.Millisecond)
	}
	return c
}

// TestDataMemoryExhausted: while the oldest session holds the budget, another
// cannot get any, is answered 452 4.3.1 after the wait, and stays in step:
// the commands inside its dropped message are never run, and its next
// transaction works once the budget is free.
func TestDataMemoryExhausted(t *testing.T) {
	opts := testOptions()
	opts.MaxMessageBytes = 64 << 10
	// Room for the oldest session only: the others' share is less than
	// the first 16 KiB chunk.
	opts.MaxDataMemory = DataReserve(opts.MaxMessageBytes) + 1000
	opts.DataMemoryWait = 200 * time.Millisecond
	saver := &memSaver{}
	ts := newTestServer(t, opts, saver)

	first := holdBudget(t, ts)
	second := dial(t, ts.addr)
	smuggled := strings.Repeat("x\r\n", 100) + "RSET\r\nMAIL FROM:<evil@example.com>\r\nRCPT TO:<postmaster@" + bounceDomain + ">\r\nDATA\r\nsmuggled\r\n"
	err := sendOpts(second, nil, append(bigMessage(t, "second", 10<<10, 2), smuggled...))
	wantCode(t, err, 452, smtp.EnhancedCode{4, 3, 1})
	tcheck(t, second.Noop(), "NOOP after 452")
	if n := ts.Stats().NoMemory; n != 1 {
		t.Errorf("Stats.NoMemory = %d, want 1", n)
	}

	first.write("rest\r\n.\r\n")
	first.expect(250, "2.0.0")
	msg := bigMessage(t, "second-again", 10<<10, 3)
	tcheck(t, sendOpts(second, nil, msg), "second message after the budget freed up")
	got := saver.all()
	if len(got) != 2 || string(got[0].Raw) != "Subject: first\r\n\r\npartial\r\nrest\r\n" || !bytes.Equal(got[1].Raw, msg) {
		t.Fatalf("stored %d messages, want first and second-again", len(got))
	}
	for _, d := range got {
		if d.Envelope.MailFrom != "" {
			t.Errorf("stored a message from %q: smuggled commands ran", d.Envelope.MailFrom)
		}
	}
	if st := ts.Stats(); st.DataMemoryPeak > opts.MaxDataMemory || st.DataMemory != 0 {
		t.Errorf("budget: peak %d (limit %d), in use at the end %d", st.DataMemoryPeak, opts.MaxDataMemory, st.DataMemory)
	}
}

// TestDataMemoryShutdown: a session waiting for DATA memory is not kept
// waiting by Shutdown for DataMemoryWait (an hour here, far past the raw
// client's deadline): it gets 452 4.3.1 and then 421, while the message
// being read still gets its 250.
func TestDataMemoryShutdown(t *testing.T) {
	opts := testOptions()
	opts.MaxMessageBytes = 64 << 10
	opts.MaxDataMemory = DataReserve(opts.MaxMessageBytes) + 1000
	opts.DataMemoryWait = time.Hour
	saver := &memSaver{}
	ts := newTestServer(t, opts, saver)

	first := holdBudget(t, ts)
	second := dialRaw(t, ts.addr, nil)
	second.startMessage()
	second.cmd("DATA", 354, "")
	second.write("Subject: waits\r\n\r\nbody\r\n.\r\n")
	shutdown := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		shutdown <- ts.Shutdown(ctx)
	}()
	second.expect(452, "4.3.1")
	second.expect(421, "4.3.2")
	first.write(".\r\n")
	first.expect(250, "2.0.0")
	tcheck(t, <-shutdown, "shutdown")
	if got := saver.all(); len(got) != 1 || string(got[0].Raw) != "Subject: first\r\n\r\npartial\r\n" {
		t.Fatalf("stored %d messages, want the first only", len(got))
	}
}

// TestLineEndsAcrossSegments checks the chunked normalisation against a
// plain one on the whole body, with bare CR and LF at every split point.
func TestLineEndsAcrossSegments(t *testing.T) {
	whole := func(b []byte) ([]byte, int) {
		var out []byte
		bare := 0
		for i, c := range b {
			switch {
			case c == '\r' && (i+1 == len(b) || b[i+1] != '\n'):
				out, bare = append(out, '\r', '\n'), bare+1
			case c == '\n' && (i == 0 || b[i-1] != '\r'):
				out, bare = append(out, '\r', '\n'), bare+1
			default:
				out = append(out, c)
			}
		}
		return out, bare
	}
	bodies := []string{"", "a\r\nb\r\n", "a\nb\rc\r\n\r", "\n\r\r\n\n", "x\r", "\r\n\r\n.\r\n", "\r\r\n", "\rx\n", "ab\r\r\rc\r\n"}
	// And every string of up to six bytes of CR, LF and x.
	for n := 1; n <= 6; n++ {
		for k := range pow3(n) {
			b := make([]byte, n)
			for i := range b {
				b[i] = "\r\nx"[k%3]
				k /= 3
			}
			bodies = append(bodies, string(b))
		}
	}
	for _, body := range bodies {
		want, wantBare := whole([]byte(body))
		for split := 0; split <= len(body); split++ {
			split2 := split + (len(body)-split)/2
			segs := [][]byte{[]byte(body[:split]), []byte(body[split:split2]), []byte(body[split2:])}
			var count lineEnds
			for _, s := range segs {
				count.count(s)
			}
			bare := count.finish()
			var conv lineEnds
			var got []byte
			for _, s := range segs {
				got = conv.appendCRLF(got, s)
			}
			got = conv.finishCRLF(got)
			if bare != wantBare || !bytes.Equal(got, want) {
				t.Errorf("%q split at %d: got %q (%d bare), want %q (%d)", body, split, got, bare, want, wantBare)
			}
		}
	}
}

func pow3(n int) int {
	p := 1
	for range n {
		p *= 3
	}
	return p
}

// TestDeclaredSizeWrong: SIZE= is only an estimate (RFC 1870 §5). A body
// longer than declared continues in chunks and one shorter leaves the rest
// of the buffer unused; both are stored as sent, and a declared size above
// maxExact is read in chunks.
func TestDeclaredSizeWrong(t *testing.T) {
	saver := &memSaver{}
	ts := newTestServer(t, testOptions(), saver)
	c := dial(t, ts.addr)
	cases := []struct {
		declared int64
		size     int
	}{{1000, 100 << 10}, {200 << 10, 5000}, {maxExact + 1, 300 << 10}, {2 * chunkSize, 2*chunkSize - 300}}
	for i, tc := range cases {
		msg := bigMessage(t, fmt.Sprintf("m%d", i), tc.size, uint64(i))
		tcheck(t, sendOpts(c, &smtp.MailOptions{Size: tc.declared}, msg), "sending")
		got := saver.all()
		if len(got) != i+1 {
			t.Fatalf("declared %d: stored %d messages, want %d", tc.declared, len(got), i+1)
		}
		if !bytes.Equal(got[i].Raw, msg) {
			t.Fatalf("declared %d, sent %d bytes: stored %d bytes, not the same", tc.declared, len(msg), len(got[i].Raw))
		}
	}
	if st := ts.Stats(); st.DataMemory != 0 {
		t.Errorf("budget in use at the end: %d, want 0", st.DataMemory)
	}
}
