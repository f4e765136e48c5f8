package raftstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flotilla/flotilla/meta"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	bolt "go.etcd.io/bbolt"
)

var (
	// ErrNotLeader: this node cannot apply commands; nothing was appended,
	// so the command may be sent to the leader.
	ErrNotLeader = errors.New("raftstore: not the leader")
	// ErrOutcomeUnknown: the command was handed to raft but leadership was
	// lost (or the caller gave up) before its outcome was known. It may or
	// may not have been committed; never report it as success.
	ErrOutcomeUnknown = errors.New("raftstore: outcome unknown")
	// ErrClosed: the store is shutting down.
	ErrClosed = errors.New("raftstore: closed")
)

// Config configures one node's raft and state machine.
type Config struct {
	NodeID string
	// Dir holds raft.db (log and stable store), snapshots/ and fsm.db.
	Dir string
	// BindAddr is the raft TCP listen address; AdvertiseAddr what peers dial
	// (defaults to BindAddr).
	BindAddr      string
	AdvertiseAddr string
	// Bootstrap makes a node with no raft state form a one-node cluster.
	Bootstrap bool
	// Nonvoter is recorded for status; joining as non-voter is the leader's call.
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	TrailingLogs      uint64
	HeartbeatTimeout  time.Duration
	ElectionTimeout   time.Duration
	// ReadLease is how long a follower's read lease lasts (default half the
	// heartbeat timeout): the longest a write waits for a follower that
	// stopped answering, and what a new leader waits before it serves.
	ReadLease time.Duration
	// LogLevel for raft's own logger (default INFO).
	LogLevel string
	Logger   *slog.Logger
}

func (c *Config) withDefaults() Config {
	out := *c
	if out.SnapshotThreshold == 0 {
		out.SnapshotThreshold = 8192
	}
	if out.SnapshotInterval == 0 {
		out.SnapshotInterval = 2 * time.Minute
	}
	if out.TrailingLogs == 0 {
		out.TrailingLogs = 10240
	}
	if out.HeartbeatTimeout == 0 {
		out.HeartbeatTimeout = time.Second
	}
	if out.ElectionTimeout == 0 {
		out.ElectionTimeout = time.Second
	}
	if out.ReadLease == 0 {
		out.ReadLease = out.HeartbeatTimeout / 2
	}
	if out.LogLevel == "" {
		out.LogLevel = "INFO"
	}
	if out.AdvertiseAddr == "" {
		out.AdvertiseAddr = out.BindAddr
	}
	if out.Logger == nil {
		out.Logger = slog.Default()
	}
	return out
}

// Store is one node's raft plus its state machine.
type Store struct {
	cfg       Config
	logger    *slog.Logger
	raft      *raft.Raft
	fsm       *fsm
	logStore  *raftboltdb.BoltStore
	transport *raft.NetworkTransport
	snapshots *raft.FileSnapshotStore

	readyTerm atomic.Uint64 // term in which this leader's Barrier completed
	readyCh   chan struct{} // closed and replaced when readyTerm changes
	readyMu   sync.Mutex

	reads        *IndexBatcher
	stable       *indexWaiter // the stable index (see lease.go)
	leases       *leaseTable
	lease        *followerLease
	nudge        chan struct{}
	transferring atomic.Bool
	started      atomic.Bool // s.raft is set
	// hadState: raft found a log or snapshot on open (a restart, not a
	// brand-new node).
	hadState bool

	closeOnce sync.Once
	done      chan struct{}
	wg        sync.WaitGroup
}

