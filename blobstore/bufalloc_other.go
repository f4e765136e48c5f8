//go:build !linux

package blobstore

func allocBuffer(size int64) []byte { return make([]byte, size) }
