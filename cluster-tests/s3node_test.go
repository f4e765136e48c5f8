package clustertests

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Process-level tests of the S3 blob store (issue: S3 blob storage and
// upload sessions): memory bound, redirects, MinIO outages, upload expiry.

func (p *proc) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// rssBytes reads a process's resident set size from /proc.
func rssBytes(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS")
}

// streamSource yields n pseudo-random bytes from seed, cheaply, without
// holding them.
type streamSource struct {
	rng  *rand.ChaCha8
	left int64
}

func newStream(seed byte, n int64) *streamSource {
	var s [32]byte
	s[0] = seed
	return &streamSource{rng: rand.NewChaCha8(s), left: n}
}

func (s *streamSource) Read(p []byte) (int, error) {
	if s.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > s.left {
		p = p[:s.left]
	}
	n, _ := s.rng.Read(p)
	s.left -= int64(n)
	return n, nil
}

func streamDigest(seed byte, n int64) string {
	h := sha256.New()
	if _, err := io.Copy(h, newStream(seed, n)); err != nil {
		panic(err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

func s3Args(m *minioServer, bucket string) []string {
	return []string{"--blob-store", "s3", "--s3-endpoint", m.Addr, "--s3-insecure", "--s3-bucket", bucket,
		"--s3-region", m.Region, "--s3-access-key", m.AccessKey, "--s3-secret-key", m.SecretKey}
}

func s3Node(t *testing.T, m *minioServer, bucket string, extra ...string) *node {
	t.Helper()
	m.makeBucket(t, bucket)
	return startNode(t, nodeConfig{Args: append(s3Args(m, bucket), extra...)})
}

var (
	plainOnce sync.Once
	plainPath string
	plainErr  error
	plainOut  []byte
)

// plainBinary builds ./cmd/flotilla without the race detector, whatever
// FLOTILLA_RACE_BINARY says: memory figures of a race-instrumented process
// (shadow memory) say nothing about the product.
func plainBinary(t testing.TB) string {
	t.Helper()
	root := repoRoot(t)
	plainOnce.Do(func() {
		dir, err := os.MkdirTemp("", "flotilla-plain-")
		if err != nil {
			plainErr = err
			return
		}
		plainPath = filepath.Join(dir, "flotilla")
		cmd := exec.Command("go", "build", "-o", plainPath, "./cmd/flotilla")
		cmd.Dir = root
		plainOut, plainErr = cmd.CombinedOutput()
	})
	if plainErr != nil {
		t.Fatalf("go build: %v\n%s", plainErr, plainOut)
	}
	return plainPath
}

func postUpload(t *testing.T, base, repo string) string {
	t.Helper()
	resp, err := http.Post(base+"/v2/"+repo+"/blobs/uploads/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST upload: %d", resp.StatusCode)
	}
	return base + resp.Header.Get("Location")
}

func doReq(method, url string, body io.Reader, hdr map[string]string) (*http.Response, error) {
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	return http.DefaultClient.Do(req)
}

func TestS3UploadMemoryBound(t *testing.T) {
	m := startMinIO(t)
	m.makeBucket(t, "membound")
	t.Setenv("FLOTILLA_BINARY", plainBinary(t))
	n := startNode(t, nodeConfig{Args: s3Args(m, "membound")})
	const size = 1 << 30
	want := streamDigest(7, size)
	pid := n.pid()
	base, err := rssBytes(pid)
	if err != nil {
		t.Fatal(err)
	}
	var peak atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			if r, err := rssBytes(pid); err == nil && r > peak.Load() {
				peak.Store(r)
			}
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	loc := postUpload(t, n.URL(), "big/blob")
	// One streamed PATCH (chunked transfer encoding: the server cannot know
	// the size), then the closing PUT.
	resp, err := doReq(http.MethodPatch, loc, newStream(7, size), map[string]string{"Content-Type": "application/octet-stream"})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("PATCH: %d", resp.StatusCode)
	}
	resp, err = doReq(http.MethodPut, n.URL()+resp.Header.Get("Location")+"?digest="+want, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	close(stop)
	wg.Wait()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT: %d", resp.StatusCode)
	}
	growth := peak.Load() - base
	t.Logf("1 GiB upload: RSS %d MiB before, peak %d MiB, growth %d MiB", base>>20, peak.Load()>>20, growth>>20)
	if growth >= 64<<20 {
		t.Fatalf("resident memory grew by %d MiB during a 1 GiB upload; the bound is 64 MiB", growth>>20)
	}
	// The bytes are in the bucket, not in the node's data dir.
	var local int64
	_ = filepath.Walk(n.DataDir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			local += fi.Size()
		}
		return nil
	})
	if local > 64<<20 {
		t.Fatalf("data dir holds %d MiB after a 1 GiB upload to S3", local>>20)
	}
	if keys := m.listKeys(t, "membound"); len(keys) != 1 {
		t.Fatalf("bucket keys after one upload: %v", keys)
	}
	checkBlobDigest(t, n.URL()+"/v2/big/blob/blobs/"+want, want)
}

