package bolt

import (
	"os"

	"golang.org/x/sys/unix"
)

// dropCache asks the kernel to drop the clean cached pages of the file at
// path, so that the next reads come from the disk. After a failed
// writeback Linux may keep pages that never reached the disk, marked
// clean; this evicts those (dirty pages it leaves). Best effort: errors
// are ignored.
func dropCache(path string) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
}
