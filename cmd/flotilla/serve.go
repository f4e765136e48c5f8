package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/flotilla/flotilla/node"
	"github.com/spf13/cobra"
)

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "flotilla",
		Short:         "Flotilla: a container registry that runs as a Raft cluster",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newServeCommand(), newClusterCommand(), newSnapshotCommand())
	return root
}

type serveOptions struct {
	debugAddr string
	gcPercent int
	config    string
	logLevel  string
	cfg       node.Config
	join      []string
}

func newServeCommand() *cobra.Command {
	o := &serveOptions{}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run a registry node (with no flags: a single node on :5000, data in ./flotilla-data)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyConfigSources(cmd.Flags(), o.config); err != nil {
				return err
			}
			return o.run(cmd.Context())
		},
	}
	f := cmd.Flags()
	c := &o.cfg
	f.StringVar(&o.config, "config", "", "YAML config file (keys are flag names)")
	f.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	f.StringVar(&c.NodeID, "node-id", "", "node id (default: stored in the data dir, else hostname plus a random suffix)")
	f.StringVar(&c.DataDir, "data-dir", "./flotilla-data", "data directory")
	f.StringVar(&c.HTTPAddr, "http-addr", ":5000", "OCI API listen address")
	f.StringVar(&c.RaftAddr, "raft-addr", "127.0.0.1:7000", "raft listen and advertise address")
	f.StringVar(&c.GRPCAddr, "grpc-addr", "127.0.0.1:7001", "node-to-node gRPC address")
	f.StringSliceVar(&o.join, "join", nil, "comma-separated gRPC addresses of existing members (empty: bootstrap a new cluster)")
	f.BoolVar(&c.Voter, "voter", true, "join as a voter (false: non-voting read replica)")
	f.StringVar(&c.BlobStore, "blob-store", "fs", "blob storage: fs or s3")
	f.StringVar(&c.S3.Endpoint, "s3-endpoint", "", "S3 endpoint (host:port or URL)")
	f.StringVar(&c.S3.Bucket, "s3-bucket", "flotilla", "S3 bucket (created when missing)")
	f.StringVar(&c.S3.Region, "s3-region", "", "S3 region")
	f.StringVar(&c.S3.AccessKey, "s3-access-key", "", "S3 access key (default: AWS environment or credential chain)")
	f.StringVar(&c.S3.SecretKey, "s3-secret-key", "", "S3 secret key")
	f.BoolVar(&c.S3.Insecure, "s3-insecure", false, "talk plain http to S3")
	f.StringVar(&c.S3.Prefix, "s3-prefix", "", "key prefix inside the bucket")
	f.StringVar(&c.S3.PublicEndpoint, "s3-public-endpoint", "", "endpoint written into presigned URLs (default: --s3-endpoint)")
	f.Int64Var(&c.S3.PartSize, "s3-part-size", 0, "multipart part size in bytes (default 16 MiB)")
	f.IntVar(&c.S3.MaxBuffers, "s3-upload-buffers", 16, "part buffers all uploads share (upload memory is at most this times the part size)")
	f.Var(&byteSize{&c.BlobCacheSize}, "blob-cache-size", "keep up to this much of the blobs read from S3 on local disk and serve them from there, e.g. 20GiB (0: off)")
	f.StringVar(&c.BlobCacheDir, "blob-cache-dir", "", "folder of the blob cache (default <data-dir>/blob-cache)")
	f.BoolVar(&c.AllowSparse, "allow-sparse", false, "accept manifests whose blobs or child manifests are not all pushed")
	f.BoolVar(&c.BlobRedirect, "blob-redirect", false, "answer blob GETs with a redirect to a presigned URL")
	f.DurationVar(&c.BlobRedirectTTL, "blob-redirect-ttl", 20*time.Minute, "lifetime of presigned blob URLs")
	f.BoolVar(&c.StaleReads, "stale-reads", false, "serve tag reads from local state without asking the leader")
	f.DurationVar(&c.MaxStaleness, "max-staleness", 5*time.Second, "a stale read is local only if the leader was heard from within this bound")
	f.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 30*time.Second, "how long in-flight requests may run on shutdown")
	f.DurationVar(&c.UploadExpiry, "upload-expiry", 24*time.Hour, "close upload sessions idle this long and delete their staged bytes")
	f.DurationVar(&c.JanitorInterval, "janitor-interval", time.Minute, "how often the leader looks for idle uploads")
	f.DurationVar(&c.LeaderHoldTimeout, "leader-hold-timeout", 10*time.Second, "how long a request waits for a leader before 503")
	f.DurationVar(&c.ForwardTimeout, "forward-timeout", 3*time.Second, "how long one attempt to reach the leader may take")
	f.StringVar(&o.debugAddr, "debug-addr", "", "serve Go's pprof profiles on this address (off when empty; keep it private)")
	f.IntVar(&o.gcPercent, "gc-percent", 400, "Go GC target percentage (GOGC, which wins when set): the live heap is small, so fewer collections cost little memory and cut tail latency; GOMEMLIMIT caps memory")
	f.StringVar(&c.RaftLogLevel, "raft-log-level", "warn", "log level of the raft library")
	f.Uint64Var(&c.Raft.SnapshotThreshold, "snapshot-threshold", 8192, "log entries between automatic snapshots")
	f.DurationVar(&c.Raft.SnapshotInterval, "snapshot-interval", 2*time.Minute, "how often to check whether to snapshot")
	f.Uint64Var(&c.Raft.TrailingLogs, "trailing-logs", 10240, "log entries kept after a snapshot")
	f.DurationVar(&c.Raft.HeartbeatTimeout, "raft-heartbeat-timeout", time.Second, "raft heartbeat timeout")
	f.DurationVar(&c.Raft.ElectionTimeout, "raft-election-timeout", time.Second, "raft election timeout")
	return cmd
}

func (o *serveOptions) run(ctx context.Context) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	logger := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	for _, j := range o.join {
		if j = strings.TrimSpace(j); j != "" {
			o.cfg.Join = append(o.cfg.Join, j)
		}
	}
	if _, set := os.LookupEnv("GOGC"); !set && o.gcPercent != 0 {
		debug.SetGCPercent(o.gcPercent)
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	n, err := node.New(ctx, o.cfg, logger)
	if err != nil {
		return err
	}
	if o.debugAddr != "" {
		if err := serveDebug(ctx, o.debugAddr, logger); err != nil {
			return err
		}
	}
	return n.Run(ctx)
}
