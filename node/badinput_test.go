package node_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// badCase is one request that must be refused with an exact status and OCI
// error code, and write nothing. after, when set, checks the nothing.
type badCase struct {
	name   string
	method string
	path   string
	body   []byte
	hdr    []string
	status int
	code   string
	after  func(t *testing.T)
}

func runBadCases(t *testing.T, tn *testNode, cases []badCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := tn.on(t).req(tc.method, tc.path, tc.body, tc.hdr...)
			expectError(t, r, tc.status, tc.code)
			if tc.after != nil {
				tc.after(t)
			}
		})
	}
}

// badFixture is state every bad-input test starts from: an image tagged
// v1 in good/repo, a blob only in other/repo, and an upload session in
// each (the one in good/repo at offset 3).
type badFixture struct {
	tn        *testNode
	repo      string
	base      *image
	otherBlob string
	sess      string // Location of the good/repo session
	otherSess string // Location of the other/repo session
	catalog   []string
	tags      []string
}

func newBadFixture(t *testing.T) *badFixture {
	t.Helper()
	tn := startNode(t, nil)
	f := &badFixture{tn: tn, repo: "good/repo", base: newImage(t, "base")}
	tn.pushImage(f.repo, "v1", f.base)
	f.otherBlob = tn.pushBlob("other/repo", []byte("a blob only other/repo holds"))
	f.sess = tn.startUpload(f.repo)
	r := tn.req(http.MethodPatch, f.sess, []byte("abc"), "Content-Type", "application/octet-stream")
	expectStatus(t, r, http.StatusAccepted)
	if got := r.header.Get("Range"); got != "0-2" {
		t.Fatalf("Range after 3 bytes %q", got)
	}
	f.otherSess = tn.startUpload("other/repo")
	f.catalog = tn.catalog(t)
	f.tags = tn.tags(t, f.repo)
	return f
}

// unchanged checks that the fixture's visible state is as it was set up.
func (f *badFixture) unchanged(t *testing.T) {
	t.Helper()
	if got := f.tn.catalog(t); !slices.Equal(got, f.catalog) {
		t.Errorf("catalog %q, was %q", got, f.catalog)
	}
	if got := f.tn.tags(t, f.repo); !slices.Equal(got, f.tags) {
		t.Errorf("tags %q, were %q", got, f.tags)
	}
	f.sessionAt(t, f.sess, "0-2")
	f.sessionAt(t, f.otherSess, "0-0")
}

func (f *badFixture) sessionAt(t *testing.T, loc, rng string) {
	t.Helper()
	r := f.tn.on(t).req(http.MethodGet, loc, nil)
	if r.status != http.StatusNoContent || r.header.Get("Range") != rng {
		t.Errorf("session %s: %d Range %q, want 204 Range %q", loc, r.status, r.header.Get("Range"), rng)
	}
}

func uploadID(loc string) string { return path.Base(strings.SplitN(loc, "?", 2)[0]) }

func TestBadRepositoryNames(t *testing.T) {
	f := newBadFixture(t)
	tn := f.tn
	names := map[string]string{
		"uppercase":                  "Upper",
		"uppercase component":        "good/Repo",
		"double dot":                 "a..b",
		"dot-dot component, escaped": "foo/%2E%2E/bar",
		"single dot component":       "foo/%2E/bar",
		"leading dash":               "-foo",
		"leading dash in component":  "foo/-bar",
		"leading underscore":         "_foo",
		"leading dot":                ".foo",
		"trailing dash":              "foo-",
		"trailing slash, escaped":    "foo%2F",
		"leading slash, escaped":     "%2Ffoo",
		"space":                      "foo%20bar",
		"triple underscore":          "a___b",
		"over 255 characters":        strings.Repeat("a", 256),
		"over 255 with components":   strings.Repeat("ab/", 85) + "a", // 256
	}
	var cases []badCase
	for what, name := range names {
		cases = append(cases,
			badCase{name: what + "/tags list", method: http.MethodGet, path: "/v2/" + name + "/tags/list",
				status: http.StatusBadRequest, code: "NAME_INVALID"},
			badCase{name: what + "/manifest put", method: http.MethodPut, path: "/v2/" + name + "/manifests/v1",
				body: f.base.raw, hdr: []string{"Content-Type", mtOCIManifest},
				status: http.StatusBadRequest, code: "NAME_INVALID"},
			badCase{name: what + "/manifest get", method: http.MethodGet, path: "/v2/" + name + "/manifests/v1",
				status: http.StatusBadRequest, code: "NAME_INVALID"},
			badCase{name: what + "/upload start", method: http.MethodPost, path: "/v2/" + name + "/blobs/uploads/",
				status: http.StatusBadRequest, code: "NAME_INVALID"},
			badCase{name: what + "/monolithic upload", method: http.MethodPost,
				path: "/v2/" + name + "/blobs/uploads/?digest=" + sha256Of(f.base.layer), body: f.base.layer,
				status: http.StatusBadRequest, code: "NAME_INVALID"},
			badCase{name: what + "/mount", method: http.MethodPost,
				path:   "/v2/" + name + "/blobs/uploads/?mount=" + sha256Of(f.base.layer) + "&from=" + f.repo,
				status: http.StatusBadRequest, code: "NAME_INVALID"},
			badCase{name: what + "/blob get", method: http.MethodGet, path: "/v2/" + name + "/blobs/" + sha256Of(f.base.layer),
				status: http.StatusBadRequest, code: "NAME_INVALID"},
			badCase{name: what + "/referrers", method: http.MethodGet, path: "/v2/" + name + "/referrers/" + f.base.digest,
				status: http.StatusBadRequest, code: "NAME_INVALID"},
		)
	}
	slices.SortFunc(cases, func(a, b badCase) int { return strings.Compare(a.name, b.name) })
	runBadCases(t, tn, cases)

	// The longest valid name is valid: unknown, not invalid.
	long := strings.Repeat("a", 255)
	expectError(t, tn.req(http.MethodGet, "/v2/"+long+"/tags/list", nil), http.StatusNotFound, "NAME_UNKNOWN")
	f.unchanged(t)
}

