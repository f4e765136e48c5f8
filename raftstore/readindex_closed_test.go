package raftstore

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestIndexBatcherGetAfterRun: a caller that arrives after Run has ended
// must get ErrClosed, not wait for a round that will never come.
func TestIndexBatcherGetAfterRun(t *testing.T) {
	b := NewIndexBatcher(func(context.Context) (uint64, error) { return 1, nil })
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { b.Run(ctx); close(ran) }()
	cancel()
	<-ran
	wait, stop := context.WithTimeout(context.Background(), 5*time.Second)
	defer stop()
	if _, err := b.Get(wait); !errors.Is(err, ErrClosed) {
		t.Fatalf("Get after Run ended: %v, want ErrClosed", err)
	}
}
