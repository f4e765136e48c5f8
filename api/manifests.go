package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/flotilla/flotilla/meta"
	"github.com/opencontainers/go-digest"
)

// manifestDoc is the part of any manifest (OCI image, index, artifact;
// Docker schema 2 image and list) the registry reads. The stored bytes are
// always the client's own.
type manifestDoc struct {
	SchemaVersion *int              `json:"schemaVersion"`
	MediaType     string            `json:"mediaType"`
	ArtifactType  string            `json:"artifactType"`
	Config        *descriptorDoc    `json:"config"`
	Layers        []descriptorDoc   `json:"layers"`
	Manifests     []descriptorDoc   `json:"manifests"`
	Blobs         []descriptorDoc   `json:"blobs"`
	Subject       *descriptorDoc    `json:"subject"`
	Annotations   map[string]string `json:"annotations"`
}

type descriptorDoc struct {
	MediaType string   `json:"mediaType"`
	Digest    string   `json:"digest"`
	Size      int64    `json:"size"`
	URLs      []string `json:"urls"`
}

const (
	mtOCIManifest    = "application/vnd.oci.image.manifest.v1+json"
	mtOCIIndex       = "application/vnd.oci.image.index.v1+json"
	mtDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	mtDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
	mtDockerForeign  = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
)

// nonDistributable layers are not pushed to registries; a manifest may
// reference them without the blob being present.
func nonDistributable(mediaType string) bool {
	return strings.Contains(mediaType, ".nondistributable.") || mediaType == mtDockerForeign
}

// parseManifest validates raw as a manifest of mediaType and returns the
// record to store (digest filled in by the caller).
func parseManifest(raw []byte, contentType string) (*meta.Manifest, *Error) {
	var doc manifestDoc
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, apiErr(ErrCodeManifestInvalid, "malformed JSON: "+err.Error())
	}
	mediaType := contentType
	if mt, _, err := mime.ParseMediaType(contentType); err == nil {
		mediaType = mt
	}
	switch {
	case mediaType == "" || mediaType == "application/json" || mediaType == "application/octet-stream":
		mediaType = doc.MediaType
	case doc.MediaType != "" && doc.MediaType != mediaType:
		return nil, apiErr(ErrCodeManifestInvalid, fmt.Sprintf("mediaType %q does not match Content-Type %q", doc.MediaType, mediaType))
	}
	if mediaType == "" {
		if doc.Manifests != nil {
			mediaType = mtOCIIndex
		} else {
			mediaType = mtOCIManifest
		}
	}
	if doc.SchemaVersion == nil || *doc.SchemaVersion != 2 {
		return nil, apiErr(ErrCodeManifestInvalid, "schemaVersion must be 2")
	}
	m := &meta.Manifest{MediaType: mediaType, Raw: raw, ArtifactType: doc.ArtifactType, Annotations: doc.Annotations}
	check := func(d descriptorDoc, what string) *Error {
		if _, err := meta.ParseDigest(d.Digest); err != nil {
			return apiErr(ErrCodeManifestInvalid, fmt.Sprintf("%s digest %q: %v", what, d.Digest, err))
		}
		if d.Size < 0 {
			return apiErr(ErrCodeManifestInvalid, what+" size is negative")
		}
		return nil
	}
	isIndex := mediaType == mtOCIIndex || mediaType == mtDockerList
	if isIndex {
		for _, d := range doc.Manifests {
			if e := check(d, "manifest"); e != nil {
				return nil, e
			}
			m.Children = append(m.Children, d.Digest)
		}
	} else {
		if doc.Config != nil {
			if e := check(*doc.Config, "config"); e != nil {
				return nil, e
			}
			m.Blobs = append(m.Blobs, doc.Config.Digest)
			if m.ArtifactType == "" {
				m.ArtifactType = doc.Config.MediaType
			}
		} else if mediaType == mtOCIManifest || mediaType == mtDockerManifest {
			return nil, apiErr(ErrCodeManifestInvalid, "config is required")
		}
		for _, layers := range [][]descriptorDoc{doc.Layers, doc.Blobs} {
			for _, d := range layers {
				if e := check(d, "layer"); e != nil {
					return nil, e
				}
				if nonDistributable(d.MediaType) {
					continue
				}
				m.Blobs = append(m.Blobs, d.Digest)
			}
		}
	}
	if doc.Subject != nil {
		if e := check(*doc.Subject, "subject"); e != nil {
			return nil, e
		}
		m.Subject = doc.Subject.Digest
	}
	return m, nil
}

