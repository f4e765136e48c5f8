package blobstore

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

const (
	// DefaultS3PartSize is the multipart part size when S3Config.PartSize is 0.
	DefaultS3PartSize = 16 << 20
	// DefaultS3MaxBuffers is S3Config.MaxBuffers when 0: 256 MiB of 16 MiB parts.
	DefaultS3MaxBuffers = 16
	// MinS3PartSize is the smallest part S3 accepts (except the last one).
	MinS3PartSize = 5 << 20
	// maxS3PartSize is the largest part S3 accepts.
	maxS3PartSize = 5 << 30
	// maxS3Parts is the largest part number S3 accepts; with the default
	// part size a blob may reach 10000 * 16 MiB = 156 GiB.
	maxS3Parts = 10000
)

// S3Config configures the S3 driver.
type S3Config struct {
	// Endpoint is "host:port" or a URL ("https://host:port"); a URL's scheme
	// wins over Insecure. Empty means AWS ("s3.amazonaws.com").
	Endpoint string
	Bucket   string
	// Region; empty falls back to $AWS_REGION, then to what the endpoint
	// reports for the bucket.
	Region string
	// AccessKey and SecretKey; when both are empty the credentials come from
	// the usual chain: $AWS_ACCESS_KEY_ID/$AWS_SECRET_ACCESS_KEY
	// (+$AWS_SESSION_TOKEN), $MINIO_ROOT_USER/..., ~/.aws/credentials, then
	// the EC2/ECS/EKS metadata service.
	AccessKey string
	SecretKey string
	// Insecure talks plain http.
	Insecure bool
	// Prefix is prepended to every object name; it is normalised to end with
	// "/" ("registry" and "registry/" both give "registry/blobs/<id>").
	// Keys handed out by the driver (Complete, List) do not include it.
	Prefix string
	// PartSize of multipart uploads; 0 means DefaultS3PartSize. At least
	// MinS3PartSize. Nodes sharing a bucket may use different part sizes.
	PartSize int64
	// MaxBuffers bounds the part buffers all uploads of this driver hold at
	// once (each Append uses at most two), so upload memory is at most
	// MaxBuffers * PartSize whatever the number of clients; an upload waits
	// for a free buffer. 0 means DefaultS3MaxBuffers.
	MaxBuffers int
	// PublicEndpoint, when set, is the endpoint (same forms as Endpoint)
	// written into presigned URLs, e.g. a region-local or public name of the
	// same storage. It is used only to sign, never contacted.
	PublicEndpoint string
}

// S3 stores blobs in an S3-compatible bucket.
//
// Object names: "<prefix>blobs/<id>" is the blob of a multipart upload (or
// of an empty one); "<prefix>blobs/<id>.tail.<offset>.<sha256/128>" holds
// the bytes of an unfinished upload that do not fill a part yet (see
// tailKey). A blob that never reached one part is its last tail object:
// Complete returns that key and copies nothing.
//
// An Upload's state (JSON) holds the multipart upload id (created when the
// first full part is cut), the parts (number, ETag, size) and the tail (key,
// size, ETag). Append never changes an object its input state uses, so a
// state that is never committed costs nothing but garbage: Committed
// deletes the superseded tail; Complete and Abort sweep every other tail
// of the upload and its stray multipart uploads.
//
// Payload signing: bodies are sent unsigned (DisableContentSha256; minio-go
// adds a CRC32C trailer instead where the store supports it). Over plain
// http minio-go would otherwise hash every byte a second time to sign it,
// which costs more CPU than the upload's own digest; the registry checks
// content by its digest, and TLS protects it in transit.
//
// Memory: each Append holds at most two part buffers (2 * PartSize: one
// being filled from the request while the previous one is uploaded), each
// Complete at most one (to send the tail as the last part), plus minio-go's
// and net/http's small per-request buffers (tens of KiB). Buffers come from
// a per-driver pool bounded by MaxBuffers (all uploads together hold at most
// MaxBuffers * PartSize; an upload waits for a free buffer) and live outside
// the Go heap, so the collector's slack does not double them.
type S3 struct {
	client   *minio.Client
	core     *minio.Core
	signer   *minio.Client // signs presigned URLs; client unless PublicEndpoint is set
	bucket   string
	prefix   string
	partSize int64
	bufs     *bufferPool
	log      *slog.Logger
	// directMin: reads of at least this many bytes over plain http go
	// straight from a socket of their own (see direct.go); 0 disables.
	directMin int64
}

// defaultDirectMin is where a connection of its own pays off.
const defaultDirectMin = 1 << 20

