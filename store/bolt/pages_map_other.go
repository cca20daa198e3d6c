//go:build !unix

package bolt

import "os"

// mapFile reads the file at path (no mmap on this system).
func mapFile(path string) ([]byte, func(), error) {
	data, err := os.ReadFile(path)
	return data, func() {}, err
}
