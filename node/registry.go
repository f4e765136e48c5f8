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
	if err := r.WaitApplied(ctx, res.Index); err != nil {
		return nil, fmt.Errorf("%w: waiting for index %d: %v", api.ErrOutcomeUnknown, res.Index, err)
	}
	return res, nil
}

// Fence waits until local state reflects what opts asks: with Stale only
// the client's MinIndex, provided this node heard from the leader within
// MaxStaleness (else it falls back to a read index); otherwise everything
// committed before the call.
func (r *registry) Fence(ctx context.Context, opts api.ReadOptions) error {
	target := opts.MinIndex
	if opts.Stale && time.Since(r.LastContact()) > r.node.cfg.MaxStaleness {
		opts.Stale = false
	}
	if !opts.Stale {
		idx, err := r.node.reads.Get(ctx)
		if err != nil {
			return mapStoreErr(err)
		}
		target = max(target, idx)
	}
	if err := r.WaitApplied(ctx, target); err != nil {
		return fmt.Errorf("%w: waiting for index %d: %v", api.ErrUnavailable, target, err)
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