func TestBadTags(t *testing.T) {
	f := newBadFixture(t)
	tn := f.tn
	im := newImage(t, "tagged badly")
	tn.pushBlob(f.repo, im.config)
	tn.pushBlob(f.repo, im.layer)
	notStored := func(t *testing.T) { tn.manifestAbsent(t, f.repo, im.digest) }
	var cases []badCase
	for what, tag := range map[string]string{
		"129 characters":  strings.Repeat("t", 129),
		"leading dash":    "-tag",
		"leading dot":     ".tag",
		"exclamation":     "tag!",
		"space":           "ta%20g",
		"plus":            "ta+g",
		"percent":         "ta%25g",
		"non-ASCII":       "t%C3%A4g",
		"control char":    "ta%00g",
		"at sign":         "t@g",
		"tilde":           "t~g",
		"129 with digits": "1" + strings.Repeat("0", 128),
	} {
		cases = append(cases, badCase{name: what, method: http.MethodPut, path: "/v2/" + f.repo + "/manifests/" + tag,
			body: im.raw, hdr: []string{"Content-Type", mtOCIManifest},
			status: http.StatusBadRequest, code: "TAG_INVALID", after: notStored})
	}
	cases = append(cases,
		badCase{name: "tag query on a digest push", method: http.MethodPut,
			path: "/v2/" + f.repo + "/manifests/" + im.digest + "?tag=-bad", body: im.raw,
			hdr: []string{"Content-Type", mtOCIManifest}, status: http.StatusBadRequest, code: "TAG_INVALID", after: notStored},
		badCase{name: "second tag query invalid", method: http.MethodPut,
			path: "/v2/" + f.repo + "/manifests/ok?tag=fine&tag=" + strings.Repeat("x", 129), body: im.raw,
			hdr: []string{"Content-Type", mtOCIManifest}, status: http.StatusBadRequest, code: "TAG_INVALID", after: notStored},
		badCase{name: "get by invalid tag", method: http.MethodGet, path: "/v2/" + f.repo + "/manifests/-bad",
			status: http.StatusBadRequest, code: "TAG_INVALID"},
		badCase{name: "delete by invalid tag", method: http.MethodDelete, path: "/v2/" + f.repo + "/manifests/-bad",
			status: http.StatusBadRequest, code: "TAG_INVALID"},
	)
	slices.SortFunc(cases, func(a, b badCase) int { return strings.Compare(a.name, b.name) })
	runBadCases(t, tn, cases)
	f.unchanged(t)
}

func TestBadDigests(t *testing.T) {
	f := newBadFixture(t)
	tn := f.tn
	hex64 := strings.Repeat("ab", 32)
	body := []byte("body pushed with a bad digest")
	digests := map[string]string{
		"md5":                   "md5:d41d8cd98f00b204e9800998ecf8427e",
		"sha1":                  "sha1:da39a3ee5e6b4b0d3255bfef95601890afd80709",
		"sha256 not hex":        "sha256:xyz",
		"sha256 63 hex":         "sha256:" + hex64[:63],
		"sha256 65 hex":         "sha256:" + hex64 + "a",
		"sha256 uppercase hex":  "sha256:" + strings.ToUpper(hex64),
		"sha256 empty":          "sha256:",
		"sha512 of sha256 size": "sha512:" + hex64,
		"no algorithm":          ":" + hex64,
		"unknown algorithm":     "blake9:" + hex64,
		"uppercase algorithm":   "SHA256:" + hex64,
	}
	var cases []badCase
	for what, d := range digests {
		cases = append(cases,
			badCase{name: what + "/blob get", method: http.MethodGet, path: "/v2/" + f.repo + "/blobs/" + d,
				status: http.StatusBadRequest, code: "DIGEST_INVALID"},
			badCase{name: what + "/blob head", method: http.MethodHead, path: "/v2/" + f.repo + "/blobs/" + d,
				status: http.StatusBadRequest},
			badCase{name: what + "/blob delete", method: http.MethodDelete, path: "/v2/" + f.repo + "/blobs/" + d,
				status: http.StatusBadRequest, code: "DIGEST_INVALID"},
			badCase{name: what + "/manifest get", method: http.MethodGet, path: "/v2/" + f.repo + "/manifests/" + d,
				status: http.StatusBadRequest, code: "DIGEST_INVALID"},
			badCase{name: what + "/manifest head", method: http.MethodHead, path: "/v2/" + f.repo + "/manifests/" + d,
				status: http.StatusBadRequest},
			badCase{name: what + "/manifest delete", method: http.MethodDelete, path: "/v2/" + f.repo + "/manifests/" + d,
				status: http.StatusBadRequest, code: "DIGEST_INVALID"},
			badCase{name: what + "/manifest put", method: http.MethodPut, path: "/v2/" + f.repo + "/manifests/" + d,
				body: f.base.raw, hdr: []string{"Content-Type", mtOCIManifest},
				status: http.StatusBadRequest, code: "DIGEST_INVALID"},
			badCase{name: what + "/monolithic upload", method: http.MethodPost,
				path: "/v2/" + f.repo + "/blobs/uploads/?digest=" + d, body: body,
				status: http.StatusBadRequest, code: "DIGEST_INVALID",
				after: func(t *testing.T) { tn.blobAbsent(t, f.repo, sha256Of(body)) }},
			badCase{name: what + "/upload completion", method: http.MethodPut, path: withQuery(f.sess, "digest="+d),
				status: http.StatusBadRequest, code: "DIGEST_INVALID",
				after: func(t *testing.T) { f.sessionAt(t, f.sess, "0-2") }},
			badCase{name: what + "/referrers", method: http.MethodGet, path: "/v2/" + f.repo + "/referrers/" + d,
				status: http.StatusBadRequest, code: "DIGEST_INVALID"},
		)
	}
	cases = append(cases,
		badCase{name: "upload completion without digest", method: http.MethodPut, path: f.sess,
			status: http.StatusBadRequest, code: "DIGEST_INVALID",
			after: func(t *testing.T) { f.sessionAt(t, f.sess, "0-2") }},
		badCase{name: "manifest put by a digest of other content", method: http.MethodPut,
			path: "/v2/" + f.repo + "/manifests/" + sha256Of([]byte("other")), body: newImage(t, "x").raw,
			hdr: []string{"Content-Type", mtOCIManifest}, status: http.StatusBadRequest, code: "DIGEST_INVALID",
			after: func(t *testing.T) { tn.manifestAbsent(t, f.repo, newImage(t, "x").digest) }},
	)
	slices.SortFunc(cases, func(a, b badCase) int { return strings.Compare(a.name, b.name) })
	runBadCases(t, tn, cases)
	f.unchanged(t)
}

