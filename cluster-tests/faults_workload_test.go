package clustertests

// The fault suite's workload: concurrent clients push images and move tags
// through random nodes and read tags from random nodes. Every request is
// recorded with its call and return times and its outcome; tag writes and
// tag reads form the history checked for linearizability.

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
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type faultOutcome string

const (
	faultOK      faultOutcome = "ok"      // acknowledged
	faultFailed  faultOutcome = "failed"  // definitely without effect: a 4xx, or never sent
	faultUnknown faultOutcome = "unknown" // may or may not have taken effect: 5xx, timeout, cut connection
)

// faultOp is one recorded request. Kind "put" (a manifest PUT by tag) and
// "get" (a manifest GET by tag) act on the register Key (repo:tag); "blob"
// is a blob upload, counted but not part of the register history.
type faultOp struct {
	Process int           `json:"process"` // porcupine client id: a new one after an unknown outcome
	Client  int           `json:"client"`
	Kind    string        `json:"kind"`
	Key     string        `json:"key,omitempty"`
	Value   string        `json:"value"` // put: the digest written; get: the digest read, "" for none
	Node    string        `json:"node"`
	Call    time.Duration `json:"call"`
	Return  time.Duration `json:"return"`
	Outcome faultOutcome  `json:"outcome"`
	Status  int           `json:"status,omitempty"`
	Detail  string        `json:"detail,omitempty"`
	Index   uint64        `json:"index,omitempty"`  // Flotilla-Index of a write
	Push    bool          `json:"push,omitempty"`   // the put of a freshly pushed image
	Probe   bool          `json:"probe,omitempty"`  // sent on purpose to a node under a fault
	Canary  bool          `json:"canary,omitempty"` // the canary's write to the leader
}

// faultImage is a pushed image: its manifest and the two blobs it names.
type faultImage struct {
	Repo     string
	Manifest []byte
	Digest   string
	Blobs    []blob
}

type faultWorkload struct {
	c       *faultCluster
	seed    uint64
	repos   []string
	tags    []string
	stopCh  chan struct{}
	stopped atomic.Bool
	wg      sync.WaitGroup
	nextPID atomic.Int64

	mu      sync.Mutex
	ops     []*faultOp
	acked   []*faultImage   // images whose tag PUT was acknowledged
	healthy map[string]bool // node id -> passes /readyz (a load balancer's view)
	// inflight: requests under way, by node id; a node with one older
	// than faultSlow is avoided (a load balancer's outlier detection).
	inflight map[string]map[*faultOp]bool
}

const faultSlow = time.Second

type faultWorkloadOptions struct {
	clients int
}

// startFaultWorkload starts the clients and a health checker; stop ends
// them.
func startFaultWorkload(c *faultCluster, seed uint64, o faultWorkloadOptions) *faultWorkload {
	if o.clients == 0 {
		o.clients = 6
	}
	w := &faultWorkload{c: c, seed: seed, stopCh: make(chan struct{}),
		repos:   []string{"faults/app", "faults/tools"},
		tags:    []string{"t0", "t1", "t2"},
		healthy: map[string]bool{}, inflight: map[string]map[*faultOp]bool{}}
	w.nextPID.Store(int64(o.clients))
	w.wg.Add(1)
	go w.checkHealth()
	w.wg.Add(1)
	go w.canary()
	for i := range o.clients {
		w.wg.Add(1)
		go w.client(i)
	}
	c.t.Cleanup(w.stop)
	return w
}

// stop ends the workload and waits for every request in flight.
func (w *faultWorkload) stop() {
	if w.stopped.Swap(true) {
		return
	}
	close(w.stopCh)
	w.wg.Wait()
}

