package bolt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/bouncer/bouncer/store"

	"github.com/bouncer/bouncer/parse"
	bbolt "go.etcd.io/bbolt"
)

// rawKeys returns the raw bucket keys of message msgID.
func rawKeys(t *testing.T, db *DB, msgID string) [][]byte {
	t.Helper()
	mk, err := decodeID(msgID)
	tcheck(t, err, "message id")
	var keys [][]byte
	tcheck(t, db.view(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucketRaw).Cursor()
		for k, _ := c.Seek(mk); k != nil && bytes.HasPrefix(k, mk); k, _ = c.Next() {
			keys = append(keys, bytes.Clone(k))
		}
		return nil
	}), "raw keys")
	return keys
}

// saveRaw saves a bounce for addr with raw message raw.
func saveRaw(t *testing.T, db *DB, addr string, raw []byte) store.Record {
	t.Helper()
	d := bounce(addr, "5.1.1", parse.KindBounce, parse.ClassHard)
	d.Raw = raw
	return save(t, db, d)[0]
}

// TestRawParts stores incompressible messages around the part size: each
// is cut into ceil((1+len)/part) parts of at most the part size, numbered
// from 0, and reads back whole.
func TestRawParts(t *testing.T) {
	t.Parallel()
	db, _ := mustOpen(t, Options{})
	part := db.rawPart
	if part != rawPartSize(16<<10) || part < 4000 {
		t.Fatalf("part size %d for 16 KB pages", part)
	}
	noise := make([]byte, 3*part+10)
	rand.NewChaCha8([32]byte{9}).Read(noise)
	for _, n := range []int{0, part - 1, part, part + 1, 2 * part, 3*part + 10} {
		rec := saveRaw(t, db, fmt.Sprintf("u%d@d.test", n), noise[:n])
		keys := rawKeys(t, db, rec.MsgID)
		if want := (n + 1 + part - 1) / part; len(keys) != want {
			t.Errorf("%d bytes: %d parts, want %d", n, len(keys), want)
		}
		for i, k := range keys {
			if len(k) != rawPartKeyLen || int(k[len(k)-1]) != i {
				t.Errorf("%d bytes: key %d is %x", n, i, k)
			}
		}
		got, err := db.Raw(rec.MsgID)
		tcheck(t, err, "raw")
		if !bytes.Equal(got, noise[:n]) {
			t.Errorf("%d bytes: read back %d bytes that differ", n, len(got))
		}
	}
	tcheck(t, db.Check(), "check")
}

// TestRawCheck damages the parts of messages: Check names each problem
// and Raw refuses a message with a missing part.
func TestRawCheck(t *testing.T) {
	t.Parallel()
	db, _ := mustOpen(t, Options{})
	noise := make([]byte, 3*db.rawPart)
	rand.NewChaCha8([32]byte{3}).Read(noise)
	gap := saveRaw(t, db, "gap@d.test", noise)
	head := saveRaw(t, db, "head@d.test", noise)
	mixed := saveRaw(t, db, "mixed@d.test", []byte("short"))
	codec := saveRaw(t, db, "codec@d.test", []byte("short"))
	tcheck(t, db.update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketRaw)
		if err := b.Delete(rawKeys(t, db, gap.MsgID)[1]); err != nil {
			return err
		}
		if err := b.Delete(rawKeys(t, db, head.MsgID)[0]); err != nil {
			return err
		}
		mk, _ := decodeID(mixed.MsgID)
		if err := b.Put(mk, []byte{rawStored, 'x'}); err != nil {
			return err
		}
		return b.Put(rawKeys(t, db, codec.MsgID)[0], []byte{7, 'x'})
	}), "damage")
	err := db.Check()
	if err == nil {
		t.Fatal("check passed a damaged raw bucket")
	}
	for _, want := range []string{
		gap.MsgID + ": part 1 missing", head.MsgID + ": part 0 missing",
		mixed.MsgID + ": stored whole and in parts", codec.MsgID + ": unknown codec",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("check: %v\nwant %q", err, want)
		}
	}
	if _, err := db.Raw(gap.MsgID); err == nil || !strings.Contains(err.Error(), "part 1 missing") {
		t.Errorf("raw with a missing part: %v", err)
	}
}