// Open starts raft and the state machine.
func Open(ctx context.Context, c Config) (*Store, error) {
	cfg := c.withDefaults()
	if cfg.NodeID == "" || cfg.Dir == "" || cfg.BindAddr == "" {
		return nil, errors.New("raftstore: NodeID, Dir and BindAddr are required")
	}
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("raftstore: %w", err)
	}
	s := &Store{cfg: cfg, logger: cfg.Logger, readyCh: make(chan struct{}), done: make(chan struct{}),
		nudge: make(chan struct{}, 1)}
	var err error
	if s.fsm, err = openFSM(filepath.Join(cfg.Dir, "fsm.db"), cfg.Logger); err != nil {
		return nil, err
	}
	hlog := hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.LevelFromString(cfg.LogLevel),
		Output: os.Stderr, JSONFormat: true})
	if s.logStore, err = raftboltdb.New(raftboltdb.Options{Path: filepath.Join(cfg.Dir, "raft.db")}); err != nil {
		s.fsm.close()
		return nil, fmt.Errorf("raftstore: log store: %w", err)
	}
	if s.snapshots, err = raft.NewFileSnapshotStoreWithLogger(cfg.Dir, 2, hlog); err != nil {
		s.closeStores()
		return nil, fmt.Errorf("raftstore: snapshot store: %w", err)
	}
	s.fsm.onWriteFailure = s.stepDownIfLeader
	s.stable = newIndexWaiter()
	s.leases = newLeaseTable(cfg.ReadLease, cfg.HeartbeatTimeout/2, cfg.ElectionTimeout, s.fsm.applied.get, s.stable)
	s.lease = &followerLease{dur: cfg.ReadLease}
	s.fsm.onApplied = func() { s.leases.recompute(time.Now()) }
	if err := s.catchUpFromSnapshot(); err != nil {
		s.closeStores()
		return nil, err
	}
	adv, err := net.ResolveTCPAddr("tcp", cfg.AdvertiseAddr)
	if err != nil {
		s.closeStores()
		return nil, fmt.Errorf("raftstore: advertise address %q: %w", cfg.AdvertiseAddr, err)
	}
	if s.transport, err = raft.NewTCPTransportWithLogger(cfg.BindAddr, adv, 5, 10*time.Second, hlog); err != nil {
		s.closeStores()
		return nil, fmt.Errorf("raftstore: transport: %w", err)
	}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.Logger = hlog
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.TrailingLogs = cfg.TrailingLogs
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.HeartbeatTimeout / 2
	rc.NoSnapshotRestoreOnStart = true // the state machine is durable on its own
	rc.BatchApplyCh = true             // let concurrent Applies share one append and fsync
	notify := make(chan bool, 16)
	rc.NotifyCh = notify

	existing, err := raft.HasExistingState(s.logStore, s.logStore, s.snapshots)
	if err != nil {
		s.closeStores()
		return nil, fmt.Errorf("raftstore: %w", err)
	}
	s.hadState = existing
	// A restarted voter must not vote within a heartbeat timeout of its last
	// contact with the leader: leader leases rely on it (see lease.go). The
	// crash was after that contact, so waiting a heartbeat timeout now is
	// enough. A node whose data dir was wiped but that is still a member
	// counts as restarted too, so every start waits.
	select {
	case <-time.After(cfg.HeartbeatTimeout):
	case <-ctx.Done():
		s.closeStores()
		return nil, ctx.Err()
	}
	if s.raft, err = raft.NewRaft(rc, s.fsm, s.logStore, s.logStore, s.snapshots, s.transport); err != nil {
		s.closeStores()
		return nil, fmt.Errorf("raftstore: %w", err)
	}
	s.started.Store(true)
	if !existing && cfg.Bootstrap {
		f := s.raft.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{
			Suffrage: raft.Voter, ID: rc.LocalID, Address: raft.ServerAddress(cfg.AdvertiseAddr)}}})
		if err := f.Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			s.Close()
			return nil, fmt.Errorf("raftstore: bootstrap: %w", err)
		}
	}
	s.reads = NewIndexBatcher(s.leaderRound)
	runCtx, cancel := context.WithCancel(context.Background())
	s.wg.Add(6)
	go s.watchLeadership(notify)
	go s.nudgeLoop()
	go s.every(cfg.HeartbeatTimeout/8, s.renewSelfLease)
	// Expired follower leases may raise the stable index between the
	// events that recompute it.
	go s.every(25*time.Millisecond, func() { s.leases.recompute(time.Now()) })
	go func() { defer s.wg.Done(); s.reads.Run(runCtx) }()
	go func() { defer s.wg.Done(); <-s.done; cancel() }()
	return s, nil
}

