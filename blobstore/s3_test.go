package blobstore_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flotilla/flotilla/blobstore"
	"github.com/flotilla/flotilla/blobstore/drivertest"
)

// testPartSize is the smallest part S3 accepts, so that tests cross part
// boundaries with little data.
const testPartSize = blobstore.MinS3PartSize

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func newS3(t *testing.T, cfg blobstore.S3Config) *blobstore.S3 {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	d, err := blobstore.NewS3(ctx, cfg, testLogger(t))
	if err != nil {
		t.Fatalf("NewS3: %v", err)
	}
	return d
}

func minioConfig(m *minioServer, bucket string) blobstore.S3Config {
	return blobstore.S3Config{
		Endpoint:  m.endpoint(),
		Bucket:    bucket,
		AccessKey: minioUser,
		SecretKey: minioPassword,
		PartSize:  testPartSize,
	}
}

func TestS3Driver(t *testing.T) {
	m := startMinio(t)
	for _, prefix := range []string{"", "some/prefix"} {
		t.Run("prefix="+prefix, func(t *testing.T) {
			cfg := minioConfig(m, newBucketName())
			cfg.Prefix = prefix
			drivertest.Run(t, func(t *testing.T) blobstore.Driver { return newS3(t, cfg) },
				drivertest.PartSize(testPartSize))
		})
	}
}

