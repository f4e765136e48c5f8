package api

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/flotilla/flotilla/meta"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ReadOptions says how fresh a read must be.
type ReadOptions struct {
	// Stale allows answering from local state within the node's freshness
	// bound, without asking the leader.
	Stale bool
	// MinIndex, when set, is an index the local state must have applied
	// (a client sends back the index a write answered with).
	MinIndex uint64
}

// Registry is the metadata the API reads and changes. Reads are local;
// Fence makes them as fresh as opts asks first.
type Registry interface {
	// ManifestContent and TaggedManifest return a manifest's digest, media
	// type and bytes (the rest of meta.Manifest may be left empty).
	ManifestContent(repo, digest string) (*meta.Manifest, error)
	TaggedManifest(repo, tag string) (*meta.Manifest, error)
	Tags(repo, last string, n int) ([]string, bool, error)
	Repositories(last string, n int) ([]string, bool, error)
	Referrers(repo, subject string) ([]meta.Descriptor, error)
	Blob(repo, digest string) (*meta.Blob, error)
	Upload(id string) (*meta.Upload, error)
	RepoExists(repo string) bool

	// Read runs read, which calls the lookups above, so that what it sees
	// reflects every write acknowledged before Read was called (or only
	// opts.MinIndex when opts.Stale), and so that no later read anywhere
	// sees older state. read may run more than once; its last run counts.
	Read(ctx context.Context, opts ReadOptions, read func() error) error
	// Apply commits a command on the leader and returns once this node has
	// applied it, so this node's reads see it.
	Apply(ctx context.Context, c *meta.Command) (*meta.Result, error)
}

// BlobStore holds blob bytes (see package blobstore).
type BlobStore interface {
	StartUpload(ctx context.Context, id string) (meta.BlobUpload, error)
	Append(ctx context.Context, u meta.BlobUpload, r io.Reader) (meta.BlobUpload, error)
	Committed(ctx context.Context, prev, next meta.BlobUpload) error
	Complete(ctx context.Context, u meta.BlobUpload) (string, error)
	Abort(ctx context.Context, u meta.BlobUpload) error
	Open(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error)
	Delete(ctx context.Context, key string) error
	Presign(ctx context.Context, key string, ttl time.Duration) (string, error)
}

// Node answers the operational endpoints.
type Node interface {
	// Ready: the node knows a leader and has applied up to it.
	Ready(ctx context.Context) error
	Status(ctx context.Context) (*ClusterStatus, error)
	// StateHash digests the node's whole state machine at its applied index.
	StateHash(ctx context.Context) (*StateHash, error)
	// Backup writes a consistent copy of all registry metadata to w and
	// returns the index it reflects.
	Backup(ctx context.Context, w io.Writer) (uint64, error)
}

// ClusterStatus is the JSON of GET /cluster/status.
type ClusterStatus struct {
	NodeID       string `json:"node_id"`
	State        string `json:"state"`
	LeaderID     string `json:"leader_id"`
	AppliedIndex uint64 `json:"applied_index"`
	CommitIndex  uint64 `json:"commit_index"`
	// StableIndex: every read-lease holder has applied it.
	StableIndex uint64 `json:"stable_index"`
	// ReadLease: this node answers linearizable reads locally now.
	ReadLease bool     `json:"read_lease"`
	Members   []Member `json:"members"`
}

// StateHash is the JSON of GET /cluster/state-hash: nodes at the same
// applied index must show the same hash.
type StateHash struct {
	NodeID       string `json:"node_id"`
	AppliedIndex uint64 `json:"applied_index"`
	Hash         string `json:"hash"`
}

// Member is one node of the cluster as /cluster/status shows it.
type Member struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft_addr"`
	GRPCAddr string `json:"grpc_addr"`
	HTTPAddr string `json:"http_addr"`
	Voter    bool   `json:"voter"`
	State    string `json:"state"`
}

// Config is the API's behaviour.
type Config struct {
	// AllowSparse accepts manifests whose blobs or children are absent.
	AllowSparse bool
	// BlobRedirect answers blob GETs with a redirect to a presigned URL.
	BlobRedirect    bool
	BlobRedirectTTL time.Duration
	// StaleReads makes mutable reads local unless a request asks otherwise.
	StaleReads bool
	// MaxManifestSize bounds a manifest PUT body (default 4 MiB).
	MaxManifestSize int64
}

// Server is the HTTP API of one node.
type Server struct {
	cfg     Config
	reg     Registry
	blobs   BlobStore
	node    Node
	logger  *slog.Logger
	metrics *metrics
	mux     *http.ServeMux
	routes  []route
	// copyBufs holds the buffers blob bodies are copied through (larger
	// than io.Copy's 32 KiB: fewer syscalls per byte on the pull path).
	copyBufs sync.Pool
}

