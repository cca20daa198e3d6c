//go:build !unix

package main

import "errors"

// freeSpace is not measured here; the server then applies no floor.
func freeSpace(string) (int64, error) {
	return 0, errors.New("free space is not measured on this system")
}
