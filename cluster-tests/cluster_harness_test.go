package clustertests

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Helpers for the multi-node tests in cluster_test.go: a cluster of flotilla
// processes sharing one MinIO bucket, its status, the cluster CLI, a
// round-robin proxy, and an OCI client that returns errors (so that it can run
// in goroutines) and retries the way real clients do.

// convergeTimeout bounds waits for the cluster to agree on something (a
// leader, a member list). It guards against hangs; it is not a speed check.
const convergeTimeout = 2 * time.Minute

// ---------------------------------------------------------------- status

type clusterMember struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft_addr"`
	GRPCAddr string `json:"grpc_addr"`
	HTTPAddr string `json:"http_addr"`
	Voter    bool   `json:"voter"`
	State    string `json:"state"`
}

type clusterStatus struct {
	NodeID       string          `json:"node_id"`
	State        string          `json:"state"`
	LeaderID     string          `json:"leader_id"`
	AppliedIndex uint64          `json:"applied_index"`
	CommitIndex  uint64          `json:"commit_index"`
	Members      []clusterMember `json:"members"`
}

func (s clusterStatus) member(id string) (clusterMember, bool) {
	for _, m := range s.Members {
		if m.ID == id {
			return m, true
		}
	}
	return clusterMember{}, false
}

func (s clusterStatus) memberIDs() []string {
	var ids []string
	for _, m := range s.Members {
		ids = append(ids, m.ID)
	}
	sort.Strings(ids)
	return ids
}

var statusClient = &http.Client{Timeout: 10 * time.Second}

// nodeStatus fetches GET /cluster/status from one node.
func nodeStatus(ctx context.Context, n *node) (clusterStatus, error) {
	var st clusterStatus
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.URL()+"/cluster/status", nil)
	if err != nil {
		return st, err
	}
	resp, err := statusClient.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return st, err
	}
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("GET %s/cluster/status: %s: %s", n.URL(), resp.Status, b)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("GET %s/cluster/status: %v: %s", n.URL(), err, b)
	}
	return st, nil
}

