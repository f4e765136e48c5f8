package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flotilla/flotilla/api"
	"github.com/flotilla/flotilla/blobstore"
	"github.com/flotilla/flotilla/raftstore"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// Config is everything one node needs. cmd/flotilla fills it from flags,
// the YAML config file and FLOTILLA_* environment variables.
type Config struct {
	NodeID   string
	DataDir  string
	HTTPAddr string
	RaftAddr string
	GRPCAddr string
	Join     []string
	Voter    bool

	BlobStore string // "fs" or "s3"
	S3        blobstore.S3Config

	// BlobCacheSize > 0 keeps up to that many bytes of blobs read from S3
	// in BlobCacheDir (default <data dir>/blob-cache), served from there.
	BlobCacheSize int64
	BlobCacheDir  string

	AllowSparse     bool
	BlobRedirect    bool
	BlobRedirectTTL time.Duration
	// StaleReads serves tag reads locally unless a request asks otherwise;
	// a stale read is local only while this node heard from the leader
	// within MaxStaleness (default 5s), else it takes a read index.
	StaleReads   bool
	MaxStaleness time.Duration

	// ShutdownTimeout bounds how long in-flight requests may take on stop.
	ShutdownTimeout time.Duration
	// LeaderHoldTimeout is how long a forwarded write or read-index request
	// waits, retrying, while there is no leader.
	LeaderHoldTimeout time.Duration
	// ForwardTimeout bounds one attempt to reach the leader (default 3s).
	ForwardTimeout time.Duration
	// UploadExpiry: upload sessions idle this long are closed and their
	// staged bytes deleted (default 24h), checked every JanitorInterval.
	UploadExpiry    time.Duration
	JanitorInterval time.Duration
	RaftLogLevel    string
	Raft            RaftTuning
}

// RaftTuning holds raft timings and snapshot thresholds; zero means default.
type RaftTuning struct {
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	TrailingLogs      uint64
	HeartbeatTimeout  time.Duration
	ElectionTimeout   time.Duration
}

// Node is one running Flotilla node.
type Node struct {
	cfg      Config
	logger   *slog.Logger
	store    *raftstore.Store
	blobs    blobstore.Driver
	cache    *blobstore.Cache // in blobs, when configured
	httpSrv  *http.Server
	httpLn   net.Listener
	registry *registry

	grpcSrv *grpc.Server
	grpcLn  net.Listener
	peers   peers
	// reads batches this node's read-index requests to the leader.
	reads   *raftstore.IndexBatcher
	removed atomic.Bool
}

