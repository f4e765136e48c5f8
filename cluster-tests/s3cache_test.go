package clustertests

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// pushMonolithic uploads data to repo in one POST and returns its digest.
func pushMonolithic(t *testing.T, base, repo string, data []byte) string {
	t.Helper()
	dgst := sha256Digest(data)
	resp, err := doReq(http.MethodPost, base+"/v2/"+repo+"/blobs/uploads/?digest="+dgst, bytes.NewReader(data), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("monolithic POST: %d", resp.StatusCode)
	}
	return dgst
}

// metricValue reads one unlabelled sample from a node's /metrics.
func metricValue(t *testing.T, base, name string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", name, err)
			}
			return f
		}
	}
	t.Fatalf("metric %s not exported", name)
	return 0
}

// TestS3BlobCache: with --blob-cache-size, the first pull of a blob fills
// the node's cache and later pulls, whole or ranged, come from it, also
// after the node restarts: they succeed with MinIO stopped, while a blob
// never pulled fails as it should.
func TestS3BlobCache(t *testing.T) {
	m := startMinIO(t)
	n := s3Node(t, m, "cache", "--blob-cache-size", "64MiB")
	blob := func(seed byte, size int) []byte {
		b := make([]byte, size)
		for i := range b {
			b[i] = byte(i*31) ^ seed
		}
		return b
	}
	// 4 MiB: read from S3 on the zero-copy path (>= 1 MiB), and cached.
	hot := blob(1, 4<<20)
	hotDigest := pushMonolithic(t, n.URL(), "c/app", hot)
	cold := blob(2, 2<<20)
	coldDigest := pushMonolithic(t, n.URL(), "c/app", cold)

	checkBlobDigest(t, n.URL()+"/v2/c/app/blobs/"+hotDigest, hotDigest)
	waitFor(t, "the fill to land", 10*time.Second, func(context.Context) error {
		if f := metricValue(t, n.URL(), "flotilla_blob_cache_fills_total"); f != 1 {
			return fmt.Errorf("fills %v", f)
		}
		return nil
	})
	entries, err := filepath.Glob(filepath.Join(n.DataDir, "blob-cache", "k-*"))
	if err != nil || len(entries) != 1 {
		t.Fatalf("cache folder: %v, entries %v; want 1", err, entries)
	}
	if fi, err := os.Stat(entries[0]); err != nil || fi.Size() != int64(len(hot)) {
		t.Fatalf("cache entry: %v, want %d bytes", err, len(hot))
	}

	checkRange := func(when string) {
		t.Helper()
		resp, err := doReq(http.MethodGet, n.URL()+"/v2/c/app/blobs/"+hotDigest, nil, map[string]string{"Range": "bytes=1000-1999"})
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(got, hot[1000:2000]) {
			t.Fatalf("%s: ranged GET: %d, %d bytes, right bytes %v", when, resp.StatusCode, len(got), bytes.Equal(got, hot[1000:2000]))
		}
	}
	checkRange("MinIO up")

	// The cache outlives a restart of the node (S3 must answer at start:
	// the node checks its bucket).
	n.kill()
	n.start()

	// MinIO gone: the cached blob still pulls, whole and ranged; the other
	// does not.
	m.kill()
	checkBlobDigest(t, n.URL()+"/v2/c/app/blobs/"+hotDigest, hotDigest)
	checkRange("MinIO down")
	resp, err := http.Get(n.URL() + "/v2/c/app/blobs/" + coldDigest)
	if err == nil { // a dropped connection is a failure too
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode < 500 && sha256Digest(b) == coldDigest {
			t.Fatalf("an uncached blob was served with MinIO down (%d)", resp.StatusCode)
		}
	}
	if h := metricValue(t, n.URL(), "flotilla_blob_cache_hits_total"); h != 2 {
		t.Fatalf("cache hits since the restart %v, want 2", h)
	}

	// MinIO back: the other blob pulls again.
	m.start()
	checkBlobDigest(t, n.URL()+"/v2/c/app/blobs/"+coldDigest, coldDigest)
}