// s3State is the driver's part of an Upload. Keys are relative to the prefix.
type s3State struct {
	V        int      `json:"v"`
	ID       string   `json:"id"`
	Object   string   `json:"object"`              // final key when multipart (or empty blob)
	UploadID string   `json:"upload_id,omitempty"` // multipart upload, once a part was cut
	Parts    []s3Part `json:"parts,omitempty"`
	Tail     string   `json:"tail,omitempty"` // bytes after the parts, < one part
	TailSize int64    `json:"tail_size,omitempty"`
	TailETag string   `json:"tail_etag,omitempty"` // as the store reported it
}

type s3Part struct {
	N    int    `json:"n"`
	ETag string `json:"etag"`
	Size int64  `json:"size"`
}

const s3StateVersion = 1

var _ Driver = (*S3)(nil)
var _ Lister = (*S3)(nil)

// NewS3 connects to the bucket, creating it when missing.
func NewS3(ctx context.Context, cfg S3Config, logger *slog.Logger) (*S3, error) {
	if logger == nil {
		logger = slog.Default()
	}
	if cfg.Bucket == "" {
		return nil, errors.New("blobstore s3: bucket is required")
	}
	partSize := cfg.PartSize
	if partSize == 0 {
		partSize = DefaultS3PartSize
	}
	if partSize < MinS3PartSize || partSize > maxS3PartSize {
		return nil, fmt.Errorf("blobstore s3: part size %d outside [%d, %d]", partSize, MinS3PartSize, maxS3PartSize)
	}
	host, secure, err := parseS3Endpoint(cfg.Endpoint, cfg.Insecure)
	if err != nil {
		return nil, err
	}
	var pubHost string
	var pubSecure bool
	if cfg.PublicEndpoint != "" {
		if pubHost, pubSecure, err = parseS3Endpoint(cfg.PublicEndpoint, cfg.Insecure); err != nil {
			return nil, fmt.Errorf("public endpoint: %w", err)
		}
	}
	region := cfg.Region
	if region == "" {
		region = os.Getenv("AWS_REGION")
	}
	creds := s3Credentials(cfg)
	client, err := minio.New(host, &minio.Options{Creds: creds, Secure: secure, Region: region})
	if err != nil {
		return nil, fmt.Errorf("blobstore s3: %w", err)
	}
	s := &S3{
		client:   client,
		core:     &minio.Core{Client: client},
		signer:   client,
		bucket:   cfg.Bucket,
		prefix:   normalizePrefix(cfg.Prefix),
		partSize: partSize,
		log:      logger.With("driver", "s3", "bucket", cfg.Bucket),
	}
	if !secure {
		s.directMin = defaultDirectMin
	}
	s.bufs = newBufferPool(partSize, cfg.MaxBuffers)
	if err := s.ensureBucket(ctx, region); err != nil {
		return nil, err
	}
	if pubHost != "" {
		if region == "" {
			// The signer never talks to its endpoint, so it cannot look the
			// region up itself.
			region, err = client.GetBucketLocation(ctx, cfg.Bucket)
			if err != nil {
				return nil, fmt.Errorf("blobstore s3: bucket location: %w", err)
			}
			if region == "" {
				region = "us-east-1"
			}
		}
		s.signer, err = minio.New(pubHost, &minio.Options{Creds: creds, Secure: pubSecure, Region: region})
		if err != nil {
			return nil, fmt.Errorf("blobstore s3: public endpoint: %w", err)
		}
	}
	s.log.Info("s3 blob store ready", "endpoint", host, "secure", secure, "prefix", s.prefix, "part_size", partSize)
	return s, nil
}

func s3Credentials(cfg S3Config) *credentials.Credentials {
	if cfg.AccessKey != "" || cfg.SecretKey != "" {
		return credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, "")
	}
	return credentials.NewChainCredentials([]credentials.Provider{
		&credentials.EnvAWS{},
		&credentials.EnvMinio{},
		&credentials.FileAWSCredentials{},
		&credentials.IAM{},
	})
}

// parseS3Endpoint accepts "host:port" or "http(s)://host:port".
func parseS3Endpoint(ep string, insecure bool) (host string, secure bool, err error) {
	if ep == "" {
		return "s3.amazonaws.com", !insecure, nil
	}
	if !strings.Contains(ep, "://") {
		return ep, !insecure, nil
	}
	u, err := url.Parse(ep)
	if err != nil {
		return "", false, fmt.Errorf("blobstore s3: endpoint %q: %w", ep, err)
	}
	if u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return "", false, fmt.Errorf("blobstore s3: endpoint %q: want host:port or scheme://host:port", ep)
	}
	switch u.Scheme {
	case "http":
		return u.Host, false, nil
	case "https":
		return u.Host, true, nil
	}
	return "", false, fmt.Errorf("blobstore s3: endpoint %q: scheme must be http or https", ep)
}

func normalizePrefix(p string) string {
	p = strings.Trim(p, "/")
	if p == "" {
		return ""
	}
	return p + "/"
}