// waitFor polls cond until it returns nil; after timeout it fails the test
// with cond's last error. A hang guard, not a timing check.
func waitFor(t testing.TB, what string, timeout time.Duration, cond func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last error
	for {
		pctx, pcancel := context.WithTimeout(ctx, 15*time.Second)
		last = cond(pctx)
		pcancel()
		if last == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not reached within %v: %v", what, timeout, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ---------------------------------------------------------------- cluster

type clusterOptions struct {
	nodes       int  // voters started at once (the first bootstraps)
	allowSparse bool // --allow-sparse on every node
	bucket      string
}

// testCluster is a set of flotilla nodes that share one MinIO bucket. Nodes
// stay in nodes after they are stopped or removed; members lists who should
// be in the raft configuration.
type testCluster struct {
	t      testing.TB
	minio  *minioServer
	bucket string
	sparse bool

	mu      sync.Mutex
	nodes   []*node
	members map[string]bool
	seq     int
}

// startCluster starts opts.nodes voters on minio (one bucket per cluster)
// and waits until they all agree on a leader and on the member list.
func startCluster(t testing.TB, minio *minioServer, opts clusterOptions) *testCluster {
	t.Helper()
	if opts.bucket == "" {
		opts.bucket = "flotilla-" + strings.ToLower(sha256Hex([]byte(t.Name()))[:12])
	}
	minio.makeBucket(t, opts.bucket)
	c := &testCluster{t: t, minio: minio, bucket: opts.bucket, sparse: opts.allowSparse, members: map[string]bool{}}
	for i := 0; i < opts.nodes; i++ {
		c.addNode(t, true)
	}
	c.waitConverged(t)
	return c
}

// addNode starts one more node; every node but the first joins through the
// gRPC addresses of all current members. It returns once GET /readyz is 200.
func (c *testCluster) addNode(t testing.TB, voter bool) *node {
	t.Helper()
	c.mu.Lock()
	c.seq++
	id := fmt.Sprintf("n%d", c.seq)
	var join []string
	for _, n := range c.nodes {
		if c.members[n.ID] {
			join = append(join, n.GRPCAddr)
		}
	}
	c.mu.Unlock()
	args := []string{
		"--blob-store", "s3",
		"--s3-endpoint", c.minio.Addr,
		"--s3-insecure",
		"--s3-bucket", c.bucket,
		"--s3-region", c.minio.Region,
		"--s3-access-key", c.minio.AccessKey,
		"--s3-secret-key", c.minio.SecretKey,
	}
	if len(join) > 0 {
		args = append(args, "--join", strings.Join(join, ","))
	}
	if !voter {
		args = append(args, "--voter=false")
	}
	if c.sparse {
		args = append(args, "--allow-sparse")
	}
	n := startNode(t, nodeConfig{ID: id, DataDir: filepath.Join(t.TempDir(), id), Args: args})
	c.mu.Lock()
	c.nodes = append(c.nodes, n)
	c.members[id] = true
	c.mu.Unlock()
	return n
}

// lookup returns the node with this id, or nil.
func (c *testCluster) lookup(id string) *node {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.nodes {
		if n.ID == id {
			return n
		}
	}
	return nil
}

// node returns the node with this id.
func (c *testCluster) node(id string) *node {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.nodes {
		if n.ID == id {
			return n
		}
	}
	c.t.Fatalf("no node %q", id)
	return nil
}

// memberNodes are the nodes that should be in the configuration.
func (c *testCluster) memberNodes() []*node {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*node
	for _, n := range c.nodes {
		if c.members[n.ID] {
			out = append(out, n)
		}
	}
	return out
}

// liveMembers are the members whose process runs.
func (c *testCluster) liveMembers() []*node {
	var out []*node
	for _, n := range c.memberNodes() {
		if n.running() {
			out = append(out, n)
		}
	}
	return out
}

func (c *testCluster) memberIDs() []string {
	var ids []string
	for _, n := range c.memberNodes() {
		ids = append(ids, n.ID)
	}
	sort.Strings(ids)
	return ids
}

// markRemoved records that id is no longer expected in the configuration.
func (c *testCluster) markRemoved(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.members, id)
}

// converged checks that every live member reports the same known leader,
// and the expected members, each with the addresses it was started with.
func (c *testCluster) converged(ctx context.Context) (string, error) {
	want := c.memberIDs()
	leader := ""
	for _, n := range c.liveMembers() {
		st, err := nodeStatus(ctx, n)
		if err != nil {
			return "", err
		}
		if st.NodeID != n.ID {
			return "", fmt.Errorf("%s reports node_id %q", n.ID, st.NodeID)
		}
		if st.LeaderID == "" {
			return "", fmt.Errorf("%s knows no leader", n.ID)
		}
		if leader == "" {
			leader = st.LeaderID
		} else if st.LeaderID != leader {
			return "", fmt.Errorf("%s says the leader is %s, another node says %s", n.ID, st.LeaderID, leader)
		}
		if got := st.memberIDs(); !slices.Equal(got, want) {
			return "", fmt.Errorf("%s lists members %q, want %q", n.ID, got, want)
		}
		for _, m := range st.Members {
			w := c.lookup(m.ID)
			if w == nil {
				return "", fmt.Errorf("%s lists a member %q this test never started", n.ID, m.ID)
			}
			if m.RaftAddr != w.RaftAddr || m.GRPCAddr != w.GRPCAddr || m.HTTPAddr != w.HTTPAddr {
				return "", fmt.Errorf("%s lists %s with raft %q grpc %q http %q, want %q %q %q", n.ID, m.ID,
					m.RaftAddr, m.GRPCAddr, m.HTTPAddr, w.RaftAddr, w.GRPCAddr, w.HTTPAddr)
			}
		}
	}
	if !slices.Contains(want, leader) {
		return "", fmt.Errorf("leader %q is not a member (%q)", leader, want)
	}
	return leader, nil
}

// waitConverged waits until converged holds and returns the leader's id.
func (c *testCluster) waitConverged(t testing.TB) string {
	t.Helper()
	var leader string
	waitFor(t, "cluster agrees on leader and members", convergeTimeout, func(ctx context.Context) error {
		var err error
		leader, err = c.converged(ctx)
		return err
	})
	return leader
}

// leader returns the node every live member names as leader.
func (c *testCluster) leader(t testing.TB) *node {
	t.Helper()
	return c.node(c.waitConverged(t))
}

// cli runs `flotilla cluster ARGS... --addr grpcAddr` and returns stdout.
func cli(t testing.TB, grpcAddr string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args = append(append([]string{"cluster"}, args...), "--addr", grpcAddr)
	cmd := exec.CommandContext(ctx, flotillaBinary(t), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("flotilla %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, stdout.Bytes(), stderr.Bytes())
	}
	return stdout.Bytes()
}

// ---------------------------------------------------------------- proxy

// roundRobinProxy serves on a loopback port and sends each request to the
// next backend in turn (no stickiness), keeping the client's Host header so
// that nodes build URLs that point back at the proxy. It returns host:port
// and per-backend request counters.
func roundRobinProxy(t testing.TB, backends []*node) (string, []*atomic.Int64) {
	t.Helper()
	var next atomic.Uint64
	counts := make([]*atomic.Int64, len(backends))
	targets := make([]*url.URL, len(backends))
	for i, b := range backends {
		counts[i] = new(atomic.Int64)
		targets[i] = &url.URL{Scheme: "http", Host: b.HTTPAddr}
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			i := int((next.Add(1) - 1) % uint64(len(targets)))
			counts[i].Add(1)
			r.SetURL(targets[i])
			r.Out.Host = r.In.Host
		},
		// No redirect following, no buffering surprises: stream both ways.
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			t.Logf("round-robin proxy: %s %s: %v", r.Method, r.URL, err)
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	srv := &http.Server{Handler: rp, ReadHeaderTimeout: 30 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String(), counts
}

// ---------------------------------------------------------------- client

// regClient is an OCI client that reports errors instead of failing the
// test, so that it can run in goroutines. Its retrying calls retry, as real
// clients do, on 503 and on connection errors (a node being restarted), up
// to a bounded number of attempts, each on a node picked by pick.
type regClient struct {
	hc *http.Client
}

func newRegClient() *regClient {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 16
	return &regClient{hc: &http.Client{Timeout: 45 * time.Second, Transport: tr}}
}

type regResponse struct {
	Node   string // HTTP address that answered
	Status int
	Header http.Header
	Body   []byte
}

// errRetryable marks an attempt a client would retry: errBusy (503, 429)
// or errConnection (connection refused or broken: a node restarting).
var (
	errRetryable  = errors.New("retryable")
	errConnection = errors.New("connection error")
	errBusy       = errors.New("unavailable")
	// errServerError marks a 500 answer (not retried).
	errServerError = errors.New("server error")
)

func (c *regClient) do(ctx context.Context, host, method, path string, header http.Header, body []byte) (regResponse, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+host+path, rd)
	if err != nil {
		return regResponse{}, err
	}
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return regResponse{}, err
		}
		return regResponse{}, fmt.Errorf("%w: %w: %s %s: %v", errRetryable, errConnection, method, host+path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return regResponse{}, fmt.Errorf("%w: %w: %s %s: read body: %v", errRetryable, errConnection, method, host+path, err)
	}
	r := regResponse{Node: host, Status: resp.StatusCode, Header: resp.Header, Body: b}
	if resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusTooManyRequests {
		return r, fmt.Errorf("%w: %w: %s %s: %d %s", errRetryable, errBusy, method, host+path, resp.StatusCode, clip(b))
	}
	return r, nil
}

// retryPolicy bounds a client's retries.
type retryPolicy struct {
	attempts int
	backoff  time.Duration // first pause; doubles up to 1s
}

var clientRetries = retryPolicy{attempts: 30, backoff: 50 * time.Millisecond}

// retry runs op until it returns nil or a non-retryable error, at most
// p.attempts times. It returns how many attempts failed and were retried.
func (p retryPolicy) retry(ctx context.Context, op func(attempt int) error) (int, error) {
	backoff := p.backoff
	var err error
	for attempt := 0; attempt < p.attempts; attempt++ {
		if err = op(attempt); err == nil || !errors.Is(err, errRetryable) {
			return attempt, err
		}
		select {
		case <-ctx.Done():
			return attempt, fmt.Errorf("%v (after %d attempts: %w)", ctx.Err(), attempt+1, err)
		case <-time.After(backoff/2 + rand.N(backoff)):
		}
		backoff = min(2*backoff, time.Second)
	}
	return p.attempts - 1, fmt.Errorf("gave up after %d attempts: %w", p.attempts, err)
}

func expect(r regResponse, method, what string, want int) error {
	if r.Status >= 500 && r.Status != want {
		return fmt.Errorf("%w: %s %s on %s: status %d, want %d: %s", errServerError, method, what, r.Node, r.Status, want, clip(r.Body))
	}
	if r.Status != want {
		return fmt.Errorf("%s %s on %s: status %d, want %d: %s", method, what, r.Node, r.Status, want, clip(r.Body))
	}
	return nil
}

// pushBlob uploads data to repo: POST on host1, PUT (with the bytes) on host2.
func (c *regClient) pushBlob(ctx context.Context, host1, host2, repo string, data []byte) error {
	r, err := c.do(ctx, host1, http.MethodPost, "/v2/"+repo+"/blobs/uploads/", nil, nil)
	if err != nil {
		return err
	}
	if err := expect(r, "POST", repo+" upload", http.StatusAccepted); err != nil {
		return err
	}
	loc, err := url.Parse(r.Header.Get("Location"))
	if err != nil || loc.Path == "" {
		return fmt.Errorf("POST upload on %s: bad Location %q", host1, r.Header.Get("Location"))
	}
	q := loc.Query()
	q.Set("digest", sha256Digest(data))
	r, err = c.do(ctx, host2, http.MethodPut, loc.Path+"?"+q.Encode(),
		http.Header{"Content-Type": {"application/octet-stream"}}, data)
	if err != nil {
		return err
	}
	return expect(r, "PUT", repo+" upload", http.StatusCreated)
}

// putManifest PUTs a manifest; it returns the response (201 wanted) and the
// Flotilla-Index the write answered with.
func (c *regClient) putManifest(ctx context.Context, host, repo, ref, mediaType string, body []byte) (regResponse, uint64, error) {
	r, err := c.do(ctx, host, http.MethodPut, "/v2/"+repo+"/manifests/"+ref, http.Header{"Content-Type": {mediaType}}, body)
	if err != nil {
		return r, 0, err
	}
	if err := expect(r, "PUT", repo+":"+ref, http.StatusCreated); err != nil {
		return r, 0, err
	}
	if d := r.Header.Get("Docker-Content-Digest"); d != sha256Digest(body) {
		return r, 0, fmt.Errorf("PUT %s:%s on %s: Docker-Content-Digest %q, want %s", repo, ref, host, d, sha256Digest(body))
	}
	idx, err := strconv.ParseUint(r.Header.Get("Flotilla-Index"), 10, 64)
	if err != nil {
		return r, 0, fmt.Errorf("PUT %s:%s on %s: Flotilla-Index %q: %v", repo, ref, host, r.Header.Get("Flotilla-Index"), err)
	}
	return r, idx, nil
}

// getManifest GETs a manifest and checks that it has the wanted digest
// (when want is not empty) and that its bytes hash to its digest header.
func (c *regClient) getManifest(ctx context.Context, host, repo, ref string, header http.Header) (regResponse, string, error) {
	h := http.Header{"Accept": {acceptAll}}
	for k, v := range header {
		h[k] = v
	}
	r, err := c.do(ctx, host, http.MethodGet, "/v2/"+repo+"/manifests/"+ref, h, nil)
	if err != nil {
		return r, "", err
	}
	if err := expect(r, "GET", repo+":"+ref, http.StatusOK); err != nil {
		return r, "", err
	}
	d := sha256Digest(r.Body)
	if got := r.Header.Get("Docker-Content-Digest"); got != d {
		return r, "", fmt.Errorf("GET %s:%s on %s: Docker-Content-Digest %q but the body hashes to %s", repo, ref, host, got, d)
	}
	return r, d, nil
}

// smallManifest is a distinct image manifest over the given config and
// layers; label makes it unique.
func smallManifest(cfg blob, layers []blob, label string) []byte {
	m := ociManifest{SchemaVersion: 2, MediaType: mtOCIManifest, Config: cfg.desc(),
		Layers: []descriptor{}, Annotations: map[string]string{"flotilla.test.label": label}}
	for _, l := range layers {
		m.Layers = append(m.Layers, l.desc())
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(err) // plain structs always marshal
	}
	return b
}

// ---------------------------------------------------------------- load

// ackedWrite is a manifest PUT a node acknowledged with 201.
type ackedWrite struct {
	tag, digest string
	index       uint64
	node        string
}

// loadGen pushes small images (a fresh layer uploaded across two nodes and
// a manifest) to random target nodes and reads each back from another
// random node, retrying on 503 and connection errors as real clients do.
// Every acknowledged write is recorded; every operation that still fails
// after its retries is a failure.
type loadGen struct {
	repo    string
	cfgBlob blob
	rc      *regClient

	mu       sync.Mutex
	targets  []*node
	acked    []ackedWrite
	failures []string
	retries  int
	opsDone  int
	// retried attempts by cause, and a few examples of 503 answers
	connErrors, busyErrors int
	busyExamples           []string
	// 503s that said "leadership transfer in progress": a command raft
	// refused before it reached the log, which the node should have
	// retried on the next leader itself.
	transferRefused int

	stop chan struct{}
	wg   sync.WaitGroup
	// maxOps bounds the whole run, whatever happens.
	maxOps int
}

// startLoad starts workers goroutines of load on targets. It pushes the
// shared config blob first (on the main goroutine).
func startLoad(t testing.TB, targets []*node, repo string, workers int) *loadGen {
	t.Helper()
	l := &loadGen{repo: repo, rc: newRegClient(), targets: slices.Clone(targets), stop: make(chan struct{}), maxOps: 3000}
	l.cfgBlob = newBlob(mtOCIConfig, []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := clientRetries.retry(ctx, func(int) error {
		return l.rc.pushBlob(ctx, targets[0].HTTPAddr, targets[len(targets)-1].HTTPAddr, repo, l.cfgBlob.Data)
	}); err != nil {
		t.Fatalf("load setup: push config blob: %v", err)
	}
	for w := 0; w < workers; w++ {
		l.wg.Add(1)
		go l.worker(w)
	}
	return l
}

// note counts a failed attempt by its cause.
func (l *loadGen) note(err error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case errors.Is(err, errConnection):
		l.connErrors++
	case errors.Is(err, errBusy):
		l.busyErrors++
		if strings.Contains(err.Error(), "leadership transfer in progress") {
			l.transferRefused++
		}
		if len(l.busyExamples) < 5 {
			l.busyExamples = append(l.busyExamples, err.Error())
		}
	}
	return err
}

// setTargets changes which nodes the load is sent to.
func (l *loadGen) setTargets(nodes []*node) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.targets = slices.Clone(nodes)
}