// New opens the data dir, raft and the blob store, and binds the HTTP port.
func New(ctx context.Context, cfg Config, logger *slog.Logger) (*Node, error) {
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = 30 * time.Second
	}
	if cfg.LeaderHoldTimeout == 0 {
		cfg.LeaderHoldTimeout = 10 * time.Second
	}
	if cfg.ForwardTimeout == 0 {
		cfg.ForwardTimeout = 3 * time.Second
	}
	if cfg.MaxStaleness == 0 {
		cfg.MaxStaleness = 5 * time.Second
	}
	if cfg.UploadExpiry == 0 {
		cfg.UploadExpiry = 24 * time.Hour
	}
	if cfg.JanitorInterval == 0 {
		cfg.JanitorInterval = time.Minute
	}
	id, err := prepareDataDir(cfg.DataDir, cfg.NodeID)
	if err != nil {
		return nil, err
	}
	cfg.NodeID = id
	cfg.Join = withoutSelf(cfg.Join, advertise(cfg.GRPCAddr, cfg.RaftAddr))
	logger = logger.With("node", id)
	n := &Node{cfg: cfg, logger: logger}

	switch cfg.BlobStore {
	case "", "fs":
		n.blobs, err = blobstore.NewFS(filepath.Join(cfg.DataDir, "blobs"))
	case "s3":
		n.blobs, err = blobstore.NewS3(ctx, cfg.S3, logger)
	default:
		err = fmt.Errorf("unknown blob store %q (want fs or s3)", cfg.BlobStore)
	}
	if err != nil {
		return nil, err
	}
	var cache *blobstore.Cache
	if cfg.BlobCacheSize > 0 {
		if cfg.BlobStore != "s3" {
			return nil, fmt.Errorf("a blob cache is for --blob-store s3 (blobs on %q are local already)", cfg.BlobStore)
		}
		dir := cfg.BlobCacheDir
		if dir == "" {
			dir = filepath.Join(cfg.DataDir, "blob-cache")
		}
		if cache, err = blobstore.NewCache(n.blobs, dir, cfg.BlobCacheSize, logger); err != nil {
			return nil, err
		}
		n.blobs, n.cache = cache, cache
	}

	n.store, err = raftstore.Open(ctx, raftstore.Config{
		NodeID: id, Dir: filepath.Join(cfg.DataDir, "raft"), BindAddr: cfg.RaftAddr,
		Bootstrap:         len(cfg.Join) == 0,
		SnapshotThreshold: cfg.Raft.SnapshotThreshold, SnapshotInterval: cfg.Raft.SnapshotInterval,
		TrailingLogs: cfg.Raft.TrailingLogs, HeartbeatTimeout: cfg.Raft.HeartbeatTimeout,
		ElectionTimeout: cfg.Raft.ElectionTimeout, LogLevel: cfg.RaftLogLevel, Logger: logger,
	})
	if err != nil {
		n.closeCache()
		return nil, err
	}
	n.reads = raftstore.NewIndexBatcher(n.readIndex)

	promReg := prometheus.NewRegistry()
	promReg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	n.registry = newRegistry(n, promReg)
	if cache != nil {
		registerCacheMetrics(promReg, cache)
	}
	handler := api.New(api.Config{
		AllowSparse: cfg.AllowSparse, BlobRedirect: cfg.BlobRedirect, BlobRedirectTTL: cfg.BlobRedirectTTL,
		StaleReads: cfg.StaleReads,
	}, n.registry, n.blobs, n, logger, promReg)

	n.httpLn, err = net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		n.store.Close()
		n.closeCache()
		return nil, fmt.Errorf("http listen %s: %w", cfg.HTTPAddr, err)
	}
	n.grpcLn, err = net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		n.httpLn.Close()
		n.store.Close()
		n.closeCache()
		return nil, fmt.Errorf("grpc listen %s: %w", cfg.GRPCAddr, err)
	}
	n.grpcSrv = grpc.NewServer(grpc.ForceServerCodecV2(jsonCodec{}),
		grpc.MaxRecvMsgSize(maxMessageSize), grpc.MaxSendMsgSize(maxMessageSize),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 500 * time.Millisecond, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: time.Second, Timeout: time.Second}))
	n.grpcSrv.RegisterService(&serviceDesc, n)
	n.httpSrv = &http.Server{Handler: handler, ReadHeaderTimeout: 30 * time.Second,
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}
	return n, nil
}

// withoutSelf drops this node's own gRPC address from a join list, so every
// node of a deployment can be given the same --join (the node it names
// bootstraps; the others join it).
func withoutSelf(join []string, self string) []string {
	var out []string
	for _, j := range join {
		if j != self {
			out = append(out, j)
		}
	}
	return out
}

// HTTPAddr is the address the API listens on.
func (n *Node) HTTPAddr() string { return n.httpLn.Addr().String() }

// Run serves until ctx is done, then shuts down in order: stop accepting
// requests and let in-flight ones finish, hand leadership away if leader,
// then stop raft and close the stores.
func (n *Node) Run(ctx context.Context) error {
	errc := make(chan error, 2)
	go func() { errc <- n.httpSrv.Serve(n.httpLn) }()
	go func() { errc <- n.grpcSrv.Serve(n.grpcLn) }()
	bg, stopBg := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	run := func(f func(context.Context)) {
		wg.Add(1)
		go func() { defer wg.Done(); f(bg) }()
	}
	run(n.reads.Run)
	run(n.registerLoop)
	run(n.watchMembership)
	run(n.expireUploads)
	run(n.leaseLoop)
	if len(n.cfg.Join) > 0 && !n.store.HadState() {
		run(n.joinLoop)
	}
	n.logger.Info("serving", "http", n.HTTPAddr(), "grpc", n.grpcLn.Addr().String(), "raft", n.cfg.RaftAddr,
		"blob_store", n.blobs.Name(), "data_dir", n.cfg.DataDir)
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	err := n.shutdown(stopBg, &wg)
	return errors.Join(serveErr, err)
}