// catchUpFromSnapshot restores the newest snapshot when the state file is
// behind it (a lost or replaced fsm.db): raft is told not to restore on start.
func (s *Store) catchUpFromSnapshot() error {
	list, err := s.snapshots.List()
	if err != nil || len(list) == 0 {
		return err
	}
	if list[0].Index <= s.fsm.applied.get() {
		return nil
	}
	_, rc, err := s.snapshots.Open(list[0].ID)
	if err != nil {
		return fmt.Errorf("raftstore: open snapshot: %w", err)
	}
	s.logger.Warn("state file behind newest snapshot, restoring", "snapshot", list[0].ID,
		"snapshot_index", list[0].Index, "applied", s.fsm.applied.get())
	return s.fsm.Restore(rc)
}

func (s *Store) closeStores() {
	if s.logStore != nil {
		s.logStore.Close()
	}
	s.fsm.close()
}

// watchLeadership makes a new leader apply a no-op command in its term
// before it accepts writes or serves read indexes: once that command is
// applied, everything committed by earlier terms is applied too (a Barrier
// that the state machine, and so the applied-index notifier, sees).
func (s *Store) watchLeadership(notify <-chan bool) {
	defer s.wg.Done()
	for {
		select {
		case <-s.done:
			return
		case leader := <-notify:
			if !leader {
				s.leases.stop()
				s.setReadyTerm(0)
				continue
			}
			term := s.raft.CurrentTerm()
			if err := s.applyNoop(); err != nil {
				s.logger.Warn("barrier after election failed", "term", term, "err", err)
				continue
			}
			if s.raft.State() == raft.Leader && s.raft.CurrentTerm() == term {
				s.logger.Info("leader ready", "term", term, "applied", s.fsm.applied.get())
				s.leases.start(term, time.Now())
				s.setReadyTerm(term)
			}
		}
	}
}

// Healthy reports whether the state machine is applying (false while its
// writes fail, e.g. on a full disk).
func (s *Store) Healthy() bool { return !s.fsm.failing.Load() }

// stepDownIfLeader hands leadership to another voter when this node cannot
// write its state machine: a leader that cannot apply stops the cluster.
// At most one transfer runs at a time.
func (s *Store) stepDownIfLeader() {
	if !s.started.Load() || s.raft.State() != raft.Leader || !s.transferring.CompareAndSwap(false, true) {
		return
	}
	s.leases.setTransferring(true, time.Now())
	go func() {
		defer s.transferring.Store(false)
		defer func() { s.leases.setTransferring(false, time.Now()) }()
		s.logger.Warn("state machine cannot write: handing leadership away")
		if err := s.raft.LeadershipTransfer().Error(); err != nil {
			s.logger.Warn("leadership transfer failed", "err", err)
		}
	}()
}

// Nudge asks the leader to tell followers its commit index now rather than
// at the next heartbeat (raft sends the commit index only with entries or
// heartbeats): a follower waiting to apply a write it forwarded, or to reach
// a read index, would otherwise wait up to a heartbeat interval. It appends
// one no-op; nudges that arrive while one is in flight share it.
func (s *Store) Nudge() {
	select {
	case s.nudge <- struct{}{}:
	default:
	}
}

func (s *Store) nudgeLoop() {
	defer s.wg.Done()
	for {
		select {
		case <-s.done:
			return
		case <-s.nudge:
		}
		if s.leaderReady() {
			if err := s.applyNoop(); err != nil {
				s.logger.Debug("nudge failed", "err", err)
			}
		}
	}
}

func (s *Store) applyNoop() error {
	data, err := (&meta.Command{Type: meta.CmdNoop}).Encode()
	if err != nil {
		return err
	}
	return s.raft.Apply(data, 0).Error()
}

func (s *Store) setReadyTerm(t uint64) {
	s.readyMu.Lock()
	defer s.readyMu.Unlock()
	s.readyTerm.Store(t)
	close(s.readyCh)
	s.readyCh = make(chan struct{})
}

