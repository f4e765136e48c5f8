package clustertests

// Deployment check: deploy/compose.yaml (three nodes and MinIO) brought up
// with a Docker engine, images built FROM scratch around static binaries
// (no base image is pulled), pushed to and pulled from with docker itself,
// then the leader's container cut off the network while the others keep
// serving and agree. Without a Docker engine the test says so and skips.

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

const deployCmdTimeout = 10 * time.Minute

// deployDocker runs the docker CLI.
type deployDocker struct {
	t testing.TB
}

func (d deployDocker) exec(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%v (still running after %v)", err, timeout)
	}
	return strings.TrimSpace(out.String()), err
}

func (d deployDocker) run(args ...string) string {
	d.t.Helper()
	out, err := d.exec(deployCmdTimeout, args...)
	if err != nil {
		d.t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, clip([]byte(out)))
	}
	return out
}

// deployCompose is the part of a compose file this test understands.
type deployCompose struct {
	Services map[string]struct {
		Image       string   `yaml:"image"`
		Hostname    string   `yaml:"hostname"`
		Restart     string   `yaml:"restart"`
		Environment any      `yaml:"environment"` // a map or a list of K=V
		Ports       []string `yaml:"ports"`
		Volumes     []string `yaml:"volumes"`
		DependsOn   []string `yaml:"depends_on"`
	} `yaml:"services"`
}