// checkHealth probes /readyz of every member, as a load balancer would,
// so that clients mostly avoid nodes that cannot serve.
func (w *faultWorkload) checkHealth() {
	defer w.wg.Done()
	hc := &http.Client{Timeout: time.Second, Transport: faultTransport(500 * time.Millisecond)}
	for {
		nodes := w.c.members()
		res := map[string]bool{}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, n := range nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ok := false
				if resp, err := hc.Get(n.URL() + "/readyz"); err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					ok = resp.StatusCode == http.StatusOK
				}
				mu.Lock()
				res[n.ID] = ok
				mu.Unlock()
			}()
		}
		wg.Wait()
		w.mu.Lock()
		w.healthy = res
		w.mu.Unlock()
		select {
		case <-w.stopCh:
			return
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// pick chooses a node as a load balancer would: one that passes /readyz
// and has no request pending for longer than faultSlow; failing that one
// that passes /readyz; failing that any member.
func (w *faultWorkload) pick(rng *rand.Rand) *faultNode {
	nodes := w.c.members()
	now := w.c.since()
	w.mu.Lock()
	var good, healthy []*faultNode
	for _, n := range nodes {
		if !w.healthy[n.ID] {
			continue
		}
		healthy = append(healthy, n)
		slow := false
		for op := range w.inflight[n.ID] {
			if now-op.Call > faultSlow {
				slow = true
				break
			}
		}
		if !slow {
			good = append(good, n)
		}
	}
	w.mu.Unlock()
	switch {
	case len(good) > 0:
		nodes = good
	case len(healthy) > 0:
		nodes = healthy
	}
	return nodes[rng.IntN(len(nodes))]
}

// pickAny chooses any member, healthy or not.
func (w *faultWorkload) pickAny(rng *rand.Rand) *faultNode {
	nodes := w.c.members()
	return nodes[rng.IntN(len(nodes))]
}

func (w *faultWorkload) begin(op *faultOp) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.inflight[op.Node] == nil {
		w.inflight[op.Node] = map[*faultOp]bool{}
	}
	w.inflight[op.Node][op] = true
}

func (w *faultWorkload) end(op *faultOp) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.inflight[op.Node], op)
}

type faultClient struct {
	w      *faultWorkload
	id     int
	pid    int
	rng    *rand.Rand
	hc     *http.Client
	seq    int
	canary bool
}

func (w *faultWorkload) newClient(id int) *faultClient {
	return &faultClient{w: w, id: id, pid: id,
		rng: rand.New(rand.NewPCG(w.seed, uint64(id)+1)),
		// Longer than the nodes' leader hold timeout (10 s), so that a
		// write held through an election is not cut short by the client.
		hc: &http.Client{Timeout: 20 * time.Second, Transport: faultTransport(2 * time.Second)}}
}

func (w *faultWorkload) client(id int) {
	defer w.wg.Done()
	cl := w.newClient(id)
	for !w.stopped.Load() {
		r := cl.rng.Float64()
		switch {
		case r < 0.3:
			cl.push()
		case r < 0.5:
			cl.move()
		case r < 0.6:
			// Reads sometimes go to any node, failing or not, with a
			// short timeout: a node under a fault must not answer stale.
			cl.get(w.pickAny(cl.rng), w.randomKey(cl.rng), false, 3*time.Second)
		default:
			cl.get(w.pick(cl.rng), w.randomKey(cl.rng), false, 0)
		}
	}
}

func (w *faultWorkload) randomKey(rng *rand.Rand) string {
	return w.repos[rng.IntN(len(w.repos))] + ":" + w.tags[rng.IntN(len(w.tags))]
}

// record adds an op to the history; after an unknown outcome the client
// continues as a new porcupine process (its old one may still be pending).
func (cl *faultClient) record(op *faultOp) {
	op.Process, op.Client, op.Canary = cl.pid, cl.id, cl.canary
	if op.Outcome == faultUnknown && op.Kind == "put" {
		cl.pid = int(cl.w.nextPID.Add(1))
	}
	cl.w.mu.Lock()
	cl.w.ops = append(cl.w.ops, op)
	cl.w.mu.Unlock()
}

// classify turns a write's answer into an outcome: an answer in want is
// ok, a 4xx failed, anything else (5xx, timeout, cut connection) unknown,
// except an error while dialing: then nothing was sent.
func faultClassify(status int, err error, want int) faultOutcome {
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return faultFailed
		}
		return faultUnknown
	}
	switch {
	case status == want:
		return faultOK
	case status >= 400 && status < 500:
		return faultFailed
	}
	return faultUnknown
}

type faultResp struct {
	status int
	header http.Header
	body   []byte
}

