package api

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/flotilla/flotilla/meta"
)

func (s *Server) getBlob(w http.ResponseWriter, r *http.Request, repo, ref string) error {
	d, err := meta.ParseDigest(ref)
	if err != nil {
		return apiErr(ErrCodeDigestInvalid, ref)
	}
	b, err := byDigest(s, r, func() (*meta.Blob, error) { return s.reg.Blob(repo, d.String()) })
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Docker-Content-Digest", b.Digest)
	h.Set("Accept-Ranges", "bytes")
	h.Set("Etag", `"`+b.Digest+`"`)
	h.Set("Cache-Control", "max-age=31536000")
	if r.Method == http.MethodHead {
		h.Set("Content-Type", "application/octet-stream")
		h.Set("Content-Length", strconv.FormatInt(b.Size, 10))
		w.WriteHeader(http.StatusOK)
		return nil
	}
	offset, length, status := int64(0), b.Size, http.StatusOK
	if rh := r.Header.Get("Range"); singleByteRange(rh) {
		start, end, ok := parseByteRange(rh, b.Size)
		if !ok {
			h.Set("Content-Range", fmt.Sprintf("bytes */%d", b.Size))
			return apiErr(ErrCodeRangeInvalid, rh)
		}
		offset, length, status = start, end-start+1, http.StatusPartialContent
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end, b.Size))
	}
	if s.cfg.BlobRedirect && status == http.StatusOK {
		if u, err := s.blobs.Presign(r.Context(), b.Key, s.cfg.BlobRedirectTTL); err == nil {
			http.Redirect(w, r, u, http.StatusTemporaryRedirect)
			return nil
		}
	}
	rc, err := s.blobs.Open(r.Context(), b.Key, offset, length)
	if err != nil {
		return fmt.Errorf("%w: open blob %s: %v", ErrUnavailable, b.Digest, err)
	}
	defer rc.Close()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.FormatInt(length, 10))
	w.WriteHeader(status)
	var n int64
	if wt, ok := rc.(io.WriterTo); ok && r.Method != http.MethodHead {
		// The store's body can hand the copy to the kernel (splice from an
		// object store socket, sendfile from a file; blobstore/direct.go).
		n, err = wt.WriteTo(w)
	} else {
		buf := s.copyBufs.Get().(*[]byte)
		defer s.copyBufs.Put(buf)
		// Plain Reader and Writer: io.CopyBuffer would otherwise hand the
		// copy to a ReadFrom/WriteTo with its own small buffer.
		n, err = io.CopyBuffer(struct{ io.Writer }{w}, struct{ io.Reader }{io.LimitReader(rc, length)}, *buf)
	}
	if err == nil && n < length {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		// Headers are gone; abort the connection so the client sees a
		// truncated body rather than a short success.
		s.logger.Warn("blob read failed mid-stream", "digest", b.Digest, "err", err)
		panic(http.ErrAbortHandler)
	}
	return nil
}

// singleByteRange reports whether a Range header is one the server acts on:
// a single range in bytes. Others (other units, several ranges) are ignored
// and the whole blob is served, as RFC 9110 section 14.2 allows.
func singleByteRange(h string) bool {
	spec, ok := strings.CutPrefix(strings.TrimSpace(h), "bytes=")
	return ok && !strings.Contains(spec, ",")
}

// parseByteRange parses a single "bytes=a-b", "bytes=a-" or "bytes=-n"
// range against size, returning inclusive bounds.
func parseByteRange(h string, size int64) (int64, int64, bool) {
	spec, ok := strings.CutPrefix(strings.TrimSpace(h), "bytes=")
	if !ok || strings.Contains(spec, ",") {
		return 0, 0, false
	}
	a, b, ok := strings.Cut(spec, "-")
	if !ok {
		return 0, 0, false
	}
	if a == "" {
		n, err := strconv.ParseInt(b, 10, 64)
		if err != nil || n <= 0 || size == 0 {
			return 0, 0, false
		}
		return max(size-n, 0), size - 1, true
	}
	start, err := strconv.ParseInt(a, 10, 64)
	if err != nil || start < 0 || start >= size {
		return 0, 0, false
	}
	end := size - 1
	if b != "" {
		e, err := strconv.ParseInt(b, 10, 64)
		if err != nil || e < start {
			return 0, 0, false
		}
		end = min(e, size-1)
	}
	return start, end, true
}

func (s *Server) deleteBlob(w http.ResponseWriter, r *http.Request, repo, ref string) error {
	d, err := meta.ParseDigest(ref)
	if err != nil {
		return apiErr(ErrCodeDigestInvalid, ref)
	}
	if _, err := s.apply(w, r, &meta.Command{Type: meta.CmdUnlinkBlob, Repo: repo, Digest: d.String()}); err != nil {
		return err
	}
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusAccepted)
	return nil
}
