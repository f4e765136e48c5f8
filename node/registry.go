package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/flotilla/flotilla/api"
	"github.com/flotilla/flotilla/meta"
	"github.com/flotilla/flotilla/raftstore"
)

// registry adapts the raft store to api.Registry: local reads come straight
// from the state machine; Apply and Fence add the consistency rules.
type registry struct {
	*raftstore.Store
	node *Node
}

// Apply commits c through the leader and waits until this node applied it.
func (r *registry) Apply(ctx context.Context, c *meta.Command) (*meta.Result, error) {
	if r.node.removed.Load() {
		return nil, fmt.Errorf("%w: this node was removed from the cluster", api.ErrUnavailable)
	}
	res, err := r.node.apply(ctx, c)
	if err != nil {
		return nil, mapStoreErr(err)
	}
	// Committed; wait (bounded) until this node applied it, so the client
	// reads it here. A node that cannot apply (full disk, cut off) answers
	// 503 rather than holding the request.
	wctx, cancel := context.WithTimeout(ctx, r.node.cfg.LeaderHoldTimeout)
	defer cancel()
	if err := r.WaitApplied(wctx, res.Index); err != nil {
		return nil, fmt.Errorf("%w: committed at index %d, not yet applied on this node: %v", api.ErrOutcomeUnknown, res.Index, err)
	}
	return res, nil
}

// Fence waits until local state reflects what opts asks. Stale: only the
// client's MinIndex, provided this node heard from the leader within
// MaxStaleness and reaches MinIndex within the hold timeout; otherwise (and
// by default) everything committed before the call, via the leader's read
// index. A MinIndex beyond the read index names no write that happened:
// it is refused rather than waited for.
func (r *registry) Fence(ctx context.Context, opts api.ReadOptions) error {
	if opts.Stale && time.Since(r.LastContact()) <= r.node.cfg.MaxStaleness {
		if opts.MinIndex <= r.AppliedIndex() {
			return nil
		}
		wctx, cancel := context.WithTimeout(ctx, r.node.cfg.LeaderHoldTimeout)
		err := r.WaitApplied(wctx, opts.MinIndex)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w: %v", api.ErrUnavailable, ctx.Err())
		}
	}
	var idx uint64
	var err error
	if r.IsLeader() {
		idx, err = r.ReadIndex(ctx) // batched in the store; no second batcher
	} else {
		idx, err = r.node.reads.Get(ctx)
	}
	if err != nil {
		// A read changes nothing, so every failure to fence is one the
		// client may retry.
		if errors.Is(err, api.ErrUnavailable) {
			return err
		}
		return fmt.Errorf("%w: read index: %v", api.ErrUnavailable, err)
	}
	if opts.MinIndex > idx {
		return fmt.Errorf("%w: asked for %d, the cluster has committed %d", api.ErrIndexAhead, opts.MinIndex, idx)
	}
	wctx, cancel := context.WithTimeout(ctx, r.node.cfg.LeaderHoldTimeout)
	defer cancel()
	if err := r.WaitApplied(wctx, idx); err != nil {
		return fmt.Errorf("%w: waiting for index %d: %v", api.ErrUnavailable, idx, err)
	}
	return nil
}

func mapStoreErr(err error) error {
	switch {
	case errors.Is(err, raftstore.ErrOutcomeUnknown):
		return fmt.Errorf("%w: %v", api.ErrOutcomeUnknown, err)
	case errors.Is(err, raftstore.ErrNotLeader), errors.Is(err, raftstore.ErrClosed),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return fmt.Errorf("%w: %v", api.ErrUnavailable, err)
	}
	return err
}
