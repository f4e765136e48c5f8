package raftstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// IndexBatcher shares one read-index round among many concurrent readers,
// as etcd batches its ReadIndex requests. All requests waiting when a round
// starts share that round's answer; requests arriving during a round wait
// for the next one (an answer obtained before a request arrived would not
// cover writes acknowledged just before that request). The leader uses it
// around VerifyLeader; followers (package node) around the RPC that asks the
// leader.
type IndexBatcher struct {
	round   func(context.Context) (uint64, error)
	mu      sync.Mutex
	pending []chan indexResult
	closed  bool
	wake    chan struct{}
}

type indexResult struct {
	index uint64
	err   error
}

// NewIndexBatcher returns a batcher that obtains each round's index with
// round. Call Run once.
func NewIndexBatcher(round func(context.Context) (uint64, error)) *IndexBatcher {
	return &IndexBatcher{round: round, wake: make(chan struct{}, 1)}
}

// Get waits for the next round and returns its index.
func (b *IndexBatcher) Get(ctx context.Context) (uint64, error) {
	ch := make(chan indexResult, 1)
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return 0, ErrClosed
	}
	b.pending = append(b.pending, ch)
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
	select {
	case r := <-ch:
		return r.index, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// Run serves rounds until ctx ends; pending callers then get ErrClosed.
func (b *IndexBatcher) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			b.flush(indexResult{err: ErrClosed})
			return
		case <-b.wake:
		}
		b.mu.Lock()
		batch := b.pending
		b.pending = nil
		b.mu.Unlock()
		if len(batch) == 0 {
			continue
		}
		idx, err := b.round(ctx)
		for _, ch := range batch {
			ch <- indexResult{idx, err}
		}
	}
}

func (b *IndexBatcher) flush(r indexResult) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for _, ch := range b.pending {
		ch <- r
	}
	b.pending = nil
}

// leaderRound notes the commit index, confirms leadership with a quorum and
// checks the term did not change in between. It answers the index of the
// last write applied once the leader has applied everything up to the noted
// commit index: every write committed before the round is at or below it,
// and trailing no-ops (commit-index nudges, the election barrier) are not
// waited for.
func (s *Store) leaderRound(ctx context.Context) (uint64, error) {
	term := s.readyTerm.Load()
	if !s.leaderReady() {
		return 0, ErrNotLeader
	}
	// A new leader answers nothing before its predecessor's leases ran out.
	if err := s.leases.waitNotBefore(ctx, term); err != nil {
		return 0, err
	}
	idx := s.raft.CommitIndex()
	if err := s.raft.VerifyLeader().Error(); err != nil {
		if errors.Is(mapRaftErr(err), ErrClosed) {
			return 0, ErrClosed
		}
		// Whatever the reason (lost leadership, a transfer under way), a
		// read changed nothing: the caller may ask the next leader.
		return 0, fmt.Errorf("%w: %v", ErrNotLeader, err)
	}
	if !s.leaderReady() || s.readyTerm.Load() != term {
		return 0, ErrNotLeader
	}
	if err := s.fsm.applied.wait(ctx, idx); err != nil {
		return 0, err
	}
	return s.fsm.lastWrite.Load(), nil
}

func appliedIn(tx *bolt.Tx) uint64 {
	if v := tx.Bucket(bucketMeta).Get(keyApplied); v != nil {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}
