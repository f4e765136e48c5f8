package blobstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

const (
	minioUser     = "flotilla"
	minioPassword = "flotilla-secret"
)

// minioServer is a MinIO process these tests start on a free loopback port
// over a temp dir; it can be stopped and started again on the same port and
// dir to inject outages.
type minioServer struct {
	bin  string
	dir  string
	addr string
	log  *lockedBuffer

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// needMinio finds the minio binary on PATH, or skips (fails when
// FLOTILLA_REQUIRE_TOOLS=1).
func needMinio(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("minio")
	if err != nil {
		msg := "minio not found on PATH; scripts/test.sh installs it (go install github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c into ~/.cache/flotilla-tools/bin)"
		if os.Getenv("FLOTILLA_REQUIRE_TOOLS") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return bin
}

// startMinio starts a MinIO that is killed when the test ends.
func startMinio(t *testing.T) *minioServer {
	t.Helper()
	m := &minioServer{bin: needMinio(t), dir: filepath.Join(t.TempDir(), "minio"), log: &lockedBuffer{}}
	t.Cleanup(func() {
		m.stop()
		if t.Failed() {
			t.Logf("minio output:\n%s", m.log.String())
		}
	})
	var err error
	for range 3 { // the free port may be taken before MinIO binds it
		m.addr, err = freeAddr()
		if err != nil {
			t.Fatal(err)
		}
		if err = m.start(t.Context()); err == nil {
			return m
		}
	}
	t.Fatalf("start minio: %v\n%s", err, m.log.String())
	return nil
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func (m *minioServer) endpoint() string { return "http://" + m.addr }

// start runs MinIO and waits until it is ready.
func (m *minioServer) start(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil {
		return errors.New("minio already running")
	}
	cmd := exec.Command(m.bin, "server", "--quiet", "--address", m.addr, m.dir)
	cmd.Env = append(os.Environ(),
		"MINIO_ROOT_USER="+minioUser,
		"MINIO_ROOT_PASSWORD="+minioPassword,
		"MINIO_BROWSER=off",
		"MINIO_UPDATE=off",
	)
	cmd.Stdout, cmd.Stderr = m.log, m.log
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	m.cmd, m.done = cmd, done

	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	client, err := minio.New(m.addr, &minio.Options{Creds: credentials.NewStaticV4(minioUser, minioPassword, ""), MaxRetries: 1})
	if err != nil {
		m.stopLocked()
		return err
	}
	for {
		// Health first (cheap), then a signed request: MinIO answers
		// "server not initialized" for a moment after its health turns OK.
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, m.endpoint()+"/minio/health/cluster", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				if _, err := client.ListBuckets(ctx); err == nil {
					return nil
				}
			}
		}
		select {
		case <-done:
			m.cmd = nil
			return fmt.Errorf("minio exited: %v", cmd.ProcessState)
		case <-ctx.Done():
			m.stopLocked()
			return fmt.Errorf("minio not ready: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stop kills MinIO (as a crash would) and waits for it to exit.
func (m *minioServer) stop() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stopLocked()
}

func (m *minioServer) stopLocked() {
	if m.cmd == nil {
		return
	}
	_ = m.cmd.Process.Kill()
	<-m.done
	m.cmd = nil
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

var bucketSeq struct {
	sync.Mutex
	n int
}

// newBucketName returns a bucket name unique within the test binary.
func newBucketName() string {
	bucketSeq.Lock()
	defer bucketSeq.Unlock()
	bucketSeq.n++
	return "flotilla-test-" + strconv.Itoa(bucketSeq.n)
}
