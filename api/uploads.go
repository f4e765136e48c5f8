package api

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	"github.com/flotilla/flotilla/meta"
	"github.com/opencontainers/go-digest"
)

// The upload protocol. A session lives in the state machine; each request
// restores the digest state serialized in it, streams its bytes through the
// hash into the blob store, and commits the new offset, hash state and
// driver state with a compare-and-set on the old offset. So any node can
// serve any request of a session, and a replayed or concurrent chunk gets 416.

var uploadIDPattern = regexp.MustCompile(`^[a-f0-9]{32}$`)

func newUploadID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// hashAlgorithm is what sessions hash with while streaming. A completion
// with another algorithm's digest is verified by reading the blob back.
const hashAlgorithm = "sha256"

func newHash(alg string) (hash.Hash, error) {
	switch alg {
	case "sha256", "":
		return sha256.New(), nil
	case "sha512":
		return sha512.New(), nil
	}
	return nil, fmt.Errorf("unsupported hash %q", alg)
}

func restoreHash(u *meta.Upload) (hash.Hash, error) {
	h, err := newHash(u.Algorithm)
	if err != nil {
		return nil, err
	}
	if len(u.HashState) > 0 {
		if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(u.HashState); err != nil {
			return nil, fmt.Errorf("restore hash state: %w", err)
		}
	}
	return h, nil
}

func uploadLocation(repo, id string) string { return "/v2/" + repo + "/blobs/uploads/" + id }

func setUploadHeaders(w http.ResponseWriter, repo string, u *meta.Upload) {
	h := w.Header()
	h.Set("Location", uploadLocation(repo, u.ID))
	h.Set("Docker-Upload-UUID", u.ID)
	h.Set("Range", fmt.Sprintf("0-%d", max(u.Offset-1, 0)))
	h.Set("Content-Length", "0")
}

func (s *Server) startUpload(w http.ResponseWriter, r *http.Request, repo, _ string) error {
	q := r.URL.Query()
	if mount := q.Get("mount"); mount != "" {
		done, err := s.tryMount(w, r, repo, mount, q.Get("from"))
		if done || err != nil {
			return err
		}
	}
	var want digest.Digest
	if v := q.Get("digest"); v != "" {
		d, err := meta.ParseDigest(v)
		if err != nil {
			return apiErr(ErrCodeDigestInvalid, v)
		}
		want = d
	}
	id := newUploadID()
	bu, err := s.blobs.StartUpload(r.Context(), id)
	if err != nil {
		return fmt.Errorf("%w: start upload: %v", ErrUnavailable, err)
	}
	sess := &meta.Upload{ID: id, Repo: repo, Algorithm: hashAlgorithm, Driver: bu.State}
	if _, err := s.apply(w, r, &meta.Command{Type: meta.CmdStartUpload, Repo: repo, Upload: sess}); err != nil {
		_ = s.blobs.Abort(r.Context(), bu)
		return err
	}
	if want == "" {
		setUploadHeaders(w, repo, sess)
		w.WriteHeader(http.StatusAccepted)
		return nil
	}
	// Monolithic upload: the body is the whole blob.
	return s.finish(w, r, repo, sess, want)
}

// tryMount links an existing blob into repo. It reports done when it
// answered; a blob that cannot be mounted falls back to a normal upload.
func (s *Server) tryMount(w http.ResponseWriter, r *http.Request, repo, mount, from string) (bool, error) {
	d, err := meta.ParseDigest(mount)
	if err != nil || (from != "" && !meta.ValidRepo(from)) {
		return false, nil
	}
	_, err = s.apply(w, r, &meta.Command{Type: meta.CmdMountBlob, Repo: repo, Digest: d.String(), From: from})
	if errors.Is(err, meta.ErrBlobUnknown) {
		return false, nil
	}
	if err != nil {
		return true, err
	}
	h := w.Header()
	h.Set("Location", "/v2/"+repo+"/blobs/"+d.String())
	h.Set("Docker-Content-Digest", d.String())
	h.Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
	return true, nil
}