func isDigestRef(ref string) bool { return strings.Contains(ref, ":") }

func (s *Server) putManifest(w http.ResponseWriter, r *http.Request, repo, ref string) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, s.cfg.MaxManifestSize+1))
	if err != nil {
		return apiErr(ErrCodeManifestInvalid, "reading body: "+err.Error())
	}
	if int64(len(body)) > s.cfg.MaxManifestSize {
		return apiErr(ErrCodeManifestTooBig, fmt.Sprintf("limit is %d bytes", s.cfg.MaxManifestSize))
	}
	var dgst digest.Digest
	tags := []string{}
	if isDigestRef(ref) {
		want, err := meta.ParseDigest(ref)
		if err != nil {
			return apiErr(ErrCodeDigestInvalid, ref)
		}
		dgst = want.Algorithm().FromBytes(body)
		if dgst != want {
			return apiErr(ErrCodeDigestInvalid, fmt.Sprintf("content digest %s does not match reference %s", dgst, want))
		}
	} else {
		if !meta.ValidTag(ref) {
			return apiErr(ErrCodeTagInvalid, ref)
		}
		dgst = digest.SHA256.FromBytes(body)
		tags = append(tags, ref)
	}
	for _, t := range r.URL.Query()["tag"] {
		if !meta.ValidTag(t) {
			return apiErr(ErrCodeTagInvalid, t)
		}
		if !slices.Contains(tags, t) {
			tags = append(tags, t)
		}
	}
	m, perr := parseManifest(body, r.Header.Get("Content-Type"))
	if perr != nil {
		return perr
	}
	m.Digest = dgst.String()
	ifTag, perr := tagPrecondition(r, tags)
	if perr != nil {
		return perr
	}
	_, err = s.apply(w, r, &meta.Command{Type: meta.CmdPutManifest, Repo: repo, Manifest: m, Tags: tags,
		IfTag: ifTag, AllowSparse: s.cfg.AllowSparse})
	if errors.Is(err, meta.ErrManifestUnknown) {
		// A child of an index is missing: a bad request, not a missing resource.
		var ce *meta.CodeError
		errors.As(err, &ce)
		return &Error{Code: ErrorCode{"MANIFEST_UNKNOWN", ErrCodeManifestUnknown.Message, http.StatusBadRequest}, Detail: ce.Detail, Cause: err}
	}
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Location", "/v2/"+repo+"/manifests/"+m.Digest)
	h.Set("Docker-Content-Digest", m.Digest)
	if m.Subject != "" {
		h.Set("OCI-Subject", m.Subject)
	}
	for _, t := range tags {
		h.Add("OCI-Tag", t)
	}
	h.Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
	return nil
}

// tagPrecondition reads a conditional tag update: `If-Match: "<digest>"`
// (the tags must point there now) or `If-None-Match: *` (they must not
// exist). The state machine checks it atomically with the update.
func tagPrecondition(r *http.Request, tags []string) (string, *Error) {
	im, inm := r.Header.Get("If-Match"), r.Header.Get("If-None-Match")
	switch {
	case im == "" && inm == "":
		return "", nil
	case len(tags) == 0:
		return "", apiErr(ErrCodeManifestInvalid, "If-Match / If-None-Match apply to tags; none given")
	case inm == "*" && im == "":
		return "-", nil
	case im != "" && inm == "":
		d, err := meta.ParseDigest(strings.Trim(strings.TrimSpace(im), `"`))
		if err != nil {
			return "", apiErr(ErrCodeDigestInvalid, "If-Match: "+im)
		}
		return d.String(), nil
	}
	return "", apiErr(ErrCodeManifestInvalid, "use either If-Match: \"<digest>\" or If-None-Match: *")
}

// resolveManifest finds the manifest a tag or digest names.
func (s *Server) resolveManifest(r *http.Request, repo, ref string) (*meta.Manifest, error) {
	if isDigestRef(ref) {
		d, err := meta.ParseDigest(ref)
		if err != nil {
			return nil, apiErr(ErrCodeDigestInvalid, ref)
		}
		return byDigest(s, r, func() (*meta.Manifest, error) { return s.reg.ManifestContent(repo, d.String()) })
	}
	if !meta.ValidTag(ref) {
		return nil, apiErr(ErrCodeTagInvalid, ref)
	}
	var m *meta.Manifest
	err := s.read(r, func() error {
		var err error
		m, err = s.reg.TaggedManifest(repo, ref)
		return err
	})
	return m, err
}

