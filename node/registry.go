package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/flotilla/flotilla/api"
	"github.com/flotilla/flotilla/meta"
	"github.com/flotilla/flotilla/raftstore"
	"github.com/prometheus/client_golang/prometheus"
)

// registry adapts the raft store to api.Registry: local reads come straight
// from the state machine; Apply and Fence add the consistency rules.
type registry struct {
	*raftstore.Store
	node *Node
	// reads by how freshness was ensured
	leaseReads, indexReads, staleReads prometheus.Counter
}

func newRegistry(n *Node, reg prometheus.Registerer) *registry {
	reads := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flotilla_reads_total",
		Help: "Metadata reads by how their freshness was ensured: lease (local, no round trip), read_index (through the leader), stale.",
	}, []string{"path"})
	reg.MustRegister(reads)
	return &registry{Store: n.store, node: n, leaseReads: reads.WithLabelValues("lease"),
		indexReads: reads.WithLabelValues("read_index"), staleReads: reads.WithLabelValues("stale")}
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

// Read runs read under the consistency opts asks for (see api.Registry).
//
// Stale: local state, once this node has applied the client's MinIndex,
// provided it heard from the leader within MaxStaleness and reaches
// MinIndex within the hold timeout; otherwise as by default.
//
// By default the read is linearizable. With a read lease (raftstore,
// lease.go) it is served from local state with no round trip: read, wait
// until the stable index covers what was read, and check the lease held
// throughout; a lease that lapsed meanwhile means reading again the slow
// way. Without a lease: the leader's read index, then read, then the same
// wait for the stable index.
func (r *registry) Read(ctx context.Context, opts api.ReadOptions, read func() error) error {
	if opts.Stale && r.staleOK(ctx, opts.MinIndex) {
		r.staleReads.Inc()
		return read()
	}
	if l, ok := r.LocalReadLease(); ok && opts.MinIndex <= r.AppliedIndex() {
		err := read()
		if serr := r.settle(ctx); serr != nil {
			return serr
		}
		if r.LeaseHolds(l) {
			r.leaseReads.Inc()
			return err
		}
	}
	r.indexReads.Inc()
	if err := r.fence(ctx, opts.MinIndex); err != nil {
		return err
	}
	err := read()
	if serr := r.settle(ctx); serr != nil {
		return serr
	}
	return err
}

// staleOK reports whether a stale read may be served here now, waiting
// (bounded) for minIndex.
func (r *registry) staleOK(ctx context.Context, minIndex uint64) bool {
	if time.Since(r.LastContact()) > r.node.cfg.MaxStaleness {
		return false
	}
	if minIndex <= r.AppliedIndex() {
		return true
	}
	wctx, cancel := context.WithTimeout(ctx, r.node.cfg.LeaderHoldTimeout)
	defer cancel()
	return r.WaitApplied(wctx, minIndex) == nil
}

// fence waits until local state reflects every write acknowledged before
// the call, via the leader's read index. A minIndex beyond the read index
// names no write that happened: it is refused rather than waited for.
func (r *registry) fence(ctx context.Context, minIndex uint64) error {
	var idx uint64
	var err error
	leader := r.IsLeader()
	if leader {
		idx, err = r.ReadIndex(ctx) // batched in the store; no second batcher
	}
	if !leader || errors.Is(err, raftstore.ErrNotLeader) {
		idx, err = r.node.reads.Get(ctx) // asks whoever leads now, retrying meanwhile
	}
	if err != nil {
		// A read changes nothing, so every failure to fence is one the
		// client may retry.
		if errors.Is(err, api.ErrUnavailable) {
			return err
		}
		return fmt.Errorf("%w: read index: %v", api.ErrUnavailable, err)
	}
	if minIndex > idx {
		return fmt.Errorf("%w: asked for %d, the cluster has committed %d", api.ErrIndexAhead, minIndex, idx)
	}
	wctx, cancel := context.WithTimeout(ctx, r.node.cfg.LeaderHoldTimeout)
	defer cancel()
	if err := r.WaitApplied(wctx, idx); err != nil {
		return fmt.Errorf("%w: waiting for index %d: %v", api.ErrUnavailable, idx, err)
	}
	return nil
}

// settle waits until every lease holder has applied the state a finished
// read saw, so that no node can show an older state afterwards. The stable
// index comes pushed on the lease stream; while it does not move, the
// leader is asked (its read index answer carries it).
func (r *registry) settle(ctx context.Context) error {
	v := r.VisibleIndex()
	if r.StableIndex() >= v {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, r.node.cfg.LeaderHoldTimeout)
	defer cancel()
	for {
		wctx, wcancel := context.WithTimeout(ctx, 100*time.Millisecond)
		err := r.WaitStable(wctx, v)
		wcancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w: index %d not yet applied by every lease holder", api.ErrUnavailable, v)
		}
		if !r.IsLeader() {
			_, _ = r.node.reads.Get(ctx)
		}
	}
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