// session loads an upload of repo with read-your-writes freshness, always
// (whatever the node's stale-read setting): the previous request of this
// upload may have gone to another node, and a session read stale would
// continue from an old offset and hash.
func (s *Server) session(r *http.Request, repo, id string) (*meta.Upload, error) {
	if !uploadIDPattern.MatchString(id) {
		return nil, meta.ErrUploadUnknown.WithDetail(id)
	}
	opts := s.readOptions(r)
	opts.Stale = false
	var u *meta.Upload
	err := s.reg.Read(r.Context(), opts, func() error {
		var err error
		u, err = s.reg.Upload(id)
		return err
	})
	if err != nil {
		return nil, err
	}
	if u.Repo != repo {
		return nil, meta.ErrUploadUnknown.WithDetail(id)
	}
	return u, nil
}

// checkContentRange enforces a chunk's Content-Range, if it has one: it must
// start at the session's offset and agree with Content-Length.
func checkContentRange(r *http.Request, offset int64) bool {
	cr := r.Header.Get("Content-Range")
	if cr == "" {
		return true
	}
	cr = strings.TrimPrefix(strings.TrimSpace(cr), "bytes ")
	a, b, ok := strings.Cut(cr, "-")
	if !ok {
		return false
	}
	start, err1 := strconv.ParseInt(a, 10, 64)
	end, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil || start != offset || end < start-1 {
		return false
	}
	if r.ContentLength >= 0 && r.ContentLength != end-start+1 {
		return false
	}
	return true
}

// appendBody streams the request body into the upload and returns the
// session as it would stand after it (not yet committed).
func (s *Server) appendBody(r *http.Request, sess *meta.Upload) (*meta.Upload, meta.BlobUpload, error) {
	prev := meta.BlobUpload{Size: sess.Offset, State: sess.Driver}
	h, err := restoreHash(sess)
	if err != nil {
		return nil, prev, apiErr(ErrCodeBlobUploadInvalid, err.Error())
	}
	next, err := s.blobs.Append(r.Context(), prev, io.TeeReader(r.Body, h))
	if err != nil {
		return nil, prev, fmt.Errorf("%w: append: %v", ErrUnavailable, err)
	}
	hs, err := h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return nil, prev, err
	}
	out := *sess
	out.Offset, out.Driver, out.HashState = next.Size, next.State, hs
	return &out, next, nil
}

func (s *Server) rangeError(w http.ResponseWriter, repo string, sess *meta.Upload, cause error) error {
	setUploadHeaders(w, repo, sess)
	w.Header().Del("Content-Length")
	return &Error{Code: ErrCodeRangeInvalid, Detail: "chunk does not start at the upload's offset", Cause: cause}
}

func (s *Server) patchUpload(w http.ResponseWriter, r *http.Request, repo, id string) error {
	sess, err := s.session(r, repo, id)
	if err != nil {
		return err
	}
	if !checkContentRange(r, sess.Offset) {
		return s.rangeError(w, repo, sess, nil)
	}
	next, bu, err := s.appendBody(r, sess)
	if err != nil {
		return err
	}
	_, err = s.apply(w, r, &meta.Command{Type: meta.CmdUpdateUpload, Repo: repo, Upload: next, ExpectOffset: sess.Offset})
	if errors.Is(err, meta.ErrRangeInvalid) {
		return s.rangeError(w, repo, sess, err)
	}
	if err != nil {
		return err
	}
	if err := s.blobs.Committed(r.Context(), meta.BlobUpload{Size: sess.Offset, State: sess.Driver}, bu); err != nil {
		s.logger.Warn("cleaning staged upload data failed", "upload", id, "err", err)
	}
	setUploadHeaders(w, repo, next)
	w.WriteHeader(http.StatusAccepted)
	return nil
}

