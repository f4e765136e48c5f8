package node

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/flotilla/flotilla/api"
	"github.com/flotilla/flotilla/meta"
	"github.com/flotilla/flotilla/raftstore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
)

// errNoLeader: no leader is known yet, or its gRPC address is not.
var errNoLeader = errors.New("no leader known")

// peers keeps one gRPC client per node address.
type peers struct {
	mu      sync.Mutex
	clients map[string]*Client
}

func (p *peers) get(addr string) (*Client, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.clients[addr]; ok {
		return c, nil
	}
	c, err := Dial(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: time.Second, Timeout: time.Second, PermitWithoutStream: true}))
	if err != nil {
		return nil, err
	}
	if p.clients == nil {
		p.clients = map[string]*Client{}
	}
	p.clients[addr] = c
	return c, nil
}

func (p *peers) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.clients {
		c.Close()
	}
	p.clients = nil
}

// retryable reports whether an attempt failed without effect, so that it
// can be sent again (to the same or a new leader). A write that may have
// reached the leader is never retried here (see apply); reads and
// membership calls are safe to resend.
func retryable(err error) bool {
	// First: a write that may have been applied is never sent again, even
	// if the leader changed meanwhile.
	if errors.Is(err, raftstore.ErrOutcomeUnknown) {
		return false
	}
	if errors.Is(err, raftstore.ErrNotLeader) || errors.Is(err, errNoLeader) || errors.Is(err, errLeaderChanged) ||
		errors.Is(err, errResend) {
		return true
	}
	switch status.Code(err) {
	case codes.FailedPrecondition, codes.Unavailable:
		return true
	}
	return false
}

// withLeader runs fn against the leader: locally when this node leads,
// otherwise through the leader's gRPC client. While there is no leader, or
// leadership moves, it retries with jitter until the hold timeout.
func (n *Node) withLeader(ctx context.Context, fn func(ctx context.Context, local bool, c *Client) error) error {
	return n.withLeaderBounded(ctx, n.cfg.ForwardTimeout, fn)
}

// withLeaderBounded is withLeader with a bound on each attempt (0: none
// beyond ctx; keepalive and the leader-change watch still end an attempt
// whose leader is gone).
func (n *Node) withLeaderBounded(ctx context.Context, attempt time.Duration, fn func(ctx context.Context, local bool, c *Client) error) error {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.LeaderHoldTimeout)
	defer cancel()
	backoff := 10 * time.Millisecond
	for {
		err := n.tryLeader(ctx, attempt, fn)
		if err == nil || !retryable(err) {
			return err
		}
		wait := backoff/2 + mrand.N(backoff)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %v (gave up after %s: %v)", api.ErrUnavailable, errNoLeader, n.cfg.LeaderHoldTimeout, err)
		case <-time.After(wait):
		}
		backoff = min(backoff*2, 500*time.Millisecond)
	}
}

// errLeaderChanged: raft reports another leader than the one an attempt
// was sent to; the attempt was abandoned.
var errLeaderChanged = errors.New("leader changed during the request")

func (n *Node) heartbeatTimeout() time.Duration {
	if hb := n.cfg.Raft.HeartbeatTimeout; hb > 0 {
		return hb
	}
	return time.Second
}

// leaderClient returns the leader's id and a gRPC client for it, or
// errNoLeader while no other node is known to lead.
func (n *Node) leaderClient() (string, *Client, error) {
	_, leaderID := n.store.Leader()
	if leaderID == "" || leaderID == n.cfg.NodeID {
		return "", nil, errNoLeader
	}
	members, err := n.store.Members()
	if err != nil {
		return "", nil, err
	}
	m, ok := members[leaderID]
	if !ok || m.GRPCAddr == "" {
		return "", nil, errNoLeader
	}
	c, err := n.peers.get(m.GRPCAddr)
	if err != nil {
		return "", nil, err
	}
	return leaderID, c, nil
}

func (n *Node) tryLeader(ctx context.Context, attempt time.Duration, fn func(ctx context.Context, local bool, c *Client) error) error {
	if n.store.IsLeader() {
		return fn(ctx, true, nil)
	}
	leaderID, c, err := n.leaderClient()
	if err != nil {
		return err
	}
	// One attempt is bounded (a leader cut off mid-request never answers)
	// and abandoned soon after raft names another leader: after a grace,
	// as the old leader can still confirm a write it committed (see
	// raftstore's waitStable).
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	if attempt > 0 {
		var stopTimer context.CancelFunc
		actx, stopTimer = context.WithTimeoutCause(actx, attempt, errors.New("forwarded request timed out"))
		defer stopTimer()
	}
	changed := make(chan struct{})
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-actx.Done():
				return
			case <-t.C:
				if _, id := n.store.Leader(); id != leaderID {
					close(changed)
					select {
					case <-stop:
					case <-actx.Done():
					case <-time.After(n.heartbeatTimeout()):
						cancel()
					}
					return
				}
			}
		}
	}()
	err = fn(actx, false, c)
	select {
	case <-changed:
		if err != nil && !errors.Is(err, raftstore.ErrOutcomeUnknown) {
			return fmt.Errorf("%w: %v", errLeaderChanged, err)
		}
	default:
	}
	return err
}

