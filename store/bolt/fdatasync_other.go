//go:build !linux

package bolt

import "os"

// fdatasync flushes f to disk (an fsync where fdatasync is not known).
func fdatasync(f *os.File) error { return f.Sync() }
