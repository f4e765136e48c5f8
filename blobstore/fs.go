package blobstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// FS stores blobs as files under a root folder. An upload writes straight
// into the file that becomes the blob, so completing it moves nothing.
// Several nodes may share one FS root only through a shared filesystem.
type FS struct {
	root string
}

type fsState struct {
	Key string `json:"key"`
}

// NewFS returns a filesystem driver rooted at dir, creating it.
func NewFS(dir string) (*FS, error) {
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o750); err != nil {
		return nil, fmt.Errorf("blobstore fs: %w", err)
	}
	return &FS{root: dir}, nil
}

func (f *FS) Name() string { return "fs" }

func (f *FS) path(key string) (string, error) {
	clean := filepath.ToSlash(filepath.Clean(key))
	if key == "" || clean != key || strings.HasPrefix(clean, "../") || strings.HasPrefix(clean, "/") || clean == ".." {
		return "", fmt.Errorf("blobstore fs: invalid key %q: %w", key, ErrNotFound)
	}
	return filepath.Join(f.root, filepath.FromSlash(clean)), nil
}

func (f *FS) state(u Upload) (string, string, error) {
	var st fsState
	if err := json.Unmarshal(u.State, &st); err != nil || st.Key == "" {
		return "", "", ErrCorruptState
	}
	p, err := f.path(st.Key)
	if err != nil {
		return "", "", ErrCorruptState
	}
	return st.Key, p, nil
}

func (f *FS) StartUpload(ctx context.Context, id string) (Upload, error) {
	if id == "" || strings.ContainsAny(id, `/\.`) {
		return Upload{}, fmt.Errorf("blobstore fs: invalid upload id %q", id)
	}
	shard := id
	if len(shard) > 2 {
		shard = shard[:2]
	}
	key := "data/" + shard + "/" + id
	p, _ := f.path(key)
	if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
		return Upload{}, fmt.Errorf("blobstore fs: %w", err)
	}
	file, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o640)
	if err != nil {
		return Upload{}, fmt.Errorf("blobstore fs: %w", err)
	}
	if err := file.Close(); err != nil {
		return Upload{}, fmt.Errorf("blobstore fs: %w", err)
	}
	st, _ := json.Marshal(fsState{Key: key})
	return Upload{State: st}, nil
}

func (f *FS) Append(ctx context.Context, u Upload, r io.Reader) (Upload, error) {
	_, p, err := f.state(u)
	if err != nil {
		return u, err
	}
	file, err := os.OpenFile(p, os.O_WRONLY, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return u, ErrNotFound
	}
	if err != nil {
		return u, fmt.Errorf("blobstore fs: %w", err)
	}
	defer file.Close()
	// Bytes past u.Size belong to an append that was never committed.
	if err := file.Truncate(u.Size); err != nil {
		return u, fmt.Errorf("blobstore fs: %w", err)
	}
	if _, err := file.Seek(u.Size, io.SeekStart); err != nil {
		return u, fmt.Errorf("blobstore fs: %w", err)
	}
	n, err := io.Copy(file, ctxReader{ctx, r})
	if err != nil {
		return u, fmt.Errorf("blobstore fs: append: %w", err)
	}
	if err := file.Sync(); err != nil {
		return u, fmt.Errorf("blobstore fs: %w", err)
	}
	return Upload{Size: u.Size + n, State: u.State}, nil
}

func (f *FS) Committed(ctx context.Context, prev, next Upload) error { return nil }

func (f *FS) Complete(ctx context.Context, u Upload) (string, error) {
	key, p, err := f.state(u)
	if err != nil {
		return "", err
	}
	if err := os.Truncate(p, u.Size); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", ErrNotFound
		}
		return "", fmt.Errorf("blobstore fs: %w", err)
	}
	return key, nil
}

func (f *FS) Abort(ctx context.Context, u Upload) error {
	_, p, err := f.state(u)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("blobstore fs: %w", err)
	}
	return nil
}

func (f *FS) Open(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	p, err := f.path(key)
	if err != nil {
		return nil, err
	}
	file, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("blobstore fs: %w", err)
	}
	if offset > 0 {
		if _, err := file.Seek(offset, io.SeekStart); err != nil {
			file.Close()
			return nil, fmt.Errorf("blobstore fs: %w", err)
		}
	}
	if length < 0 {
		return file, nil
	}
	return struct {
		io.Reader
		io.Closer
	}{io.LimitReader(file, length), file}, nil
}

func (f *FS) Stat(ctx context.Context, key string) (int64, error) {
	p, err := f.path(key)
	if err != nil {
		return 0, err
	}
	fi, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, ErrNotFound
	}
	if err != nil {
		return 0, fmt.Errorf("blobstore fs: %w", err)
	}
	return fi.Size(), nil
}

func (f *FS) Delete(ctx context.Context, key string) error {
	p, err := f.path(key)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("blobstore fs: %w", err)
	}
	return nil
}

func (f *FS) Presign(ctx context.Context, key string, ttl time.Duration) (string, error) {
	return "", ErrNotSupported
}

// ctxReader stops a copy once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

var _ Lister = (*FS)(nil)

// List returns the key of every file under the root, sorted.
func (f *FS) List(ctx context.Context) ([]string, error) {
	var keys []string
	err := filepath.WalkDir(f.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(f.root, p)
		if err != nil {
			return err
		}
		keys = append(keys, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("blobstore fs: list: %w", err)
	}
	slices.Sort(keys)
	return keys, nil
}