func (s *S3) ensureBucket(ctx context.Context, region string) error {
	ok, err := s.client.BucketExists(ctx, s.bucket)
	if err != nil {
		return fmt.Errorf("blobstore s3: bucket %q: %w", s.bucket, err)
	}
	if ok {
		return nil
	}
	err = s.client.MakeBucket(ctx, s.bucket, minio.MakeBucketOptions{Region: region})
	if err != nil {
		switch minio.ToErrorResponse(err).Code {
		case minio.BucketAlreadyOwnedByYou, minio.BucketAlreadyExists:
			// Another node created it meanwhile; make sure we can see it.
			if ok, err2 := s.client.BucketExists(ctx, s.bucket); err2 == nil && ok {
				return nil
			}
		}
		return fmt.Errorf("blobstore s3: create bucket %q: %w", s.bucket, err)
	}
	s.log.Info("created bucket", "region", region)
	return nil
}

func (s *S3) Name() string { return "s3" }

// PartSize is the size of every multipart part but the last.
func (s *S3) PartSize() int64 { return s.partSize }

func (s *S3) object(key string) string { return s.prefix + key }

func (s *S3) getBuf(ctx context.Context) (*[]byte, error) { return s.bufs.get(ctx) }

// putBuf returns a buffer to the pool. Only call it once nothing can read
// the buffer any more: after a failed request net/http may still be
// reading the body in another goroutine, so such buffers are dropped
// (dropBuf) instead.
func (s *S3) putBuf(b *[]byte) { s.bufs.put(b) }

// dropBuf gives back a buffer that may still be read elsewhere; the pool
// reuses it only after a delay.
func (s *S3) dropBuf(b *[]byte) { s.bufs.drop(b) }

// tailPrefix is the key prefix of every tail object of upload id.
func tailPrefix(id string) string { return "blobs/" + id + ".tail." }

// tailKey names a tail by where its bytes sit in the blob and by their
// SHA-256. So a new tail never replaces different bytes that some state
// may still use, while an Append replayed with the same bytes from the same
// state writes the very same object: a completed small blob (which is its
// tail) and its replay cannot delete each other.
func tailKey(id string, offset int64, b []byte) string {
	sum := sha256.Sum256(b)
	return tailPrefix(id) + strconv.FormatInt(offset, 10) + "." + hex.EncodeToString(sum[:16])
}

func validUploadID(id string) bool {
	return id != "" && len(id) <= 200 && !strings.ContainsAny(id, "/\\.") &&
		!strings.ContainsFunc(id, func(r rune) bool { return r < 0x20 || r == 0x7f })
}

func (s *S3) decode(u Upload) (*s3State, error) {
	var st s3State
	if err := json.Unmarshal(u.State, &st); err != nil {
		return nil, ErrCorruptState
	}
	if st.V != s3StateVersion || !validUploadID(st.ID) || st.Object != "blobs/"+st.ID {
		return nil, ErrCorruptState
	}
	if (st.Tail == "") != (st.TailSize == 0) || st.TailSize < 0 || (st.Tail == "" && st.TailETag != "") ||
		(st.Tail != "" && !strings.HasPrefix(st.Tail, tailPrefix(st.ID))) {
		return nil, ErrCorruptState
	}
	if (st.UploadID == "") != (len(st.Parts) == 0) {
		return nil, ErrCorruptState
	}
	size := st.TailSize
	for i, p := range st.Parts {
		if p.N != i+1 || p.Size <= 0 || p.ETag == "" {
			return nil, ErrCorruptState
		}
		size += p.Size
	}
	if size != u.Size {
		return nil, ErrCorruptState
	}
	return &st, nil
}

func (st *s3State) encode() []byte {
	b, err := json.Marshal(st)
	if err != nil {
		panic(err) // plain struct: cannot fail
	}
	return b
}

func (st *s3State) clone() *s3State {
	c := *st
	c.Parts = slices.Clone(st.Parts)
	return &c
}

func (s *S3) StartUpload(ctx context.Context, id string) (Upload, error) {
	if !validUploadID(id) {
		return Upload{}, fmt.Errorf("blobstore s3: invalid upload id %q", id)
	}
	st := s3State{V: s3StateVersion, ID: id, Object: "blobs/" + id}
	return Upload{State: st.encode()}, nil
}

