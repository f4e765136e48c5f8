package node

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"time"

	"github.com/flotilla/flotilla/raftstore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Read leases over gRPC: the transport of raftstore's lease.go. Each
// follower keeps one stream open to the leader.

// rpcLease serves one follower's lease stream on the leader.
func (n *Node) rpcLease(ss grpc.ServerStream) error {
	var first leaseMessage
	if err := ss.RecvMsg(&first); err != nil {
		return err
	}
	if first.ID == "" {
		return status.Error(codes.InvalidArgument, "lease stream needs the follower's id")
	}
	id := first.ID
	stream, news, detach, err := n.store.LeaseAttach(id)
	if err != nil {
		return rpcErr(err)
	}
	defer detach()
	if err := n.store.LeaseMessage(id, stream, first.Seq, first.Applied); err != nil {
		return rpcErr(err)
	}
	recvErr := make(chan error, 1)
	go func() {
		for {
			var m leaseMessage
			if err := ss.RecvMsg(&m); err != nil {
				recvErr <- err
				return
			}
			if err := n.store.LeaseMessage(id, stream, m.Seq, m.Applied); err != nil {
				recvErr <- rpcErr(err)
				return
			}
		}
	}()
	for {
		g, err := n.store.LeaseGrant(id)
		if err != nil {
			return rpcErr(err)
		}
		if err := ss.SendMsg(&g); err != nil {
			return err
		}
		select {
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case <-ss.Context().Done():
			return ss.Context().Err()
		case _, ok := <-news:
			if !ok {
				return status.Error(codes.FailedPrecondition, "no longer the leader")
			}
		}
	}
}

// leaseLoop keeps this node's lease stream to the current leader while it
// is a follower.
func (n *Node) leaseLoop(ctx context.Context) {
	for ctx.Err() == nil {
		err := n.leaseSession(ctx)
		n.store.LeaseReset()
		if err != nil && ctx.Err() == nil && !errors.Is(err, errNoLeader) {
			n.logger.Debug("lease stream ended", "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(25*time.Millisecond + rand.N(25*time.Millisecond)):
		}
	}
}

func (n *Node) leaseSession(ctx context.Context) error {
	if n.store.IsLeader() {
		return errNoLeader
	}
	leaderID, c, err := n.leaderClient()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.lease(ctx)
	if err != nil {
		return err
	}
	go func() {
		defer cancel()
		for {
			var g raftstore.LeaseGrant
			if err := stream.RecvMsg(&g); err != nil {
				return
			}
			n.store.LeaseUpdate(leaderID, g)
		}
	}()
	every := n.store.LeaseRenewInterval()
	for {
		if _, id := n.store.Leader(); id != leaderID || n.store.IsLeader() {
			return errLeaderChanged
		}
		applied := n.store.AppliedIndex()
		seq := n.store.LeaseNextSeq(leaderID)
		if err := stream.SendMsg(&leaseMessage{ID: n.cfg.NodeID, Seq: seq, Applied: applied}); err != nil {
			return err
		}
		wctx, wcancel := context.WithTimeout(ctx, every)
		_ = n.store.WaitApplied(wctx, applied+1)
		wcancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}
