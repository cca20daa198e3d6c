package bolt

// Damaged files. bbolt trusts its pages: a damaged one makes it panic
// (or read out of bounds and then panic) inside Open or a transaction.
// Every call into bbolt on a file that may be damaged runs behind guard,
// which turns such a panic into a *DamageError; CheckFile walks the file
// without bbolt (pages.go) and reports each damaged page and its bucket.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
)

// ErrDamaged is wrapped by every error about a damaged database file.
var ErrDamaged = errors.New("database file is damaged")

// DamageError says which file is damaged and, where known, where.
type DamageError struct {
	Path     string
	Page     uint64 // 0 when unknown
	Bucket   string // "" when unknown
	Detail   string
	Problems []PageProblem // from CheckFile
}

func (e *DamageError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "database %s is damaged", e.Path)
	if e.Page != 0 {
		fmt.Fprintf(&b, " at page %d", e.Page)
	}
	if e.Bucket != "" {
		fmt.Fprintf(&b, " in bucket %s", e.Bucket)
	}
	if e.Detail != "" {
		b.WriteString(": " + e.Detail)
	}
	for i, p := range e.Problems {
		if i == 0 {
			fmt.Fprintf(&b, ": %d damaged page(s)", len(e.Problems))
		}
		b.WriteString("\n  " + p.String())
	}
	return b.String()
}

func (e *DamageError) Unwrap() error { return ErrDamaged }

// pageInPanic finds a page number in bbolt's panic messages ("invalid
// freelist page: 5", "page 7 already freed", "pgId:9").
var pageInPanic = regexp.MustCompile(`(?i)(?:page|pgid)[^0-9]{0,4}([0-9]+)`)

// guard recovers a panic from bbolt into *err as a *DamageError naming
// path and bucket. Use as: defer guard(path, bucket, &err).
func guard(path, bucket string, err *error) {
	p := recover()
	if p == nil {
		return
	}
	detail := strings.TrimSpace(fmt.Sprint(p))
	if len(detail) > 200 {
		detail = detail[:200] + "..."
	}
	e := &DamageError{Path: path, Bucket: bucket, Detail: "bbolt failed reading it (" + detail + ")"}
	if m := pageInPanic.FindStringSubmatch(detail); m != nil {
		if n, perr := strconv.ParseUint(m[1], 10, 64); perr == nil && n < 1<<40 {
			e.Page = n
		}
	}
	*err = e
}

// CheckFile walks the bbolt file at path without bbolt and returns a
// *DamageError listing every damaged page it finds, or nil. It reads the
// whole file; the server need not be stopped (it sees the last commit).
func CheckFile(path string) error {
	problems, err := walkFile(path, nil)
	if err != nil {
		return &DamageError{Path: path, Detail: err.Error(), Problems: problems}
	}
	if len(problems) > 0 {
		return &DamageError{Path: path, Problems: problems}
	}
	return nil
}

// checkOpenPages reads what bbolt.Open reads (the meta pages and the
// freelist) and refuses a file whose freelist bbolt would panic on.
func checkOpenPages(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return nil // bbolt.Open creates it, or says why not
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Size() == 0 {
		return nil
	}
	head := make([]byte, 2*(16<<10)+pageHeader+64)
	n, _ := f.ReadAt(head, 0)
	w := &fileWalk{data: head[:n], seen: map[uint64]bool{}, headOnly: true}
	if _, err := w.meta(); err != nil {
		return &DamageError{Path: path, Detail: err.Error(), Problems: w.problems}
	}
	// A file shorter than the pages its meta page counts is truncated:
	// bbolt maps it anyway, and reading a page past the end is a fault
	// (SIGBUS or SIGSEGV) that no recover catches.
	if pages := uint64(fi.Size()) / uint64(w.pageSize); pages < w.maxPage {
		return &DamageError{Path: path, Page: pages, Detail: fmt.Sprintf("file ends at page %d, the database says %d pages (truncated)", pages, w.maxPage)}
	}
	free := w.freelist
	if free == noFreelist {
		return nil
	}
	hdr := make([]byte, pageHeader)
	if _, err := f.ReadAt(hdr, int64(free)*int64(w.pageSize)); err != nil {
		return &DamageError{Path: path, Page: free, Detail: "freelist page beyond the end of the file (truncated)"}
	}
	if binary.LittleEndian.Uint64(hdr) != free || binary.LittleEndian.Uint16(hdr[8:]) != flagFreelist {
		return &DamageError{Path: path, Page: free, Bucket: "freelist", Detail: "the freelist page is overwritten"}
	}
	return nil
}