// TestS3CacheDriver runs the driver suite through a blob cache in front of
// S3, each of the suite's two nodes with a cache folder of its own.
func TestS3CacheDriver(t *testing.T) {
	m := startMinio(t)
	cfg := minioConfig(m, newBucketName())
	drivertest.Run(t, func(t *testing.T) blobstore.Driver {
		c, err := blobstore.NewCache(newS3(t, cfg), t.TempDir(), 256<<20, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}, drivertest.PartSize(testPartSize))
}

// TestS3PresignPublicEndpoint signs with a second endpoint name for the
// same server and fetches the bytes through it.
func TestS3PresignPublicEndpoint(t *testing.T) {
	m := startMinio(t)
	cfg := minioConfig(m, newBucketName())
	_, port, _ := strings.Cut(m.addr, ":")
	cfg.PublicEndpoint = "http://localhost:" + port
	d := newS3(t, cfg)
	ctx := t.Context()
	want := []byte("served through the public endpoint")
	u, err := d.StartUpload(ctx, "pub1")
	if err != nil {
		t.Fatal(err)
	}
	u, err = d.Append(ctx, u, strings.NewReader(string(want)))
	if err != nil {
		t.Fatal(err)
	}
	key, err := d.Complete(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	signed, err := d.Presign(ctx, key, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	pu, err := url.Parse(signed)
	if err != nil {
		t.Fatal(err)
	}
	if pu.Host != "localhost:"+port {
		t.Fatalf("presigned URL host %q, want the public endpoint", pu.Host)
	}
	resp, err := http.Get(signed)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(body) != string(want) {
		t.Fatalf("GET %s: %s %q", signed, resp.Status, body)
	}
}

// TestS3CredentialsFromEnv leaves the keys empty: they come from the AWS
// environment variables.
func TestS3CredentialsFromEnv(t *testing.T) {
	m := startMinio(t)
	t.Setenv("AWS_ACCESS_KEY_ID", minioUser)
	t.Setenv("AWS_SECRET_ACCESS_KEY", minioPassword)
	t.Setenv("AWS_REGION", "us-east-1")
	cfg := minioConfig(m, newBucketName())
	cfg.AccessKey, cfg.SecretKey = "", ""
	d := newS3(t, cfg)
	if _, err := d.Stat(t.Context(), "nothing-here"); !errors.Is(err, blobstore.ErrNotFound) {
		t.Fatalf("Stat: %v, want ErrNotFound", err)
	}
}

func TestS3Config(t *testing.T) {
	ctx := t.Context()
	for _, tc := range []struct {
		name string
		cfg  blobstore.S3Config
	}{
		{"no bucket", blobstore.S3Config{Endpoint: "127.0.0.1:1"}},
		{"part too small", blobstore.S3Config{Endpoint: "127.0.0.1:1", Bucket: "b", PartSize: 1 << 20}},
		{"bad scheme", blobstore.S3Config{Endpoint: "ftp://127.0.0.1:1", Bucket: "b"}},
		{"endpoint with path", blobstore.S3Config{Endpoint: "http://127.0.0.1:1/x", Bucket: "b"}},
		{"bad public endpoint", blobstore.S3Config{Endpoint: "127.0.0.1:1", Bucket: "b", PublicEndpoint: "gopher://x"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := blobstore.NewS3(ctx, tc.cfg, nil); err == nil {
				t.Fatal("NewS3: no error")
			}
		})
	}
}

// genReader yields n pseudo-random bytes without holding them.
type genReader struct {
	rng  *mrand.ChaCha8
	left int64
}

func newGenReader(seed byte, n int64) *genReader {
	return &genReader{rng: mrand.NewChaCha8([32]byte{seed}), left: n}
}

func (g *genReader) Read(p []byte) (int, error) {
	if g.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > g.left {
		p = p[:g.left]
	}
	n, _ := g.rng.Read(p)
	g.left -= int64(n)
	return n, nil
}

// TestS3AppendMemoryBounded pushes 64 MiB through Append in chunks and
// checks that the heap stays within a few part buffers of where it was:
// the driver streams, it never holds the blob. Loose bounds, no timing.
func TestS3AppendMemoryBounded(t *testing.T) {
	const total = 64 << 20
	m := startMinio(t)
	d := newS3(t, minioConfig(m, newBucketName()))
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()

	// Odd chunk sizes: every Append reads back a tail and cuts parts.
	chunks := []int64{7 << 20, 13<<20 + 5, 1, 20<<20 - 3, 3 << 20}
	var sent int64
	for _, c := range chunks {
		sent += c
	}
	chunks = append(chunks, total-sent)

	u, err := d.StartUpload(ctx, "mem1")
	if err != nil {
		t.Fatal(err)
	}
	// Warm up the pools and the HTTP connections first.
	u, err = d.Append(ctx, u, newGenReader(9, testPartSize+1))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Abort(ctx, u); err != nil {
		t.Fatal(err)
	}
	u, err = d.StartUpload(ctx, "mem2")
	if err != nil {
		t.Fatal(err)
	}

	// Collect garbage eagerly while measuring, so the heap tracks what is
	// live rather than when the GC last ran.
	defer debug.SetGCPercent(debug.SetGCPercent(20))
	var peak uint64
	var before, after runtime.MemStats
	stopSampling := make(chan struct{})
	var wg sync.WaitGroup
	runtime.GC()
	runtime.ReadMemStats(&before)
	wg.Go(func() {
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
			select {
			case <-stopSampling:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	})
	gen := newGenReader(1, total)
	for _, c := range chunks {
		prev := u
		u, err = d.Append(ctx, u, io.LimitReader(gen, c))
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Committed(ctx, prev, u); err != nil {
			t.Fatal(err)
		}
	}
	close(stopSampling)
	wg.Wait()
	runtime.ReadMemStats(&after)
	if u.Size != total {
		t.Fatalf("size %d, want %d", u.Size, total)
	}

	growth := int64(peak) - int64(before.HeapInuse)
	allocPerByte := float64(after.TotalAlloc-before.TotalAlloc) / total
	t.Logf("64 MiB in %d appends: peak heap growth %.1f MiB, %.2f bytes allocated per byte", len(chunks), float64(growth)/(1<<20), allocPerByte)
	// Two part buffers per Append, plus garbage the GC has not collected
	// yet; holding the blob would need 64 MiB.
	if limit := int64(6 * testPartSize); growth > limit {
		t.Errorf("heap grew by %d bytes, want under %d (6 parts)", growth, limit)
	}
	if allocPerByte > 2 {
		t.Errorf("%.2f bytes allocated per byte uploaded, want at most 2", allocPerByte)
	}

	key, err := d.Complete(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := d.Open(ctx, key, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, want := sha256.New(), sha256.New()
	if _, err := io.Copy(got, rc); err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(want, newGenReader(1, total))
	if string(got.Sum(nil)) != string(want.Sum(nil)) {
		t.Fatal("completed blob differs from the bytes sent")
	}
}
