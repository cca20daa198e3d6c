package bolt

import (
	"os"
	"syscall"
)

// fdatasync flushes f's data (and the size, if it changed) to disk,
// without the other metadata an fsync also writes.
func fdatasync(f *os.File) error { return syscall.Fdatasync(int(f.Fd())) }
