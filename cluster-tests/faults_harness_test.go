package clustertests

// Fault-injection harness (issue 5): a private network of Linux network
// namespaces on a bridge, one namespace per flotilla node, MinIO on the
// bridge in the root namespace, and the means to break things: SIGKILL,
// SIGSTOP/SIGCONT, restarts, cut or lossy links (iptables in the node's
// namespace), delays (tc netem, where the kernel has it), MinIO stopped, a
// data dir on a small tmpfs. Tests using it need root; without root, or
// when `ip netns` does not work, they skip (or fail under
// FLOTILLA_REQUIRE_TOOLS=1 when root).

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	faultCmdTimeout = 30 * time.Second
	// faultPrefix names everything this harness creates in the kernel
	// (network namespaces, iptables comments), with the test binary's pid,
	// so that leftovers of a killed run can be recognised and removed.
	faultPrefix = "flotilla-fault"
)

// faultRequireNetns skips the test unless it runs as root with a working
// `ip netns`; under FLOTILLA_REQUIRE_TOOLS=1 a root run fails instead.
func faultRequireNetns(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("fault tests need root (network namespaces, iptables, tmpfs mounts); skipping")
	}
	fail := func(msg string) {
		t.Helper()
		if os.Getenv("FLOTILLA_REQUIRE_TOOLS") == "1" {
			t.Fatalf("%s (FLOTILLA_REQUIRE_TOOLS=1)", msg)
		}
		t.Skip(msg)
	}
	for _, tool := range []string{"ip", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			fail(tool + " not found on PATH (Debian: iproute2, iptables)")
		}
	}
	probe := fmt.Sprintf("%s-%d-probe", faultPrefix, os.Getpid())
	if out, err := faultExec("ip", "netns", "add", probe); err != nil {
		fail(fmt.Sprintf("ip netns add does not work here: %v: %s", err, out))
	}
	_, _ = faultExec("ip", "netns", "del", probe)
}