// TestDigestMismatchOnCompletion: the bytes do not hash to the digest the
// client claims; the blob must not appear under either digest, and the
// session (for sha256, which is hashed while streaming) can still be
// finished correctly afterwards.
func TestDigestMismatchOnCompletion(t *testing.T) {
	f := newBadFixture(t)
	tn := f.tn
	content := []byte("the bytes actually sent")
	claims := map[string]string{
		"sha256": sha256Of([]byte("the bytes the client meant")),
		"sha512": sha512Of([]byte("the bytes the client meant")),
	}
	for alg, claimed := range claims {
		t.Run(alg+" monolithic", func(t *testing.T) {
			tn := tn.on(t)
			r := tn.req(http.MethodPost, "/v2/"+f.repo+"/blobs/uploads/?digest="+claimed, content)
			expectError(t, r, http.StatusBadRequest, "DIGEST_INVALID")
			tn.blobAbsent(t, f.repo, claimed)
			tn.blobAbsent(t, f.repo, sha256Of(content))
			tn.blobAbsent(t, f.repo, sha512Of(content))
		})
		t.Run(alg+" chunked", func(t *testing.T) {
			tn := tn.on(t)
			loc := tn.startUpload(f.repo)
			r := tn.req(http.MethodPatch, loc, content[:5])
			expectStatus(t, r, http.StatusAccepted)
			r = tn.req(http.MethodPut, withQuery(r.header.Get("Location"), "digest="+claimed), content[5:])
			expectError(t, r, http.StatusBadRequest, "DIGEST_INVALID")
			tn.blobAbsent(t, f.repo, claimed)
			tn.blobAbsent(t, f.repo, sha256Of(content))
			tn.blobAbsent(t, f.repo, sha512Of(content))
		})
	}
	t.Run("session usable after a refused sha256 completion", func(t *testing.T) {
		tn := tn.on(t)
		loc := tn.startUpload(f.repo)
		expectStatus(t, tn.req(http.MethodPatch, loc, content[:5]), http.StatusAccepted)
		r := tn.req(http.MethodPut, withQuery(loc, "digest="+claims["sha256"]), content[5:])
		expectError(t, r, http.StatusBadRequest, "DIGEST_INVALID")
		f.sessionAt(t, loc, "0-4")
		r = tn.req(http.MethodPut, withQuery(loc, "digest="+sha256Of(content)), content[5:])
		expectStatus(t, r, http.StatusCreated)
		r = tn.req(http.MethodGet, "/v2/"+f.repo+"/blobs/"+sha256Of(content), nil)
		expectStatus(t, r, http.StatusOK)
		if !bytes.Equal(r.body, content) {
			t.Errorf("blob body %q, want %q", r.body, content)
		}
	})
}

func TestBadManifests(t *testing.T) {
	f := newBadFixture(t)
	tn := f.tn
	put := func(name, ref, contentType string, raw []byte, status int, code string) badCase {
		return badCase{name: name, method: http.MethodPut, path: "/v2/" + f.repo + "/manifests/" + ref, body: raw,
			hdr: []string{"Content-Type", contentType}, status: status, code: code,
			after: func(t *testing.T) {
				tn.manifestAbsent(t, f.repo, sha256Of(raw))
				if !strings.Contains(ref, ":") {
					tn.manifestAbsent(t, f.repo, ref)
				}
			}}
	}
	unpushed := newImage(t, "never pushed")
	inOther := newImage(t, "blobs in other/repo")
	tn.pushBlob("other/repo", inOther.config)
	tn.pushBlob("other/repo", inOther.layer)
	halfPushed := newImage(t, "config pushed, layer not")
	tn.pushBlob(f.repo, halfPushed.config)
	// Blobs present, manifest not: refused only for what the case breaks.
	ready := newImage(t, "blobs pushed, manifest not")
	tn.pushBlob(f.repo, ready.config)
	tn.pushBlob(f.repo, ready.layer)

	index := func(children ...desc) []byte {
		return mustJSON(t, ociManifest{SchemaVersion: 2, MediaType: mtOCIIndex, Manifests: children})
	}
	// A well-formed manifest of f.base's blobs, edited by fn.
	edit := func(fn func(m map[string]any)) []byte {
		var m map[string]any
		if err := json.Unmarshal(f.base.raw, &m); err != nil {
			t.Fatal(err)
		}
		fn(m)
		return mustJSON(t, m)
	}
	layer0 := func(m map[string]any) map[string]any { return m["layers"].([]any)[0].(map[string]any) }

	big := make([]byte, 4<<20+1)
	copy(big, `{"schemaVersion":2,"mediaType":"`+mtOCIManifest+`","annotations":{"pad":"`)
	for i := bytes.IndexByte(big, 0); i < len(big); i++ {
		big[i] = 'a'
	}

	cases := []badCase{
		put("layer and config missing", "missing", mtOCIManifest, unpushed.raw, http.StatusBadRequest, "MANIFEST_BLOB_UNKNOWN"),
		put("layer missing", "half", mtOCIManifest, halfPushed.raw, http.StatusBadRequest, "MANIFEST_BLOB_UNKNOWN"),
		put("blobs only in another repository", "other", mtOCIManifest, inOther.raw, http.StatusBadRequest, "MANIFEST_BLOB_UNKNOWN"),
		put("blobs missing, by digest", unpushed.digest, mtOCIManifest, unpushed.raw, http.StatusBadRequest, "MANIFEST_BLOB_UNKNOWN"),
		put("index child missing", "multi", mtOCIIndex, index(unpushed.descriptor()), http.StatusBadRequest, "MANIFEST_UNKNOWN"),
		put("index with one child of two missing", "multi", mtOCIIndex, index(f.base.descriptor(), unpushed.descriptor()),
			http.StatusBadRequest, "MANIFEST_UNKNOWN"),
		put("over 4 MiB", "big", mtOCIManifest, big, http.StatusRequestEntityTooLarge, "SIZE_INVALID"),
		put("malformed JSON", "bad", mtOCIManifest, []byte(`{"schemaVersion":2,`), http.StatusBadRequest, "MANIFEST_INVALID"),
		put("empty body", "bad", mtOCIManifest, []byte{}, http.StatusBadRequest, "MANIFEST_INVALID"),
		put("JSON array", "bad", mtOCIManifest, []byte(`[1,2]`), http.StatusBadRequest, "MANIFEST_INVALID"),
		put("JSON null", "bad", mtOCIManifest, []byte(`null`), http.StatusBadRequest, "MANIFEST_INVALID"),
		put("not JSON", "bad", mtOCIManifest, []byte("\x00\x01\x02"), http.StatusBadRequest, "MANIFEST_INVALID"),
		put("schemaVersion 1", "bad", mtOCIManifest, edit(func(m map[string]any) { m["schemaVersion"] = 1 }),
			http.StatusBadRequest, "MANIFEST_INVALID"),
		put("schemaVersion missing", "bad", mtOCIManifest, edit(func(m map[string]any) { delete(m, "schemaVersion") }),
			http.StatusBadRequest, "MANIFEST_INVALID"),
		put("schemaVersion a string", "bad", mtOCIManifest, edit(func(m map[string]any) { m["schemaVersion"] = "2" }),
			http.StatusBadRequest, "MANIFEST_INVALID"),
		put("Content-Type index, mediaType manifest", "bad", mtOCIIndex, ready.raw, http.StatusBadRequest, "MANIFEST_INVALID"),
		put("Content-Type manifest, mediaType index", "bad", mtOCIManifest, index(f.base.descriptor()),
			http.StatusBadRequest, "MANIFEST_INVALID"),
		put("Content-Type docker manifest, mediaType OCI", "bad", "application/vnd.docker.distribution.manifest.v2+json",
			ready.raw, http.StatusBadRequest, "MANIFEST_INVALID"),
		put("config missing", "bad", mtOCIManifest, edit(func(m map[string]any) { delete(m, "config") }),
			http.StatusBadRequest, "MANIFEST_INVALID"),
		put("layer digest malformed", "bad", mtOCIManifest, edit(func(m map[string]any) { layer0(m)["digest"] = "sha256:xyz" }),
			http.StatusBadRequest, "MANIFEST_INVALID"),
		put("layer digest md5", "bad", mtOCIManifest,
			edit(func(m map[string]any) { layer0(m)["digest"] = "md5:d41d8cd98f00b204e9800998ecf8427e" }),
			http.StatusBadRequest, "MANIFEST_INVALID"),
		put("layer size negative", "bad", mtOCIManifest, edit(func(m map[string]any) { layer0(m)["size"] = -1 }),
			http.StatusBadRequest, "MANIFEST_INVALID"),
		put("config digest missing", "bad", mtOCIManifest,
			edit(func(m map[string]any) { delete(m["config"].(map[string]any), "digest") }),
			http.StatusBadRequest, "MANIFEST_INVALID"),
		put("subject digest malformed", "bad", mtOCIManifest,
			edit(func(m map[string]any) {
				m["subject"] = map[string]any{"mediaType": mtOCIManifest, "digest": "nope", "size": 1}
			}),
			http.StatusBadRequest, "MANIFEST_INVALID"),
		put("index child digest malformed", "bad", mtOCIIndex,
			index(desc{MediaType: mtOCIManifest, Digest: "sha256:abc", Size: 1}), http.StatusBadRequest, "MANIFEST_INVALID"),
		{name: "method not allowed", method: http.MethodPost, path: "/v2/" + f.repo + "/manifests/v1", body: f.base.raw,
			status: http.StatusMethodNotAllowed, code: "UNSUPPORTED"},
	}
	runBadCases(t, tn, cases)
	f.unchanged(t)

	// At the limit is accepted, byte for byte.
	padded := func(pad int) []byte {
		var m ociManifest
		if err := json.Unmarshal(ready.raw, &m); err != nil {
			t.Fatal(err)
		}
		m.Annotations = map[string]string{"pad": strings.Repeat("p", pad)}
		return mustJSON(t, m)
	}
	exact := padded(4<<20 - len(padded(0)))
	if len(exact) != 4<<20 {
		t.Fatalf("built %d bytes", len(exact))
	}
	tn.putManifest(f.repo, "exactly-4mib", mtOCIManifest, exact)
	r := tn.req(http.MethodGet, "/v2/"+f.repo+"/manifests/exactly-4mib", nil, "Accept", mtOCIManifest)
	expectStatus(t, r, http.StatusOK)
	if !bytes.Equal(r.body, exact) {
		t.Errorf("4 MiB manifest came back with %d bytes, differing", len(r.body))
	}
}

