package raftstore

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func pendingCount(b *IndexBatcher) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.pending)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(storeTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestIndexBatcherSharesRounds: callers that arrive while a round runs are
// all answered by the next single round, never by the one already running
// (its index may predate their call).
func TestIndexBatcherSharesRounds(t *testing.T) {
	var rounds atomic.Int64
	release := make(chan struct{})
	b := NewIndexBatcher(func(context.Context) (uint64, error) {
		n := rounds.Add(1)
		<-release
		return uint64(n * 100), nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go b.Run(ctx)

	first := make(chan uint64, 1)
	go func() {
		idx, err := b.Get(ctxT(t))
		if err != nil {
			t.Error(err)
		}
		first <- idx
	}()
	waitFor(t, "the first round to start", func() bool { return rounds.Load() == 1 })

	const n = 50
	got := make(chan uint64, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			idx, err := b.Get(ctxT(t))
			if err != nil {
				t.Error(err)
			}
			got <- idx
		}()
	}
	waitFor(t, "every caller to queue", func() bool { return pendingCount(b) == n })
	close(release)
	wg.Wait()
	close(got)
	if idx := <-first; idx != 100 {
		t.Errorf("first caller got %d, want round 1's 100", idx)
	}
	for idx := range got {
		if idx != 200 {
			t.Errorf("queued caller got %d, want round 2's 200", idx)
		}
	}
	if r := rounds.Load(); r != 2 {
		t.Errorf("%d rounds for %d callers, want 2", r, n+1)
	}
}

func TestIndexBatcherRoundError(t *testing.T) {
	boom := errors.New("boom")
	b := NewIndexBatcher(func(context.Context) (uint64, error) { return 0, boom })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go b.Run(ctx)
	var wg sync.WaitGroup
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := b.Get(ctxT(t)); !errors.Is(err, boom) {
				t.Errorf("got %v, want the round's error", err)
			}
		}()
	}
	wg.Wait()
}

// TestIndexBatcherCallerGivesUp: a caller whose context ends stops waiting;
// the batcher still serves the others.
func TestIndexBatcherCallerGivesUp(t *testing.T) {
	release := make(chan struct{})
	b := NewIndexBatcher(func(context.Context) (uint64, error) { <-release; return 7, nil })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go b.Run(ctx)
	short, stop := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer stop()
	if _, err := b.Get(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want the caller's deadline", err)
	}
	close(release)
	if idx, err := b.Get(ctxT(t)); err != nil || idx != 7 {
		t.Errorf("after a caller gave up: %d, %v", idx, err)
	}
}

// TestIndexBatcherClose: callers waiting when Run ends get ErrClosed.
func TestIndexBatcherClose(t *testing.T) {
	started := make(chan struct{})
	var once sync.Once
	b := NewIndexBatcher(func(ctx context.Context) (uint64, error) {
		once.Do(func() { close(started) })
		<-ctx.Done()
		return 0, ErrClosed
	})
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { b.Run(ctx); close(ran) }()
	errs := make(chan error, 2)
	go func() { _, err := b.Get(ctxT(t)); errs <- err }()
	<-started
	go func() { _, err := b.Get(ctxT(t)); errs <- err }()
	waitFor(t, "the second caller to queue", func() bool { return pendingCount(b) == 1 })
	cancel()
	<-ran
	for range 2 {
		if err := <-errs; !errors.Is(err, ErrClosed) {
			t.Errorf("got %v, want ErrClosed", err)
		}
	}
}
