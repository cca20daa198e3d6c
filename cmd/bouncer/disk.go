//go:build unix

package main

import (
	"fmt"
	"syscall"
)

// freeSpace is the space on dir's file system that an unprivileged
// process may still use (statfs f_bavail), as Postfix's queue_minfree
// measures it.
func freeSpace(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("reading free space of %s: %w", dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}
