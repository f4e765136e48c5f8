package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/flotilla/flotilla/node"
	"github.com/opencontainers/go-digest"
)

// Guards against hangs, never assertions about speed.
const (
	nodeStartTimeout = 60 * time.Second
	requestTimeout   = 60 * time.Second
)

// testNode is one real node (raft, bbolt, filesystem blobs, HTTP) running
// in this process, on loopback ports.
type testNode struct {
	t      *testing.T
	url    string
	client *http.Client
	// stop shuts the node down (gracefully) and waits for it.
	stop func()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startNode starts a single-node cluster and waits until /readyz answers
// 200. The node is stopped when the test ends. FLOTILLA_TEST_LOG=1 shows
// its logs.
func startNode(t *testing.T, mutate func(*node.Config)) *testNode {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("FLOTILLA_TEST_LOG") == "1" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ctx, cancel := context.WithCancel(context.Background())
	var n *node.Node
	// A port found free can be taken by someone else's outgoing connection
	// before the node binds it: then try again on other ports.
	for attempt := 1; ; attempt++ {
		cfg := node.Config{
			DataDir:  t.TempDir(),
			HTTPAddr: freeAddr(t),
			RaftAddr: freeAddr(t),
			GRPCAddr: freeAddr(t),
			Voter:    true,
			Raft: node.RaftTuning{HeartbeatTimeout: 200 * time.Millisecond,
				ElectionTimeout: 200 * time.Millisecond},
			RaftLogLevel:    "ERROR",
			ShutdownTimeout: 10 * time.Second,
		}
		if mutate != nil {
			mutate(&cfg)
		}
		var err error
		n, err = node.New(ctx, cfg, logger)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EADDRINUSE) || attempt == 5 {
			cancel()
			t.Fatalf("node.New: %v", err)
		}
		t.Logf("node.New, attempt %d: %v; again on other ports", attempt, err)
	}
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	var stopOnce sync.Once
	stop := func() {
		stopOnce.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("node.Run: %v", err)
				}
			case <-time.After(nodeStartTimeout):
				t.Error("node did not stop")
			}
		})
	}
	t.Cleanup(stop)
	tn := &testNode{t: t, url: "http://" + n.HTTPAddr(), stop: stop, client: &http.Client{
		Timeout: requestTimeout,
		// Redirects are answers to check, not to follow.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
	deadline := time.Now().Add(nodeStartTimeout)
	for {
		resp, err := tn.client.Get(tn.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return tn
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("node not ready after %v (last: %v, %v)", nodeStartTimeout, resp, err)
		}
		select {
		case err := <-done:
			done <- err // for stop
			t.Fatalf("node stopped while starting: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// on returns tn reporting to t (a subtest), so that its fatal errors stop
// the right goroutine.
func (tn *testNode) on(t *testing.T) *testNode {
	c := *tn
	c.t = t
	return &c
}

// response is a finished HTTP exchange.
type response struct {
	method, path string
	status       int
	header       http.Header
	body         []byte
}

func (r *response) String() string {
	b := r.body
	if len(b) > 300 {
		b = append(b[:300:300], "..."...)
	}
	return fmt.Sprintf("%s %s -> %d %s", r.method, r.path, r.status, b)
}

// req sends one request. hdr holds header pairs ("Content-Type", "x", ...).
func (tn *testNode) req(method, path string, body []byte, hdr ...string) *response {
	tn.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	r, err := http.NewRequest(method, tn.url+path, rd)
	if err != nil {
		tn.t.Fatalf("%s %s: %v", method, path, err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := tn.client.Do(r)
	if err != nil {
		tn.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		tn.t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return &response{method: method, path: path, status: resp.StatusCode, header: resp.Header, body: data}
}

// ociErrorCode returns the first code of an OCI error body.
func ociErrorCode(r *response) (string, error) {
	var body struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(r.body, &body); err != nil {
		return "", fmt.Errorf("not OCI error JSON: %v", err)
	}
	if len(body.Errors) == 0 || body.Errors[0].Code == "" {
		return "", errors.New("OCI error JSON without a code")
	}
	if !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
		return "", fmt.Errorf("error body with Content-Type %q", r.header.Get("Content-Type"))
	}
	return body.Errors[0].Code, nil
}

// expectError checks the status and, except for HEAD (no body), the OCI
// error code.
func expectError(t *testing.T, r *response, status int, code string) {
	t.Helper()
	if r.status >= 500 {
		t.Errorf("server error for bad input: %s", r)
	}
	if r.status != status {
		t.Errorf("status %d, want %d: %s", r.status, status, r)
		return
	}
	if r.method == http.MethodHead || code == "" {
		return
	}
	got, err := ociErrorCode(r)
	if err != nil {
		t.Errorf("%v: %s", err, r)
		return
	}
	if got != code {
		t.Errorf("code %s, want %s: %s", got, code, r)
	}
}

func expectStatus(t *testing.T, r *response, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r)
	}
}

func sha256Of(b []byte) string { return digest.FromBytes(b).String() }

func sha512Of(b []byte) string { return digest.SHA512.FromBytes(b).String() }

// pushBlob uploads data monolithically (POST with digest) and returns its
// sha256 digest.
func (tn *testNode) pushBlob(repo string, data []byte) string {
	tn.t.Helper()
	d := sha256Of(data)
	r := tn.req(http.MethodPost, "/v2/"+repo+"/blobs/uploads/?digest="+d, data,
		"Content-Type", "application/octet-stream")
	expectStatus(tn.t, r, http.StatusCreated)
	return d
}

// startUpload opens an upload session and returns its Location path.
func (tn *testNode) startUpload(repo string) string {
	tn.t.Helper()
	r := tn.req(http.MethodPost, "/v2/"+repo+"/blobs/uploads/", nil)
	expectStatus(tn.t, r, http.StatusAccepted)
	loc := r.header.Get("Location")
	if !strings.HasPrefix(loc, "/v2/"+repo+"/blobs/uploads/") {
		tn.t.Fatalf("upload Location %q", loc)
	}
	return loc
}

// withQuery appends a query to a Location that may already hold one.
func withQuery(loc, q string) string {
	if strings.Contains(loc, "?") {
		return loc + "&" + q
	}
	return loc + "?" + q
}

const (
	mtOCIManifest = "application/vnd.oci.image.manifest.v1+json"
	mtOCIIndex    = "application/vnd.oci.image.index.v1+json"
	mtOCIConfig   = "application/vnd.oci.image.config.v1+json"
	mtOCILayer    = "application/vnd.oci.image.layer.v1.tar+gzip"
)

type desc struct {
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
	Config        *desc             `json:"config,omitempty"`
	Layers        []desc            `json:"layers,omitempty"`
	Manifests     []desc            `json:"manifests,omitempty"`
	Subject       *desc             `json:"subject,omitempty"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// image is a manifest with its config and layers, pushed or not.
type image struct {
	config, layer []byte
	raw           []byte
	digest        string
}

// newImage builds an image manifest whose blobs are config and layer; name
// makes it unique.
func newImage(t *testing.T, name string) *image {
	t.Helper()
	im := &image{config: []byte(`{"architecture":"amd64","os":"linux","name":"` + name + `"}`),
		layer: []byte("layer bytes of " + name)}
	m := ociManifest{SchemaVersion: 2, MediaType: mtOCIManifest,
		Config: &desc{MediaType: mtOCIConfig, Digest: sha256Of(im.config), Size: int64(len(im.config))},
		Layers: []desc{{MediaType: mtOCILayer, Digest: sha256Of(im.layer), Size: int64(len(im.layer))}}}
	im.raw = mustJSON(t, m)
	im.digest = sha256Of(im.raw)
	return im
}

func (im *image) descriptor() desc {
	return desc{MediaType: mtOCIManifest, Digest: im.digest, Size: int64(len(im.raw))}
}

// pushImage pushes the blobs and the manifest under ref.
func (tn *testNode) pushImage(repo, ref string, im *image) {
	tn.t.Helper()
	tn.pushBlob(repo, im.config)
	tn.pushBlob(repo, im.layer)
	tn.putManifest(repo, ref, mtOCIManifest, im.raw)
}

func (tn *testNode) putManifest(repo, ref, mediaType string, raw []byte) *response {
	tn.t.Helper()
	r := tn.req(http.MethodPut, "/v2/"+repo+"/manifests/"+ref, raw, "Content-Type", mediaType)
	expectStatus(tn.t, r, http.StatusCreated)
	if got := r.header.Get("Docker-Content-Digest"); got != sha256Of(raw) {
		tn.t.Fatalf("Docker-Content-Digest %q, want %s", got, sha256Of(raw))
	}
	return r
}

// Absence checks: nothing was written.

func (tn *testNode) blobAbsent(t *testing.T, repo, dgst string) {
	t.Helper()
	tn = tn.on(t)
	if r := tn.req(http.MethodHead, "/v2/"+repo+"/blobs/"+dgst, nil); r.status != http.StatusNotFound {
		t.Errorf("blob %s in %s: HEAD %d, want 404 (absent)", dgst, repo, r.status)
	}
}

func (tn *testNode) manifestAbsent(t *testing.T, repo, ref string) {
	t.Helper()
	tn = tn.on(t)
	if r := tn.req(http.MethodHead, "/v2/"+repo+"/manifests/"+ref, nil); r.status != http.StatusNotFound {
		t.Errorf("manifest %s in %s: HEAD %d, want 404 (absent)", ref, repo, r.status)
	}
}

func (tn *testNode) tags(t *testing.T, repo string) []string {
	t.Helper()
	tn = tn.on(t)
	r := tn.req(http.MethodGet, "/v2/"+repo+"/tags/list", nil)
	if r.status == http.StatusNotFound {
		return nil
	}
	expectStatus(t, r, http.StatusOK)
	var body struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}
	if err := json.Unmarshal(r.body, &body); err != nil {
		t.Fatalf("tags body: %v: %s", err, r)
	}
	return body.Tags
}

func (tn *testNode) catalog(t *testing.T) []string {
	t.Helper()
	tn = tn.on(t)
	r := tn.req(http.MethodGet, "/v2/_catalog", nil)
	expectStatus(t, r, http.StatusOK)
	var body struct {
		Repositories []string `json:"repositories"`
	}
	if err := json.Unmarshal(r.body, &body); err != nil {
		t.Fatalf("catalog body: %v: %s", err, r)
	}
	return body.Repositories
}