func (l *loadGen) pick() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.targets[rand.N(len(l.targets))].HTTPAddr
}

// done reports the number of completed operations.
func (l *loadGen) done() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.opsDone
}

// waitOps waits until at least n more operations completed (successfully
// or not) than when it was called, so that each phase of a test sees load.
func (l *loadGen) waitOps(t testing.TB, n int) {
	t.Helper()
	start := l.done()
	waitFor(t, fmt.Sprintf("%d more load operations", n), convergeTimeout, func(context.Context) error {
		if got := l.done() - start; got < n {
			return fmt.Errorf("%d operations so far", got)
		}
		return nil
	})
}

func (l *loadGen) worker(w int) {
	defer l.wg.Done()
	for i := 0; ; i++ {
		select {
		case <-l.stop:
			return
		case <-time.After(time.Duration(20+rand.N(30)) * time.Millisecond):
		}
		l.mu.Lock()
		over := l.opsDone >= l.maxOps
		l.mu.Unlock()
		if over {
			return
		}
		retries, err := l.op(w, i)
		l.mu.Lock()
		l.opsDone++
		l.retries += retries
		if err != nil {
			l.failures = append(l.failures, fmt.Sprintf("worker %d op %d: %v", w, i, err))
		}
		l.mu.Unlock()
	}
}

