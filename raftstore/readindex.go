package raftstore

import (
	"context"
	"encoding/binary"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// readBatcher gives the leader's read index to many concurrent readers for
// the price of one VerifyLeader round, as etcd batches its ReadIndex: all
// requests waiting when a round starts share that round's answer; requests
// arriving during a round wait for the next one (an answer taken before a
// request arrived would not cover writes acknowledged just before it).
type readBatcher struct {
	s       *Store
	mu      sync.Mutex
	pending []chan readResult
	wake    chan struct{}
}

type readResult struct {
	index uint64
	err   error
}

func newReadBatcher(s *Store) *readBatcher {
	return &readBatcher{s: s, wake: make(chan struct{}, 1)}
}

func (b *readBatcher) readIndex(ctx context.Context) (uint64, error) {
	if !b.s.leaderReady() {
		if err := b.s.awaitLeaderReady(ctx); err != nil {
			return 0, err
		}
	}
	ch := make(chan readResult, 1)
	b.mu.Lock()
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

func (b *readBatcher) run(done <-chan struct{}, wg *sync.WaitGroup) {
	defer wg.Done()
	for {
		select {
		case <-done:
			b.flush(readResult{err: ErrClosed})
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
		r := b.round()
		for _, ch := range batch {
			ch <- r
		}
	}
}

// round notes the commit index, confirms leadership with a quorum and checks
// the term did not change in between.
func (b *readBatcher) round() readResult {
	s := b.s
	term := s.readyTerm.Load()
	if !s.leaderReady() {
		return readResult{err: ErrNotLeader}
	}
	idx := s.raft.CommitIndex()
	if err := s.raft.VerifyLeader().Error(); err != nil {
		return readResult{err: mapRaftErr(err)}
	}
	if !s.leaderReady() || s.readyTerm.Load() != term {
		return readResult{err: ErrNotLeader}
	}
	return readResult{index: idx}
}

func (b *readBatcher) flush(r readResult) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, ch := range b.pending {
		ch <- r
	}
	b.pending = nil
}

func appliedIn(tx *bolt.Tx) uint64 {
	if v := tx.Bucket(bucketMeta).Get(keyApplied); v != nil {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}
