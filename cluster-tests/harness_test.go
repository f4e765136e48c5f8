package clustertests

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Guards against hangs, not assertions about speed: a process that is not
// ready after startupTimeout, or still running stopTimeout after SIGTERM, is
// reported as broken.
const (
	startupTimeout = 3 * time.Minute
	stopTimeout    = 3 * time.Minute
	toolTimeout    = 10 * time.Minute
	logTailBytes   = 64 << 10
)

const modulePath = "github.com/flotilla/flotilla"

var (
	buildOnce   sync.Once
	buildDir    string
	buildPath   string
	buildErr    error
	buildOutput []byte
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// repoRoot walks up from the package directory to the module root.
func repoRoot(t testing.TB) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatalf("getwd: %v", err)
	}
	for dir := wd; ; {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil {
			sc := bufio.NewScanner(bytes.NewReader(b))
			for sc.Scan() {
				f := strings.Fields(sc.Text())
				if len(f) == 2 && f[0] == "module" && f[1] == modulePath {
					return dir
				}
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("no go.mod for module %s above %s", modulePath, wd)
		}
		dir = parent
	}
}

// flotillaBinary builds ./cmd/flotilla once per test binary run (or returns
// $FLOTILLA_BINARY when set). FLOTILLA_RACE_BINARY=1 builds it with -race:
// a data race then shows up as an unclean exit (status 66) with the report
// in the node's log.
func flotillaBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("FLOTILLA_BINARY"); p != "" {
		return p
	}
	root := repoRoot(t)
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "flotilla-bin-")
		if buildErr != nil {
			return
		}
		buildPath = filepath.Join(buildDir, "flotilla")
		args := []string{"build", "-o", buildPath}
		if os.Getenv("FLOTILLA_RACE_BINARY") == "1" {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, "./cmd/flotilla")...)
		cmd.Dir = root
		buildOutput, buildErr = cmd.CombinedOutput()
	})
	if buildErr != nil {
		t.Fatalf("go build ./cmd/flotilla failed: %v\n%s", buildErr, buildOutput)
	}
	return buildPath
}

// requireTool returns the path of an external program. When it is missing the
// test is skipped, or fails when FLOTILLA_REQUIRE_TOOLS=1 (as scripts/test.sh
// sets it).
func requireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	msg := fmt.Sprintf("%s not found on PATH; scripts/test.sh installs it", name)
	if os.Getenv("FLOTILLA_REQUIRE_TOOLS") == "1" {
		t.Fatalf("%s (FLOTILLA_REQUIRE_TOOLS=1)", msg)
	}
	t.Skip(msg)
	return ""
}

var (
	portsMu sync.Mutex
	// ports handed out by this test binary: a stopped process keeps its ports
	// for its restart, so they are never handed out twice.
	portsUsed = map[int]bool{}
)

// freePorts returns n distinct loopback TCP ports that were free a moment ago.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	var ports []int
	for tries := 0; len(ports) < n; tries++ {
		if tries == 10000 {
			t.Fatalf("no free loopback port in %d-%d", lowPortMin, lowPortMax)
		}
		// Below Linux's ephemeral range (32768-60999 by default): no
		// outgoing connection can take the port between this check and
		// the process binding it.
		p := lowPortMin + mrand.IntN(lowPortMax-lowPortMin+1)
		if portsUsed[p] {
			continue
		}
		l, err := net.Listen("tcp", loopback(p))
		if err != nil {
			continue
		}
		ls = append(ls, l)
		portsUsed[p] = true
		ports = append(ports, p)
	}
	return ports
}

const lowPortMin, lowPortMax = 20000, 32767

