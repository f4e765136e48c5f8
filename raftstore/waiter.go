package raftstore

import (
	"context"
	"sync"
)

// indexWaiter tracks the applied index and wakes those waiting for it to
// reach a value.
type indexWaiter struct {
	mu    sync.Mutex
	index uint64
	ch    chan struct{} // closed and replaced on every advance
}

func newIndexWaiter() *indexWaiter { return &indexWaiter{ch: make(chan struct{})} }

func (w *indexWaiter) set(idx uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if idx <= w.index {
		return
	}
	w.index = idx
	close(w.ch)
	w.ch = make(chan struct{})
}

// reset moves the index anywhere (a restored snapshot may be older).
func (w *indexWaiter) reset(idx uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.index = idx
	close(w.ch)
	w.ch = make(chan struct{})
}

func (w *indexWaiter) get() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.index
}

// wait blocks until the index is at least idx or ctx ends.
func (w *indexWaiter) wait(ctx context.Context, idx uint64) error {
	for {
		w.mu.Lock()
		cur, ch := w.index, w.ch
		w.mu.Unlock()
		if cur >= idx {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