// errResend: an attempt's outcome is unknown, and the command carries an
// ID, so it may be sent again (the state machine applies it at most once).
var errResend = errors.New("outcome unknown; resending under the same command id")

// apply commits c on the leader, wherever it is. The command gets an ID, so
// that an attempt whose outcome is unknown (leader lost, connection cut)
// can be resent safely until the hold timeout.
func (n *Node) apply(ctx context.Context, c *meta.Command) (*meta.Result, error) {
	if c.ID == "" {
		c.ID = newCommandID()
	}
	var res *meta.Result
	var unknown error
	// A write is not cut short by a timer (a large manifest may take a while
	// to commit); a leader that is gone ends it through keepalive or the
	// leader-change watch, and the hold timeout bounds it all.
	err := n.withLeaderBounded(ctx, 0, func(actx context.Context, local bool, cl *Client) error {
		err := n.applyAttempt(actx, local, cl, c, &res)
		if errors.Is(err, raftstore.ErrOutcomeUnknown) && ctx.Err() == nil {
			unknown = err
			return fmt.Errorf("%w: %v", errResend, err)
		}
		return err
	})
	if err != nil && unknown != nil {
		// Gave up: an earlier attempt may still have been applied.
		return nil, fmt.Errorf("%w: %v (then: %v)", raftstore.ErrOutcomeUnknown, unknown, err)
	}
	return res, err
}

// newCommandID is this node's clock then random bits: IDs from one node
// sort by time, so the state machine inserts them near the end of its
// index instead of all over it.
func newCommandID() string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(time.Now().UnixNano()))
	_, _ = rand.Read(b[8:]) // crypto/rand: never fails on supported platforms
	return hex.EncodeToString(b[:])
}

// applyAttempt sends c to the leader once (locally when this node leads).
func (n *Node) applyAttempt(ctx context.Context, local bool, cl *Client, c *meta.Command, res **meta.Result) error {
	if local {
		var err error
		*res, err = n.store.Apply(ctx, c)
		return err
	}
	data, err := c.Encode()
	if err != nil {
		return err
	}
	*res, err = cl.apply(ctx, data)
	switch {
	case err == nil:
		return nil
	case status.Code(err) == codes.FailedPrecondition:
		return err // refused before the log: retry on the next leader
	case errors.Is(err, errLeaderChanged), status.Code(err) == codes.Unknown,
		status.Code(err) == codes.DeadlineExceeded, status.Code(err) == codes.Canceled:
		// Sent, outcome not known.
		return fmt.Errorf("%w: %v", raftstore.ErrOutcomeUnknown, err)
	}
	return err
}

// readIndex is the leader's read index, asked locally or over gRPC.
func (n *Node) readIndex(ctx context.Context) (uint64, error) {
	var idx uint64
	err := n.withLeader(ctx, func(ctx context.Context, local bool, cl *Client) error {
		var err error
		if local {
			idx, err = n.store.ReadIndex(ctx)
		} else {
			var resp *readIndexResponse
			resp, err = cl.readIndex(ctx, n.store.AppliedIndex())
			if err == nil {
				idx = resp.Index
				n.store.NoteStable(resp.Stable)
			}
			if status.Code(err) == codes.DeadlineExceeded && ctx.Err() == nil {
				err = errNoLeader // this attempt timed out; a read may be asked again
			}
		}
		return err
	})
	return idx, err
}

// rpcErr turns a store error into a gRPC status a caller can classify.
func rpcErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raftstore.ErrNotLeader):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, raftstore.ErrOutcomeUnknown):
		return status.Error(codes.Unknown, err.Error())
	case errors.Is(err, raftstore.ErrClosed):
		return status.Error(codes.Unavailable, err.Error())
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codes.Internal, err.Error())
}

func (n *Node) rpcApply(ctx context.Context, req *applyRequest) (*applyResponse, error) {
	c, err := meta.DecodeCommand(req.Command)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	res, err := n.store.Apply(ctx, c)
	if err != nil {
		return nil, rpcErr(err)
	}
	// The forwarding follower waits to apply this entry: tell it now that
	// it is committed.
	n.store.Nudge()
	return &applyResponse{Result: *res}, nil
}

func (n *Node) rpcReadIndex(ctx context.Context, req *readIndexRequest) (*readIndexResponse, error) {
	idx, err := n.store.ReadIndex(ctx)
	if err != nil {
		return nil, rpcErr(err)
	}
	if req.Applied < idx {
		n.store.Nudge() // the asking follower has yet to learn of idx
	}
	return &readIndexResponse{Index: idx, Stable: n.store.StableIndex()}, nil
}

func (n *Node) rpcJoin(ctx context.Context, req *joinRequest) (*empty, error) {
	if req.Member.ID == "" || req.Member.RaftAddr == "" {
		return nil, status.Error(codes.InvalidArgument, "join needs an id and a raft address")
	}
	err := n.withLeader(ctx, func(ctx context.Context, local bool, cl *Client) error {
		if !local {
			return cl.join(ctx, req)
		}
		return rpcErr(n.addMember(ctx, req))
	})
	if err != nil {
		return nil, rpcErr(err)
	}
	return &empty{}, nil
}

