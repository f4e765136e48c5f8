package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// client speaks the OCI Distribution API over plain http to one or more
// registry addresses, one request after another round robin.
type client struct {
	hc      *http.Client
	targets []*url.URL
	next    atomic.Uint64
	// readHeader is added to every read (GET) request, e.g. a consistency
	// hint; empty when unset.
	readHeader http.Header
	reqTimeout time.Duration
}

// checkAddrs accepts host:port addresses (or http:// URLs) and refuses any
// host that is not a loopback address unless allowRemote.
func checkAddrs(addrs []string, allowRemote bool) ([]*url.URL, error) {
	var out []*url.URL
	for _, a := range addrs {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		if !strings.Contains(a, "://") {
			a = "http://" + a
		}
		u, err := url.Parse(a)
		if err != nil {
			return nil, fmt.Errorf("address %q: %v", a, err)
		}
		if u.Scheme != "http" {
			return nil, fmt.Errorf("address %q: only plain http is supported", a)
		}
		if u.Port() == "" {
			return nil, fmt.Errorf("address %q: no port", a)
		}
		if !allowRemote && !isLoopback(u.Hostname()) {
			return nil, fmt.Errorf("address %q is not a loopback address (pass --allow-remote to benchmark it anyway)", a)
		}
		out = append(out, &url.URL{Scheme: u.Scheme, Host: u.Host})
	}
	if len(out) == 0 {
		return nil, errors.New("no address given")
	}
	return out, nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func newHTTPClient(conns int, reqTimeout time.Duration, allowed []*url.URL) *http.Client {
	tr := &http.Transport{
		Proxy:               nil, // never through a proxy: only the given addresses
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        conns * 2,
		MaxIdleConnsPerHost: conns * 2,
		MaxConnsPerHost:     0,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		WriteBufferSize:     256 << 10,
		ReadBufferSize:      256 << 10,
	}
	hosts := map[string]bool{}
	for _, u := range allowed {
		hosts[u.Host] = true
	}
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 5 {
				return errors.New("too many redirects")
			}
			if !hosts[req.URL.Host] {
				return fmt.Errorf("refusing redirect to %s: not one of the given addresses", req.URL.Host)
			}
			return nil
		},
	}
}

func newClient(targets []*url.URL, conns int, reqTimeout time.Duration) *client {
	return &client{hc: newHTTPClient(conns, reqTimeout, targets), targets: targets, reqTimeout: reqTimeout}
}

// pick returns the next target, round robin.
func (c *client) pick() *url.URL {
	n := c.next.Add(1) - 1
	return c.targets[n%uint64(len(c.targets))]
}

// resolve turns a path or a Location into an absolute URL on the next
// target; an absolute Location must name one of the given addresses.
func (c *client) resolve(ref string) (*url.URL, error) {
	u, err := url.Parse(ref)
	if err != nil {
		return nil, fmt.Errorf("bad URL %q: %v", ref, err)
	}
	if u.IsAbs() {
		for _, t := range c.targets {
			if t.Host == u.Host {
				return u, nil
			}
		}
		return nil, fmt.Errorf("refusing %s: not one of the given addresses", u.Host)
	}
	return c.pick().ResolveReference(u), nil
}

// httpError is an unexpected status.
type httpError struct {
	Method, URL string
	Status      int
	Body        string
}

func (e *httpError) Error() string {
	return fmt.Sprintf("%s %s: %d %s", e.Method, e.URL, e.Status, e.Body)
}

// do sends one request and checks the status. The response body is closed
// unless keep is set (then the caller reads and closes it).
func (c *client) do(ctx context.Context, method, ref string, hdr http.Header, body io.Reader, size int64, want ...int) (*http.Response, error) {
	u, err := c.resolve(ref)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.ContentLength = size
		if size == 0 {
			req.Body = http.NoBody
		}
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if method == http.MethodGet || method == http.MethodHead {
		for k, v := range c.readHeader {
			req.Header[k] = v
		}
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	for _, w := range want {
		if resp.StatusCode == w {
			return resp, nil
		}
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	return nil, &httpError{Method: method, URL: u.String(), Status: resp.StatusCode, Body: strings.TrimSpace(string(b))}
}

func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<20))
	resp.Body.Close()
}

func (c *client) ctx(parent context.Context) (context.Context, context.CancelFunc) {
	if c.reqTimeout <= 0 {
		return context.WithCancel(parent)
	}
	return context.WithTimeout(parent, c.reqTimeout)
}

// ping checks that the address answers the OCI base endpoint.
func (c *client) ping(ctx context.Context) error {
	for _, t := range c.targets {
		ctx, cancel := c.ctx(ctx)
		resp, err := c.do(ctx, http.MethodGet, t.ResolveReference(&url.URL{Path: "/v2/"}).String(), nil, nil, 0, http.StatusOK)
		cancel()
		if err != nil {
			return fmt.Errorf("registry %s: %w", t.Host, err)
		}
		drain(resp)
	}
	return nil
}

