package bolt_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bouncer/bouncer/store"

	"github.com/bouncer/bouncer/store/bolt"
	"github.com/bouncer/bouncer/store/storetest"
)

// filled makes a closed database of n bounces and returns its path.
func filled(t *testing.T, n int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "bouncer.db")
	db, err := bolt.Open(path, bolt.Options{})
	tcheck(t, err, "open")
	for i := range n {
		d := storetest.Delivery(t, storetest.DSN(fmt.Sprintf("u%d@d%d.example", i, i%50), "5.4.3", fmt.Sprintf("Mon, 2 Feb 2026 00:%02d:%02d +0000", i/60%60, i%60)))
		_, err := db.Save(context.Background(), d)
		tcheck(t, err, "save")
	}
	tcheck(t, db.Close(), "close")
	return path
}

// damagePages overwrites the first 32 bytes of every page from the third
// on, as a failing disk did in issue 20.
func damagePages(t *testing.T, path string, from int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	tcheck(t, err, "open file")
	defer f.Close()
	fi, _ := f.Stat()
	const page = 16 << 10
	junk := make([]byte, 32)
	for i := range junk {
		junk[i] = byte(0xA5 ^ i)
	}
	for off := int64(from) * page; off < fi.Size(); off += page {
		if _, err := f.WriteAt(junk, off); err != nil {
			t.Fatal(err)
		}
	}
}

func TestDamagedPagesNoPanic(t *testing.T) {
	path := filled(t, 300)
	damagePages(t, path, 2)
	// Open (read-write and read-only) and Check answer with an error
	// naming the file, never a panic.
	for _, ro := range []bool{false, true} {
		db, err := bolt.Open(path, bolt.Options{ReadOnly: ro})
		if err == nil {
			err = db.Check()
			db.Close()
		}
		var de *bolt.DamageError
		if !errors.As(err, &de) || !errors.Is(err, bolt.ErrDamaged) || de.Path != path {
			t.Fatalf("read-only %v: %v, want a DamageError for %s", ro, err, path)
		}
	}
	err := bolt.CheckFile(path)
	var de *bolt.DamageError
	if !errors.As(err, &de) || len(de.Problems) == 0 {
		t.Fatalf("CheckFile: %v", err)
	}
	for _, p := range de.Problems {
		if p.Page < 2 {
			t.Fatalf("problem on page %d: %s", p.Page, p)
		}
	}
	if !strings.Contains(err.Error(), "page ") {
		t.Fatalf("report names no page: %v", err)
	}
}

func TestCheckFileCleanAndDamage(t *testing.T) {
	path := filled(t, 200)
	tcheck(t, bolt.CheckFile(path), "clean file")
	data, err := os.ReadFile(path)
	tcheck(t, err, "read")
	cases := map[string]func([]byte) []byte{
		"leaf page headers flipped":   flipPages(flagLeafPage),
		"branch page headers flipped": flipPages(flagBranchPage),
		"both meta pages": func(b []byte) []byte {
			b[16+20] ^= 1
			b[16<<10+16+20] ^= 1
			return b
		},
		"truncated": func(b []byte) []byte { return b[:len(b)/2] },
	}
	for name, damage := range cases {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "d.db")
			tcheck(t, os.WriteFile(p, damage(append([]byte(nil), data...)), 0o600), "write")
			if err := bolt.CheckFile(p); !errors.Is(err, bolt.ErrDamaged) {
				t.Fatalf("CheckFile: %v, want ErrDamaged", err)
			}
			db, err := bolt.Open(p, bolt.Options{ReadOnly: true, LockTimeout: time.Second})
			if err == nil {
				_, qerr := db.Query(store.Filter{Limit: 10_000})
				cerr := db.Check()
				db.Close()
				if !errors.Is(cerr, bolt.ErrDamaged) {
					t.Fatalf("Check: %v (query: %v)", cerr, qerr)
				}
			}
		})
	}
}

const (
	flagBranchPage = 0x01
	flagLeafPage   = 0x02
)

// flipPages flips a byte of the page id in the header of every page of
// type flag from page 2 on.
func flipPages(flag uint16) func([]byte) []byte {
	return func(b []byte) []byte {
		const page = 16 << 10
		n := 0
		for off := 2 * page; off+page <= len(b); off += page {
			if uint16(b[off+8])|uint16(b[off+9])<<8 == flag {
				b[off] ^= 0x5a
				n++
			}
		}
		if n == 0 {
			panic("no page of the type to damage")
		}
		return b
	}
}