// Append streams the old tail followed by r, uploads every full part and
// writes the rest as a new tail object under a fresh key. Nothing u refers
// to is changed, so u stays valid whatever happens.
func (s *S3) Append(ctx context.Context, u Upload, r io.Reader) (Upload, error) {
	st, err := s.decode(u)
	if err != nil {
		return u, err
	}
	counted := &countingReader{r: r}
	var src io.Reader = counted
	if st.Tail != "" {
		tail, err := s.openTail(ctx, st)
		if err != nil {
			return u, err
		}
		defer tail.Close()
		src = io.MultiReader(tail, counted)
	}

	next := st.clone()
	next.Tail, next.TailSize, next.TailETag = "", 0, ""
	up := s.startPartUploader(ctx, next)
	var rest *[]byte // last, partial buffer: the new tail
	var restN int
	var readErr, stopErr error
	for {
		if up.ctx.Err() != nil {
			// ctx is done or the uploader failed: stop before src's end.
			stopErr = context.Cause(up.ctx)
			break
		}
		buf, err := s.getBuf(up.ctx)
		if err != nil {
			stopErr = context.Cause(up.ctx)
			break
		}
		n, err := fill(src, *buf)
		if err != nil {
			s.putBuf(buf)
			readErr = fmt.Errorf("blobstore s3: append: %w", err)
			break
		}
		if n == len(*buf) {
			if !up.send(buf) {
				s.putBuf(buf)
				stopErr = context.Cause(up.ctx)
				break
			}
			continue // at EOF the next fill returns 0 bytes
		}
		// n < len(*buf): src is at EOF; the rest is the new tail.
		rest, restN = buf, n
		break
	}
	upErr := up.finish()
	if upErr != nil {
		stopErr = nil // the same error
	}
	if err := errors.Join(readErr, upErr, stopErr); err != nil {
		if rest != nil {
			s.putBuf(rest)
		}
		s.abandon(ctx, st, next)
		return u, err
	}
	if counted.n == 0 && len(next.Parts) == len(st.Parts) {
		// Nothing new: keep the old tail rather than copying it.
		if rest != nil {
			s.putBuf(rest)
		}
		return u, nil
	}
	if restN > 0 {
		tail := (*rest)[:restN]
		next.Tail = tailKey(next.ID, u.Size+counted.n-int64(restN), tail)
		next.TailSize = int64(restN)
		info, err := s.core.PutObject(ctx, s.bucket, s.object(next.Tail), bytes.NewReader(tail), int64(restN), "", "", minio.PutObjectOptions{DisableContentSha256: true})
		if err != nil {
			s.dropBuf(rest)
			s.abandon(ctx, st, next)
			return u, fmt.Errorf("blobstore s3: write tail: %w", err)
		}
		next.TailETag = info.ETag
	}
	if rest != nil {
		s.putBuf(rest)
	}
	s.log.DebugContext(ctx, "append", "upload", st.ID, "size", u.Size+counted.n, "parts", len(next.Parts), "tail", next.TailSize)
	return Upload{Size: u.Size + counted.n, State: next.encode()}, nil
}

// abandon cleans up after a failed Append: a multipart upload it created
// (prev had none) is aborted. Parts it added to prev's multipart upload are
// harmless: a later Append overwrites those part numbers and Complete lists
// only the parts its state knows. Best effort; Complete and Abort sweep
// whatever is left.
func (s *S3) abandon(ctx context.Context, prev, next *s3State) {
	if prev.UploadID != "" || next.UploadID == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := s.core.AbortMultipartUpload(ctx, s.bucket, s.object(next.Object), next.UploadID); err != nil {
		s.log.WarnContext(ctx, "abort multipart upload of failed append", "upload", next.ID, "err", err)
	}
}

// openTail streams the tail object of st and fails unless it yields
// exactly st.TailSize bytes.
func (s *S3) openTail(ctx context.Context, st *s3State) (io.ReadCloser, error) {
	body, info, _, err := s.core.GetObject(ctx, s.bucket, s.object(st.Tail), minio.GetObjectOptions{})
	if err != nil {
		if minio.ToErrorResponse(err).Code == minio.NoSuchKey {
			return nil, fmt.Errorf("blobstore s3: tail of upload %s is gone: %w", st.ID, ErrNotFound)
		}
		return nil, fmt.Errorf("blobstore s3: read tail: %w", err)
	}
	if info.Size != st.TailSize {
		body.Close()
		return nil, fmt.Errorf("blobstore s3: tail of upload %s has %d bytes, state says %d: %w", st.ID, info.Size, st.TailSize, ErrCorruptState)
	}
	return &exactReader{ReadCloser: body, left: st.TailSize}, nil
}

// partUploader uploads full parts in its own goroutine so that the next
// part is read while the previous one is sent. The channel is unbuffered:
// at most one buffer is being uploaded while the caller fills another.
type partUploader struct {
	s      *S3
	st     *s3State // written only by the goroutine until done is closed
	ctx    context.Context
	cancel context.CancelCauseFunc
	jobs   chan *[]byte
	done   chan struct{}
	err    error
}

func (s *S3) startPartUploader(ctx context.Context, st *s3State) *partUploader {
	ctx, cancel := context.WithCancelCause(ctx)
	p := &partUploader{s: s, st: st, ctx: ctx, cancel: cancel, jobs: make(chan *[]byte), done: make(chan struct{})}
	go p.run()
	return p
}

// send hands a full buffer over; false when the uploader has failed (the
// buffer is then dropped).
func (p *partUploader) send(buf *[]byte) bool {
	select {
	case p.jobs <- buf:
		return true
	case <-p.ctx.Done():
		return false
	}
}