// withDigest adds ?digest= to an upload Location (which may carry a query
// already, as Distribution's does).
func withDigest(loc, dgst string) (string, error) {
	u, err := url.Parse(loc)
	if err != nil {
		return "", fmt.Errorf("bad Location %q: %v", loc, err)
	}
	q := u.Query()
	q.Set("digest", dgst)
	u.RawQuery = q.Encode()
	return u.String(), nil
}

func location(resp *http.Response) (string, error) {
	loc := resp.Header.Get("Location")
	if loc == "" {
		return "", fmt.Errorf("%s %s: no Location in the answer", resp.Request.Method, resp.Request.URL)
	}
	// A relative Location is relative to the URL it answered.
	u, err := resp.Request.URL.Parse(loc)
	if err != nil {
		return "", err
	}
	return u.String(), nil
}

// relative makes an absolute URL on one of our targets relative again, so
// that the next request of a session may go to the next target (sessions
// live in shared state on flotilla). Other URLs are left alone.
func (c *client) relative(loc string, roundRobin bool) string {
	if !roundRobin || len(c.targets) < 2 {
		return loc
	}
	u, err := url.Parse(loc)
	if err != nil {
		return loc
	}
	return (&url.URL{Path: u.Path, RawPath: u.RawPath, RawQuery: u.RawQuery}).String()
}

// pushBlob uploads data as one blob: POST then a monolithic PUT, or, with
// chunk > 0, POST, PATCH chunks of that size, and a closing PUT.
func (c *client) pushBlob(ctx context.Context, repo string, data []byte, dgst string, chunk int64) error {
	ctx, cancel := c.ctx(ctx)
	defer cancel()
	resp, err := c.do(ctx, http.MethodPost, "/v2/"+repo+"/blobs/uploads/", nil, http.NoBody, 0, http.StatusAccepted)
	if err != nil {
		return err
	}
	loc, err := location(resp)
	drain(resp)
	if err != nil {
		return err
	}
	loc = c.relative(loc, true)
	octet := http.Header{"Content-Type": {"application/octet-stream"}}
	if chunk > 0 {
		for off := int64(0); off < int64(len(data)); off += chunk {
			end := min(off+chunk, int64(len(data)))
			h := octet.Clone()
			h.Set("Content-Range", fmt.Sprintf("%d-%d", off, end-1))
			resp, err := c.do(ctx, http.MethodPatch, loc, h, bytes.NewReader(data[off:end]), end-off, http.StatusAccepted, http.StatusNoContent)
			if err != nil {
				return err
			}
			loc, err = location(resp)
			drain(resp)
			if err != nil {
				return err
			}
			loc = c.relative(loc, true)
		}
		data = nil
	}
	put, err := withDigest(loc, dgst)
	if err != nil {
		return err
	}
	resp, err = c.do(ctx, http.MethodPut, put, octet, bytes.NewReader(data), int64(len(data)), http.StatusCreated)
	if err != nil {
		return err
	}
	if got := resp.Header.Get("Docker-Content-Digest"); got != "" && got != dgst {
		drain(resp)
		return fmt.Errorf("blob PUT answered digest %s, pushed %s", got, dgst)
	}
	drain(resp)
	return nil
}

// getBlob reads a whole blob and checks its sha256 digest and size.
func (c *client) getBlob(ctx context.Context, repo, dgst string, size int64, buf []byte) error {
	ctx, cancel := c.ctx(ctx)
	defer cancel()
	resp, err := c.do(ctx, http.MethodGet, "/v2/"+repo+"/blobs/"+dgst, nil, nil, 0, http.StatusOK)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return verifyBody(resp.Body, dgst, size, buf)
}

// verifyBody reads r to its end through sha256 and compares.
func verifyBody(r io.Reader, dgst string, size int64, buf []byte) error {
	h := sha256.New()
	n, err := io.CopyBuffer(h, r, buf)
	if err != nil {
		return fmt.Errorf("reading blob after %d bytes: %w", n, err)
	}
	if size >= 0 && n != size {
		return fmt.Errorf("blob %s: read %d bytes, want %d", dgst, n, size)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != dgst {
		return fmt.Errorf("blob content digest %s, want %s", got, dgst)
	}
	return nil
}

// Media types.
const (
	mtOCIManifest = "application/vnd.oci.image.manifest.v1+json"
	mtOCIConfig   = "application/vnd.oci.image.config.v1+json"
	mtOCILayer    = "application/vnd.oci.image.layer.v1.tar"
	acceptAll     = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, " +
		"application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json"
)

type descriptor struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
}

// blobRef is a small blob already in a repository.
type blobRef struct {
	desc descriptor
	data []byte
}

// imageManifest builds an OCI image manifest over config and layers; note
// makes its digest unique.
func imageManifest(config descriptor, layers []descriptor, note string) []byte {
	m := struct {
		SchemaVersion int               `json:"schemaVersion"`
		MediaType     string            `json:"mediaType"`
		Config        descriptor        `json:"config"`
		Layers        []descriptor      `json:"layers"`
		Annotations   map[string]string `json:"annotations,omitempty"`
	}{2, mtOCIManifest, config, layers, nil}
	if note != "" {
		m.Annotations = map[string]string{"org.flotilla.bench": note}
	}
	b, _ := json.Marshal(m)
	return b
}

