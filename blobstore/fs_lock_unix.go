//go:build unix

package blobstore

import (
	"errors"
	"os"
	"syscall"
)

// tryLock takes an exclusive flock on file without waiting; false when
// someone else holds it. Closing the file releases it.
func tryLock(file *os.File) (bool, error) {
	for {
		err := syscall.Flock(int(file.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, syscall.EWOULDBLOCK):
			return false, nil
		case errors.Is(err, syscall.EINTR):
			continue
		}
		return false, err
	}
}