func loopback(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// proc is one server process managed by a test: started, probed for
// readiness, stopped by SIGTERM or SIGKILL, started again with the same
// arguments. Its output goes to a log file that is shown when the test fails.
type proc struct {
	t       testing.TB
	name    string
	path    string
	args    []string
	env     []string
	dir     string
	logPath string
	ready   func(ctx context.Context) error

	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{}
	waitErr  error
	stopping bool
	starts   int
}

func newProc(t testing.TB, name, path string, args, env []string, ready func(context.Context) error) *proc {
	t.Helper()
	dir := t.TempDir()
	p := &proc{
		t: t, name: name, path: path, args: args, env: env, dir: dir,
		logPath: filepath.Join(dir, name+".log"),
		ready:   ready,
	}
	t.Cleanup(p.cleanup)
	return p
}

func (p *proc) cleanup() {
	p.mu.Lock()
	cmd, done, stopping := p.cmd, p.done, p.stopping
	p.mu.Unlock()
	if cmd != nil {
		select {
		case <-done:
			if !stopping {
				p.t.Errorf("%s exited unexpectedly: %v", p.name, p.exitErr())
			}
		default:
			p.mu.Lock()
			p.stopping = true
			p.mu.Unlock()
			_ = cmd.Process.Kill()
			<-done
		}
	}
	saveArtifact(p.t, p.logPath)
	if p.t.Failed() {
		p.t.Logf("---- %s log (%s), last %d KiB ----\n%s\n---- end of %s log ----",
			p.name, p.logPath, logTailBytes>>10, tailFile(p.logPath, logTailBytes), p.name)
	}
}

// start runs the process and waits until its readiness probe passes.
func (p *proc) start() {
	p.t.Helper()
	p.mu.Lock()
	running := p.cmd != nil && !isClosed(p.done)
	p.mu.Unlock()
	if running {
		p.t.Fatalf("%s: start while still running", p.name)
	}
	p.starts++
	f, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.t.Fatalf("%s: open log: %v", p.name, err)
	}
	fmt.Fprintf(f, "=== harness %s: start #%d: %s %s\n", time.Now().Format(time.RFC3339Nano), p.starts, p.path, strings.Join(p.args, " "))
	cmd := exec.Command(p.path, p.args...)
	cmd.Dir = p.dir
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout = f
	cmd.Stderr = f
	// Never leave a server behind if the test binary dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		p.t.Fatalf("%s: start %s: %v", p.name, p.path, err)
	}
	_ = f.Close()
	done := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.done, p.waitErr, p.stopping = cmd, done, nil, false
	p.mu.Unlock()
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
		close(done)
	}()
	p.waitReady()
}

func (p *proc) waitReady() {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startupTimeout)
	defer cancel()
	var lastErr error
	for {
		probeCtx, probeCancel := context.WithTimeout(ctx, 5*time.Second)
		lastErr = p.ready(probeCtx)
		probeCancel()
		if lastErr == nil {
			return
		}
		select {
		case <-p.done:
			p.t.Fatalf("%s exited before it was ready: %v (last probe: %v)", p.name, p.exitErr(), lastErr)
		case <-ctx.Done():
			p.t.Fatalf("%s not ready %v after start (last probe: %v)", p.name, startupTimeout, lastErr)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (p *proc) exitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.waitErr
}

func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil && !isClosed(p.done)
}

// stop sends SIGTERM and waits for the process to exit. It returns the exit
// error (nil for a clean exit with status 0).
func (p *proc) stop() error {
	p.t.Helper()
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.stopping = true
	p.mu.Unlock()
	if cmd == nil || isClosed(done) {
		return fmt.Errorf("%s was not running (exit: %v)", p.name, p.exitErr())
	}
	fmt.Fprintf(openAppend(p.logPath), "=== harness %s: SIGTERM\n", time.Now().Format(time.RFC3339Nano))
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		return p.exitErr()
	case <-time.After(stopTimeout):
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("%s still running %v after SIGTERM, killed", p.name, stopTimeout)
	}
}

// stopClean stops with SIGTERM and fails the test unless the process exits
// with status 0.
func (p *proc) stopClean() {
	p.t.Helper()
	if err := p.stop(); err != nil {
		p.t.Errorf("%s: graceful stop (SIGTERM): %v", p.name, err)
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	p.t.Helper()
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.stopping = true
	p.mu.Unlock()
	if cmd == nil || isClosed(done) {
		p.t.Fatalf("%s: kill while not running (exit: %v)", p.name, p.exitErr())
	}
	fmt.Fprintf(openAppend(p.logPath), "=== harness %s: SIGKILL\n", time.Now().Format(time.RFC3339Nano))
	_ = cmd.Process.Kill()
	<-done
}

func openAppend(path string) io.Writer {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return io.Discard
	}
	return closingWriter{f}
}

// closingWriter closes the file after a single write (used for one-line log
// markers).
type closingWriter struct{ f *os.File }

func (w closingWriter) Write(b []byte) (int, error) {
	n, err := w.f.Write(b)
	_ = w.f.Close()
	return n, err
}

func isClosed(ch chan struct{}) bool {
	if ch == nil {
		return false
	}
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func tailFile(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(cannot read log: %v)", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(cannot stat log: %v)", err)
	}
	off := int64(0)
	if st.Size() > n {
		off = st.Size() - n
	}
	b, _ := io.ReadAll(io.NewSectionReader(f, off, st.Size()-off))
	if off > 0 {
		return "...(truncated)...\n" + string(b)
	}
	return string(b)
}

// saveArtifact copies a file or a directory tree below
// $FLOTILLA_TEST_ARTIFACTS/<test name>/ when that variable is set.
func saveArtifact(t testing.TB, src string) {
	root := os.Getenv("FLOTILLA_TEST_ARTIFACTS")
	if root == "" {
		return
	}
	dstDir := filepath.Join(root, strings.ReplaceAll(t.Name(), "/", "__"))
	base := filepath.Dir(src)
	err := filepath.Walk(src, func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		rel, err := filepath.Rel(base, path)
		if err != nil {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		dst := filepath.Join(dstDir, rel)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o644)
	})
	if err != nil {
		t.Logf("saving artifact %s: %v", src, err)
	}
}

