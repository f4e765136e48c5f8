package blobstore

import "syscall"

// allocBuffer maps size bytes of anonymous memory outside the Go heap. Pool
// buffers are never unmapped (the pool keeps them for reuse).
func allocBuffer(size int64) []byte {
	b, err := syscall.Mmap(-1, 0, int(size), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return make([]byte, size)
	}
	return b
}