// do sends a request for op (which it marks in flight); timeout 0 is the
// client's default.
func (cl *faultClient) do(op *faultOp, timeout time.Duration, method, url string, header http.Header, body []byte) (*faultResp, error) {
	cl.w.begin(op)
	defer cl.w.end(op)
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	ctx := context.Background()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return nil, err
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := cl.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, err
	}
	return &faultResp{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

func faultDetail(r *faultResp, err error) (int, string) {
	if err != nil {
		return 0, err.Error()
	}
	if r.status >= 300 {
		return r.status, strings.TrimSpace(string(r.body[:min(len(r.body), 300)]))
	}
	return r.status, ""
}

// newImage makes an image with random content from the client's rng.
func (cl *faultClient) newImage(repo string) *faultImage {
	cl.seq++
	size := 512 + cl.rng.IntN(4096)
	if cl.rng.IntN(20) == 0 {
		size = 256 << 10
	}
	layer := make([]byte, size)
	for i := 0; i < len(layer); i += 8 {
		v := cl.rng.Uint64()
		for j := 0; j < 8 && i+j < len(layer); j++ {
			layer[i+j] = byte(v >> (8 * j))
		}
	}
	cfg, _ := json.Marshal(map[string]any{"architecture": "amd64", "os": "linux",
		"config": map[string]any{"Labels": map[string]string{
			"flotilla.faults": fmt.Sprintf("seed %d client %d image %d", cl.w.seed, cl.id, cl.seq)}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{sha256Digest(layer)}}})
	img := &faultImage{Repo: repo, Blobs: []blob{newBlob(mtOCIConfig, cfg), newBlob(mtOCILayerGz, layer)}}
	m := ociManifest{SchemaVersion: 2, MediaType: mtOCIManifest, Config: img.Blobs[0].desc(), Layers: []descriptor{img.Blobs[1].desc()}}
	img.Manifest, _ = json.Marshal(m)
	img.Digest = sha256Digest(img.Manifest)
	return img
}

// push uploads a new image's blobs (each through a random node) and PUTs
// its manifest by a tag (through another random node).
func (cl *faultClient) push() {
	w := cl.w
	key := w.randomKey(cl.rng)
	repo, tag, _ := strings.Cut(key, ":")
	img := cl.newImage(repo)
	for _, b := range img.Blobs {
		n := w.pick(cl.rng)
		op := &faultOp{Kind: "blob", Value: b.Digest, Node: n.ID, Call: w.c.since()}
		r, err := cl.do(op, 0, http.MethodPost, n.URL()+"/v2/"+repo+"/blobs/uploads/?digest="+url.QueryEscape(b.Digest),
			http.Header{"Content-Type": {"application/octet-stream"}}, b.Data)
		op.Return = w.c.since()
		op.Outcome = faultClassify(statusOf(r), err, http.StatusCreated)
		op.Status, op.Detail = faultDetail(r, err)
		cl.record(op)
		if op.Outcome != faultOK {
			return
		}
	}
	cl.put(w.pick(cl.rng), img, tag, true, false)
}

// move points a tag at an image that was pushed before (any repo's image
// is re-put in its own repo).
func (cl *faultClient) move() {
	w := cl.w
	w.mu.Lock()
	if len(w.acked) == 0 {
		w.mu.Unlock()
		cl.push()
		return
	}
	img := w.acked[cl.rng.IntN(len(w.acked))]
	w.mu.Unlock()
	cl.put(w.pick(cl.rng), img, w.tags[cl.rng.IntN(len(w.tags))], false, false)
}

func statusOf(r *faultResp) int {
	if r == nil {
		return 0
	}
	return r.status
}

// put PUTs img's manifest as repo:tag through n.
func (cl *faultClient) put(n *faultNode, img *faultImage, tag string, push, probe bool) *faultOp {
	w := cl.w
	op := &faultOp{Kind: "put", Key: img.Repo + ":" + tag, Value: img.Digest, Node: n.ID, Push: push, Probe: probe,
		Call: w.c.since()}
	r, err := cl.do(op, 0, http.MethodPut, n.URL()+"/v2/"+img.Repo+"/manifests/"+tag,
		http.Header{"Content-Type": {mtOCIManifest}}, img.Manifest)
	op.Return = w.c.since()
	op.Outcome = faultClassify(statusOf(r), err, http.StatusCreated)
	op.Status, op.Detail = faultDetail(r, err)
	if op.Outcome == faultOK {
		op.Index, _ = strconv.ParseUint(r.header.Get("Flotilla-Index"), 10, 64)
		if got := r.header.Get("Docker-Content-Digest"); got != img.Digest {
			op.Detail = fmt.Sprintf("answered Docker-Content-Digest %q, want %q", got, img.Digest)
			w.c.t.Errorf("put %s through %s: %s", op.Key, n.ID, op.Detail)
		}
		if push {
			w.mu.Lock()
			w.acked = append(w.acked, img)
			w.mu.Unlock()
		}
	}
	cl.record(op)
	return op
}

// get reads key through n (read-your-writes, the default). A read that
// fails has no effect: it is recorded but left out of the history checked.
func (cl *faultClient) get(n *faultNode, key string, probe bool, timeout time.Duration) *faultOp {
	w := cl.w
	repo, tag, _ := strings.Cut(key, ":")
	op := &faultOp{Kind: "get", Key: key, Node: n.ID, Probe: probe, Call: w.c.since()}
	r, err := cl.do(op, timeout, http.MethodGet, n.URL()+"/v2/"+repo+"/manifests/"+tag, http.Header{"Accept": {acceptAll}}, nil)
	op.Return = w.c.since()
	op.Status, op.Detail = faultDetail(r, err)
	switch {
	case err != nil:
		op.Outcome = faultClassify(0, err, http.StatusOK)
	case r.status == http.StatusOK:
		op.Outcome = faultOK
		op.Value = sha256Digest(r.body)
		if got := r.header.Get("Docker-Content-Digest"); got != op.Value {
			w.c.t.Errorf("get %s through %s: Docker-Content-Digest %q, body digest %q", key, n.ID, got, op.Value)
		}
	case r.status == http.StatusNotFound:
		op.Outcome = faultOK // no such tag (or repository) yet
	case r.status >= 400 && r.status < 500:
		op.Outcome = faultFailed
	default:
		op.Outcome = faultUnknown
	}
	cl.record(op)
	return op
}

// canary moves a tag through the node that last claimed leadership, every
// 100 ms, with a short timeout: the clients, like real ones behind a load
// balancer, can all be held up by one failing node, while the canary shows
// whether the cluster itself can commit (the unavailability window counts
// its writes too).
func (w *faultWorkload) canary() {
	defer w.wg.Done()
	cl := w.newClient(int(w.nextPID.Add(1)))
	cl.hc.Timeout = 3 * time.Second
	cl.canary = true
	for {
		select {
		case <-w.stopCh:
			return
		case <-time.After(100 * time.Millisecond):
		}
		w.mu.Lock()
		var img *faultImage
		if len(w.acked) > 0 {
			img = w.acked[cl.rng.IntN(len(w.acked))]
		}
		w.mu.Unlock()
		n := w.c.lastLeader()
		if img == nil || n == nil {
			continue
		}
		cl.put(n, img, w.tags[cl.rng.IntN(len(w.tags))], false, false)
	}
}

// prober sends requests to one node on purpose, whatever its health, and
// records them like any client (flagged as probes).
type faultProber struct {
	cl   *faultClient
	done chan struct{}
	stop chan struct{}
}

func (w *faultWorkload) probe(n *faultNode, every time.Duration) *faultProber {
	id := int(w.nextPID.Add(1))
	p := &faultProber{cl: w.newClient(id), done: make(chan struct{}), stop: make(chan struct{})}
	p.cl.hc.Timeout = 12 * time.Second
	go func() {
		defer close(p.done)
		for {
			select {
			case <-p.stop:
				return
			default:
			}
			w.mu.Lock()
			var img *faultImage
			if len(w.acked) > 0 {
				img = w.acked[p.cl.rng.IntN(len(w.acked))]
			}
			w.mu.Unlock()
			if img != nil {
				p.cl.put(n, img, w.tags[p.cl.rng.IntN(len(w.tags))], false, true)
			}
			p.cl.get(n, w.randomKey(p.cl.rng), true, 0)
			select {
			case <-p.stop:
				return
			case <-time.After(every):
			}
		}
	}()
	return p
}

// end stops the prober and waits for its last request.
func (p *faultProber) end() {
	close(p.stop)
	<-p.done
}

// history is a copy of the ops recorded so far.
func (w *faultWorkload) history() []*faultOp {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.ops)
}