// httpProbe returns a readiness probe that wants status 200 from url.
func httpProbe(url string) func(context.Context) error {
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return nil
	}
}

// ---------------------------------------------------------------- flotilla

type nodeConfig struct {
	ID      string   // --node-id, default "1"
	DataDir string   // --data-dir, default a fresh temp dir
	Args    []string // extra flags after the standard ones
	Env     []string // extra environment
}

// node is one `flotilla serve` process.
type node struct {
	*proc
	ID       string
	DataDir  string
	HTTPAddr string
	RaftAddr string
	GRPCAddr string
}

// startNode starts a flotilla node on fresh loopback ports and waits until
// GET /readyz answers 200.
func startNode(t testing.TB, cfg nodeConfig) *node {
	t.Helper()
	bin := flotillaBinary(t)
	if cfg.ID == "" {
		cfg.ID = "1"
	}
	if cfg.DataDir == "" {
		cfg.DataDir = filepath.Join(t.TempDir(), "data")
	}
	ports := freePorts(t, 3)
	n := &node{
		ID:       cfg.ID,
		DataDir:  cfg.DataDir,
		HTTPAddr: loopback(ports[0]),
		RaftAddr: loopback(ports[1]),
		GRPCAddr: loopback(ports[2]),
	}
	args := []string{"serve",
		"--node-id", n.ID,
		"--data-dir", n.DataDir,
		"--http-addr", n.HTTPAddr,
		"--raft-addr", n.RaftAddr,
		"--grpc-addr", n.GRPCAddr,
	}
	args = append(args, cfg.Args...)
	env := cfg.Env
	if os.Getenv("FLOTILLA_RACE_BINARY") == "1" {
		// Stop at the first data race, so that it fails the test that hit it.
		env = append([]string{"GORACE=halt_on_error=1"}, env...)
	}
	n.proc = newProc(t, "flotilla-node-"+n.ID, bin, args, env, httpProbe("http://"+n.HTTPAddr+"/readyz"))
	n.start()
	return n
}

func (n *node) Host() string { return n.HTTPAddr }
func (n *node) URL() string  { return "http://" + n.HTTPAddr }

// ------------------------------------------------------------------- MinIO

type minioServer struct {
	*proc
	Addr      string
	Dir       string
	AccessKey string
	SecretKey string
	Region    string
}

// startMinIO starts `minio server` on a free loopback port with its data in a
// fresh temp dir and waits for /minio/health/live.
func startMinIO(t testing.TB) *minioServer {
	t.Helper()
	bin := requireTool(t, "minio")
	m := &minioServer{
		Addr:      loopback(freePorts(t, 1)[0]),
		Dir:       filepath.Join(t.TempDir(), "minio-data"),
		AccessKey: "flotilla-test",
		SecretKey: "flotilla-test-secret",
		Region:    "us-east-1",
	}
	env := []string{
		"MINIO_ROOT_USER=" + m.AccessKey,
		"MINIO_ROOT_PASSWORD=" + m.SecretKey,
		"MINIO_REGION=" + m.Region,
		"MINIO_BROWSER=off",
		"MINIO_UPDATE=off",
		"MINIO_CI_CD=1",
	}
	m.proc = newProc(t, "minio", bin, []string{"server", "--quiet", "--address", m.Addr, m.Dir}, env,
		httpProbe("http://"+m.Addr+"/minio/health/live"))
	m.start()
	return m
}

func (m *minioServer) Endpoint() string { return "http://" + m.Addr }

// ---------------------------------------------------- CNCF Distribution

// distributionServer is CNCF Distribution's `registry` binary with
// filesystem (or S3) storage: the reference the harness is checked against.
type distributionServer struct {
	*proc
	Addr string
	Dir  string
}

