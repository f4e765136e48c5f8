package blobstore

import (
	"context"
	"time"
)

// bufferPool hands out part buffers, at most max of them alive at once.
// Buffers are kept and reused, and on Linux they live outside the Go heap
// (anonymous mmap): the garbage collector sizes its heap at twice the live
// heap, so 32 MiB of pooled buffers on the heap would let 32 MiB of
// per-request garbage (signing, HTTP) accumulate beside them. A holder must never ask for a
// second buffer while it keeps one it cannot give back without the
// pool's help; the S3 driver takes one at a time, so waiting cannot
// deadlock.
type bufferPool struct {
	size   int64
	free   chan *[]byte
	tokens chan struct{} // one per buffer that may still be allocated
}

func newBufferPool(size int64, max int) *bufferPool {
	if max <= 0 {
		max = DefaultS3MaxBuffers
	}
	p := &bufferPool{size: size, free: make(chan *[]byte, max), tokens: make(chan struct{}, max)}
	for range max {
		p.tokens <- struct{}{}
	}
	return p
}

// get returns an idle buffer, allocates one if the bound allows, or waits.
func (p *bufferPool) get(ctx context.Context) (*[]byte, error) {
	select {
	case b := <-p.free:
		return b, nil
	default:
	}
	select {
	case b := <-p.free:
		return b, nil
	case <-p.tokens:
		b := allocBuffer(p.size)
		return &b, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// put returns a buffer for reuse.
func (p *bufferPool) put(b *[]byte) {
	*b = (*b)[:cap(*b)]
	p.free <- b
}

// dropDelay is how long a buffer that a failed request may still be
// reading is kept out of use.
const dropDelay = time.Minute

// drop takes back a buffer that net/http may still be reading (its request
// failed): it is reused only after dropDelay.
func (p *bufferPool) drop(b *[]byte) { time.AfterFunc(dropDelay, func() { p.put(b) }) }