// finalReads reads every key from every member, one after another, after
// the faults healed and the workload stopped; they join the history.
func (w *faultWorkload) finalReads(t *testing.T) {
	t.Helper()
	cl := w.newClient(int(w.nextPID.Add(1)))
	for _, n := range w.c.members() {
		for _, repo := range w.repos {
			for _, tag := range w.tags {
				op := cl.get(n, repo+":"+tag, false, 0)
				if op.Outcome != faultOK {
					t.Errorf("final read of %s on %s after the faults healed: %s %s", op.Key, n.ID, op.Outcome, op.Detail)
				}
			}
		}
	}
}

// checkAcked reads every acknowledged push back from every member: the
// manifest by digest and each blob, byte for byte.
func (w *faultWorkload) checkAcked(t *testing.T) int {
	t.Helper()
	w.mu.Lock()
	imgs := slices.Clone(w.acked)
	w.mu.Unlock()
	hc := &http.Client{Timeout: 30 * time.Second}
	type job struct {
		n    *faultNode
		path string
		want []byte
		what string
	}
	jobs := make(chan job)
	var errs []string
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				req, _ := http.NewRequest(http.MethodGet, j.n.URL()+j.path, nil)
				req.Header.Set("Accept", acceptAll)
				var msg string
				resp, err := hc.Do(req)
				if err != nil {
					msg = err.Error()
				} else {
					b, rerr := io.ReadAll(resp.Body)
					resp.Body.Close()
					switch {
					case rerr != nil:
						msg = rerr.Error()
					case resp.StatusCode != http.StatusOK:
						msg = fmt.Sprintf("status %d: %s", resp.StatusCode, b[:min(len(b), 200)])
					case !bytes.Equal(b, j.want):
						msg = fmt.Sprintf("%d bytes differ from the %d pushed", len(b), len(j.want))
					}
				}
				if msg != "" {
					mu.Lock()
					errs = append(errs, fmt.Sprintf("%s on %s: %s", j.what, j.n.ID, msg))
					mu.Unlock()
				}
			}
		}()
	}
	count := 0
	for _, n := range w.c.members() {
		for _, img := range imgs {
			jobs <- job{n, "/v2/" + img.Repo + "/manifests/" + img.Digest, img.Manifest, "manifest " + img.Repo + "@" + img.Digest}
			count++
			for _, b := range img.Blobs {
				jobs <- job{n, "/v2/" + img.Repo + "/blobs/" + b.Digest, b.Data, "blob " + img.Repo + "@" + b.Digest}
				count++
			}
		}
	}
	close(jobs)
	wg.Wait()
	if len(errs) > 0 {
		t.Errorf("%d of %d reads of acknowledged pushes failed after the faults healed; first ones:\n  %s",
			len(errs), count, strings.Join(errs[:min(len(errs), 20)], "\n  "))
	}
	return len(imgs)
}

