package clustertests

import (
	"bytes"
	"net/http"
	"slices"
	"strconv"
	"testing"
)

// TestRestart pushes with crane, stops the node (SIGTERM or SIGKILL), starts
// it again on the same data dir and checks that every tag, manifest and blob
// is still there, byte for byte, that an upload started before the stop can
// be finished after it, and that the node takes new writes.
func TestRestart(t *testing.T) {
	cases := []struct {
		name string
		kill bool // SIGKILL instead of SIGTERM
		s3   bool // blobs in MinIO (restarted as well) instead of the filesystem
	}{
		{name: "sigterm", kill: false},
		{name: "sigkill", kill: true},
		{name: "sigkill-s3", kill: true, s3: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			requireTool(t, "crane")
			tl := newTools(t)
			var opts registryOptions
			var minio *minioServer
			if tc.s3 {
				minio = startMinIO(t)
				minio.makeBucket(t, "flotilla-restart")
				opts.s3, opts.s3Bucket = minio, "flotilla-restart"
			}
			reg := startRegistry(t, opts)
			c := newOCIClient(reg.URL())
			crane := func(args ...string) []byte { return tl.run("crane", append([]string{"--insecure"}, args...)...) }

			// One image with a layer larger than an S3 part minimum, one
			// small one; three tags in two repositories.
			big := newRandomImage(t, "big", 64<<10, 6<<20+123)
			small := newRandomImage(t, "small", 2<<10)
			type tagged struct {
				repo, tag string
				img       *testImage
			}
			want := []tagged{
				{"restart/a", "v1", big},
				{"restart/a", "v2", big},
				{"restart/b", "latest", small},
			}
			for _, w := range []tagged{want[0], want[2]} {
				layout := t.TempDir()
				w.img.writeLayout(t, layout, w.tag)
				crane("push", layout, reg.Host()+"/"+w.repo+":"+w.tag)
			}
			crane("tag", reg.Host()+"/restart/a:v1", "v2")

			// An upload in progress: the first part is acknowledged.
			pending := randomBytes(t, 300<<10)
			half := len(pending) / 2
			loc := startUpload(t, c, "restart/b", pending[:half])

			checkAll := func(stage string) {
				t.Helper()
				for _, w := range want {
					c.checkImage(t, w.repo, w.tag, w.img)
					c.checkImage(t, w.repo, w.img.ManifestDigest, w.img)
				}
				if got := c.tags(t, "restart/a"); !slices.Equal(got, []string{"v1", "v2"}) {
					t.Errorf("%s: tags of restart/a = %q, want [v1 v2]", stage, got)
				}
				if got := c.tags(t, "restart/b"); !slices.Equal(got, []string{"latest"}) {
					t.Errorf("%s: tags of restart/b = %q, want [latest]", stage, got)
				}
				pulled := t.TempDir()
				crane("pull", "--format", "oci", reg.Host()+"/restart/a:v2", pulled)
				checkLayoutHolds(t, pulled, big)
			}
			checkAll("before the restart")
			var keysBefore []string
			if tc.s3 {
				keysBefore = minio.listKeys(t, "flotilla-restart")
				if len(keysBefore) == 0 {
					t.Fatalf("no object in the S3 bucket after the pushes: blobs did not go to S3")
				}
			}

			if tc.kill {
				reg.kill()
			} else {
				reg.stopClean()
			}
			if tc.s3 {
				if err := minio.stop(); err != nil {
					t.Logf("minio stop: %v", err)
				}
				minio.start()
			}
			reg.start()

			checkAll("after the restart")
			finishUpload(t, c, "restart/b", loc, pending, half)
			if got := c.blob(t, "restart/b", sha256Digest(pending)); !bytes.Equal(got, pending) {
				t.Errorf("blob of the upload finished after the restart differs")
			}

			// The node still takes writes.
			fresh := newRandomImage(t, "fresh", 8<<10)
			layout := t.TempDir()
			fresh.writeLayout(t, layout, "after")
			crane("push", layout, reg.Host()+"/restart/a:after")
			c.checkImage(t, "restart/a", "after", fresh)
			if got := c.tags(t, "restart/a"); !slices.Equal(got, []string{"after", "v1", "v2"}) {
				t.Errorf("tags of restart/a after a new push = %q, want [after v1 v2]", got)
			}
			if tc.s3 {
				if keys := minio.listKeys(t, "flotilla-restart"); len(keys) <= len(keysBefore) {
					t.Errorf("S3 bucket holds %d objects after more pushes, %d before", len(keys), len(keysBefore))
				}
			}
		})
	}
}

// startUpload opens a blob upload in repo and sends the first chunk; it
// returns the upload URL for the next request.
func startUpload(t testing.TB, c *ociClient, repo string, first []byte) string {
	t.Helper()
	r := c.do(t, http.MethodPost, "/v2/"+repo+"/blobs/uploads/", nil, nil)
	if r.Status != http.StatusAccepted {
		t.Fatalf("POST upload: status %d, body %s", r.Status, r.Body)
	}
	loc := r.Header.Get("Location")
	r = c.do(t, http.MethodPatch, loc, http.Header{
		"Content-Type":  {"application/octet-stream"},
		"Content-Range": {"0-" + strconv.Itoa(len(first)-1)},
	}, first)
	if r.Status != http.StatusAccepted {
		t.Fatalf("PATCH upload: status %d, body %s", r.Status, r.Body)
	}
	if want := "0-" + strconv.Itoa(len(first)-1); r.Header.Get("Range") != want {
		t.Errorf("PATCH upload: Range %q, want %q", r.Header.Get("Range"), want)
	}
	return r.Header.Get("Location")
}

// finishUpload sends the rest of blob from offset and closes the upload.
func finishUpload(t testing.TB, c *ociClient, repo, loc string, blob []byte, offset int) {
	t.Helper()
	rest := blob[offset:]
	r := c.do(t, http.MethodPatch, loc, http.Header{
		"Content-Type":  {"application/octet-stream"},
		"Content-Range": {strconv.Itoa(offset) + "-" + strconv.Itoa(len(blob)-1)},
	}, rest)
	if r.Status != http.StatusAccepted {
		t.Fatalf("PATCH resumed upload: status %d, body %s", r.Status, r.Body)
	}
	loc = r.Header.Get("Location")
	sep := "?"
	if bytes.ContainsRune([]byte(loc), '?') {
		sep = "&"
	}
	r = c.do(t, http.MethodPut, loc+sep+"digest="+sha256Digest(blob), nil, nil)
	if r.Status != http.StatusCreated {
		t.Fatalf("PUT to close the resumed upload: status %d, body %s", r.Status, r.Body)
	}
	if got := r.Header.Get("Docker-Content-Digest"); got != "" && got != sha256Digest(blob) {
		t.Errorf("upload closed with digest %s, want %s", got, sha256Digest(blob))
	}
}
