//go:build !linux

package bolt

// dropCache is a no-op where posix_fadvise is not used.
func dropCache(string) {}