// TestRawSchema4 opens a version 4 file, whose raw messages are whole
// values: a read-only Open refuses it, a read-write Open writes version 5
// and keeps them readable; Check and PruneRaw handle both forms.
func TestRawSchema4(t *testing.T) {
	t.Parallel()
	clock := newClock()
	db, path := mustOpen(t, Options{Now: clock.Now})
	old := []byte(strings.Repeat("returned message line\r\n", 2000))
	rec := saveRaw(t, db, "old@d.test", old)
	tcheck(t, db.update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketRaw)
		mk, _ := decodeID(rec.MsgID)
		v, err := getRaw(b, mk)
		if err != nil {
			return err
		}
		for _, k := range rawKeys(t, db, rec.MsgID) {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		if err := b.Put(mk, v); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(keyVersion, []byte("4"))
	}), "make version 4")
	tcheck(t, db.Close(), "close")

	if _, err := Open(path, Options{ReadOnly: true}); !errors.Is(err, ErrSchema) {
		t.Fatalf("read-only open of version 4: %v, want ErrSchema", err)
	}
	db, err := Open(path, Options{Now: clock.Now})
	tcheck(t, err, "open version 4")
	defer db.Close()
	if keys := rawKeys(t, db, rec.MsgID); len(keys) != 1 || len(keys[0]) != keyLen {
		t.Fatalf("version 4 raw keys %x, want the message key alone", keys)
	}
	got, err := db.Raw(rec.MsgID)
	tcheck(t, err, "raw of a version 4 message")
	if !bytes.Equal(got, old) {
		t.Fatalf("version 4 message read back as %d bytes that differ", len(got))
	}
	clock.Add(time.Hour)
	rec2 := saveRaw(t, db, "new@d.test", old)
	if rec2.MsgID <= rec.MsgID {
		t.Fatalf("new message %s not after %s", rec2.MsgID, rec.MsgID)
	}
	tcheck(t, db.Check(), "check")
	n, err := db.PruneRaw(context.Background(), clock.Now().Add(time.Second))
	tcheck(t, err, "prune")
	if n != 2 || keyCount(t, db, bucketRaw) != 0 {
		t.Fatalf("pruned %d messages, %d keys left; want 2 and 0", n, keyCount(t, db, bucketRaw))
	}
	tcheck(t, db.Check(), "check after prune")
}

// TestPruneRawParts prunes messages of many parts in chunks: each
// transaction deletes whole messages and the count is of messages.
func TestPruneRawParts(t *testing.T) {
	t.Parallel()
	clock := newClock()
	db, _ := mustOpen(t, Options{Now: clock.Now})
	noise := make([]byte, 6*db.rawPart) // 7 parts, which 1000 keys do not divide
	rand.NewChaCha8([32]byte{5}).Read(noise)
	var reqs []*request
	const msgs = 300 // 2,100 keys: three prune transactions
	for i := range msgs {
		d := bounce(fmt.Sprintf("u%d@d.test", i), "5.1.1", parse.KindBounce, parse.ClassHard)
		d.Raw = noise
		r, err := db.newRequest(context.Background(), d)
		tcheck(t, err, "request")
		reqs = append(reqs, r)
	}
	tcheck(t, db.fill(reqs), "fill")
	clock.Add(time.Hour)
	keep := saveRaw(t, db, "keep@d.test", noise)
	// A reader meanwhile sees each message whole or pruned, never a part
	// of one (a transaction that split a message would leave its last
	// parts without part 0).
	stop := make(chan struct{})
	readErr := make(chan error, 1)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				readErr <- nil
				return
			default:
			}
			_, err := db.Raw(reqs[i%msgs].recs[0].MsgID)
			if err != nil && !errors.Is(err, store.ErrRawPruned) {
				readErr <- err
				return
			}
		}
	}()
	n, err := db.PruneRaw(context.Background(), clock.Now().Add(-time.Minute))
	close(stop)
	tcheck(t, err, "prune")
	tcheck(t, <-readErr, "reading while pruning")
	if n != msgs {
		t.Fatalf("pruned %d messages, want %d", n, msgs)
	}
	if got := keyCount(t, db, bucketRaw); got != 7 {
		t.Fatalf("%d raw keys left, want the 7 of the kept message", got)
	}
	if _, err := db.Raw(keep.MsgID); err != nil {
		t.Fatalf("raw of the kept message: %v", err)
	}
	tcheck(t, db.Check(), "check")
}