// faultExec runs a command and returns its combined output.
func faultExec(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), faultCmdTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// faultMust runs a command that must succeed.
func faultMust(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := faultExec(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func faultPidAlive(pid int) bool {
	return pid > 0 && syscall.Kill(pid, 0) == nil
}

// faultSweep removes namespaces, bridges and iptables rules left behind by
// earlier test binaries that died without cleaning up.
func faultSweep(t testing.TB) {
	out, _ := faultExec("ip", "netns", "list")
	for _, line := range strings.Split(out, "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		rest, ok := strings.CutPrefix(name, faultPrefix+"-")
		if !ok {
			continue
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		if pid, err := strconv.Atoi(pidStr); err == nil && !faultPidAlive(pid) {
			t.Logf("removing leftover network namespace %s", name)
			_, _ = faultExec("ip", "netns", "del", name)
		}
	}
	out, _ = faultExec("ip", "-d", "-o", "link", "show", "type", "bridge")
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name := strings.TrimSuffix(f[1], ":")
		i := slices.Index(f, "alias")
		if i < 0 || i+1 >= len(f) {
			continue
		}
		rest, ok := strings.CutPrefix(f[i+1], faultPrefix+"-")
		if !ok {
			continue
		}
		if pid, err := strconv.Atoi(rest); err == nil && !faultPidAlive(pid) {
			t.Logf("removing leftover bridge %s", name)
			_, _ = faultExec("ip", "link", "del", name)
		}
	}
	out, _ = faultExec("iptables", "-w", "-S", "FORWARD")
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(line, "-A FORWARD") || !strings.Contains(line, faultPrefix+"-") {
			continue
		}
		f := strings.Fields(line)
		i := slices.Index(f, "--comment")
		if i < 0 || i+1 >= len(f) {
			continue
		}
		rest, _ := strings.CutPrefix(strings.Trim(f[i+1], `"`), faultPrefix+"-")
		if pid, err := strconv.Atoi(rest); err == nil && !faultPidAlive(pid) {
			_, _ = faultExec("iptables", append([]string{"-w", "-D"}, f[1:]...)...)
		}
	}
}

// ------------------------------------------------------------- network

// faultNet is a bridge in the root namespace (it carries the gateway
// address: MinIO and the test's clients use it) and one network namespace
// per host, joined to the bridge by a veth pair.
type faultNet struct {
	t       testing.TB
	id      string
	bridge  string
	prefix  string // "10.a.b."
	gw      string // prefix + "1"
	comment string
	mu      sync.Mutex
	hosts   []*faultHost
	netem   *bool
}

type faultHost struct {
	name string // "n1"
	ns   string // network namespace
	ip   string
	veth string // the root side of the veth pair
}

func newFaultNet(t testing.TB) *faultNet {
	t.Helper()
	faultRequireNetns(t)
	faultSweep(t)
	var idb [3]byte
	_, _ = crand.Read(idb[:])
	id := hex.EncodeToString(idb[:])
	n := &faultNet{t: t, id: id, bridge: "flb" + id, comment: fmt.Sprintf("%s-%d", faultPrefix, os.Getpid())}
	n.prefix = faultFreeSubnet(t)
	n.gw = n.prefix + "1"
	t.Cleanup(n.close)
	faultMust(t, "ip", "link", "add", n.bridge, "type", "bridge")
	faultMust(t, "ip", "link", "set", "dev", n.bridge, "alias", n.comment)
	faultMust(t, "ip", "addr", "add", n.gw+"/24", "dev", n.bridge)
	faultMust(t, "ip", "link", "set", n.bridge, "up")
	// With br_netfilter loaded (Docker loads it and sets the FORWARD
	// policy to DROP), bridged frames between namespaces go through the
	// root FORWARD chain: let this bridge's traffic through.
	faultMust(t, "iptables", n.forwardRule("-I")...)
	return n
}

func (n *faultNet) forwardRule(op string) []string {
	args := []string{"-w", op, "FORWARD"}
	if op == "-I" {
		args = append(args, "1")
	}
	return append(args, "-i", n.bridge, "-o", n.bridge, "-m", "comment", "--comment", n.comment, "-j", "ACCEPT")
}

// faultFreeSubnet picks a 10.x.y.0/24 that no interface or route uses.
func faultFreeSubnet(t testing.TB) string {
	t.Helper()
	addrs, _ := faultExec("ip", "-o", "-4", "addr", "show")
	routes, _ := faultExec("ip", "-4", "route", "show", "table", "all")
	used := addrs + "\n" + routes
	for range 200 {
		p := fmt.Sprintf("10.%d.%d.", 200+rand.IntN(50), rand.IntN(256))
		if !strings.Contains(used, p) {
			return p
		}
	}
	t.Fatal("no free 10.x.y.0/24 subnet for the test network")
	return ""
}

// addHost creates a network namespace with an address on the bridge.
func (n *faultNet) addHost(name string) *faultHost {
	n.t.Helper()
	n.mu.Lock()
	idx := len(n.hosts)
	n.mu.Unlock()
	h := &faultHost{
		name: name,
		ns:   fmt.Sprintf("%s-%d-%s-%s", faultPrefix, os.Getpid(), n.id, name),
		ip:   fmt.Sprintf("%s%d", n.prefix, 11+idx),
		veth: fmt.Sprintf("flv%s%d", n.id, idx),
	}
	t := n.t
	faultMust(t, "ip", "netns", "add", h.ns)
	n.mu.Lock()
	n.hosts = append(n.hosts, h)
	n.mu.Unlock()
	faultMust(t, "ip", "link", "add", h.veth, "type", "veth", "peer", "name", "eth0", "netns", h.ns)
	faultMust(t, "ip", "link", "set", h.veth, "master", n.bridge, "up")
	faultMust(t, "ip", "-n", h.ns, "addr", "add", h.ip+"/24", "dev", "eth0")
	faultMust(t, "ip", "-n", h.ns, "link", "set", "eth0", "up")
	faultMust(t, "ip", "-n", h.ns, "link", "set", "lo", "up")
	// Fault rules go into their own chain, so healing is a flush.
	n.ipt(h, "-N", "FAULTS")
	n.ipt(h, "-I", "INPUT", "-j", "FAULTS")
	n.ipt(h, "-I", "OUTPUT", "-j", "FAULTS")
	return h
}

func (n *faultNet) ipt(h *faultHost, args ...string) {
	n.t.Helper()
	faultMust(n.t, "ip", append([]string{"netns", "exec", h.ns, "iptables", "-w"}, args...)...)
}

// cut drops every packet between a and b, both ways (TCP connections hang,
// as in a real partition, rather than fail fast).
func (n *faultNet) cut(a, b *faultHost) {
	n.t.Helper()
	for _, p := range [][2]*faultHost{{a, b}, {b, a}} {
		n.ipt(p[0], "-A", "FAULTS", "-s", p[1].ip, "-j", "DROP")
		n.ipt(p[0], "-A", "FAULTS", "-d", p[1].ip, "-j", "DROP")
	}
}

// lossy drops a random fraction p of the packets between a and b.
func (n *faultNet) lossy(a, b *faultHost, p float64) {
	n.t.Helper()
	prob := strconv.FormatFloat(p, 'f', 3, 64)
	for _, q := range [][2]*faultHost{{a, b}, {b, a}} {
		n.ipt(q[0], "-A", "FAULTS", "-d", q[1].ip, "-m", "statistic", "--mode", "random", "--probability", prob, "-j", "DROP")
	}
}

// delay adds latency to everything h sends, with tc netem. It reports
// false when the kernel has no netem (sch_netem), and does nothing then.
func (n *faultNet) delay(h *faultHost, d, jitter time.Duration) bool {
	n.t.Helper()
	out, err := faultExec("ip", "netns", "exec", h.ns, "tc", "qdisc", "replace", "dev", "eth0", "root", "netem",
		"delay", fmt.Sprintf("%dms", d.Milliseconds()), fmt.Sprintf("%dms", jitter.Milliseconds()))
	if err != nil {
		n.t.Logf("tc netem unavailable (%v: %s): no delay injected", err, out)
		return false
	}
	return true
}

// heal removes every fault rule and delay on h.
func (n *faultNet) heal(h *faultHost) {
	n.t.Helper()
	n.ipt(h, "-F", "FAULTS")
	_, _ = faultExec("ip", "netns", "exec", h.ns, "tc", "qdisc", "del", "dev", "eth0", "root")
}

func (n *faultNet) healAll() {
	n.t.Helper()
	n.mu.Lock()
	hosts := slices.Clone(n.hosts)
	n.mu.Unlock()
	for _, h := range hosts {
		n.heal(h)
	}
}

func (n *faultNet) close() {
	n.mu.Lock()
	hosts := n.hosts
	n.mu.Unlock()
	for _, h := range hosts {
		if out, err := faultExec("ip", "netns", "del", h.ns); err != nil {
			n.t.Errorf("cleanup: ip netns del %s: %v: %s", h.ns, err, out)
		}
		_, _ = faultExec("ip", "link", "del", h.veth) // gone with the namespace, normally
	}
	if out, err := faultExec("ip", "link", "del", n.bridge); err != nil {
		n.t.Errorf("cleanup: ip link del %s: %v: %s", n.bridge, err, out)
	}
	if out, err := faultExec("iptables", n.forwardRule("-D")...); err != nil {
		n.t.Errorf("cleanup: iptables -D FORWARD: %v: %s", err, out)
	}
}

// ------------------------------------------------------------- cluster

type faultClusterOptions struct {
	nodes    int      // initial voters, default 3
	nodeArgs []string // extra flags for every node
	// dataDir gives a node (by id, "n3") a prepared data dir.
	dataDir map[string]string
}

// faultCluster is N flotilla nodes (each in its own network namespace)
// and one MinIO, with a timeline of the faults injected.
type faultCluster struct {
	t      *testing.T
	net    *faultNet
	minio  *minioServer
	bucket string
	bin    string
	opts   faultClusterOptions
	origin time.Time // time zero of histories and the timeline
	ctl    *http.Client

	mu     sync.Mutex
	nodes  []*faultNode // every node ever started, in order
	events []faultEvent
	leads  []faultLeaderObs

	monStop chan struct{}
	monDone chan struct{}
}

type faultNode struct {
	*proc
	c       *faultCluster
	ID      string
	host    *faultHost
	HTTP    string // ip:5000
	Raft    string
	GRPC    string
	DataDir string
	// removed: taken out of the cluster on purpose; its process is
	// stopped and no check expects it to converge.
	removed bool
	paused  bool
}

// faultEvent is one fault on the timeline: [start, end] since origin.
type faultEvent struct {
	Start, End time.Duration
	What       string
}

// faultLeaderObs: at At, node ID claimed to be the leader.
type faultLeaderObs struct {
	At time.Duration
	ID string
}

func startFaultCluster(t *testing.T, opts faultClusterOptions) *faultCluster {
	t.Helper()
	if opts.nodes == 0 {
		opts.nodes = 3
	}
	requireTool(t, "minio")
	c := &faultCluster{t: t, opts: opts, bucket: "faults", bin: flotillaBinary(t),
		ctl:     &http.Client{Timeout: 2 * time.Second, Transport: faultTransport(1 * time.Second)},
		monStop: make(chan struct{}), monDone: make(chan struct{})}
	c.net = newFaultNet(t)
	c.startMinIO()
	c.origin = time.Now()
	for i := 1; i <= opts.nodes; i++ {
		c.addNode()
	}
	c.waitMembers(opts.nodes, time.Minute)
	go c.monitor()
	t.Cleanup(func() {
		close(c.monStop)
		<-c.monDone
	})
	return c
}

func faultTransport(dial time.Duration) *http.Transport {
	return &http.Transport{
		DialContext:         (&net.Dialer{Timeout: dial}).DialContext,
		MaxIdleConnsPerHost: 32,
		IdleConnTimeout:     30 * time.Second,
	}
}

func (c *faultCluster) startMinIO() {
	t := c.t
	m := &minioServer{
		Addr:      net.JoinHostPort(c.net.gw, strconv.Itoa(freePorts(t, 1)[0])),
		Dir:       filepath.Join(t.TempDir(), "minio-data"),
		AccessKey: "flotilla-test",
		SecretKey: "flotilla-test-secret",
		Region:    "us-east-1",
	}
	env := []string{
		"MINIO_ROOT_USER=" + m.AccessKey, "MINIO_ROOT_PASSWORD=" + m.SecretKey, "MINIO_REGION=" + m.Region,
		"MINIO_BROWSER=off", "MINIO_UPDATE=off", "MINIO_CI_CD=1",
	}
	m.proc = newProc(t, "minio", requireTool(t, "minio"), []string{"server", "--quiet", "--address", m.Addr, m.Dir}, env,
		httpProbe("http://"+m.Addr+"/minio/health/live"))
	m.start()
	m.makeBucket(t, c.bucket)
	c.minio = m
}

// since is the time elapsed since the cluster's origin.
func (c *faultCluster) since() time.Duration { return time.Since(c.origin) }

// addNode starts one more node; the first bootstraps, the others join the
// first live member.
func (c *faultCluster) addNode(extra ...string) *faultNode {
	t := c.t
	t.Helper()
	c.mu.Lock()
	id := fmt.Sprintf("n%d", len(c.nodes)+1)
	var join []string
	for _, o := range c.nodes {
		if !o.removed {
			join = append(join, o.GRPC)
		}
	}
	c.mu.Unlock()
	h := c.net.addHost(id)
	n := &faultNode{c: c, ID: id, host: h, HTTP: h.ip + ":5000", Raft: h.ip + ":7000", GRPC: h.ip + ":7001"}
	n.DataDir = c.opts.dataDir[id]
	if n.DataDir == "" {
		n.DataDir = filepath.Join(t.TempDir(), "data-"+id)
	}
	args := []string{"netns", "exec", h.ns, c.bin, "serve",
		"--node-id", id, "--data-dir", n.DataDir,
		"--http-addr", n.HTTP, "--raft-addr", n.Raft, "--grpc-addr", n.GRPC,
		"--blob-store", "s3", "--s3-endpoint", c.minio.Addr, "--s3-insecure", "--s3-bucket", c.bucket,
		"--s3-region", c.minio.Region, "--s3-access-key", c.minio.AccessKey, "--s3-secret-key", c.minio.SecretKey,
	}
	if len(join) > 0 {
		args = append(args, "--join", strings.Join(join, ","))
	}
	args = append(append(args, c.opts.nodeArgs...), extra...)
	var env []string
	if os.Getenv("FLOTILLA_RACE_BINARY") == "1" {
		env = append(env, "GORACE=halt_on_error=1")
	}
	ipPath, err := exec.LookPath("ip")
	if err != nil {
		t.Fatal(err)
	}
	n.proc = newProc(t, "flotilla-"+id, ipPath, args, env, httpProbe("http://"+n.HTTP+"/readyz"))
	n.start()
	c.mu.Lock()
	c.nodes = append(c.nodes, n)
	c.mu.Unlock()
	return n
}

// members are the nodes that were not removed on purpose.
func (c *faultCluster) members() []*faultNode {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*faultNode
	for _, n := range c.nodes {
		if !n.removed {
			out = append(out, n)
		}
	}
	return out
}

func (c *faultCluster) node(id string) *faultNode {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.nodes {
		if n.ID == id {
			return n
		}
	}
	c.t.Fatalf("no node %s", id)
	return nil
}

// event records a fault on the timeline; the returned func closes it.
func (c *faultCluster) event(format string, args ...any) func() {
	what := fmt.Sprintf(format, args...)
	start := c.since()
	c.t.Logf("[%6.2fs] fault: %s", start.Seconds(), what)
	c.mu.Lock()
	i := len(c.events)
	c.events = append(c.events, faultEvent{Start: start, End: start, What: what})
	c.mu.Unlock()
	return func() {
		end := c.since()
		c.mu.Lock()
		c.events[i].End = end
		c.mu.Unlock()
		c.t.Logf("[%6.2fs] healed: %s (%.2fs)", end.Seconds(), what, (end - start).Seconds())
	}
}

func (c *faultCluster) logf(format string, args ...any) {
	c.t.Helper()
	c.t.Logf("[%6.2fs] %s", c.since().Seconds(), fmt.Sprintf(format, args...))
}

// ------------------------------------------------------ node control

func (n *faultNode) pidOf() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil || n.cmd.Process == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// pause freezes the process (SIGSTOP): its sockets stay open, nothing
// answers.
func (n *faultNode) pause() {
	n.c.t.Helper()
	fmt.Fprintf(openAppend(n.logPath), "=== harness %s: SIGSTOP\n", time.Now().Format(time.RFC3339Nano))
	if err := syscall.Kill(n.pidOf(), syscall.SIGSTOP); err != nil {
		n.c.t.Fatalf("SIGSTOP %s: %v", n.ID, err)
	}
	n.c.mu.Lock()
	n.paused = true
	n.c.mu.Unlock()
}

func (n *faultNode) resume() {
	n.c.t.Helper()
	if err := syscall.Kill(n.pidOf(), syscall.SIGCONT); err != nil {
		n.c.t.Fatalf("SIGCONT %s: %v", n.ID, err)
	}
	fmt.Fprintf(openAppend(n.logPath), "=== harness %s: SIGCONT\n", time.Now().Format(time.RFC3339Nano))
	n.c.mu.Lock()
	n.paused = false
	n.c.mu.Unlock()
}

func (n *faultNode) isPaused() bool {
	n.c.mu.Lock()
	defer n.c.mu.Unlock()
	return n.paused
}

func (n *faultNode) URL() string { return "http://" + n.HTTP }

// getJSON GETs path on the node with the control client.
func (c *faultCluster) getJSON(ctx context.Context, n *faultNode, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.URL()+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.ctl.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s on %s: %s: %s", path, n.ID, resp.Status, bytes.TrimSpace(b))
	}
	return json.Unmarshal(b, v)
}