func TestBadUploads(t *testing.T) {
	f := newBadFixture(t)
	tn := f.tn
	unknown := strings.Repeat("0f", 16) // well-formed, never issued
	otherID := uploadID(f.otherSess)
	mine := func(id string) string { return "/v2/" + f.repo + "/blobs/uploads/" + id }
	sessAt3 := func(t *testing.T) { f.sessionAt(t, f.sess, "0-2") }
	otherAlive := func(t *testing.T) { f.sessionAt(t, f.otherSess, "0-0") }
	five := []byte("12345")
	var cases []badCase
	for _, cr := range []struct{ name, value string }{
		{"past the offset", "5-9"},
		{"from zero (a replayed chunk)", "0-4"},
		{"one short of the offset", "2-6"},
		{"length disagrees with the body", "3-10"},
		{"not a range", "garbage"},
		{"negative", "-3-1"},
		{"no end", "3-"},
	} {
		cases = append(cases, badCase{name: "PATCH Content-Range " + cr.name, method: http.MethodPatch, path: f.sess,
			body: five, hdr: []string{"Content-Range", cr.value, "Content-Type", "application/octet-stream"},
			status: http.StatusRequestedRangeNotSatisfiable, code: "RANGE_INVALID", after: sessAt3})
	}
	cases = append(cases,
		badCase{name: "PUT completion with Content-Range past the offset", method: http.MethodPut,
			path: withQuery(f.sess, "digest="+sha256Of(append([]byte("abc"), five...))), body: five,
			hdr:    []string{"Content-Range", "4-8", "Content-Type", "application/octet-stream"},
			status: http.StatusRequestedRangeNotSatisfiable, code: "RANGE_INVALID",
			after: func(t *testing.T) {
				sessAt3(t)
				tn.blobAbsent(t, f.repo, sha256Of(append([]byte("abc"), five...)))
			}},
	)
	for _, m := range []string{http.MethodGet, http.MethodPatch, http.MethodPut, http.MethodDelete} {
		q := ""
		if m == http.MethodPut {
			q = "?digest=" + sha256Of(five)
		}
		var body []byte
		if m == http.MethodPatch || m == http.MethodPut {
			body = five
		}
		cases = append(cases,
			badCase{name: m + " unknown upload", method: m, path: mine(unknown) + q, body: body,
				status: http.StatusNotFound, code: "BLOB_UPLOAD_UNKNOWN",
				after: func(t *testing.T) { tn.blobAbsent(t, f.repo, sha256Of(five)) }},
			badCase{name: m + " malformed upload id", method: m, path: mine("not-an-upload-id") + q, body: body,
				status: http.StatusNotFound, code: "BLOB_UPLOAD_UNKNOWN"},
			badCase{name: m + " upload of another repository", method: m, path: mine(otherID) + q, body: body,
				status: http.StatusNotFound, code: "BLOB_UPLOAD_UNKNOWN",
				after: func(t *testing.T) {
					otherAlive(t)
					tn.blobAbsent(t, f.repo, sha256Of(five))
					tn.blobAbsent(t, "other/repo", sha256Of(five))
				}},
		)
	}
	runBadCases(t, tn, cases)
	f.unchanged(t)

	// The session refused so often still works.
	r := tn.req(http.MethodPatch, f.sess, five, "Content-Range", "3-7")
	expectStatus(t, r, http.StatusAccepted)
	whole := append([]byte("abc"), five...)
	r = tn.req(http.MethodPut, withQuery(f.sess, "digest="+sha256Of(whole)), nil)
	expectStatus(t, r, http.StatusCreated)
}

