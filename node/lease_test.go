package node_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flotilla/flotilla/api"
	"github.com/flotilla/flotilla/node"
)

// status is the node's GET /cluster/status.
func (tn *testNode) status() api.ClusterStatus {
	tn.t.Helper()
	r := tn.req(http.MethodGet, "/cluster/status", nil)
	expectStatus(tn.t, r, http.StatusOK)
	var st api.ClusterStatus
	if err := json.Unmarshal(r.body, &st); err != nil {
		tn.t.Fatalf("status: %v", err)
	}
	return st
}

// readsBy is the node's flotilla_reads_total for one path.
func (tn *testNode) readsBy(path string) int {
	tn.t.Helper()
	r := tn.req(http.MethodGet, "/metrics", nil)
	expectStatus(tn.t, r, http.StatusOK)
	prefix := `flotilla_reads_total{path="` + path + `"} `
	for _, line := range strings.Split(string(r.body), "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				tn.t.Fatalf("metric %q: %v", line, err)
			}
			return int(n)
		}
	}
	return 0
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(nodeStartTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startCluster starts three in-process nodes; the first bootstraps and
// leads, the others join it.
func startCluster(t *testing.T) []*testNode {
	// Production timings: leases of half a second, which a busy test
	// machine does not starve (200 ms heartbeats give 100 ms leases).
	timings := node.RaftTuning{HeartbeatTimeout: time.Second, ElectionTimeout: time.Second}
	var first string
	nodes := []*testNode{startNode(t, func(c *node.Config) { c.Raft, first = timings, c.GRPCAddr })}
	for range 2 {
		nodes = append(nodes, startNode(t, func(c *node.Config) { c.Raft, c.Join = timings, []string{first} }))
	}
	for _, n := range nodes[1:] {
		waitFor(t, "followers to hold read leases", func() bool { return n.status().ReadLease })
	}
	return nodes
}

// TestReadLeases checks the two promises of read leases on a real
// three-node cluster: an acknowledged write has been applied by every
// lease holder, and a holder answers reads from its own state.
func TestReadLeases(t *testing.T) {
	nodes := startCluster(t)
	leader, follower := nodes[0], nodes[1]
	if st := leader.status(); st.State != "Leader" || !st.ReadLease {
		t.Fatalf("first node: state %s, read lease %v; want a leader holding its lease", st.State, st.ReadLease)
	}
	const repo = "lease/app"
	im := newImage(t, "lease")
	leader.pushImage(repo, "base", im)

	t.Run("acknowledged means applied by every holder", func(t *testing.T) {
		for i := range 20 {
			via := nodes[i%len(nodes)].on(t)
			r := via.putManifest(repo, fmt.Sprintf("t%d", i), mtOCIManifest, im.raw)
			idx, err := strconv.ParseUint(r.header.Get(api.HeaderIndex), 10, 64)
			if err != nil {
				t.Fatalf("write %d: index header: %v", i, err)
			}
			for j, n := range nodes {
				if st := n.on(t).status(); st.ReadLease && st.AppliedIndex < idx {
					t.Fatalf("write %d acknowledged at index %d, but node %d holds a read lease at applied index %d", i, idx, j, st.AppliedIndex)
				}
			}
		}
	})

	t.Run("holders read locally", func(t *testing.T) {
		for j, n := range nodes {
			n := n.on(t)
			lease, index := n.readsBy("lease"), n.readsBy("read_index")
			const reads = 50
			for i := range reads {
				r := n.req(http.MethodGet, "/v2/"+repo+"/manifests/t"+strconv.Itoa(i%20), nil)
				expectStatus(t, r, http.StatusOK)
			}
			gotLease, gotIndex := n.readsBy("lease")-lease, n.readsBy("read_index")-index
			// A lease may lapse now and then on a busy machine; most reads
			// must be local.
			if gotLease < reads*9/10 {
				t.Errorf("node %d: %d of %d reads under the lease (%d through the read index)", j, gotLease, reads, gotIndex)
			}
		}
	})

	t.Run("a stopped holder does not stop writes or reads", func(t *testing.T) {
		nodes[2].stop()
		for i := range 5 {
			via := nodes[i%2].on(t)
			via.putManifest(repo, fmt.Sprintf("after%d", i), mtOCIManifest, im.raw)
			for _, n := range nodes[:2] {
				r := n.on(t).req(http.MethodGet, "/v2/"+repo+"/manifests/after"+strconv.Itoa(i), nil)
				expectStatus(t, r, http.StatusOK)
			}
		}
		waitFor(t, "the follower to keep its lease", func() bool { return follower.on(t).status().ReadLease })
	})
}