func (n *Node) shutdown(stopBg context.CancelFunc, wg *sync.WaitGroup) error {
	n.logger.Info("shutting down")
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ShutdownTimeout)
	defer cancel()
	// 1. Hand leadership away first, so the cluster elects a successor
	// while this node still answers forwarded requests.
	if n.store.IsLeader() {
		if servers, _ := n.store.Servers(); len(servers) > 1 {
			if err := n.store.TransferLeadership("", ""); err != nil {
				n.logger.Warn("leadership transfer on shutdown failed", "err", err)
			}
		}
	}
	// 2. Stop taking requests; let in-flight ones finish.
	err := n.httpSrv.Shutdown(ctx)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	stopBg()
	wg.Wait()
	// 3. Stop node-to-node service, then raft and the stores.
	stopped := make(chan struct{})
	go func() { n.grpcSrv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-ctx.Done():
		n.grpcSrv.Stop()
	}
	n.peers.close()
	return errors.Join(err, n.store.Close(), n.closeCache())
}

// closeCache waits for blob cache fills and releases its folder.
func (n *Node) closeCache() error {
	if n.cache == nil {
		return nil
	}
	return n.cache.Close()
}

// watchMembership notices when this node has been removed from the cluster,
// after which it refuses writes.
func (n *Node) watchMembership(ctx context.Context) {
	wasMember := false
	for {
		member := n.isMember()
		if member {
			wasMember = true
		}
		removed := wasMember && !member
		if removed != n.removed.Load() {
			n.removed.Store(removed)
			if removed {
				n.logger.Warn("this node was removed from the cluster; refusing writes")
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// Ready implements api.Node: the node knows a leader and has applied all
// it committed before the call.
func (n *Node) Ready(ctx context.Context) error {
	if !n.store.Healthy() {
		return errors.New("the state machine cannot write (disk full?)")
	}
	if n.removed.Load() {
		return errors.New("removed from the cluster")
	}
	return n.registry.Read(ctx, api.ReadOptions{}, func() error { return nil })
}

// Backup implements api.Node: a read-your-writes consistent copy of the
// state machine.
func (n *Node) Backup(ctx context.Context, w io.Writer) (uint64, error) {
	// Committed state is what a backup needs; it does not wait for the
	// stable index (see registry.Read), as it answers no client read.
	if err := n.registry.fence(ctx, 0); err != nil {
		return 0, err
	}
	return n.store.Backup(w)
}

// StateHash implements api.Node.
func (n *Node) StateHash(ctx context.Context) (*api.StateHash, error) {
	idx, h, err := n.store.StateHash()
	if err != nil {
		return nil, err
	}
	return &api.StateHash{NodeID: n.cfg.NodeID, AppliedIndex: idx, Hash: h}, nil
}

// Status implements api.Node.
func (n *Node) Status(ctx context.Context) (*api.ClusterStatus, error) {
	_, leaderID := n.store.Leader()
	st := &api.ClusterStatus{
		NodeID: n.cfg.NodeID, State: n.store.State(), LeaderID: leaderID,
		AppliedIndex: n.store.AppliedIndex(), CommitIndex: n.store.CommitIndex(), Members: []api.Member{},
		StableIndex: n.store.StableIndex(),
	}
	_, st.ReadLease = n.store.LocalReadLease()
	servers, err := n.store.Servers()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", api.ErrUnavailable, err)
	}
	members, err := n.store.Members()
	if err != nil {
		return nil, err
	}
	for _, s := range servers {
		rec := members[s.ID]
		m := api.Member{ID: s.ID, RaftAddr: s.Address, GRPCAddr: rec.GRPCAddr, HTTPAddr: rec.HTTPAddr,
			Voter: s.Voter, State: "Follower"}
		if !s.Voter {
			m.State = "Nonvoter"
		}
		if s.ID == leaderID {
			m.State = "Leader"
		}
		if s.ID == n.cfg.NodeID {
			self := n.self()
			m.GRPCAddr, m.HTTPAddr, m.State = self.GRPCAddr, self.HTTPAddr, n.store.State()
		}
		st.Members = append(st.Members, m)
	}
	return st, nil
}