func TestBadReads(t *testing.T) {
	f := newBadFixture(t)
	tn := f.tn
	layer := "/v2/" + f.repo + "/blobs/" + sha256Of(f.base.layer)
	size := strconv.Itoa(len(f.base.layer))
	unsatisfiable := func(rng string) badCase {
		return badCase{name: "blob range " + rng, method: http.MethodGet, path: layer, hdr: []string{"Range", rng},
			status: http.StatusRequestedRangeNotSatisfiable, code: "RANGE_INVALID"}
	}
	cases := []badCase{
		unsatisfiable("bytes=1000-2000"),
		unsatisfiable("bytes=" + size + "-"),
		unsatisfiable("bytes=5-2"),
		unsatisfiable("bytes=-0"),
		unsatisfiable("bytes=x-y"),
		{name: "blob of another repository", method: http.MethodGet, path: "/v2/" + f.repo + "/blobs/" + f.otherBlob,
			status: http.StatusNotFound, code: "BLOB_UNKNOWN"},
		{name: "blob head of another repository", method: http.MethodHead, path: "/v2/" + f.repo + "/blobs/" + f.otherBlob,
			status: http.StatusNotFound},
		{name: "blob never pushed", method: http.MethodGet, path: "/v2/" + f.repo + "/blobs/" + sha256Of([]byte("never")),
			status: http.StatusNotFound, code: "BLOB_UNKNOWN"},
		{name: "blob in unknown repository", method: http.MethodGet, path: "/v2/no/such/blobs/" + sha256Of(f.base.layer),
			status: http.StatusNotFound, code: "BLOB_UNKNOWN"},
		{name: "manifest unknown tag", method: http.MethodGet, path: "/v2/" + f.repo + "/manifests/nope",
			status: http.StatusNotFound, code: "MANIFEST_UNKNOWN"},
		{name: "manifest unknown digest", method: http.MethodGet, path: "/v2/" + f.repo + "/manifests/" + sha256Of([]byte("n")),
			status: http.StatusNotFound, code: "MANIFEST_UNKNOWN"},
		{name: "manifest of another repository", method: http.MethodGet, path: "/v2/other/repo/manifests/" + f.base.digest,
			status: http.StatusNotFound, code: "MANIFEST_UNKNOWN"},
		{name: "tags of unknown repository", method: http.MethodGet, path: "/v2/no/such/tags/list",
			status: http.StatusNotFound, code: "NAME_UNKNOWN"},
		{name: "tags of unknown repository, n=0", method: http.MethodGet, path: "/v2/no/such/tags/list?n=0",
			status: http.StatusNotFound, code: "NAME_UNKNOWN"},
		{name: "unknown endpoint", method: http.MethodGet, path: "/v2/" + f.repo + "/nothing/here",
			status: http.StatusNotFound},
	}
	for _, n := range []string{"abc", "-1", "1.5", "1e3", "99999999999999999999", "0x10", " 1"} {
		cases = append(cases,
			badCase{name: "tags n=" + n, method: http.MethodGet, path: "/v2/" + f.repo + "/tags/list?n=" + strings.ReplaceAll(n, " ", "%20"),
				status: http.StatusBadRequest, code: "PAGINATION_NUMBER_INVALID"},
			badCase{name: "catalog n=" + n, method: http.MethodGet, path: "/v2/_catalog?n=" + strings.ReplaceAll(n, " ", "%20"),
				status: http.StatusBadRequest, code: "PAGINATION_NUMBER_INVALID"},
		)
	}
	runBadCases(t, tn, cases)

	// The unsatisfiable range answer says the size.
	r := tn.req(http.MethodGet, layer, nil, "Range", "bytes=1000-2000")
	if got := r.header.Get("Content-Range"); got != "bytes */"+size {
		t.Errorf("416 Content-Range %q, want bytes */%s", got, size)
	}
	f.unchanged(t)
}

func TestBadDeletes(t *testing.T) {
	f := newBadFixture(t)
	tn := f.tn
	cases := []badCase{
		{name: "unknown manifest digest", method: http.MethodDelete,
			path: "/v2/" + f.repo + "/manifests/" + sha256Of([]byte("nothing")), status: http.StatusNotFound, code: "MANIFEST_UNKNOWN"},
		{name: "unknown tag", method: http.MethodDelete, path: "/v2/" + f.repo + "/manifests/nope",
			status: http.StatusNotFound, code: "MANIFEST_UNKNOWN"},
		{name: "manifest of another repository", method: http.MethodDelete, path: "/v2/other/repo/manifests/" + f.base.digest,
			status: http.StatusNotFound, code: "MANIFEST_UNKNOWN",
			after: func(t *testing.T) {
				expectStatus(t, tn.on(t).req(http.MethodHead, "/v2/"+f.repo+"/manifests/"+f.base.digest, nil), http.StatusOK)
			}},
		{name: "tag of another repository", method: http.MethodDelete, path: "/v2/other/repo/manifests/v1",
			status: http.StatusNotFound, code: "MANIFEST_UNKNOWN"},
		{name: "unknown blob", method: http.MethodDelete, path: "/v2/" + f.repo + "/blobs/" + sha256Of([]byte("nothing")),
			status: http.StatusNotFound, code: "BLOB_UNKNOWN"},
		{name: "blob of another repository", method: http.MethodDelete, path: "/v2/" + f.repo + "/blobs/" + f.otherBlob,
			status: http.StatusNotFound, code: "BLOB_UNKNOWN",
			after: func(t *testing.T) {
				expectStatus(t, tn.on(t).req(http.MethodHead, "/v2/other/repo/blobs/"+f.otherBlob, nil), http.StatusOK)
			}},
		{name: "manifest in unknown repository", method: http.MethodDelete, path: "/v2/no/such/manifests/v1",
			status: http.StatusNotFound, code: "MANIFEST_UNKNOWN"},
	}
	runBadCases(t, tn, cases)
	f.unchanged(t)
	expectStatus(t, tn.req(http.MethodHead, "/v2/"+f.repo+"/manifests/v1", nil), http.StatusOK)
}

// The positive counterparts: what the refusals above must not break.