var deployVarRE = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}`)

// deployExpand replaces ${VAR} and ${VAR:-default} from vars.
func deployExpand(s string, vars map[string]string) string {
	return deployVarRE.ReplaceAllStringFunc(s, func(m string) string {
		g := deployVarRE.FindStringSubmatch(m)
		if v, ok := vars[g[1]]; ok && v != "" {
			return v
		}
		return g[3]
	})
}

func deployEnv(v any) ([]string, error) {
	var out []string
	switch e := v.(type) {
	case nil:
	case map[string]any:
		for k, val := range e {
			out = append(out, fmt.Sprintf("%s=%v", k, val))
		}
	case []any:
		for _, kv := range e {
			out = append(out, fmt.Sprint(kv))
		}
	default:
		return nil, fmt.Errorf("environment of type %T", v)
	}
	sort.Strings(out)
	return out, nil
}

// deployStaticMinIO returns a statically linked minio binary (the tool
// cache holds one built with CGO_ENABLED=0, at the version scripts/test.sh
// installs).
func deployStaticMinIO(t *testing.T) string {
	t.Helper()
	script, err := os.ReadFile(filepath.Join(repoRoot(t), "scripts", "test.sh"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`"minio (github\.com/minio/minio@\S+)"`).FindSubmatch(script)
	if m == nil {
		t.Fatal("no minio version in scripts/test.sh")
	}
	pkg := string(m[1])
	dir := filepath.Join(faultToolsDir(), "static")
	bin, stamp := filepath.Join(dir, "minio"), filepath.Join(dir, ".minio.version")
	if b, err := os.ReadFile(stamp); err == nil && string(b) == pkg {
		if _, err := os.Stat(bin); err == nil {
			return bin
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("building a static minio (%s) into %s: once, it takes a few minutes", pkg, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "install", "-trimpath", pkg)
	cmd.Dir = faultToolsDir() // outside the module: its go.mod plays no part
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOBIN="+dir, "GOFLAGS=-buildvcs=false", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go install %s: %v\n%s", pkg, err, out)
	}
	if err := os.WriteFile(stamp, []byte(pkg), 0o644); err != nil {
		t.Fatal(err)
	}
	return bin
}

func deployCopy(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

// deployNode is one flotilla service of the compose file, as started.
type deployNode struct {
	service   string
	container string
	nodeID    string
	url       string // http://127.0.0.1:<published port>
	ip        string // on the private network
}

func TestDeployCompose(t *testing.T) {
	if _, err := exec.LookPath("docker"); err != nil {
		t.Skip("no docker CLI on PATH: skipping the deployment check")
	}
	d := deployDocker{t: t}
	if out, err := d.exec(30*time.Second, "info", "--format", "{{.ServerVersion}}"); err != nil {
		t.Skipf("no Docker engine answers (docker info: %v: %s): skipping the deployment check", err, clip([]byte(out)))
	}
	root := repoRoot(t)
	var idb [3]byte
	_, _ = crand.Read(idb[:])
	prefix := "flotilla-deploytest-" + hex.EncodeToString(idb[:])
	began := time.Now()
	var cleanups []func()
	t.Cleanup(func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	})
	quiet := func(args ...string) func() {
		return func() {
			if out, err := d.exec(2*time.Minute, args...); err != nil {
				t.Logf("cleanup: docker %s: %v: %s", strings.Join(args, " "), err, out)
			}
		}
	}

	// Images, FROM scratch around static binaries.
	flotillaImage, minioImage := prefix+"-flotilla:dev", prefix+"-minio:dev"
	fctx := t.TempDir()
	build := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(fctx, "flotilla"), "./cmd/flotilla")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("static build of flotilla: %v\n%s", err, out)
	}
	d.run("build", "-q", "-t", flotillaImage, "-f", filepath.Join(root, "deploy", "Dockerfile"), fctx)
	cleanups = append(cleanups, quiet("rmi", "-f", flotillaImage))
	mctx := t.TempDir()
	deployCopy(t, deployStaticMinIO(t), filepath.Join(mctx, "minio"))
	d.run("build", "-q", "-t", minioImage, "-f", filepath.Join(root, "deploy", "Dockerfile.minio"), mctx)
	cleanups = append(cleanups, quiet("rmi", "-f", minioImage))
	t.Logf("images built FROM scratch in %.1fs", time.Since(began).Seconds())

	// A private network with a subnet of our choosing, so that a container
	// can be put back on it with the address it had.
	network := prefix
	var subnet string
	for try := 0; ; try++ {
		subnet = fmt.Sprintf("172.%d.%d.0/24", 20+int(idb[0])%10, (int(idb[1])+try*37)%256)
		out, err := d.exec(time.Minute, "network", "create", "--driver", "bridge", "--subnet", subnet, network)
		if err == nil {
			break
		}
		if try == 20 {
			t.Fatalf("docker network create: %v: %s", err, out)
		}
	}
	cleanups = append(cleanups, quiet("network", "rm", network))

	// The services of deploy/compose.yaml, dependencies first.
	raw, err := os.ReadFile(filepath.Join(root, "deploy", "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var compose deployCompose
	if err := yaml.Unmarshal(raw, &compose); err != nil {
		t.Fatalf("deploy/compose.yaml: %v", err)
	}
	vars := map[string]string{"FLOTILLA_IMAGE": flotillaImage, "MINIO_IMAGE": minioImage}
	var names []string
	for name := range compose.Services {
		names = append(names, name)
	}
	sort.Slice(names, func(i, j int) bool {
		di, dj := len(compose.Services[names[i]].DependsOn), len(compose.Services[names[j]].DependsOn)
		if di != dj {
			return di < dj
		}
		return names[i] < names[j]
	})
	var nodes []*deployNode
	for _, name := range names {
		svc := compose.Services[name]
		container := prefix + "-" + name
		args := []string{"run", "-d", "--name", container, "--network", network, "--network-alias", name}
		if svc.Hostname != "" {
			args = append(args, "--hostname", svc.Hostname)
		}
		if svc.Restart != "" {
			// depends_on orders the starts but waits for nothing: a node
			// that finds no S3 yet exits and is restarted.
			args = append(args, "--restart", svc.Restart)
		}
		env, err := deployEnv(svc.Environment)
		if err != nil {
			t.Fatalf("service %s: %v", name, err)
		}
		for _, kv := range env {
			args = append(args, "-e", deployExpand(kv, vars))
		}
		for _, v := range svc.Volumes {
			src, dst, ok := strings.Cut(v, ":")
			if !ok {
				t.Fatalf("service %s: volume %q", name, v)
			}
			vol := prefix + "-" + src
			args = append(args, "-v", vol+":"+dst)
			cleanups = append(cleanups, quiet("volume", "rm", "-f", vol))
		}
		var url string
		for _, p := range svc.Ports {
			// host:hostport:containerport; the host port is replaced by a
			// free one so that runs never collide.
			parts := strings.Split(p, ":")
			port := freePorts(t, 1)[0]
			args = append(args, "-p", "127.0.0.1:"+strconv.Itoa(port)+":"+parts[len(parts)-1])
			url = "http://127.0.0.1:" + strconv.Itoa(port)
		}
		args = append(args, deployExpand(svc.Image, vars))
		// (cleanups run last first: logs, then rm)
		cleanups = append(cleanups, quiet("rm", "-f", "-v", container), func() {
			if t.Failed() {
				if out, err := d.exec(time.Minute, "logs", "--tail", "100", container); err == nil {
					t.Logf("---- docker logs %s ----\n%s", container, out)
				}
			}
		})
		d.run(args...)
		if strings.HasPrefix(name, "flotilla") {
			var nodeID string
			for _, kv := range env {
				if v, ok := strings.CutPrefix(kv, "FLOTILLA_NODE_ID="); ok {
					nodeID = v
				}
			}
			ip := d.run("inspect", "-f", "{{(index .NetworkSettings.Networks \""+network+"\").IPAddress}}", container)
			nodes = append(nodes, &deployNode{service: name, container: container, nodeID: nodeID, url: url, ip: ip})
		}
	}
	if len(nodes) != 3 {
		t.Fatalf("deploy/compose.yaml starts %d flotilla services, want 3", len(nodes))
	}
	for _, n := range nodes {
		deployWait(t, 3*time.Minute, n.service+" ready", func() error { return httpProbe(n.url + "/readyz")(context.Background()) })
	}
	t.Logf("compose services up on network %s (%s) after %.1fs", network, subnet, time.Since(began).Seconds())

	// docker push through one node, docker pull through another.
	tl := newTools(t) // docker push and pull with a private DOCKER_CONFIG
	pushPull := func(label string, via, from *deployNode) {
		t.Helper()
		pctx := t.TempDir()
		payload := randomBytes(t, 256<<10+17)
		writeFile(t, filepath.Join(pctx, "payload"), payload)
		writeFile(t, filepath.Join(pctx, "Dockerfile"), []byte("FROM scratch\nCOPY payload /payload\nCMD [\"/payload\"]\n"))
		ref := func(n *deployNode) string {
			return strings.TrimPrefix(n.url, "http://") + "/deploy/" + label + ":v1"
		}
		d.run("build", "-q", "-t", ref(via), pctx)
		id := d.run("image", "inspect", "-f", "{{.Id}}", ref(via))
		tl.run("docker", "push", ref(via))
		d.run("rmi", ref(via))
		tl.run("docker", "pull", ref(from))
		cleanups = append(cleanups, quiet("rmi", "-f", ref(from)))
		if got := d.run("image", "inspect", "-f", "{{.Id}}", ref(from)); got != id {
			t.Errorf("%s: image pulled through %s is %s, pushed through %s as %s", label, from.service, got, via.service, id)
		}
		c := d.run("create", ref(from))
		defer d.run("rm", c)
		out := filepath.Join(t.TempDir(), "payload")
		d.run("cp", c+":/payload", out)
		if got := readFile(t, out); !bytes.Equal(got, payload) {
			t.Errorf("%s: /payload pulled through %s differs from the pushed bytes (%d bytes, want %d)", label, from.service, len(got), len(payload))
		}
		t.Logf("docker push through %s, docker pull through %s: %s intact", via.service, from.service, label)
	}
	pushPull("first", nodes[0], nodes[1])

	// Cut the leader's container off the network.
	st := deployStatus(t, nodes[0])
	var leader *deployNode
	var others []*deployNode
	for _, n := range nodes {
		if n.nodeID == st.LeaderID {
			leader = n
		} else {
			others = append(others, n)
		}
	}
	if leader == nil {
		t.Fatalf("leader %q is none of the compose services", st.LeaderID)
	}
	cut := time.Now()
	d.run("network", "disconnect", network, leader.container)
	var newLeader string
	deployWait(t, time.Minute, "a new leader among the others", func() error {
		for _, n := range others {
			s := deployStatus(t, n)
			if s.State == "Leader" {
				newLeader = s.NodeID
				return nil
			}
		}
		return fmt.Errorf("no leader among %s, %s", others[0].service, others[1].service)
	})
	t.Logf("leader %s disconnected; %s leads %.1fs later", leader.service, newLeader, time.Since(cut).Seconds())
	pushPull("second", others[0], others[1])
	deployAgree(t, others, time.Minute)

	// Back on the network with its address: it catches up and agrees.
	d.run("network", "connect", "--ip", leader.ip, "--alias", leader.service, network, leader.container)
	deployWait(t, 2*time.Minute, leader.service+" ready after reconnecting", func() error {
		return httpProbe(leader.url + "/readyz")(context.Background())
	})
	deployAgree(t, nodes, 2*time.Minute)
	t.Logf("deployment check done in %.1fs", time.Since(began).Seconds())
}

// deployWait polls fn until it succeeds or timeout passes.
func deployWait(t *testing.T, timeout time.Duration, what string, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

var deployHTTP = &http.Client{Timeout: 3 * time.Second}

func deployGet(url string, v any) error {
	resp, err := deployHTTP.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func deployStatus(t *testing.T, n *deployNode) faultStatus {
	t.Helper()
	var st faultStatus
	if err := deployGet(n.url+"/cluster/status", &st); err != nil {
		t.Logf("%s: %v", n.service, err)
	}
	return st
}

// deployAgree waits until the nodes show the same state hash at the same
// applied index.
func deployAgree(t *testing.T, nodes []*deployNode, timeout time.Duration) {
	t.Helper()
	var hs []faultStateHash
	deployWait(t, timeout, "the nodes to agree", func() error {
		hs = hs[:0]
		for _, n := range nodes {
			var h faultStateHash
			if err := deployGet(n.url+"/cluster/state-hash", &h); err != nil {
				return err
			}
			hs = append(hs, h)
		}
		for _, h := range hs[1:] {
			if h.AppliedIndex != hs[0].AppliedIndex {
				return fmt.Errorf("not at one index yet: %s", faultJSON(hs))
			}
			if h.Hash != hs[0].Hash {
				t.Fatalf("state machines diverged at index %d: %s", h.AppliedIndex, faultJSON(hs))
			}
		}
		return nil
	})
	t.Logf("%d nodes agree: applied index %d, hash %.16s", len(nodes), hs[0].AppliedIndex, hs[0].Hash)
}