func (s *Server) putUpload(w http.ResponseWriter, r *http.Request, repo, id string) error {
	sess, err := s.session(r, repo, id)
	if err != nil {
		return err
	}
	want, err := meta.ParseDigest(r.URL.Query().Get("digest"))
	if err != nil {
		return apiErr(ErrCodeDigestInvalid, r.URL.Query().Get("digest"))
	}
	if !checkContentRange(r, sess.Offset) {
		return s.rangeError(w, repo, sess, nil)
	}
	return s.finish(w, r, repo, sess, want)
}

// finish appends the request body (possibly empty) as the last chunk,
// checks the digest, completes the blob and commits it to the index.
func (s *Server) finish(w http.ResponseWriter, r *http.Request, repo string, sess *meta.Upload, want digest.Digest) error {
	final, bu, err := s.appendBody(r, sess)
	if err != nil {
		return err
	}
	if string(want.Algorithm()) == final.Algorithm {
		h, err := restoreHash(final)
		if err != nil {
			return err
		}
		if got := digest.NewDigestFromBytes(want.Algorithm(), h.Sum(nil)); got != want {
			return apiErr(ErrCodeDigestInvalid, fmt.Sprintf("content is %s", got))
		}
	}
	key, err := s.blobs.Complete(r.Context(), bu)
	if err != nil {
		return fmt.Errorf("%w: complete upload: %v", ErrUnavailable, err)
	}
	if string(want.Algorithm()) != final.Algorithm {
		if err := s.verifyStored(r, key, final.Offset, want); err != nil {
			_ = s.blobs.Delete(r.Context(), key)
			_, _ = s.reg.Apply(r.Context(), &meta.Command{Type: meta.CmdCancelUpload, Repo: repo, Upload: &meta.Upload{ID: sess.ID}})
			return err
		}
	}
	res, err := s.apply(w, r, &meta.Command{Type: meta.CmdCompleteUpload, Repo: repo, ExpectOffset: sess.Offset,
		Upload: &meta.Upload{ID: sess.ID}, Blob: &meta.Blob{Digest: want.String(), Key: key, Size: final.Offset}})
	if errors.Is(err, meta.ErrRangeInvalid) {
		return s.rangeError(w, repo, sess, err)
	}
	if err != nil {
		return err
	}
	if res.Deduplicated && res.Blob != nil && res.Blob.Key != key {
		// The digest was already stored: drop this copy.
		if err := s.blobs.Delete(r.Context(), key); err != nil {
			s.logger.Warn("deleting duplicate upload failed", "key", key, "err", err)
		}
	}
	h := w.Header()
	h.Set("Location", "/v2/"+repo+"/blobs/"+want.String())
	h.Set("Docker-Content-Digest", want.String())
	h.Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
	return nil
}

// verifyStored hashes a completed object with want's algorithm.
func (s *Server) verifyStored(r *http.Request, key string, size int64, want digest.Digest) error {
	rc, err := s.blobs.Open(r.Context(), key, 0, size)
	if err != nil {
		return fmt.Errorf("%w: read back: %v", ErrUnavailable, err)
	}
	defer rc.Close()
	v := want.Verifier()
	if _, err := io.Copy(v, rc); err != nil {
		return fmt.Errorf("%w: read back: %v", ErrUnavailable, err)
	}
	if !v.Verified() {
		return apiErr(ErrCodeDigestInvalid, "content does not match "+want.String())
	}
	return nil
}

func (s *Server) uploadStatus(w http.ResponseWriter, r *http.Request, repo, id string) error {
	sess, err := s.session(r, repo, id)
	if err != nil {
		return err
	}
	setUploadHeaders(w, repo, sess)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) cancelUpload(w http.ResponseWriter, r *http.Request, repo, id string) error {
	sess, err := s.session(r, repo, id)
	if err != nil {
		return err
	}
	if _, err := s.apply(w, r, &meta.Command{Type: meta.CmdCancelUpload, Repo: repo, Upload: &meta.Upload{ID: id}}); err != nil {
		return err
	}
	if err := s.blobs.Abort(r.Context(), meta.BlobUpload{Size: sess.Offset, State: sess.Driver}); err != nil {
		s.logger.Warn("aborting upload storage failed", "upload", id, "err", err)
	}
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusNoContent)
	return nil
}