// checkBlobDigest streams a blob GET through sha256 and compares.
func checkBlobDigest(t *testing.T, url, want string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	h := sha256.New()
	if _, err := io.Copy(h, resp.Body); err != nil {
		t.Fatal(err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != want {
		t.Fatalf("GET %s: read %s (status %d), want %s", url, got, resp.StatusCode, want)
	}
}

func TestS3BlobRedirect(t *testing.T) {
	m := startMinIO(t)
	n := s3Node(t, m, "redirect", "--blob-redirect", "--blob-redirect-ttl", "5m")
	data := make([]byte, 100_000)
	for i := range data {
		data[i] = byte(i * 7)
	}
	dgst := sha256Digest(data)
	resp, err := doReq(http.MethodPost, n.URL()+"/v2/r/blobs/uploads/?digest="+dgst, strings.NewReader(string(data)), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("monolithic POST: %d", resp.StatusCode)
	}
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err = noFollow.Get(n.URL() + "/v2/r/blobs/" + dgst)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTemporaryRedirect || !strings.Contains(resp.Header.Get("Location"), m.Addr) {
		t.Fatalf("GET blob with --blob-redirect: %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	got, err := http.Get(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	defer got.Body.Close()
	b, _ := io.ReadAll(got.Body)
	if got.StatusCode != http.StatusOK || sha256Digest(b) != dgst {
		t.Fatalf("presigned URL: %d, %d bytes", got.StatusCode, len(b))
	}
}

// MinIO stops in the middle of an upload and of a download: the client gets
// an error it can retry, no partial blob is visible, the session survives,
// and once MinIO is back the upload resumes and completes.
func TestS3OutageMidTransfer(t *testing.T) {
	m := startMinIO(t)
	n := s3Node(t, m, "outage", "--s3-part-size", strconv.Itoa(5<<20))
	const size = 24 << 20
	want := streamDigest(3, size)
	loc := postUpload(t, n.URL(), "o/blob")

	// First chunk lands while MinIO is up.
	first := int64(6 << 20)
	resp, err := doReq(http.MethodPatch, loc, io.LimitReader(newStream(3, size), first),
		map[string]string{"Content-Range": fmt.Sprintf("0-%d", first-1), "Content-Length": strconv.FormatInt(first, 10)})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("first PATCH: %d", resp.StatusCode)
	}
	loc = n.URL() + resp.Header.Get("Location")

	// MinIO goes away; the next chunk fails with a retryable error.
	m.kill()
	src := newStream(3, size)
	_, _ = io.CopyN(io.Discard, src, first)
	second := int64(8 << 20)
	chunk := make([]byte, second)
	_, _ = io.ReadFull(src, chunk)
	resp, err = doReq(http.MethodPatch, loc, strings.NewReader(string(chunk)),
		map[string]string{"Content-Range": fmt.Sprintf("%d-%d", first, first+second-1)})
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode < 500 {
			t.Fatalf("PATCH with MinIO down: %d, want a 5xx or a dropped connection", resp.StatusCode)
		}
	}
	// No blob is visible under the digest.
	if r, err := http.Head(n.URL() + "/v2/o/blob/blobs/" + want); err == nil {
		r.Body.Close()
		if r.StatusCode != http.StatusNotFound {
			t.Fatalf("HEAD of the unfinished blob: %d", r.StatusCode)
		}
	}
	// The session survives at its committed offset.
	r, err := http.Get(loc)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusNoContent || r.Header.Get("Range") != fmt.Sprintf("0-%d", first-1) {
		t.Fatalf("upload status during outage: %d Range %q", r.StatusCode, r.Header.Get("Range"))
	}

	// MinIO is back: resume from the committed offset and finish.
	m.start()
	rest := newStream(3, size)
	_, _ = io.CopyN(io.Discard, rest, first)
	var lastStatus int
	for attempt := 0; attempt < 20; attempt++ {
		resp, err = doReq(http.MethodPut, loc+"?digest="+want, io.LimitReader(rest, size-first), nil)
		if err == nil {
			resp.Body.Close()
			lastStatus = resp.StatusCode
			if resp.StatusCode == http.StatusCreated {
				break
			}
		}
		// A failed attempt consumed the stream: rebuild it.
		rest = newStream(3, size)
		_, _ = io.CopyN(io.Discard, rest, first)
		time.Sleep(500 * time.Millisecond)
	}
	if lastStatus != http.StatusCreated {
		t.Fatalf("resumed upload never completed (last status %d)", lastStatus)
	}

	// A download cut by an outage fails visibly (short body or error), and
	// succeeds again after.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, n.URL()+"/v2/o/blob/blobs/"+want, nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	_, _ = io.ReadFull(resp.Body, buf)
	m.kill()
	n2, rerr := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if rerr == nil && int64(len(buf))+n2 == size {
		t.Log("download finished from buffers before MinIO stopped; outage not observed mid-stream")
	}
	m.start()
	checkBlobDigest(t, n.URL()+"/v2/o/blob/blobs/"+want, want)
}

// Abandoned uploads expire: the session is gone and nothing is left in
// the bucket.
func TestS3UploadExpiry(t *testing.T) {
	m := startMinIO(t)
	n := s3Node(t, m, "expiry", "--upload-expiry", "2s", "--janitor-interval", "300ms", "--s3-part-size", strconv.Itoa(5<<20))
	loc := postUpload(t, n.URL(), "e/blob")
	chunk := make([]byte, 7<<20) // one full part plus a staged tail
	resp, err := doReq(http.MethodPatch, loc, strings.NewReader(string(chunk)), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("PATCH: %d", resp.StatusCode)
	}
	if keys := m.listKeys(t, "expiry"); len(keys) == 0 {
		t.Fatal("expected a staged tail object in the bucket")
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := http.Get(loc)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		keys := m.listKeys(t, "expiry")
		if r.StatusCode == http.StatusNotFound && len(keys) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("upload not expired: status %d, bucket %v", r.StatusCode, keys)
		}
		time.Sleep(300 * time.Millisecond)
	}
}
