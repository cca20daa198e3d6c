package bolt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/bouncer/bouncer/store"

	"github.com/bouncer/bouncer/parse"
)

// textOf returns n bytes of pseudo-random words in lines, like the text
// of a returned message.
func textOf(seed uint64, n int) []byte {
	words := []string{"bounce", "delivery", "status", "mailbox", "recipient", "the", "of", "unknown", "relay", "host"}
	r := rand.New(rand.NewPCG(seed, 1))
	var b bytes.Buffer
	for b.Len() < n {
		b.WriteString(words[r.IntN(len(words))])
		if r.IntN(12) == 0 {
			b.WriteString("\r\n")
		} else {
			b.WriteByte(' ')
		}
	}
	return b.Bytes()[:n]
}

// TestCompressRawRoundTrip saves messages of many sizes and kinds from
// more goroutines than compressors and reads each raw message back.
func TestCompressRawRoundTrip(t *testing.T) {
	t.Parallel()
	db, _ := mustOpen(t, Options{Compressors: 2})
	noise := make([]byte, 64<<10)
	rand.NewChaCha8([32]byte{7}).Read(noise)
	raws := [][]byte{
		{},
		[]byte("x"),
		noise, // incompressible: stored as is
		textOf(1, 4<<10),
		textOf(2, 1<<20),
		textOf(3, maxScratch+(1<<20)), // output larger than a kept buffer
		textOf(4, 100<<10),
	}
	var wg sync.WaitGroup
	recs := make([][]store.Record, len(raws))
	errs := make([]error, len(raws))
	for i, raw := range raws {
		wg.Go(func() {
			d := bounce(fmt.Sprintf("u%d@d.test", i), "5.1.1", parse.KindBounce, parse.ClassHard)
			d.Raw = raw
			recs[i], errs[i] = db.Save(context.Background(), d)
		})
	}
	wg.Wait()
	for i, raw := range raws {
		tcheck(t, errs[i], "save")
		got, err := db.Raw(recs[i][0].MsgID)
		tcheck(t, err, "raw")
		if !bytes.Equal(got, raw) {
			t.Errorf("message %d (%d bytes): read back %d bytes that differ", i, len(raw), len(got))
		}
	}
	if n := len(db.compressors); n != 2 {
		t.Errorf("%d compressors back in the pool, want 2", n)
	}
}

// TestCompressorWait takes the only compressor: a Save then waits for it
// until its context ends, and succeeds once the compressor is back.
func TestCompressorWait(t *testing.T) {
	t.Parallel()
	db, _ := mustOpen(t, Options{Compressors: 1})
	c := <-db.compressors
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	// Messages up to rawS2Max are compressed without a pooled
	// compressor; these are larger.
	big := func(addr string) *store.Delivery {
		d := bounce(addr, "5.1.1", parse.KindBounce, parse.ClassHard)
		d.Raw = append(d.Raw, bytes.Repeat([]byte("filler line of a long bounce\r\n"), rawS2Max/20)...)
		return d
	}
	_, err := db.Save(ctx, big("a@d.test"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("save without a compressor: %v, want deadline exceeded", err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := db.Save(context.Background(), big("b@d.test"))
		done <- err
	}()
	db.compressors <- c
	tcheck(t, <-done, "save after the compressor is back")
	recs, err := db.Query(store.Filter{})
	tcheck(t, err, "query")
	if len(recs) != 1 || recs[0].Addr != "b@d.test" {
		t.Fatalf("stored %+v, want only b@d.test", recs)
	}
}