func TestRangeReads(t *testing.T) {
	f := newBadFixture(t)
	tn := f.tn
	data := []byte("0123456789abcdefghij") // 20 bytes
	d := tn.pushBlob(f.repo, data)
	p := "/v2/" + f.repo + "/blobs/" + d
	cases := []struct {
		rng          string
		contentRange string
		want         string
	}{
		{"bytes=2-5", "bytes 2-5/20", "2345"},
		{"bytes=0-0", "bytes 0-0/20", "0"},
		{"bytes=15-", "bytes 15-19/20", "fghij"},
		{"bytes=-3", "bytes 17-19/20", "hij"},
		{"bytes=-50", "bytes 0-19/20", string(data)},
		{"bytes=10-999", "bytes 10-19/20", "abcdefghij"},
		{"bytes=19-19", "bytes 19-19/20", "j"},
	}
	for _, tc := range cases {
		t.Run(tc.rng, func(t *testing.T) {
			tn := tn.on(t)
			r := tn.req(http.MethodGet, p, nil, "Range", tc.rng)
			expectStatus(t, r, http.StatusPartialContent)
			if got := r.header.Get("Content-Range"); got != tc.contentRange {
				t.Errorf("Content-Range %q, want %q", got, tc.contentRange)
			}
			if string(r.body) != tc.want {
				t.Errorf("body %q, want %q", r.body, tc.want)
			}
			if got := r.header.Get("Content-Length"); got != strconv.Itoa(len(tc.want)) {
				t.Errorf("Content-Length %q", got)
			}
		})
	}
	r := tn.req(http.MethodGet, p, nil)
	expectStatus(t, r, http.StatusOK)
	if !bytes.Equal(r.body, data) || r.header.Get("Docker-Content-Digest") != d {
		t.Errorf("full read: %s", r)
	}
	r = tn.req(http.MethodHead, p, nil)
	expectStatus(t, r, http.StatusOK)
	if r.header.Get("Content-Length") != "20" {
		t.Errorf("HEAD Content-Length %q", r.header.Get("Content-Length"))
	}
}

func oddBytes(n int, seed byte) []byte {
	b := make([]byte, n)
	x := uint32(seed) + 1
	for i := range b {
		x = x*1664525 + 1013904223
		b[i] = byte(x >> 24)
	}
	return b
}

func TestChunkedUploads(t *testing.T) {
	f := newBadFixture(t)
	tn := f.tn
	sizes := []int{1, 65537, 4099}
	var whole []byte
	for i, n := range sizes {
		whole = append(whole, oddBytes(n, byte(i))...)
	}
	for _, tc := range []struct {
		name      string
		digest    string
		lastInPut bool
	}{
		{"sha256, empty final PUT", sha256Of(whole), false},
		{"sha256, last chunk in the PUT", sha256Of(whole), true},
		{"sha512, empty final PUT", sha512Of(whole), false},
		{"sha512, last chunk in the PUT", sha512Of(whole), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tn := tn.on(t)
			repo := "chunked/" + strings.ToLower(strings.NewReplacer(",", "", " ", "-").Replace(tc.name))
			loc := tn.startUpload(repo)
			off := 0
			for i, n := range sizes {
				chunk := whole[off : off+n]
				if tc.lastInPut && i == len(sizes)-1 {
					break
				}
				r := tn.req(http.MethodPatch, loc, chunk, "Content-Type", "application/octet-stream",
					"Content-Range", strconv.Itoa(off)+"-"+strconv.Itoa(off+n-1))
				expectStatus(t, r, http.StatusAccepted)
				off += n
				if got, want := r.header.Get("Range"), "0-"+strconv.Itoa(off-1); got != want {
					t.Errorf("Range after chunk %d: %q, want %q", i, got, want)
				}
				loc = r.header.Get("Location")
				f.sessionAt(t, loc, "0-"+strconv.Itoa(off-1))
			}
			r := tn.req(http.MethodPut, withQuery(loc, "digest="+tc.digest), whole[off:])
			expectStatus(t, r, http.StatusCreated)
			if got := r.header.Get("Docker-Content-Digest"); got != tc.digest {
				t.Errorf("Docker-Content-Digest %q, want %s", got, tc.digest)
			}
			r = tn.req(http.MethodGet, "/v2/"+repo+"/blobs/"+tc.digest, nil)
			expectStatus(t, r, http.StatusOK)
			if !bytes.Equal(r.body, whole) {
				t.Errorf("read back %d bytes, differing from the %d pushed", len(r.body), len(whole))
			}
			// The session is gone.
			expectError(t, tn.req(http.MethodGet, loc, nil), http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN")
		})
	}
	t.Run("sha512 monolithic", func(t *testing.T) {
		tn := tn.on(t)
		data := oddBytes(777, 9)
		d := sha512Of(data)
		r := tn.req(http.MethodPost, "/v2/sha/repo/blobs/uploads/?digest="+d, data)
		expectStatus(t, r, http.StatusCreated)
		if r.header.Get("Docker-Content-Digest") != d || r.header.Get("Location") != "/v2/sha/repo/blobs/"+d {
			t.Errorf("headers %v", r.header)
		}
		r = tn.req(http.MethodGet, "/v2/sha/repo/blobs/"+d, nil)
		expectStatus(t, r, http.StatusOK)
		if !bytes.Equal(r.body, data) || r.header.Get("Docker-Content-Digest") != d {
			t.Errorf("read back: %s", r)
		}
		tn.blobAbsent(t, "sha/repo", sha256Of(data)) // indexed under the digest pushed
	})
}

func TestCrossRepoMount(t *testing.T) {
	f := newBadFixture(t)
	tn := f.tn
	for _, b := range [][]byte{f.base.config, f.base.layer} {
		d := sha256Of(b)
		r := tn.req(http.MethodPost, "/v2/mounted/repo/blobs/uploads/?mount="+d+"&from="+f.repo, nil)
		expectStatus(t, r, http.StatusCreated)
		if r.header.Get("Location") != "/v2/mounted/repo/blobs/"+d || r.header.Get("Docker-Content-Digest") != d {
			t.Errorf("mount headers %v", r.header)
		}
		r = tn.req(http.MethodGet, "/v2/mounted/repo/blobs/"+d, nil)
		expectStatus(t, r, http.StatusOK)
		if !bytes.Equal(r.body, b) {
			t.Errorf("mounted blob reads %q", r.body)
		}
	}
	// With its blobs mounted, the manifest can be pushed there.
	tn.putManifest("mounted/repo", "v1", mtOCIManifest, f.base.raw)

	// A mount from a repository that lacks the blob falls back to an
	// upload session and links nothing.
	r := tn.req(http.MethodPost, "/v2/mounted/other/blobs/uploads/?mount="+f.otherBlob+"&from="+f.repo, nil)
	expectStatus(t, r, http.StatusAccepted)
	if !strings.HasPrefix(r.header.Get("Location"), "/v2/mounted/other/blobs/uploads/") {
		t.Errorf("fallback Location %q", r.header.Get("Location"))
	}
	tn.blobAbsent(t, "mounted/other", f.otherBlob)
	// So does a mount of a malformed digest.
	r = tn.req(http.MethodPost, "/v2/mounted/other/blobs/uploads/?mount=sha256:xyz&from="+f.repo, nil)
	expectStatus(t, r, http.StatusAccepted)
}