// faultStats summarises a history.
type faultStats struct {
	writes, reads, blobs [3]int // ok, failed, unknown
	// window is the longest time without an acknowledged write, between
	// from and to; windowAt is when it began.
	window, windowAt time.Duration
}

func faultOutcomeIndex(o faultOutcome) int {
	switch o {
	case faultOK:
		return 0
	case faultFailed:
		return 1
	}
	return 2
}

func faultSummarize(ops []*faultOp, from, to time.Duration) faultStats {
	var s faultStats
	var okAt []time.Duration
	for _, op := range ops {
		i := faultOutcomeIndex(op.Outcome)
		switch op.Kind {
		case "put":
			s.writes[i]++
			if op.Outcome == faultOK {
				okAt = append(okAt, op.Return)
			}
		case "get":
			s.reads[i]++
		case "blob":
			s.blobs[i]++
		}
	}
	slices.Sort(okAt)
	prev := from
	for _, at := range append(okAt, to) {
		if at < from || at > to {
			continue
		}
		if gap := at - prev; gap > s.window {
			s.window, s.windowAt = gap, prev
		}
		prev = at
	}
	return s
}

// firstOKWriteAfter is the return time of the first acknowledged write
// called at or after at (and accepted by filter, when given).
func faultFirstOKWriteAfter(ops []*faultOp, at time.Duration, filter func(*faultOp) bool) (time.Duration, bool) {
	best, found := time.Duration(0), false
	for _, op := range ops {
		if filter != nil && !filter(op) {
			continue
		}
		if op.Kind == "put" && op.Outcome == faultOK && op.Call >= at && (!found || op.Return < best) {
			best, found = op.Return, true
		}
	}
	return best, found
}
