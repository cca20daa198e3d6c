package server

import (
	"bytes"
	"github.com/bouncer/bouncer/store"
	"math"
	"strings"
	"testing"
)

// TestHugeMessageLimitKeepsContent is finding 6 of issue 21: with
// MaxMessageBytes = 2^63-1 every message got "250 bounce stored" and was
// saved with size 0, because max+1 wrapped to a negative read limit. A
// message must be stored whole or refused, never acknowledged empty.
func TestHugeMessageLimitKeepsContent(t *testing.T) {
	opts := testOptions()
	opts.MaxMessageBytes = math.MaxInt64
	opts.MaxDataMemory = math.MaxInt64
	saver := &memSaver{}
	ts := newTestServer(t, opts, saver)
	c := dial(t, ts.addr)
	msg := crlf(readTestdata(t, "lhost-postfix-03.eml"))
	_, err := send(c, "", []string{"x@" + bounceDomain}, msg)
	tcheck(t, err, "sending with a 2^63-1 limit")
	ds := saver.all()
	if len(ds) != 1 || !bytes.Equal(ds[0].Raw, msg) {
		t.Fatalf("stored %d deliveries, first of %d bytes; want 1 of %d bytes", len(ds), rawLen(ds), len(msg))
	}
}

// TestBodyReaderNeverCutsShort reads a body with the largest limit
// directly (New would lower it): the body comes back whole.
func TestBodyReaderNeverCutsShort(t *testing.T) {
	b := newBudget(math.MaxInt64, DataReserve(math.MaxInt64))
	g := &grant{b: b}
	defer g.release()
	br := bodyReader{g: g, max: math.MaxInt64}
	body := strings.Repeat("line of a bounce\r\n", 5000)
	got, _, err := br.read(strings.NewReader(body), 0)
	tcheck(t, err, "reading")
	if string(got) != body {
		t.Fatalf("read %d bytes, want %d", len(got), len(body))
	}
}

func rawLen(ds []*store.Delivery) int {
	if len(ds) == 0 {
		return 0
	}
	return len(ds[0].Raw)
}