// leaderReady reports whether this node is leader and has completed the
// Barrier of its current term.
func (s *Store) leaderReady() bool {
	t := s.readyTerm.Load()
	return t != 0 && s.raft.State() == raft.Leader && s.raft.CurrentTerm() == t
}

// awaitLeaderReady waits while this node is leader but its Barrier has not
// completed; it fails at once with ErrNotLeader on a non-leader.
func (s *Store) awaitLeaderReady(ctx context.Context) error {
	for {
		if s.leaderReady() {
			return nil
		}
		if s.raft.State() != raft.Leader {
			return ErrNotLeader
		}
		s.readyMu.Lock()
		ch := s.readyCh
		s.readyMu.Unlock()
		select {
		case <-ch:
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		case <-s.done:
			return ErrClosed
		}
	}
}

// Apply stamps c with the leader's clock, commits it and returns what the
// state machine answered. Only the leader applies: elsewhere it returns
// ErrNotLeader without side effects.
func (s *Store) Apply(ctx context.Context, c *meta.Command) (*meta.Result, error) {
	if err := s.awaitLeaderReady(ctx); err != nil {
		return nil, err
	}
	term := s.readyTerm.Load()
	began := time.Now()
	c.Time = began.UnixNano()
	data, err := c.Encode()
	if err != nil {
		return nil, err
	}
	f := s.raft.Apply(data, 0)
	errc := make(chan error, 1)
	go func() { errc <- f.Error() }()
	select {
	case err = <-errc:
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %v", ErrOutcomeUnknown, ctx.Err())
	}
	switch {
	case err == nil:
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		// Refused before it reached the log: safe to send to the next leader.
		return nil, ErrNotLeader
	case errors.Is(err, raft.ErrRaftShutdown):
		return nil, ErrClosed
	default:
		// ErrLeadershipLost and the like: it may or may not commit.
		return nil, fmt.Errorf("%w: %v", ErrOutcomeUnknown, err)
	}
	res, ok := f.Response().(*meta.Result)
	if !ok {
		return nil, fmt.Errorf("raftstore: unexpected response %T", f.Response())
	}
	// Committed: a quorum received it after began, which renews the
	// leader's own lease (see renewSelfLease).
	s.leases.extendSelf(term, began)
	// Acknowledge only once every lease holder has applied it.
	if err := s.waitStable(ctx, term, res.Index); err != nil {
		return nil, fmt.Errorf("%w: committed at index %d but not confirmed: %v", ErrOutcomeUnknown, res.Index, err)
	}
	return res, nil
}

// HadState reports whether raft found existing state when it opened: a
// restarted node rejoins from its data dir and needs no join.
func (s *Store) HadState() bool { return s.hadState }

// AppliedIndex is the index of the last entry applied to the state machine.
func (s *Store) AppliedIndex() uint64 { return s.fsm.applied.get() }

// CommitIndex is raft's commit index as this node knows it.
func (s *Store) CommitIndex() uint64 { return s.raft.CommitIndex() }

// WaitApplied blocks until the state machine has applied index.
func (s *Store) WaitApplied(ctx context.Context, index uint64) error {
	return s.fsm.applied.wait(ctx, index)
}

// ReadIndex is the leader's read index: an index such that every write
// acknowledged before the call is at or below it. Concurrent callers share
// one leadership confirmation. It fails with ErrNotLeader elsewhere.
func (s *Store) ReadIndex(ctx context.Context) (uint64, error) {
	if err := s.awaitLeaderReady(ctx); err != nil {
		return 0, err
	}
	return s.reads.Get(ctx)
}

// IsLeader reports whether this node is the leader ready to serve.
func (s *Store) IsLeader() bool { return s.leaderReady() }

// Leader returns the leader's raft address and id, empty when unknown.
func (s *Store) Leader() (addr, id string) {
	a, i := s.raft.LeaderWithID()
	return string(a), string(i)
}

// LastContact is when this node last heard from the leader (now, on the
// leader itself).
func (s *Store) LastContact() time.Time {
	if s.raft.State() == raft.Leader {
		return time.Now()
	}
	return s.raft.LastContact()
}