// op pushes one image and reads it back; it returns the number of retries.
func (l *loadGen) op(w, i int) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tag := fmt.Sprintf("w%d-%d", w, i)
	layer := newBlob(mtOCILayerGz, []byte(fmt.Sprintf("layer %s %d", tag, rand.Uint64())))
	total := 0
	n, err := clientRetries.retry(ctx, func(int) error {
		return l.note(l.rc.pushBlob(ctx, l.pick(), l.pick(), l.repo, layer.Data))
	})
	total += n
	if err != nil {
		return total, fmt.Errorf("push layer: %w", err)
	}
	man := smallManifest(l.cfgBlob, []blob{layer}, tag)
	want := sha256Digest(man)
	var ack ackedWrite
	n, err = clientRetries.retry(ctx, func(int) error {
		host := l.pick()
		_, idx, err := l.rc.putManifest(ctx, host, l.repo, tag, mtOCIManifest, man)
		if err == nil {
			ack = ackedWrite{tag: tag, digest: want, index: idx, node: host}
		}
		return l.note(err)
	})
	total += n
	if err != nil {
		return total, fmt.Errorf("put manifest %s: %w", tag, err)
	}
	l.mu.Lock()
	l.acked = append(l.acked, ack)
	l.mu.Unlock()
	// Read it back on any node: every other op sends the write's index
	// back, the others rely on read-your-writes by default.
	var h http.Header
	if i%2 == 1 {
		h = http.Header{"Flotilla-Index": {strconv.FormatUint(ack.index, 10)}}
	}
	n, err = clientRetries.retry(ctx, func(int) error {
		r, got, err := l.rc.getManifest(ctx, l.pick(), l.repo, tag, h)
		if err != nil {
			return l.note(err)
		}
		if got != want || !bytes.Equal(r.Body, man) {
			return fmt.Errorf("read back %s on %s (written on %s at index %d): digest %s, want %s", tag, r.Node, ack.node, ack.index, got, want)
		}
		return nil
	})
	total += n
	if err != nil {
		return total, fmt.Errorf("read back: %w", err)
	}
	return total, nil
}

