package clustertests

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

const (
	mtOCIManifest = "application/vnd.oci.image.manifest.v1+json"
	mtOCIIndex    = "application/vnd.oci.image.index.v1+json"
	mtOCIConfig   = "application/vnd.oci.image.config.v1+json"
	mtOCILayerGz  = "application/vnd.oci.image.layer.v1.tar+gzip"
	acceptAll     = mtOCIManifest + ", " + mtOCIIndex + ", " +
		"application/vnd.docker.distribution.manifest.v2+json, " +
		"application/vnd.docker.distribution.manifest.list.v2+json"
)

func sha256Digest(b []byte) string { return "sha256:" + sha256Hex(b) }

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

type descriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       string            `json:"digest"`
	Size         int64             `json:"size"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
}

type ociManifest struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType,omitempty"`
	ArtifactType  string            `json:"artifactType,omitempty"`
	Config        descriptor        `json:"config"`
	Layers        []descriptor      `json:"layers"`
	Subject       *descriptor       `json:"subject,omitempty"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

type ociIndex struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType,omitempty"`
	Manifests     []descriptor      `json:"manifests"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

type blob struct {
	MediaType string
	Digest    string
	Data      []byte
}

func newBlob(mediaType string, data []byte) blob {
	return blob{MediaType: mediaType, Digest: sha256Digest(data), Data: data}
}

func (b blob) desc() descriptor {
	return descriptor{MediaType: b.MediaType, Digest: b.Digest, Size: int64(len(b.Data))}
}

// testImage is a single-platform OCI image with random content, built in
// memory so that every byte a client pushes is known.
type testImage struct {
	Manifest       []byte
	ManifestDigest string
	Config         blob
	Layers         []blob
	Files          map[string][]byte // file path in the image -> content
}

// newRandomImage builds an image with one gzip layer per size; layer i holds
// the file "data/<label>-<i>.bin" with size random bytes.
func newRandomImage(t testing.TB, label string, sizes ...int) *testImage {
	t.Helper()
	img := &testImage{Files: map[string][]byte{}}
	var diffIDs []string
	for i, size := range sizes {
		name := fmt.Sprintf("data/%s-%d.bin", label, i)
		content := randomBytes(t, size)
		img.Files[name] = content
		tarball := tarFiles(t, map[string][]byte{name: content})
		diffIDs = append(diffIDs, sha256Digest(tarball))
		img.Layers = append(img.Layers, newBlob(mtOCILayerGz, gzipBytes(t, tarball)))
	}
	cfg, err := json.Marshal(map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"config":       map[string]any{"Labels": map[string]string{"flotilla.test.label": label}},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": diffIDs},
		"history":      []any{},
	})
	if err != nil {
		t.Fatal(err)
	}
	img.Config = newBlob(mtOCIConfig, cfg)
	m := ociManifest{SchemaVersion: 2, MediaType: mtOCIManifest, Config: img.Config.desc()}
	for _, l := range img.Layers {
		m.Layers = append(m.Layers, l.desc())
	}
	img.Manifest, err = json.MarshalIndent(m, "", "   ")
	if err != nil {
		t.Fatal(err)
	}
	img.ManifestDigest = sha256Digest(img.Manifest)
	return img
}

// Blobs returns the config and the layers.
func (img *testImage) Blobs() []blob { return append([]blob{img.Config}, img.Layers...) }

func tarFiles(t testing.TB, files map[string][]byte) []byte {
	t.Helper()
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	mtime := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, n := range names {
		for d := filepath.Dir(n); d != "." && !dirs[d]; d = filepath.Dir(d) {
			dirs[d] = true
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: mtime}); err != nil {
				t.Fatal(err)
			}
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: n, Mode: 0o644, Size: int64(len(files[n])), ModTime: mtime}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(files[n]); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzipBytes(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// untarFiles returns the regular files of a (possibly gzip-compressed) tar.
func untarFiles(t testing.TB, b []byte) map[string][]byte {
	t.Helper()
	var r io.Reader = bytes.NewReader(b)
	if len(b) > 2 && b[0] == 0x1f && b[1] == 0x8b {
		zr, err := gzip.NewReader(r)
		if err != nil {
			t.Fatal(err)
		}
		r = zr
	}
	files := map[string][]byte{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatalf("read tar: %v", err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		c, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[strings.TrimPrefix(h.Name, "./")] = c
	}
}

// writeLayout writes an OCI image layout holding img under the given tag.
func (img *testImage) writeLayout(t testing.TB, dir, tag string) {
	t.Helper()
	for _, b := range img.Blobs() {
		writeLayoutBlob(t, dir, b.Digest, b.Data)
	}
	writeLayoutBlob(t, dir, img.ManifestDigest, img.Manifest)
	idx := ociIndex{SchemaVersion: 2, MediaType: mtOCIIndex, Manifests: []descriptor{{
		MediaType: mtOCIManifest, Digest: img.ManifestDigest, Size: int64(len(img.Manifest)),
		Annotations: map[string]string{"org.opencontainers.image.ref.name": tag},
	}}}
	ib, err := json.Marshal(idx)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "index.json"), ib, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
		t.Fatal(err)
	}
}

func writeLayoutBlob(t testing.TB, dir, digest string, data []byte) {
	t.Helper()
	alg, hex, _ := strings.Cut(digest, ":")
	p := filepath.Join(dir, "blobs", alg, hex)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// readLayoutBlob reads a blob from an OCI image layout written by a client.
func readLayoutBlob(t testing.TB, dir, digest string) []byte {
	t.Helper()
	alg, hex, _ := strings.Cut(digest, ":")
	b, err := os.ReadFile(filepath.Join(dir, "blobs", alg, hex))
	if err != nil {
		t.Fatalf("blob %s missing from layout %s: %v", digest, dir, err)
	}
	return b
}

// checkLayoutHolds checks that an OCI layout pulled by a client holds img's
// manifest, config and layers, byte for byte.
func checkLayoutHolds(t testing.TB, dir string, img *testImage) {
	t.Helper()
	if got := readLayoutBlob(t, dir, img.ManifestDigest); !bytes.Equal(got, img.Manifest) {
		t.Errorf("layout %s: manifest differs from pushed manifest:\n got %s\nwant %s", dir, got, img.Manifest)
	}
	for _, b := range img.Blobs() {
		if got := readLayoutBlob(t, dir, b.Digest); !bytes.Equal(got, b.Data) {
			t.Errorf("layout %s: blob %s differs from pushed blob (%d bytes, want %d)", dir, b.Digest, len(got), len(b.Data))
		}
	}
}

// ----------------------------------------------------------------- HTTP

// ociClient speaks the OCI distribution API directly, for checks that
// should not depend on a client tool's interpretation.
type ociClient struct {
	base string // http://host:port
	hc   *http.Client
}

func newOCIClient(base string) *ociClient {
	return &ociClient{base: strings.TrimSuffix(base, "/"), hc: &http.Client{Timeout: 5 * time.Minute}}
}

type ociResponse struct {
	Status int
	Header http.Header
	Body   []byte
}

func (c *ociClient) do(t testing.TB, method, path string, header http.Header, body []byte) ociResponse {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, c.resolve(path), bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body == nil {
		req.Body = nil
	}
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	if body != nil {
		req.ContentLength = int64(len(body))
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return ociResponse{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

func (c *ociClient) resolve(path string) string {
	if strings.HasPrefix(path, "http://") || strings.HasPrefix(path, "https://") {
		return path
	}
	return c.base + path
}

// manifest fetches a manifest by tag or digest; it fails the test unless
// the answer is 200.
func (c *ociClient) manifest(t testing.TB, repo, ref string) ociResponse {
	t.Helper()
	r := c.do(t, http.MethodGet, "/v2/"+repo+"/manifests/"+ref, http.Header{"Accept": {acceptAll}}, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("GET manifest %s:%s: status %d, body %s", repo, ref, r.Status, clip(r.Body))
	}
	return r
}

func (c *ociClient) blob(t testing.TB, repo, digest string) []byte {
	t.Helper()
	r := c.do(t, http.MethodGet, "/v2/"+repo+"/blobs/"+digest, nil, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("GET blob %s@%s: status %d, body %s", repo, digest, r.Status, clip(r.Body))
	}
	return r.Body
}

func (c *ociClient) tags(t testing.TB, repo string) []string {
	t.Helper()
	r := c.do(t, http.MethodGet, "/v2/"+repo+"/tags/list", nil, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("GET tags %s: status %d, body %s", repo, r.Status, clip(r.Body))
	}
	var tl struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}
	if err := json.Unmarshal(r.Body, &tl); err != nil {
		t.Fatalf("tags list %s: %v: %s", repo, err, r.Body)
	}
	if tl.Name != repo {
		t.Errorf("tags list: name %q, want %q", tl.Name, repo)
	}
	sort.Strings(tl.Tags)
	return tl.Tags
}

// checkImage checks that repo:ref serves img's manifest and blobs byte for
// byte.
func (c *ociClient) checkImage(t testing.TB, repo, ref string, img *testImage) {
	t.Helper()
	r := c.manifest(t, repo, ref)
	if !bytes.Equal(r.Body, img.Manifest) {
		t.Errorf("%s:%s: manifest differs:\n got %s\nwant %s", repo, ref, r.Body, img.Manifest)
	}
	if got := r.Header.Get("Docker-Content-Digest"); got != "" && got != img.ManifestDigest {
		t.Errorf("%s:%s: Docker-Content-Digest %s, want %s", repo, ref, got, img.ManifestDigest)
	}
	for _, b := range img.Blobs() {
		if got := c.blob(t, repo, b.Digest); !bytes.Equal(got, b.Data) {
			t.Errorf("%s@%s: blob differs (%d bytes, want %d)", repo, b.Digest, len(got), len(b.Data))
		}
	}
}