func TestTagPagination(t *testing.T) {
	f := newBadFixture(t)
	tn := f.tn
	repo := "paged/repo"
	tn.pushBlob(repo, f.base.config)
	tn.pushBlob(repo, f.base.layer)
	want := []string{"a", "b", "c", "d", "e"}
	for _, tag := range []string{"d", "b", "e", "a", "c"} {
		tn.putManifest(repo, tag, mtOCIManifest, f.base.raw)
	}
	if got := tn.tags(t, repo); !slices.Equal(got, want) {
		t.Fatalf("all tags %q, want %q", got, want)
	}
	var walked []string
	next := "/v2/" + repo + "/tags/list?n=2"
	var links []string
	for range 10 {
		r := tn.req(http.MethodGet, next, nil)
		expectStatus(t, r, http.StatusOK)
		var body struct {
			Name string   `json:"name"`
			Tags []string `json:"tags"`
		}
		if err := json.Unmarshal(r.body, &body); err != nil || body.Name != repo {
			t.Fatalf("page %s: %v", r, err)
		}
		walked = append(walked, body.Tags...)
		link := r.header.Get("Link")
		if link == "" {
			break
		}
		links = append(links, link)
		start, end := strings.Index(link, "<"), strings.Index(link, ">")
		if start != 0 || end < 0 || !strings.HasSuffix(link, `; rel="next"`) {
			t.Fatalf("Link %q", link)
		}
		next = link[1:end]
	}
	if !slices.Equal(walked, want) {
		t.Errorf("walked %q, want %q", walked, want)
	}
	wantLinks := []string{
		`</v2/paged/repo/tags/list?n=2&last=b>; rel="next"`,
		`</v2/paged/repo/tags/list?n=2&last=d>; rel="next"`,
	}
	if !slices.Equal(links, wantLinks) {
		t.Errorf("links %q, want %q", links, wantLinks)
	}
	for q, want := range map[string][]string{
		"last=c":     {"d", "e"},
		"n=3&last=a": {"b", "c", "d"},
		"n=0":        {},
		"n=10":       {"a", "b", "c", "d", "e"},
		"last=e":     {},
	} {
		r := tn.req(http.MethodGet, "/v2/"+repo+"/tags/list?"+q, nil)
		expectStatus(t, r, http.StatusOK)
		var body struct {
			Tags []string `json:"tags"`
		}
		if err := json.Unmarshal(r.body, &body); err != nil || body.Tags == nil || !slices.Equal(body.Tags, want) {
			t.Errorf("?%s: %s (%v), want %q", q, r, err, want)
		}
		if strings.HasPrefix(q, "n=10") || strings.HasPrefix(q, "last=") {
			if l := r.header.Get("Link"); l != "" {
				t.Errorf("?%s: Link %q on the last page", q, l)
			}
		}
	}
	// The catalog pages the same way.
	r := tn.req(http.MethodGet, "/v2/_catalog?n=1", nil)
	expectStatus(t, r, http.StatusOK)
	if !strings.HasPrefix(r.header.Get("Link"), "</v2/_catalog?n=1&last=") {
		t.Errorf("catalog Link %q", r.header.Get("Link"))
	}
}

func TestReferrersFilter(t *testing.T) {
	f := newBadFixture(t)
	tn := f.tn
	empty := []byte("{}")
	tn.pushBlob(f.repo, empty)
	emptyDesc := &desc{MediaType: "application/vnd.oci.empty.v1+json", Digest: sha256Of(empty), Size: 2}
	subject := f.base.descriptor()
	const sbom, sig = "application/vnd.example.sbom.v1", "application/vnd.example.sig.v1"
	withField := mustJSON(t, ociManifest{SchemaVersion: 2, MediaType: mtOCIManifest, ArtifactType: sbom,
		Config: emptyDesc, Layers: []desc{*emptyDesc}, Subject: &subject,
		Annotations: map[string]string{"org.example.kind": "sbom"}})
	fromConfig := mustJSON(t, ociManifest{SchemaVersion: 2, MediaType: mtOCIManifest,
		Config: &desc{MediaType: sig, Digest: sha256Of(empty), Size: 2}, Layers: []desc{*emptyDesc}, Subject: &subject})
	for _, raw := range [][]byte{withField, fromConfig} {
		r := tn.putManifest(f.repo, sha256Of(raw), mtOCIManifest, raw)
		if r.header.Get("OCI-Subject") != subject.Digest {
			t.Errorf("OCI-Subject %q, want %s", r.header.Get("OCI-Subject"), subject.Digest)
		}
	}
	type index struct {
		SchemaVersion int    `json:"schemaVersion"`
		MediaType     string `json:"mediaType"`
		Manifests     []desc `json:"manifests"`
	}
	get := func(q string) (*response, index) {
		t.Helper()
		r := tn.req(http.MethodGet, "/v2/"+f.repo+"/referrers/"+subject.Digest+q, nil)
		expectStatus(t, r, http.StatusOK)
		var ix index
		if err := json.Unmarshal(r.body, &ix); err != nil {
			t.Fatalf("%s: %v", r, err)
		}
		if ix.SchemaVersion != 2 || ix.MediaType != mtOCIIndex || ix.Manifests == nil ||
			!strings.HasPrefix(r.header.Get("Content-Type"), mtOCIIndex) {
			t.Errorf("not an OCI index: %s", r)
		}
		return r, ix
	}
	r, all := get("")
	if len(all.Manifests) != 2 {
		t.Fatalf("%d referrers, want 2: %s", len(all.Manifests), r)
	}
	if h := r.header.Get("OCI-Filters-Applied"); h != "" {
		t.Errorf("OCI-Filters-Applied %q without a filter", h)
	}
	byType := map[string]desc{}
	for _, d := range all.Manifests {
		byType[d.ArtifactType] = d
	}
	if d := byType[sbom]; d.Digest != sha256Of(withField) || d.Size != int64(len(withField)) ||
		d.MediaType != mtOCIManifest || d.Annotations["org.example.kind"] != "sbom" {
		t.Errorf("sbom referrer %+v", d)
	}
	if d := byType[sig]; d.Digest != sha256Of(fromConfig) {
		t.Errorf("sig referrer (artifactType from config.mediaType) %+v", d)
	}
	for filter, want := range map[string]string{sbom: sha256Of(withField), sig: sha256Of(fromConfig), "application/none": ""} {
		r, ix := get("?artifactType=" + filter)
		if h := r.header.Get("OCI-Filters-Applied"); h != "artifactType" {
			t.Errorf("filter %s: OCI-Filters-Applied %q", filter, h)
		}
		var got []string
		for _, d := range ix.Manifests {
			got = append(got, d.Digest)
		}
		if want == "" && len(got) != 0 || want != "" && !slices.Equal(got, []string{want}) {
			t.Errorf("filter %s: %q, want %q", filter, got, want)
		}
	}
	// A subject nobody refers to: an empty index, not an error.
	r = tn.req(http.MethodGet, "/v2/"+f.repo+"/referrers/"+sha256Of([]byte("lonely")), nil)
	expectStatus(t, r, http.StatusOK)
}