// addMember adds a node to raft (idempotent) and records its addresses.
func (n *Node) addMember(ctx context.Context, req *joinRequest) error {
	servers, err := n.store.Servers()
	if err != nil {
		return err
	}
	present := false
	for _, s := range servers {
		if s.ID == req.Member.ID {
			present = s.Address == req.Member.RaftAddr && s.Voter == req.Voter
			if !present && s.Address != req.Member.RaftAddr {
				if err := n.store.RemoveServer(ctx, s.ID); err != nil {
					return err
				}
			}
		}
	}
	if !present {
		n.logger.Info("adding member", "id", req.Member.ID, "raft", req.Member.RaftAddr, "voter", req.Voter)
		if err := n.store.AddServer(ctx, req.Member.ID, req.Member.RaftAddr, req.Voter); err != nil {
			return err
		}
	}
	m := req.Member
	_, err = n.store.Apply(ctx, &meta.Command{Type: meta.CmdSetMember, Member: &m})
	return err
}

func (n *Node) rpcRemove(ctx context.Context, req *removeRequest) (*empty, error) {
	err := n.withLeader(ctx, func(ctx context.Context, local bool, cl *Client) error {
		if !local {
			return cl.Remove(ctx, req.ID)
		}
		if err := n.store.RemoveServer(ctx, req.ID); err != nil {
			return rpcErr(err)
		}
		_, err := n.store.Apply(ctx, &meta.Command{Type: meta.CmdRemoveMember, Member: &meta.Member{ID: req.ID}})
		return rpcErr(err)
	})
	if err != nil {
		return nil, rpcErr(err)
	}
	return &empty{}, nil
}

func (n *Node) rpcTransfer(ctx context.Context, req *transferRequest) (*empty, error) {
	err := n.withLeader(ctx, func(ctx context.Context, local bool, cl *Client) error {
		if !local {
			return cl.TransferLeadership(ctx, req.ID)
		}
		addr := ""
		if req.ID != "" {
			servers, err := n.store.Servers()
			if err != nil {
				return err
			}
			for _, s := range servers {
				if s.ID == req.ID {
					addr = s.Address
				}
			}
			if addr == "" {
				return status.Errorf(codes.NotFound, "no member %q", req.ID)
			}
		}
		return rpcErr(n.store.TransferLeadership(req.ID, addr))
	})
	if err != nil {
		return nil, rpcErr(err)
	}
	return &empty{}, nil
}

func (n *Node) rpcStatus(ctx context.Context) (*api.ClusterStatus, error) {
	st, err := n.Status(ctx)
	return st, rpcErr(err)
}

// self is this node's member record.
func (n *Node) self() meta.Member {
	return meta.Member{ID: n.cfg.NodeID, RaftAddr: n.cfg.RaftAddr, GRPCAddr: advertise(n.grpcLn.Addr().String(), n.cfg.RaftAddr),
		HTTPAddr: advertise(n.HTTPAddr(), n.cfg.RaftAddr)}
}

// advertise fills an unspecified listen host (":5000", "0.0.0.0:5000")
// with the raft address's host, which peers can reach.
func advertise(listen, raftAddr string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		return listen
	}
	rh, _, err := net.SplitHostPort(raftAddr)
	if err != nil {
		return listen
	}
	return net.JoinHostPort(rh, port)
}

// joinLoop asks the members named by --join to add this node, until one
// does; a node that already has raft state rejoins on its own.
func (n *Node) joinLoop(ctx context.Context) {
	req := &joinRequest{Member: n.self(), Voter: n.cfg.Voter}
	backoff := 200 * time.Millisecond
	for {
		for _, addr := range n.cfg.Join {
			c, err := n.peers.get(addr)
			if err == nil {
				cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
				err = c.join(cctx, req)
				cancel()
			}
			if err == nil {
				n.logger.Info("joined cluster", "via", addr)
				return
			}
			n.logger.Warn("join failed, retrying", "via", addr, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// registerLoop keeps this node's member record (its gRPC and HTTP
// addresses) current in the state machine, so peers can reach it.
func (n *Node) registerLoop(ctx context.Context) {
	want := n.self()
	for {
		members, err := n.store.Members()
		if err == nil && members[want.ID] == want {
			select {
			case <-ctx.Done():
				return
			case <-time.After(30 * time.Second):
				continue
			}
		}
		if n.isMember() {
			if _, err := n.apply(ctx, &meta.Command{Type: meta.CmdSetMember, Member: &want}); err != nil && ctx.Err() == nil {
				n.logger.Warn("recording member addresses failed", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// isMember reports whether this node is in the raft configuration.
func (n *Node) isMember() bool {
	servers, err := n.store.Servers()
	if err != nil {
		return false
	}
	for _, s := range servers {
		if s.ID == n.cfg.NodeID {
			return true
		}
	}
	return false
}