// State is raft's state name: Leader, Follower, Candidate, Shutdown.
func (s *Store) State() string { return s.raft.State().String() }

// Server is one member of the raft configuration.
type Server struct {
	ID      string
	Address string
	Voter   bool
}

// Servers returns the current raft configuration.
func (s *Store) Servers() ([]Server, error) {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, err
	}
	var out []Server
	for _, srv := range f.Configuration().Servers {
		out = append(out, Server{ID: string(srv.ID), Address: string(srv.Address), Voter: srv.Suffrage == raft.Voter})
	}
	return out, nil
}

// AddServer adds a voter or non-voter (leader only).
func (s *Store) AddServer(ctx context.Context, id, addr string, voter bool) error {
	if err := s.awaitLeaderReady(ctx); err != nil {
		return err
	}
	var f raft.IndexFuture
	if voter {
		f = s.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, 0)
	} else {
		f = s.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, 0)
	}
	return mapRaftErr(f.Error())
}

// RemoveServer removes a member (leader only).
func (s *Store) RemoveServer(ctx context.Context, id string) error {
	if err := s.awaitLeaderReady(ctx); err != nil {
		return err
	}
	return mapRaftErr(s.raft.RemoveServer(raft.ServerID(id), 0, 0).Error())
}

// TransferLeadership hands leadership to id, or to any voter when id is "".
func (s *Store) TransferLeadership(id, addr string) error {
	s.leases.setTransferring(true, time.Now())
	defer func() { s.leases.setTransferring(false, time.Now()) }()
	var f raft.Future
	if id == "" {
		f = s.raft.LeadershipTransfer()
	} else {
		f = s.raft.LeadershipTransferToServer(raft.ServerID(id), raft.ServerAddress(addr))
	}
	return mapRaftErr(f.Error())
}

func mapRaftErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost),
		errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return ErrNotLeader
	case errors.Is(err, raft.ErrRaftShutdown):
		return ErrClosed
	}
	return err
}

// Snapshot forces a raft snapshot now.
func (s *Store) Snapshot() error {
	err := s.raft.Snapshot().Error()
	if errors.Is(err, raft.ErrNothingNewToSnapshot) {
		return nil
	}
	return err
}

// Backup writes a consistent copy of the whole state machine to w (the
// bbolt file as of one read transaction): `flotilla snapshot save`.
func (s *Store) Backup(w io.Writer) (uint64, error) {
	snap, err := s.fsm.Snapshot()
	if err != nil {
		return 0, err
	}
	defer snap.Release()
	tx := snap.(*fsmSnapshot).tx
	idx := appliedIn(tx)
	_, err = tx.WriteTo(w)
	return idx, err
}

// Close shuts raft down and closes the stores, in order: stop taking
// work, stop raft (which stops applying), then close the files.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.done)
		close(s.fsm.stop)
		if s.raft != nil {
			err = s.raft.Shutdown().Error()
		}
		s.wg.Wait()
		if s.transport != nil {
			s.transport.Close()
		}
		s.closeStores()
	})
	return err
}

// ErrHasState: a restore target already holds raft state.
var ErrHasState = errors.New("raftstore: directory already holds raft state")

// RestoreBackup seeds dir (a node's raft dir, which must hold no raft state)
// with a state machine file written by Backup, for disaster recovery: the
// node started on it bootstraps a new cluster whose log begins empty, so
// the applied index recorded in the file is reset to zero.
func RestoreBackup(dir string, r io.Reader) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	for _, name := range []string{"raft.db", "snapshots"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			return fmt.Errorf("%w: %s", ErrHasState, filepath.Join(dir, name))
		}
	}
	path := filepath.Join(dir, "fsm.db")
	tmp := path + ".restore"
	if err := writeFileSync(tmp, r); err != nil {
		return err
	}
	db, err := openDB(tmp)
	if err != nil {
		os.Remove(tmp)
		return err
	}
	err = db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Delete(keyApplied) })
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("restore: %w", err)
	}
	return os.Rename(tmp, path)
}