// New builds the API. promReg receives the API's metrics and is served on
// /metrics (pass a fresh prometheus.Registry; nothing global is used).
func New(cfg Config, reg Registry, blobs BlobStore, node Node, logger *slog.Logger, promReg *prometheus.Registry) *Server {
	if cfg.MaxManifestSize == 0 {
		cfg.MaxManifestSize = 4 << 20
	}
	if cfg.BlobRedirectTTL == 0 {
		cfg.BlobRedirectTTL = 20 * time.Minute
	}
	s := &Server{cfg: cfg, reg: reg, blobs: blobs, node: node, logger: logger, metrics: newMetrics(promReg), mux: http.NewServeMux()}
	s.routes = s.buildRoutes()
	s.copyBufs.New = func() any { b := make([]byte, 256<<10); return &b }
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "ok\n")
	})
	s.mux.HandleFunc("GET /readyz", s.readyz)
	s.mux.HandleFunc("GET /cluster/status", s.clusterStatus)
	s.mux.HandleFunc("GET /cluster/snapshot", s.snapshot)
	s.mux.HandleFunc("GET /cluster/state-hash", func(w http.ResponseWriter, r *http.Request) {
		h, err := s.node.StateHash(r.Context())
		if err != nil {
			writeError(w, fromDomain(err))
			return
		}
		writeJSON(w, http.StatusOK, "application/json", h)
	})
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(promReg, promhttp.HandlerOpts{Registry: promReg}))
	return s
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rw := &statusWriter{ResponseWriter: w, status: http.StatusOK, route: "other"}
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			s.logger.Error("handler panic", "method", r.Method, "path", r.URL.Path, "panic", p)
			if !rw.wrote {
				writeError(rw, apiErr(ErrCodeInternal, nil))
			}
		}
		s.metrics.observe(r.Method, rw.route, rw.status, time.Since(start))
	}()
	if p := r.URL.Path; p == "/v2" || strings.HasPrefix(p, "/v2/") {
		// Not through the mux: it would clean the path and redirect
		// "/v2/a/../b/..." to another repository; names are checked here.
		s.serveV2(rw, r)
		return
	}
	switch r.URL.Path {
	case "/healthz", "/readyz", "/metrics", "/cluster/status", "/cluster/snapshot", "/cluster/state-hash":
		rw.route = r.URL.Path[1:]
	}
	s.mux.ServeHTTP(rw, r)
}

type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
	route  string // metrics label, set by the router
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

// ReadFrom passes a copy on to net/http, which hands it to the connection
// (splice or sendfile when the source allows; see getBlob).
func (w *statusWriter) ReadFrom(src io.Reader) (int64, error) {
	w.wrote = true
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(src)
	}
	return io.Copy(struct{ io.Writer }{w.ResponseWriter}, src)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.node.Ready(ctx); err != nil {
		http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	_, _ = io.WriteString(w, "ready\n")
}

func (s *Server) clusterStatus(w http.ResponseWriter, r *http.Request) {
	st, err := s.node.Status(r.Context())
	if err != nil {
		writeError(w, fromDomain(err))
		return
	}
	writeJSON(w, http.StatusOK, "application/json", st)
}