type faultStatus struct {
	NodeID       string `json:"node_id"`
	State        string `json:"state"`
	LeaderID     string `json:"leader_id"`
	AppliedIndex uint64 `json:"applied_index"`
	CommitIndex  uint64 `json:"commit_index"`
	Members      []struct {
		ID    string `json:"id"`
		Voter bool   `json:"voter"`
		State string `json:"state"`
	} `json:"members"`
}

func (c *faultCluster) status(n *faultNode, timeout time.Duration) (*faultStatus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var st faultStatus
	if err := c.getJSON(ctx, n, "/cluster/status", &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// statuses asks every member at once; nodes that do not answer within
// timeout are missing from the result.
func (c *faultCluster) statuses(timeout time.Duration) map[string]*faultStatus {
	nodes := c.members()
	out := map[string]*faultStatus{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, n := range nodes {
		if !n.running() || n.isPaused() {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if st, err := c.status(n, timeout); err == nil {
				mu.Lock()
				out[n.ID] = st
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out
}

// leaderClaims returns the ids of the nodes that say they lead.
func faultLeaderClaims(sts map[string]*faultStatus) []string {
	var ids []string
	for id, st := range sts {
		if st.State == "Leader" {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

// waitLeader waits until one node claims leadership and a majority of
// members name it, and returns it.
func (c *faultCluster) waitLeader(timeout time.Duration, exclude ...string) *faultNode {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	var last map[string]*faultStatus
	for time.Now().Before(deadline) {
		last = c.statuses(time.Second)
		votes := map[string]int{}
		for _, st := range last {
			votes[st.LeaderID]++
		}
		for _, id := range faultLeaderClaims(last) {
			if !slices.Contains(exclude, id) && votes[id] > len(c.members())/2 {
				return c.node(id)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.t.Fatalf("no leader agreed by a majority within %v; statuses: %s", timeout, faultJSON(last))
	return nil
}

// waitMembers waits until the leader's configuration has want servers and
// every member node answers /readyz.
func (c *faultCluster) waitMembers(want int, timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		l := c.waitLeader(timeout)
		st, err := c.status(l, time.Second)
		if err == nil && len(st.Members) == want {
			ready := true
			for _, n := range c.members() {
				if err := httpProbe(n.URL() + "/readyz")(context.Background()); err != nil {
					ready = false
				}
			}
			if ready {
				return
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("cluster did not reach %d ready members within %v (leader %s: %s, %v)", want, timeout, l.ID, faultJSON(st), err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// monitor records which node claims leadership, every 100 ms, until the
// test ends.
func (c *faultCluster) monitor() {
	defer close(c.monDone)
	last := ""
	for {
		claims := faultLeaderClaims(c.statuses(400 * time.Millisecond))
		id := strings.Join(claims, "+")
		if id != "" && id != last {
			c.mu.Lock()
			c.leads = append(c.leads, faultLeaderObs{At: c.since(), ID: id})
			c.mu.Unlock()
			last = id
		}
		select {
		case <-c.monStop:
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// lastLeader is the member that last claimed leadership alone, if any.
func (c *faultCluster) lastLeader() *faultNode {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.leads) == 0 {
		return nil
	}
	id := c.leads[len(c.leads)-1].ID
	for _, n := range c.nodes {
		if n.ID == id && !n.removed {
			return n
		}
	}
	return nil
}

// leaderChanges is how many times the observed leader changed.
func (c *faultCluster) leaderChanges() (int, []faultLeaderObs) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return max(len(c.leads)-1, 0), slices.Clone(c.leads)
}

// waitNewLeader polls until a node other than old claims leadership and
// returns it with the time since `since` (on the cluster clock).
func (c *faultCluster) waitNewLeader(old string, since time.Duration, timeout time.Duration) (*faultNode, time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, id := range faultLeaderClaims(c.statuses(300 * time.Millisecond)) {
			if id != old {
				return c.node(id), c.since() - since
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil, c.since() - since
}

// kill SIGKILLs a node.
func (n *faultNode) killNode() {
	n.c.t.Helper()
	if n.isPaused() {
		n.resume()
	}
	n.kill()
}

// restart starts a stopped or killed node again on its data dir and waits
// until it is ready.
func (n *faultNode) restart() {
	n.c.t.Helper()
	n.start()
}

// remove takes n out of the cluster through the CLI on a member, then
// stops its process (SIGTERM); it returns how long each step took.
func (c *faultCluster) remove(n *faultNode) (removed, stopped time.Duration) {
	c.t.Helper()
	var via *faultNode
	for _, m := range c.members() {
		if m != n && m.running() && !m.isPaused() {
			via = m
			break
		}
	}
	c.mu.Lock()
	n.removed = true
	c.mu.Unlock()
	began := time.Now()
	out, err := faultExec(c.bin, "cluster", "remove", n.ID, "--addr", via.GRPC, "--timeout", "20s")
	if err != nil {
		c.t.Fatalf("flotilla cluster remove %s via %s: %v\n%s", n.ID, via.ID, err, out)
	}
	removed = time.Since(began)
	if err := n.stop(); err != nil {
		c.logf("%s stopped after its removal: %v", n.ID, err)
	}
	return removed, time.Since(began) - removed
}

// crashed reports whether the node's process exited on its own (not
// stopped or killed by the test), with its exit error.
func (n *faultNode) crashed() (bool, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd != nil && isClosed(n.done) && !n.stopping, n.waitErr
}

// healAll undoes every fault: network rules, paused processes, stopped
// nodes and MinIO. A node that exited on its own is not restarted: it is
// returned, for the scenario to judge.
func (c *faultCluster) healAll() []*faultNode {
	c.t.Helper()
	c.net.healAll()
	if !c.minio.running() {
		c.minio.start()
	}
	var crashed []*faultNode
	for _, n := range c.members() {
		if n.isPaused() {
			n.resume()
		}
		if ok, _ := n.crashed(); ok {
			crashed = append(crashed, n)
			continue
		}
		if !n.running() {
			n.restart()
		}
	}
	return crashed
}

// ------------------------------------------------------------- checks

type faultStateHash struct {
	NodeID       string `json:"node_id"`
	AppliedIndex uint64 `json:"applied_index"`
	Hash         string `json:"hash"`
}

// waitConverged waits until every member shows the same state hash at the
// same applied index. Different hashes at the same index fail at once: the
// state machines diverged.
func (c *faultCluster) waitConverged(timeout time.Duration) []faultStateHash {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var hs []faultStateHash
		var errs []error
		for _, n := range c.members() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			var h faultStateHash
			err := c.getJSON(ctx, n, "/cluster/state-hash", &h)
			cancel()
			if err != nil {
				errs = append(errs, err)
				continue
			}
			hs = append(hs, h)
		}
		byIndex := map[uint64]map[string][]string{}
		for _, h := range hs {
			if byIndex[h.AppliedIndex] == nil {
				byIndex[h.AppliedIndex] = map[string][]string{}
			}
			byIndex[h.AppliedIndex][h.Hash] = append(byIndex[h.AppliedIndex][h.Hash], h.NodeID)
		}
		for idx, m := range byIndex {
			if len(m) > 1 {
				c.t.Fatalf("state machines diverged: different hashes at applied index %d: %s", idx, faultJSON(m))
			}
		}
		if len(errs) == 0 && len(byIndex) == 1 {
			return hs
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("nodes did not converge within %v: %s (errors: %v)", timeout, faultJSON(hs), errs)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// faultLogFindings lists lines of a node log that show a panic, a fatal
// runtime error or a data race.
func faultLogFindings(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return []string{fmt.Sprintf("cannot read %s: %v", path, err)}
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "panic:") || strings.HasPrefix(line, "fatal error:") ||
			strings.Contains(line, "WARNING: DATA RACE") || strings.Contains(line, `"msg":"handler panic"`) {
			out = append(out, line)
		}
	}
	return out
}

// snapshotIndexes lists the indexes of the raft snapshots in a data dir.
func faultSnapshotIndexes(dataDir string) []uint64 {
	dirs, _ := filepath.Glob(filepath.Join(dataDir, "raft", "snapshots", "*", "meta.json"))
	var out []uint64
	for _, p := range dirs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		var m struct{ Index uint64 }
		if json.Unmarshal(b, &m) == nil {
			out = append(out, m.Index)
		}
	}
	slices.Sort(out)
	return out
}

// faultArtifactDir is where a fault test leaves its history and, on a
// linearizability failure, the porcupine visualization:
// $FLOTILLA_TEST_ARTIFACTS/<test>/ when set, else a temp dir kept only if
// the test fails.
func faultArtifactDir(t *testing.T) string {
	t.Helper()
	name := strings.ReplaceAll(t.Name(), "/", "__")
	if root := os.Getenv("FLOTILLA_TEST_ARTIFACTS"); root != "" {
		dir := filepath.Join(root, name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	dir, err := os.MkdirTemp("", "flotilla-"+name+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			_ = os.RemoveAll(dir)
		}
	})
	return dir
}

func faultJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// faultToolsDir is the tool cache scripts/test.sh uses.
func faultToolsDir() string {
	if d := os.Getenv("FLOTILLA_TOOLS"); d != "" {
		return d
	}
	home := os.Getenv("HOME")
	if home == "" {
		home = "/root"
	}
	return filepath.Join(home, ".cache", "flotilla-tools")
}

// faultTmpfs mounts a tmpfs of size bytes on a fresh directory (unmounted
// at cleanup) and returns it.
func faultTmpfs(t *testing.T, size int64) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tmpfs")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	faultMust(t, "mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "tmpfs", dir)
	t.Cleanup(func() {
		if out, err := faultExec("umount", dir); err != nil {
			t.Errorf("cleanup: umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// faultFill writes a file into dir until the filesystem is full and
// returns its path.
func faultFill(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling %s: %v", dir, err)
			}
			break
		}
	}
	// Small writes too, down to the last bytes.
	for _, n := range []int{4096, 512, 1} {
		for {
			if _, err := f.Write(buf[:n]); err != nil {
				break
			}
		}
	}
	return path
}

func faultFree(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}