func (s *Server) getManifest(w http.ResponseWriter, r *http.Request, repo, ref string) error {
	m, err := s.resolveManifest(r, repo, ref)
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", m.MediaType)
	h.Set("Content-Length", strconv.Itoa(len(m.Raw)))
	h.Set("Docker-Content-Digest", m.Digest)
	h.Set("Etag", `"`+m.Digest+`"`)
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(m.Raw)
	}
	return nil
}

func (s *Server) deleteManifest(w http.ResponseWriter, r *http.Request, repo, ref string) error {
	c := &meta.Command{Repo: repo}
	if isDigestRef(ref) {
		d, err := meta.ParseDigest(ref)
		if err != nil {
			return apiErr(ErrCodeDigestInvalid, ref)
		}
		c.Type, c.Digest = meta.CmdDeleteManifest, d.String()
	} else {
		if !meta.ValidTag(ref) {
			return apiErr(ErrCodeTagInvalid, ref)
		}
		c.Type, c.Tag = meta.CmdDeleteTag, ref
	}
	if _, err := s.apply(w, r, c); err != nil {
		return err
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// pageParams reads n and last. n absent means no limit (-1).
func pageParams(r *http.Request) (int, string, *Error) {
	q := r.URL.Query()
	n := -1
	if v := q.Get("n"); v != "" {
		parsed, err := strconv.Atoi(v)
		if err != nil || parsed < 0 {
			return 0, "", apiErr(ErrorCode{"PAGINATION_NUMBER_INVALID", "invalid number of results requested", http.StatusBadRequest}, v)
		}
		n = parsed
	}
	return n, q.Get("last"), nil
}

func (s *Server) listTags(w http.ResponseWriter, r *http.Request, repo, _ string) error {
	n, last, perr := pageParams(r)
	if perr != nil {
		return perr
	}
	var tags []string
	more := false
	err := s.read(r, func() error {
		if n == 0 {
			if !s.reg.RepoExists(repo) {
				return meta.ErrNameUnknown.WithDetail(repo)
			}
			tags = []string{}
			return nil
		}
		var err error
		tags, more, err = s.reg.Tags(repo, last, max(n, 0))
		return err
	})
	if err != nil {
		return err
	}
	if more && len(tags) > 0 {
		w.Header().Set("Link", fmt.Sprintf(`</v2/%s/tags/list?n=%d&last=%s>; rel="next"`, repo, n, tags[len(tags)-1]))
	}
	writeJSON(w, http.StatusOK, "application/json", struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}{repo, tags})
	return nil
}

func (s *Server) catalog(w http.ResponseWriter, r *http.Request, _, _ string) error {
	n, last, perr := pageParams(r)
	if perr != nil {
		return perr
	}
	repos := []string{}
	more := false
	err := s.read(r, func() error {
		if n == 0 {
			return nil
		}
		var err error
		repos, more, err = s.reg.Repositories(last, max(n, 0))
		return err
	})
	if err != nil {
		return err
	}
	if more && len(repos) > 0 {
		w.Header().Set("Link", fmt.Sprintf(`</v2/_catalog?n=%d&last=%s>; rel="next"`, n, repos[len(repos)-1]))
	}
	writeJSON(w, http.StatusOK, "application/json", struct {
		Repositories []string `json:"repositories"`
	}{repos})
	return nil
}

func (s *Server) referrers(w http.ResponseWriter, r *http.Request, repo, ref string) error {
	d, err := meta.ParseDigest(ref)
	if err != nil {
		return apiErr(ErrCodeDigestInvalid, ref)
	}
	var all []meta.Descriptor
	err = s.read(r, func() error {
		var err error
		all, err = s.reg.Referrers(repo, d.String())
		return err
	})
	if err != nil {
		return err
	}
	filter := r.URL.Query().Get("artifactType")
	out := make([]meta.Descriptor, 0, len(all))
	for _, desc := range all {
		if filter == "" || desc.ArtifactType == filter {
			out = append(out, desc)
		}
	}
	if filter != "" {
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	writeJSON(w, http.StatusOK, mtOCIIndex, struct {
		SchemaVersion int               `json:"schemaVersion"`
		MediaType     string            `json:"mediaType"`
		Manifests     []meta.Descriptor `json:"manifests"`
	}{2, mtOCIIndex, out})
	return nil
}

func writeJSON(w http.ResponseWriter, status int, contentType string, v any) {
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(v); err != nil {
		writeError(w, &Error{Code: ErrCodeInternal, Cause: err})
		return
	}
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}