// TestConcurrentPatchSameOffset: two chunks computed against the same
// offset (a client retrying a PATCH whose first attempt is still
// streaming, or two clients on one session): one wins, the other gets 416,
// and the bytes stored are the winner's, so the completed blob hashes to
// its digest. The loser is held mid-body while the winner runs, to make the
// two overlap in the blob store.
func TestConcurrentPatchSameOffset(t *testing.T) {
	f := newBadFixture(t)
	tn := f.tn
	pr, pw := io.Pipe()
	slow := make(chan int, 1)
	go func() {
		req, err := http.NewRequest(http.MethodPatch, tn.url+f.sess, pr)
		if err != nil {
			slow <- 0
			return
		}
		resp, err := tn.client.Do(req)
		if err != nil {
			slow <- 0
			return
		}
		resp.Body.Close()
		slow <- resp.StatusCode
	}()
	if _, err := pw.Write([]byte("A")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // let the slow chunk reach the blob store (coverage, not correctness)
	fast := tn.req(http.MethodPatch, f.sess, []byte("BBBBB"))
	if _, err := pw.Write([]byte("AAAA")); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	slowStatus := <-slow

	var winner []byte
	switch {
	case fast.status == http.StatusAccepted && slowStatus == http.StatusRequestedRangeNotSatisfiable:
		winner = []byte("abcBBBBB")
	case slowStatus == http.StatusAccepted && fast.status == http.StatusRequestedRangeNotSatisfiable:
		winner = []byte("abcAAAAA")
	default:
		t.Fatalf("two chunks at offset 3: %d and %d, want one 202 and one 416", fast.status, slowStatus)
	}
	f.sessionAt(t, f.sess, "0-7")
	d := sha256Of(winner)
	expectStatus(t, tn.req(http.MethodPut, withQuery(f.sess, "digest="+d), nil), http.StatusCreated)
	r := tn.req(http.MethodGet, "/v2/"+f.repo+"/blobs/"+d, nil)
	expectStatus(t, r, http.StatusOK)
	if got := sha256Of(r.body); got != d {
		t.Errorf("blob %s holds %q, which hashes to %s", d, r.body, got)
	}
}

// TestNonCanonicalNamePaths: a name with "..", "." or empty components is
// outside the grammar whatever its spelling in the path. Today net/http's
// ServeMux cleans the path first and answers 307 to another repository,
// which a client that follows redirects (307 keeps method and body) then
// writes to.
func TestNonCanonicalNamePaths(t *testing.T) {
	f := newBadFixture(t)
	tn := f.tn
	for _, name := range []string{"foo/../bar", "foo/./bar", "/foo", "foo//bar", "foo/", "foo/.."} {
		runBadCases(t, tn, []badCase{
			{name: name + "/tags list", method: http.MethodGet, path: "/v2/" + name + "/tags/list",
				status: http.StatusBadRequest, code: "NAME_INVALID"},
			{name: name + "/manifest put", method: http.MethodPut, path: "/v2/" + name + "/manifests/v1", body: f.base.raw,
				hdr: []string{"Content-Type", mtOCIManifest}, status: http.StatusBadRequest, code: "NAME_INVALID"},
			{name: name + "/upload start", method: http.MethodPost, path: "/v2/" + name + "/blobs/uploads/",
				status: http.StatusBadRequest, code: "NAME_INVALID"},
		})
	}
	// What a redirect-following client ends up doing.
	tn.pushBlob("victim", f.base.config)
	tn.pushBlob("victim", f.base.layer)
	req, err := http.NewRequest(http.MethodPut, tn.url+"/v2/evil/../victim/manifests/latest", bytes.NewReader(f.base.raw))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", mtOCIManifest)
	resp, err := (&http.Client{Timeout: requestTimeout}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode < 400 {
		t.Errorf("PUT /v2/evil/../victim/manifests/latest ended in %d at %s", resp.StatusCode, resp.Request.URL.Path)
	}
	tn.manifestAbsent(t, "victim", "latest")
}

// TestIndexHeaderBeyondLog: a Flotilla-Index no write ever answered with
// (beyond the leader's commit index) must be refused, not waited for: today
// the handler waits for it as long as the client stays connected.
func TestIndexHeaderBeyondLog(t *testing.T) {
	f := newBadFixture(t)
	tn := f.tn
	tn.client.Timeout = 20 * time.Second // hang guard
	for _, consistency := range []string{"", "stale"} {
		t.Run("consistency="+consistency, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, tn.url+"/v2/"+f.repo+"/tags/list", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Flotilla-Index", "4611686018427387904")
			if consistency != "" {
				req.Header.Set("Flotilla-Consistency", consistency)
			}
			resp, err := tn.client.Do(req)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("status %d, want 400", resp.StatusCode)
			}
		})
	}
}

// TestRangeUnitIgnored: RFC 9110 section 14.2: a server MUST ignore a Range
// header with a unit it does not understand (answer 200 with the whole
// blob); today it answers 416.
func TestRangeUnitIgnored(t *testing.T) {
	f := newBadFixture(t)
	r := f.tn.req(http.MethodGet, "/v2/"+f.repo+"/blobs/"+sha256Of(f.base.layer), nil, "Range", "items=0-1")
	expectStatus(t, r, http.StatusOK)
	if !bytes.Equal(r.body, f.base.layer) {
		t.Errorf("body %q", r.body)
	}
}