func (c *client) putManifest(ctx context.Context, repo, ref string, body []byte) (string, error) {
	ctx, cancel := c.ctx(ctx)
	defer cancel()
	resp, err := c.do(ctx, http.MethodPut, "/v2/"+repo+"/manifests/"+ref,
		http.Header{"Content-Type": {mtOCIManifest}}, bytes.NewReader(body), int64(len(body)), http.StatusCreated)
	if err != nil {
		return "", err
	}
	drain(resp)
	return resp.Header.Get("Docker-Content-Digest"), nil
}

// getManifest fetches a manifest by tag or digest; with want set it checks
// the body's sha256 digest against it.
func (c *client) getManifest(ctx context.Context, repo, ref, want string) (int64, error) {
	ctx, cancel := c.ctx(ctx)
	defer cancel()
	resp, err := c.do(ctx, http.MethodGet, "/v2/"+repo+"/manifests/"+ref,
		http.Header{"Accept": {acceptAll}}, nil, 0, http.StatusOK)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20+1))
	if err != nil {
		return 0, fmt.Errorf("reading manifest: %w", err)
	}
	if want != "" {
		sum := sha256.Sum256(body)
		if got := "sha256:" + hex.EncodeToString(sum[:]); got != want {
			return 0, fmt.Errorf("manifest %s:%s has digest %s, want %s", repo, ref, got, want)
		}
	}
	return int64(len(body)), nil
}

// mountOrPush makes a small blob present in repo: a cross-repository mount
// from `from` when it is set and the registry accepts it, else an upload.
func (c *client) mountOrPush(ctx context.Context, repo, from string, b blobRef) error {
	if from != "" {
		cctx, cancel := c.ctx(ctx)
		q := url.Values{"mount": {b.desc.Digest}, "from": {from}}
		resp, err := c.do(cctx, http.MethodPost, "/v2/"+repo+"/blobs/uploads/?"+q.Encode(), nil, http.NoBody, 0,
			http.StatusCreated, http.StatusAccepted)
		if err != nil {
			cancel()
			return err
		}
		drain(resp)
		if resp.StatusCode == http.StatusCreated {
			cancel()
			return nil
		}
		// 202: the registry opened an upload instead; finish it.
		loc, err := location(resp)
		if err == nil {
			var put string
			if put, err = withDigest(loc, b.desc.Digest); err == nil {
				var r2 *http.Response
				r2, err = c.do(cctx, http.MethodPut, put, http.Header{"Content-Type": {"application/octet-stream"}},
					bytes.NewReader(b.data), int64(len(b.data)), http.StatusCreated)
				if err == nil {
					drain(r2)
				}
			}
		}
		cancel()
		return err
	}
	return c.pushBlob(ctx, repo, b.data, b.desc.Digest, 0)
}

// page fetches one page of a paginated list and returns the next page's
// URL from the Link header ("" at the end) and the number of items.
func (c *client) page(ctx context.Context, ref string) (next string, items int, err error) {
	ctx, cancel := c.ctx(ctx)
	defer cancel()
	resp, err := c.do(ctx, http.MethodGet, ref, nil, nil, 0, http.StatusOK)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	var body struct {
		Repositories []string `json:"repositories"`
		Tags         []string `json:"tags"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&body); err != nil {
		return "", 0, fmt.Errorf("decoding %s: %w", ref, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	if l, ok := nextLink(resp.Header.Get("Link")); ok {
		u, err := resp.Request.URL.Parse(l)
		if err != nil {
			return "", 0, fmt.Errorf("bad Link %q: %v", l, err)
		}
		next = c.relative(u.String(), true)
	}
	return next, len(body.Repositories) + len(body.Tags), nil
}

// ------------------------------------------------------------- content

// newRNG returns a fast generator seeded from the system's randomness, so
// that every run (and every blob) has content no registry has seen.
func newRNG() *mrand.ChaCha8 {
	var seed [32]byte
	_, _ = rand.Read(seed[:])
	return mrand.NewChaCha8(seed)
}

// genBlob fills buf with fresh random bytes and returns their digest.
func genBlob(rng *mrand.ChaCha8, buf []byte) string {
	_, _ = rng.Read(buf)
	sum := sha256.Sum256(buf)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// smallBlob makes a blob of n random bytes with the given media type.
func smallBlob(mediaType string, n int) blobRef {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	if mediaType == mtOCIConfig {
		// A config should be JSON; a random string inside keeps it unique.
		b = []byte(`{"architecture":"amd64","os":"linux","flotilla-bench":"` + hex.EncodeToString(b) + `"}`)
	}
	return blobRef{desc: descriptor{MediaType: mediaType, Digest: digestOf(b), Size: int64(len(b))}, data: b}
}

func itoa(i int) string { return strconv.Itoa(i) }