// finish waits for the parts sent so far and returns the first error.
func (p *partUploader) finish() error {
	close(p.jobs)
	<-p.done
	p.cancel(nil)
	return p.err
}

func (p *partUploader) run() {
	defer close(p.done)
	for buf := range p.jobs {
		if p.err != nil {
			p.s.putBuf(buf) // never sent
			continue
		}
		if err := p.upload(buf); err != nil {
			p.s.dropBuf(buf)
			p.err = err
			p.cancel(err)
			continue
		}
		p.s.putBuf(buf)
	}
}

func (p *partUploader) upload(buf *[]byte) error {
	s, st := p.s, p.st
	n := len(st.Parts) + 1
	if n > maxS3Parts {
		return fmt.Errorf("blobstore s3: upload %s exceeds %d parts of %d bytes", st.ID, maxS3Parts, s.partSize)
	}
	if st.UploadID == "" {
		id, err := s.core.NewMultipartUpload(p.ctx, s.bucket, s.object(st.Object), minio.PutObjectOptions{})
		if err != nil {
			return fmt.Errorf("blobstore s3: start multipart upload: %w", err)
		}
		st.UploadID = id
	}
	part, err := s.core.PutObjectPart(p.ctx, s.bucket, s.object(st.Object), st.UploadID, n,
		bytes.NewReader(*buf), int64(len(*buf)), minio.PutObjectPartOptions{DisableContentSha256: true})
	if err != nil {
		return fmt.Errorf("blobstore s3: upload part %d: %w", n, err)
	}
	st.Parts = append(st.Parts, s3Part{N: n, ETag: part.ETag, Size: int64(len(*buf))})
	return nil
}