// snapshot streams a metadata backup (flotilla snapshot save).
func (s *Server) snapshot(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="flotilla-snapshot.db"`)
	idx, err := s.node.Backup(r.Context(), w)
	if err != nil {
		s.logger.Error("snapshot failed", "err", err)
		panic(http.ErrAbortHandler) // the body is partly written: cut the connection
	}
	s.logger.Info("snapshot served", "index", idx)
}

// Routes below /v2/. Repository names contain slashes, so a path is
// matched from its end: after "/v2/", a repository name (anything not empty,
// without a newline) followed by the endpoint's suffix. The first route that
// matches wins (the order matters where suffixes overlap).

// endsWith matches "<repo><suffix>".
func endsWith(suffix string) func(rest string) (repo, ref string, ok bool) {
	return func(rest string) (string, string, bool) {
		repo, ok := strings.CutSuffix(rest, suffix)
		return repo, "", ok && validRoutedRepo(repo)
	}
}

// refAfter matches "<repo><mid>/<ref>" where ref is one path segment.
func refAfter(mid string) func(rest string) (repo, ref string, ok bool) {
	return func(rest string) (string, string, bool) {
		i := strings.LastIndexByte(rest, '/')
		if i < 0 || i == len(rest)-1 {
			return "", "", false
		}
		repo, ok := strings.CutSuffix(rest[:i], mid)
		return repo, rest[i+1:], ok && validRoutedRepo(repo)
	}
}

func validRoutedRepo(repo string) bool { return repo != "" && strings.IndexByte(repo, '\n') < 0 }

type handlerFunc func(w http.ResponseWriter, r *http.Request, repo string, ref string) error

func (s *Server) serveV2(w *statusWriter, r *http.Request) {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	p := r.URL.Path
	w.route = "base"
	if p == "/v2/" || p == "/v2" {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			writeError(w, apiErr(ErrCodeUnsupported, nil))
			return
		}
		writeJSON(w, http.StatusOK, "application/json", struct{}{})
		return
	}
	if p == "/v2/_catalog" {
		w.route = "catalog"
		s.run(w, r, "", "", map[string]handlerFunc{http.MethodGet: s.catalog})
		return
	}
	rest, _ := strings.CutPrefix(p, "/v2/") // serveV2 only gets paths below /v2
	for _, rt := range s.routes {
		repo, ref, ok := rt.match(rest)
		if !ok {
			continue
		}
		w.route = rt.name
		if !meta.ValidRepo(repo) {
			writeError(w, apiErr(ErrCodeNameInvalid, repo))
			return
		}
		s.run(w, r, repo, ref, rt.handlers)
		return
	}
	w.route = "other"
	writeError(w, &Error{Code: ErrorCode{"NOT_FOUND", "no such endpoint", http.StatusNotFound}})
}

// route is one endpoint below /v2/ whose repository name is matched from
// the end of the path.
type route struct {
	name     string // metrics label
	match    func(rest string) (repo, ref string, ok bool)
	handlers map[string]handlerFunc
}

func (s *Server) buildRoutes() []route {
	uploads := map[string]handlerFunc{http.MethodPost: s.startUpload}
	return []route{
		{"tags", endsWith("/tags/list"), map[string]handlerFunc{http.MethodGet: s.listTags}},
		{"manifest", refAfter("/manifests"), map[string]handlerFunc{http.MethodGet: s.getManifest, http.MethodHead: s.getManifest,
			http.MethodPut: s.putManifest, http.MethodDelete: s.deleteManifest}},
		{"upload", endsWith("/blobs/uploads"), uploads},
		{"upload", endsWith("/blobs/uploads/"), uploads},
		{"upload", refAfter("/blobs/uploads"), map[string]handlerFunc{http.MethodGet: s.uploadStatus, http.MethodPatch: s.patchUpload,
			http.MethodPut: s.putUpload, http.MethodDelete: s.cancelUpload}},
		{"blob", refAfter("/blobs"), map[string]handlerFunc{http.MethodGet: s.getBlob, http.MethodHead: s.getBlob,
			http.MethodDelete: s.deleteBlob}},
		{"referrers", refAfter("/referrers"), map[string]handlerFunc{http.MethodGet: s.referrers}},
	}
}

func (s *Server) run(w http.ResponseWriter, r *http.Request, repo, ref string, handlers map[string]handlerFunc) {
	h, ok := handlers[r.Method]
	if !ok {
		writeError(w, apiErr(ErrCodeUnsupported, r.Method))
		return
	}
	if err := h(w, r, repo, ref); err != nil {
		e := fromDomain(err)
		if e.Code.Status >= 500 {
			s.logger.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		}
		writeError(w, e)
	}
}

// Request headers a client may send to choose read freshness, and the
// header every write answers with.
const (
	HeaderIndex       = "Flotilla-Index"
	HeaderConsistency = "Flotilla-Consistency"
)

func (s *Server) readOptions(r *http.Request) ReadOptions {
	opts := ReadOptions{Stale: s.cfg.StaleReads}
	switch r.Header.Get(HeaderConsistency) {
	case "stale":
		opts.Stale = true
	case "strong", "read-your-writes":
		opts.Stale = false
	}
	if v := r.Header.Get(HeaderIndex); v != "" {
		if n, err := strconv.ParseUint(v, 10, 64); err == nil {
			opts.MinIndex = n
		}
	}
	return opts
}

// read runs lookups with the freshness the request asks for.
func (s *Server) read(r *http.Request, lookups func() error) error {
	return s.reg.Read(r.Context(), s.readOptions(r), lookups)
}

// apply commits c and records its index on the response.
func (s *Server) apply(w http.ResponseWriter, r *http.Request, c *meta.Command) (*meta.Result, error) {
	res, err := s.reg.Apply(r.Context(), c)
	if err != nil {
		return nil, err
	}
	w.Header().Set(HeaderIndex, strconv.FormatUint(res.Index, 10))
	if err := res.Err(); err != nil {
		return res, err
	}
	return res, nil
}

// byDigest runs a by-digest lookup. Content never changes under a digest,
// but it can be deleted: so by default the read is fenced like any other
// (read-your-writes, a DELETE acknowledged anywhere is seen everywhere).
// A stale read answers from local state when the object is there, and
// fences only when it is missing (this node may lag behind its push).
func byDigest[T any](s *Server, r *http.Request, lookup func() (T, error)) (T, error) {
	var v T
	run := func() error {
		var err error
		v, err = lookup()
		return err
	}
	opts := s.readOptions(r)
	if opts.Stale {
		if err := run(); err == nil || !isNotFound(err) {
			return v, err
		}
		opts.Stale = false
	}
	err := s.reg.Read(r.Context(), opts, run)
	return v, err
}

func isNotFound(err error) bool {
	return errors.Is(err, meta.ErrBlobUnknown) || errors.Is(err, meta.ErrManifestUnknown) ||
		errors.Is(err, meta.ErrUploadUnknown) || errors.Is(err, meta.ErrNameUnknown)
}