func startDistribution(t testing.TB, s3 *minioServer, bucket string) *distributionServer {
	t.Helper()
	bin := requireTool(t, "registry")
	d := &distributionServer{
		Addr: loopback(freePorts(t, 1)[0]),
		Dir:  filepath.Join(t.TempDir(), "registry-data"),
	}
	storage := fmt.Sprintf("  filesystem:\n    rootdirectory: %s\n", d.Dir)
	if s3 != nil {
		storage = fmt.Sprintf("  s3:\n    accesskey: %s\n    secretkey: %s\n    region: %s\n    regionendpoint: %s\n    bucket: %s\n    secure: false\n    forcepathstyle: true\n",
			s3.AccessKey, s3.SecretKey, s3.Region, s3.Endpoint(), bucket)
	}
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: info
storage:
%s  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
  secret: flotilla-cluster-tests
  draintimeout: 5s
`, storage, d.Addr)
	cfgPath := filepath.Join(t.TempDir(), "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	d.proc = newProc(t, "distribution", bin, []string{"serve", cfgPath}, []string{"OTEL_TRACES_EXPORTER=none"}, httpProbe("http://"+d.Addr+"/v2/"))
	d.start()
	return d
}

func (d *distributionServer) Host() string { return d.Addr }
func (d *distributionServer) URL() string  { return "http://" + d.Addr }

// --------------------------------------------------------- registry target

// registryServer is what the registry-level tests need from the server under
// test: its address and the means to stop and start it on the same data.
type registryServer interface {
	Host() string
	URL() string
	start()
	stop() error
	stopClean()
	kill()
}

type registryOptions struct {
	allowSparse bool
	// s3 selects the S3 blob store on this MinIO (bucket created by the
	// caller); nil means the default filesystem blob store.
	s3       *minioServer
	s3Bucket string
}

// targetIsDistribution reports whether FLOTILLA_TARGET=distribution asks to
// run the registry tests against CNCF Distribution instead of flotilla.
func targetIsDistribution() bool { return os.Getenv("FLOTILLA_TARGET") == "distribution" }

// startRegistry starts the registry under test: a single flotilla node, or
// CNCF Distribution when FLOTILLA_TARGET=distribution.
func startRegistry(t testing.TB, o registryOptions) registryServer {
	t.Helper()
	if targetIsDistribution() {
		return startDistribution(t, o.s3, o.s3Bucket)
	}
	var args []string
	if o.allowSparse {
		args = append(args, "--allow-sparse")
	}
	if o.s3 != nil {
		args = append(args,
			"--blob-store", "s3",
			"--s3-endpoint", o.s3.Addr,
			"--s3-insecure",
			"--s3-bucket", o.s3Bucket,
			"--s3-region", o.s3.Region,
			"--s3-access-key", o.s3.AccessKey,
			"--s3-secret-key", o.s3.SecretKey,
		)
	}
	return startNode(t, nodeConfig{Args: args})
}

// ------------------------------------------------------------------ tools

// tools runs external client programs with a private HOME so that they
// neither read nor write the user's configuration.
type tools struct {
	t    testing.TB
	home string
	env  []string
}

func newTools(t testing.TB) *tools {
	t.Helper()
	home := t.TempDir()
	for _, d := range []string{".docker", ".config", "run"} {
		if err := os.MkdirAll(filepath.Join(home, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	return &tools{t: t, home: home, env: []string{
		"HOME=" + home,
		"DOCKER_CONFIG=" + filepath.Join(home, ".docker"),
		"XDG_CONFIG_HOME=" + filepath.Join(home, ".config"),
		"XDG_RUNTIME_DIR=" + filepath.Join(home, "run"),
		"REGISTRY_AUTH_FILE=" + filepath.Join(home, "auth.json"),
	}}
}

type toolRun struct {
	dir   string
	stdin []byte
	env   []string
}

// exec runs name with args and returns stdout, stderr and the error.
func (tl *tools) exec(o toolRun, name string, args ...string) ([]byte, []byte, error) {
	tl.t.Helper()
	path := requireTool(tl.t, name)
	ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Dir = o.dir
	cmd.Env = append(append(os.Environ(), tl.env...), o.env...)
	if o.stdin != nil {
		cmd.Stdin = bytes.NewReader(o.stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%w (still running after %v)", err, toolTimeout)
	}
	return stdout.Bytes(), stderr.Bytes(), err
}

// run runs a tool that must succeed and returns its stdout.
func (tl *tools) run(name string, args ...string) []byte {
	tl.t.Helper()
	return tl.runWith(toolRun{}, name, args...)
}

func (tl *tools) runWith(o toolRun, name string, args ...string) []byte {
	tl.t.Helper()
	stdout, stderr, err := tl.exec(o, name, args...)
	if err != nil {
		tl.t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), err, clip(stdout), clip(stderr))
	}
	return stdout
}

// mustFail runs a tool that must fail and returns its combined output.
func (tl *tools) mustFail(name string, args ...string) string {
	tl.t.Helper()
	stdout, stderr, err := tl.exec(toolRun{}, name, args...)
	var ee *exec.ExitError
	if err == nil || !errors.As(err, &ee) {
		tl.t.Fatalf("%s %s: want a non-zero exit, got %v\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), err, clip(stdout), clip(stderr))
	}
	return string(stdout) + string(stderr)
}

func clip(b []byte) string {
	const max = 16 << 10
	if len(b) > max {
		return string(b[:max/2]) + "\n...(clipped)...\n" + string(b[len(b)-max/2:])
	}
	return string(b)
}