func (s *S3) Committed(ctx context.Context, prev, next Upload) error {
	p, err := s.decode(prev)
	if err != nil {
		return err
	}
	n, err := s.decode(next)
	if err != nil {
		return err
	}
	if p.ID != n.ID {
		return fmt.Errorf("blobstore s3: committed states of different uploads: %w", ErrCorruptState)
	}
	var errs []error
	if p.Tail != "" && p.Tail != n.Tail {
		if err := s.client.RemoveObject(ctx, s.bucket, s.object(p.Tail), minio.RemoveObjectOptions{}); err != nil {
			errs = append(errs, fmt.Errorf("blobstore s3: delete old tail: %w", err))
		}
	}
	if p.UploadID != "" && p.UploadID != n.UploadID {
		if err := s.abortMultipart(ctx, p.Object, p.UploadID); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (s *S3) abortMultipart(ctx context.Context, key, uploadID string) error {
	err := s.core.AbortMultipartUpload(ctx, s.bucket, s.object(key), uploadID)
	if err != nil && minio.ToErrorResponse(err).Code != minio.NoSuchUpload {
		return fmt.Errorf("blobstore s3: abort multipart upload: %w", err)
	}
	return nil
}

// Complete finishes the upload. It never replaces an object that holds
// other bytes: when the final key already exists it must be this state's
// own completion (a retry: same size and, where the store's ETags are MD5s
// as on MinIO and unencrypted AWS S3, the multipart ETag of exactly these
// parts), or Complete fails with ErrCorruptState. That happens when a
// sibling state (another Append from the same state) completed first.
func (s *S3) Complete(ctx context.Context, u Upload) (string, error) {
	st, err := s.decode(u)
	if err != nil {
		return "", err
	}
	if st.UploadID == "" {
		if st.Tail != "" {
			// The blob is the tail object itself.
			size, err := s.Stat(ctx, st.Tail)
			if err != nil {
				return "", err
			}
			if size != st.TailSize {
				return "", fmt.Errorf("blobstore s3: tail of upload %s has %d bytes, state says %d: %w", st.ID, size, st.TailSize, ErrCorruptState)
			}
			if err := s.sweep(ctx, st, st.Tail); err != nil {
				return "", err
			}
			return st.Tail, nil
		}
		return s.completeEmpty(ctx, st)
	}

	// A retry after the multipart upload was completed finds the object.
	if done, err := s.completedAs(ctx, st, u.Size, st.TailETag); err != nil {
		return "", err
	} else if done {
		return st.Object, s.sweep(ctx, st, st.Object)
	}

	parts := make([]minio.CompletePart, 0, len(st.Parts)+1)
	for _, p := range st.Parts {
		parts = append(parts, minio.CompletePart{PartNumber: p.N, ETag: p.ETag})
	}
	lastETag := ""
	if st.Tail != "" {
		p, err := s.uploadTailPart(ctx, st)
		if err != nil {
			return "", err
		}
		parts = append(parts, p)
		lastETag = p.ETag
	}
	err = s.ifNoneMatch(func(opts minio.PutObjectOptions) error {
		_, err := s.core.CompleteMultipartUpload(ctx, s.bucket, s.object(st.Object), st.UploadID, parts, opts)
		return err
	})
	if err != nil {
		switch minio.ToErrorResponse(err).Code {
		case minio.NoSuchUpload, minio.PreconditionFailed, "ConditionalRequestConflict":
			// Completed meanwhile: by a retry of this state, or by a sibling.
			if done, err2 := s.completedAs(ctx, st, u.Size, lastETag); err2 != nil {
				return "", err2
			} else if done {
				return st.Object, s.sweep(ctx, st, st.Object)
			}
			return "", fmt.Errorf("blobstore s3: multipart upload of %s is gone: %w", st.ID, ErrNotFound)
		}
		return "", fmt.Errorf("blobstore s3: complete multipart upload: %w", err)
	}
	if size, err := s.Stat(ctx, st.Object); err != nil {
		return "", err
	} else if size != u.Size {
		return "", fmt.Errorf("blobstore s3: completed %s has %d bytes, want %d: %w", st.Object, size, u.Size, ErrCorruptState)
	}
	if err := s.sweep(ctx, st, st.Object); err != nil {
		return "", err
	}
	return st.Object, nil
}

// completeEmpty writes the empty blob, unless it exists already.
func (s *S3) completeEmpty(ctx context.Context, st *s3State) (string, error) {
	if done, err := s.completedAs(ctx, st, 0, ""); err != nil {
		return "", err
	} else if !done {
		err := s.ifNoneMatch(func(opts minio.PutObjectOptions) error {
			_, err := s.core.PutObject(ctx, s.bucket, s.object(st.Object), bytes.NewReader(nil), 0, "", "", opts)
			return err
		})
		switch minio.ToErrorResponse(err).Code {
		case "":
		case minio.PreconditionFailed, "ConditionalRequestConflict":
			if done, err := s.completedAs(ctx, st, 0, ""); err != nil {
				return "", err
			} else if !done {
				return "", fmt.Errorf("blobstore s3: %s appeared meanwhile: %w", st.Object, ErrCorruptState)
			}
		default:
			return "", fmt.Errorf("blobstore s3: write empty blob: %w", err)
		}
	}
	if err := s.sweep(ctx, st, st.Object); err != nil {
		return "", err
	}
	return st.Object, nil
}

// ifNoneMatch runs write with "If-None-Match: *" (create only), or without
// it when the store does not implement conditional writes.
func (s *S3) ifNoneMatch(write func(minio.PutObjectOptions) error) error {
	opts := minio.PutObjectOptions{DisableContentSha256: true}
	opts.SetMatchETagExcept("*")
	err := write(opts)
	if err != nil && minio.ToErrorResponse(err).Code == minio.NotImplemented {
		s.log.Debug("conditional writes not supported; writing unconditionally")
		return write(minio.PutObjectOptions{DisableContentSha256: true})
	}
	return err
}

// completedAs reports whether st.Object exists as the completion of st:
// size bytes and, when every part ETag is an MD5 (lastETag is the final
// part's, "" when the parts end on a boundary), the multipart ETag of
// exactly those parts. An object with other contents is an error.
func (s *S3) completedAs(ctx context.Context, st *s3State, size int64, lastETag string) (bool, error) {
	info, err := s.client.StatObject(ctx, s.bucket, s.object(st.Object), minio.StatObjectOptions{})
	if err != nil {
		if minio.ToErrorResponse(err).Code == minio.NoSuchKey {
			return false, nil
		}
		return false, fmt.Errorf("blobstore s3: stat %s: %w", st.Object, err)
	}
	if info.Size == size {
		if size == 0 {
			return true, nil
		}
		want, ok := multipartETag(st.Parts, lastETag, st.Tail != "")
		if !ok || strings.EqualFold(strings.Trim(info.ETag, `"`), want) {
			return true, nil
		}
	}
	return false, fmt.Errorf("blobstore s3: %s already holds other bytes than upload state %s (%d bytes): %w", st.Object, st.ID, size, ErrCorruptState)
}

// multipartETag computes the ETag S3 gives a completed multipart object,
// hex(md5(concatenated binary part MD5s)) + "-" + part count. ok is false
// when some part ETag is not an MD5 (encrypted buckets) or unknown.
func multipartETag(parts []s3Part, last string, hasLast bool) (string, bool) {
	etags := make([]string, 0, len(parts)+1)
	for _, p := range parts {
		etags = append(etags, p.ETag)
	}
	if hasLast {
		etags = append(etags, last)
	}
	h := md5.New()
	for _, e := range etags {
		b, err := hex.DecodeString(strings.Trim(e, `"`))
		if err != nil || len(b) != md5.Size {
			return "", false
		}
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil)) + "-" + strconv.Itoa(len(etags)), true
}

// uploadTailPart sends the tail as the last part (any size is fine there).
func (s *S3) uploadTailPart(ctx context.Context, st *s3State) (minio.CompletePart, error) {
	tail, err := s.openTail(ctx, st)
	if err != nil {
		return minio.CompletePart{}, err
	}
	defer tail.Close()
	var buf *[]byte
	var data []byte
	if st.TailSize <= s.partSize {
		if buf, err = s.getBuf(ctx); err != nil {
			return minio.CompletePart{}, err
		}
		data = (*buf)[:st.TailSize]
	} else {
		// Written by a node with a larger part size.
		data = make([]byte, st.TailSize)
	}
	if _, err := io.ReadFull(tail, data); err != nil {
		if buf != nil {
			s.putBuf(buf)
		}
		return minio.CompletePart{}, fmt.Errorf("blobstore s3: read tail: %w", err)
	}
	n := len(st.Parts) + 1
	part, err := s.core.PutObjectPart(ctx, s.bucket, s.object(st.Object), st.UploadID, n,
		bytes.NewReader(data), st.TailSize, minio.PutObjectPartOptions{DisableContentSha256: true})
	if err != nil {
		if buf != nil {
			s.dropBuf(buf)
		}
		return minio.CompletePart{}, fmt.Errorf("blobstore s3: upload last part: %w", err)
	}
	if buf != nil {
		s.putBuf(buf)
	}
	return minio.CompletePart{PartNumber: n, ETag: part.ETag}, nil
}

// sweep deletes everything upload st staged except keep: every tail object
// (including those of appends whose state was never committed) and every
// unfinished multipart upload of its object.
func (s *S3) sweep(ctx context.Context, st *s3State, keep string) error {
	var errs []error
	tails, err := s.listObjects(ctx, s.object(tailPrefix(st.ID)))
	if err != nil {
		errs = append(errs, err)
	}
	for _, obj := range tails {
		if obj == s.object(keep) {
			continue
		}
		if err := s.client.RemoveObject(ctx, s.bucket, obj, minio.RemoveObjectOptions{}); err != nil {
			errs = append(errs, fmt.Errorf("blobstore s3: delete tail: %w", err))
		}
	}
	ids, err := s.multipartUploads(ctx, s.object(st.Object))
	if err != nil {
		errs = append(errs, err)
	}
	for _, mu := range ids {
		if mu.Key != s.object(st.Object) {
			continue
		}
		if err := s.abortMultipart(ctx, st.Object, mu.UploadID); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// listObjects returns the names of all objects under prefix.
func (s *S3) listObjects(ctx context.Context, prefix string) ([]string, error) {
	ctx, cancel := context.WithCancel(ctx) // stops the lister if we return early
	defer cancel()
	var names []string
	for obj := range s.client.ListObjectsIter(ctx, s.bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if obj.Err != nil {
			return names, fmt.Errorf("blobstore s3: list %s: %w", prefix, obj.Err)
		}
		names = append(names, obj.Key)
	}
	return names, nil
}

// multipartUploads lists unfinished multipart uploads under prefix.
func (s *S3) multipartUploads(ctx context.Context, prefix string) ([]minio.ObjectMultipartInfo, error) {
	var out []minio.ObjectMultipartInfo
	keyMarker, idMarker := "", ""
	for {
		res, err := s.core.ListMultipartUploads(ctx, s.bucket, prefix, keyMarker, idMarker, "", 1000)
		if err != nil {
			return out, fmt.Errorf("blobstore s3: list multipart uploads: %w", err)
		}
		out = append(out, res.Uploads...)
		if !res.IsTruncated || (res.NextKeyMarker == keyMarker && res.NextUploadIDMarker == idMarker) {
			return out, nil
		}
		keyMarker, idMarker = res.NextKeyMarker, res.NextUploadIDMarker
	}
}

// Abort removes everything the upload staged: its multipart uploads, every
// tail (whichever state wrote it) and an unrecorded completion.
func (s *S3) Abort(ctx context.Context, u Upload) error {
	st, err := s.decode(u)
	if err != nil {
		return err
	}
	var errs []error
	if st.UploadID != "" {
		if err := s.abortMultipart(ctx, st.Object, st.UploadID); err != nil {
			errs = append(errs, err)
		}
	}
	if err := s.sweep(ctx, st, ""); err != nil {
		errs = append(errs, err)
	}
	// A completion nobody recorded (a recorded one ends the session, so it
	// is never aborted).
	if err := s.Delete(ctx, st.Object); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (s *S3) Open(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if key == "" {
		return nil, ErrNotFound
	}
	if offset < 0 {
		return nil, fmt.Errorf("blobstore s3: open %s: negative offset %d", key, offset)
	}
	if length == 0 {
		if _, err := s.Stat(ctx, key); err != nil {
			return nil, err
		}
		return io.NopCloser(bytes.NewReader(nil)), nil
	}
	if s.directMin > 0 && length >= s.directMin {
		if body, err := s.openDirect(ctx, key, offset, length); err == nil {
			return body, nil
		} else if ctx.Err() != nil {
			return nil, fmt.Errorf("blobstore s3: get %s: %w", key, ctx.Err())
		}
		// Anything else: the regular path below tells what went wrong.
	}
	var opts minio.GetObjectOptions
	switch {
	case length > 0:
		if err := opts.SetRange(offset, offset+length-1); err != nil {
			return nil, fmt.Errorf("blobstore s3: %w", err)
		}
	case offset > 0:
		if err := opts.SetRange(offset, 0); err != nil {
			return nil, fmt.Errorf("blobstore s3: %w", err)
		}
	}
	body, _, _, err := s.core.GetObject(ctx, s.bucket, s.object(key), opts)
	if err != nil {
		switch minio.ToErrorResponse(err).Code {
		case minio.NoSuchKey:
			return nil, ErrNotFound
		case minio.InvalidRange:
			// Reading at or past the end yields nothing, as a file does.
			size, err2 := s.Stat(ctx, key)
			if err2 != nil {
				return nil, err2
			}
			if offset >= size {
				return io.NopCloser(bytes.NewReader(nil)), nil
			}
		}
		return nil, fmt.Errorf("blobstore s3: get %s: %w", key, err)
	}
	return body, nil
}

// openDirect reads through a presigned URL on a connection of its own, so
// that the bytes can be spliced to the client (see direct.go).
func (s *S3) openDirect(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	u, err := s.client.PresignedGetObject(ctx, s.bucket, s.object(key), time.Minute, nil)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "http" {
		return nil, errDirect
	}
	return getDirect(ctx, u.Redacted(), u.Host, u.RequestURI(), offset, length)
}

func (s *S3) Stat(ctx context.Context, key string) (int64, error) {
	if key == "" {
		return 0, ErrNotFound
	}
	info, err := s.client.StatObject(ctx, s.bucket, s.object(key), minio.StatObjectOptions{})
	if err != nil {
		if minio.ToErrorResponse(err).Code == minio.NoSuchKey {
			return 0, ErrNotFound
		}
		return 0, fmt.Errorf("blobstore s3: stat %s: %w", key, err)
	}
	return info.Size, nil
}

func (s *S3) Delete(ctx context.Context, key string) error {
	if key == "" {
		return nil
	}
	if err := s.client.RemoveObject(ctx, s.bucket, s.object(key), minio.RemoveObjectOptions{}); err != nil {
		if minio.ToErrorResponse(err).Code == minio.NoSuchKey {
			return nil
		}
		return fmt.Errorf("blobstore s3: delete %s: %w", key, err)
	}
	return nil
}

func (s *S3) Presign(ctx context.Context, key string, ttl time.Duration) (string, error) {
	u, err := s.signer.PresignedGetObject(ctx, s.bucket, s.object(key), ttl, nil)
	if err != nil {
		return "", fmt.Errorf("blobstore s3: presign %s: %w", key, err)
	}
	return u.String(), nil
}

// List returns every object key under the prefix and, as
// "<key>?uploadId=<id>", every unfinished multipart upload the endpoint
// lists. It walks the whole prefix: meant for tests and diagnostics.
// (MinIO lists bucket-wide unfinished uploads only from memory, i.e. those
// started since it last restarted.)
func (s *S3) List(ctx context.Context) ([]string, error) {
	names, err := s.listObjects(ctx, s.prefix)
	if err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(names))
	for _, n := range names {
		keys = append(keys, strings.TrimPrefix(n, s.prefix))
	}
	ups, err := s.multipartUploads(ctx, "")
	if err != nil {
		return nil, err
	}
	for _, mu := range ups {
		if k, ok := strings.CutPrefix(mu.Key, s.prefix); ok {
			keys = append(keys, k+"?uploadId="+mu.UploadID)
		}
	}
	slices.Sort(keys)
	return keys, nil
}

// fill reads until buf is full or r ends (n < len(buf), nil error). Only
// io.EOF ends r; any other error (io.ErrUnexpectedEOF from a client that
// went away, say) is returned, never taken for the end.
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// countingReader counts the bytes read from the caller's reader.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// exactReader fails with io.ErrUnexpectedEOF unless exactly left bytes
// come before EOF, and never yields more.
type exactReader struct {
	io.ReadCloser
	left int64
}

func (e *exactReader) Read(p []byte) (int, error) {
	if e.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > e.left {
		p = p[:e.left]
	}
	n, err := e.ReadCloser.Read(p)
	e.left -= int64(n)
	if errors.Is(err, io.EOF) {
		if e.left > 0 {
			return n, fmt.Errorf("blobstore s3: tail ended %d bytes early: %w", e.left, ErrCorruptState)
		}
		err = nil
	}
	if e.left == 0 && err == nil {
		return n, io.EOF
	}
	return n, err
}