// snapshot returns the writes acknowledged so far.
func (l *loadGen) snapshot() []ackedWrite {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.acked)
}

// finish stops the load, waits for the workers and fails the test for
// every operation that failed after its retries.
func (l *loadGen) finish(t testing.TB) []ackedWrite {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	t.Logf("load on %s: %d operations, %d acknowledged manifest writes, %d failures; %d retried attempts (%d connection errors, %d answered 503/429)",
		l.repo, l.opsDone, len(l.acked), len(l.failures), l.retries, l.connErrors, l.busyErrors)
	if l.transferRefused > 0 {
		t.Errorf("%d requests answered 503 \"leadership transfer in progress\": raft refused the command before logging it, so the node should retry it on the next leader", l.transferRefused)
	}
	for _, e := range l.busyExamples {
		t.Logf("  retried after: %s", e)
	}
	for i, f := range l.failures {
		if i == 20 {
			t.Errorf("... and %d more failed operations", len(l.failures)-i)
			break
		}
		t.Errorf("load operation failed after retries: %s", f)
	}
	if len(l.acked) == 0 {
		t.Errorf("load: no write was acknowledged")
	}
	return slices.Clone(l.acked)
}

// checkAcked checks that every acknowledged write reads back, with its
// digest, from every node given (plain GETs, default consistency; retried
// on 503 only).
func checkAcked(t testing.TB, repo string, acked []ackedWrite, nodes []*node) {
	t.Helper()
	rc := newRegClient()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for _, n := range nodes {
		var wg sync.WaitGroup
		var mu sync.Mutex
		var bad []string
		sem := make(chan struct{}, 8)
		for _, a := range acked {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				_, err := clientRetries.retry(ctx, func(int) error {
					_, got, err := rc.getManifest(ctx, n.HTTPAddr, repo, a.tag, nil)
					if err == nil && got != a.digest {
						err = fmt.Errorf("digest %s, want %s", got, a.digest)
					}
					return err
				})
				if err != nil {
					mu.Lock()
					bad = append(bad, fmt.Sprintf("%s (acknowledged by %s at index %d): %v", a.tag, a.node, a.index, err))
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		sort.Strings(bad)
		for i, b := range bad {
			if i == 10 {
				t.Errorf("%s: ... and %d more acknowledged writes missing", n.ID, len(bad)-i)
				break
			}
			t.Errorf("%s: acknowledged write lost or wrong: %s", n.ID, b)
		}
		if len(bad) == 0 {
			t.Logf("%s: all %d acknowledged writes read back", n.ID, len(acked))
		}
	}
}
