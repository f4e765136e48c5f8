package blobstore

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/flotilla/flotilla/meta"
)

var (
	// ErrNotFound: no object under that key.
	ErrNotFound = errors.New("blobstore: object not found")
	// ErrNotSupported: the driver cannot do this (presigning on a filesystem).
	ErrNotSupported = errors.New("blobstore: not supported by this driver")
	// ErrCorruptState: the upload state bytes do not belong to this driver.
	ErrCorruptState = errors.New("blobstore: upload state is not valid for this driver")
)

// Upload is where an upload stands: bytes written so far, and the driver's
// own state (object keys, multipart id, parts, staged tail) as opaque bytes
// that the caller stores in the state machine between requests. Any node's
// driver can continue an Upload another node started, provided they share
// the same backing store. It is meta.BlobUpload, so that api can declare the
// interface it needs without importing this package.
type Upload = meta.BlobUpload

// Driver stores blob bytes.
type Driver interface {
	// StartUpload prepares a new upload. id is unique per upload session.
	StartUpload(ctx context.Context, id string) (Upload, error)
	// Append writes everything r yields after the bytes already in u and
	// returns the new state. On error u is still valid: nothing written
	// after it is visible through it.
	Append(ctx context.Context, u Upload, r io.Reader) (Upload, error)
	// Committed is called once next (returned by Append) has been durably
	// recorded in place of prev; the driver may delete what prev had staged
	// and next no longer uses.
	Committed(ctx context.Context, prev, next Upload) error
	// Complete finishes an upload and returns the key under which the
	// u.Size bytes are now readable. Complete may be retried.
	Complete(ctx context.Context, u Upload) (key string, err error)
	// Abort discards everything an unfinished upload staged.
	Abort(ctx context.Context, u Upload) error

	// Open reads length bytes of key from offset (length < 0: to the end).
	Open(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error)
	// Stat returns the object's size.
	Stat(ctx context.Context, key string) (int64, error)
	// Delete removes key; deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// Presign returns a URL that serves key for ttl, or ErrNotSupported.
	Presign(ctx context.Context, key string, ttl time.Duration) (string, error)
	// Name identifies the driver in logs and status ("fs", "s3").
	Name() string
}

// Lister is implemented by drivers that can enumerate what they store:
// every object key and anything an unfinished upload staged (as the driver
// names it). It walks everything, so it is for tests and diagnostics, never
// for request paths (GC marks from the state machine, not from a listing).
type Lister interface {
	List(ctx context.Context) ([]string, error)
}
