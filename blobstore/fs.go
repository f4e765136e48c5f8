package blobstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	pathpkg "path"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// FS stores blobs as files under a root folder. An upload appends straight
// into one file; Complete renames it to its final key, so completing moves
// no bytes. Several nodes may share one FS root only through a shared
// filesystem (with working flock).
//
// Files of upload <id> in data/<shard>/:
//
//	<id>             the file an upload starts with
//	<id>.<random>    a copy made when two Appends started from one state
//	<name>.blob      the completed blob, renamed from <name>
//
// An Append writes in place only if it holds the file's lock and the file
// ends exactly where its state does; otherwise (a replayed or concurrent
// Append from the same state, or a later one from an older state) it copies
// the state's bytes to a new file first, so it never changes bytes another
// state may rely on. Completing renames the file away under the lock, so an
// Append still holding the old state cannot grow a completed blob.
type FS struct {
	root string
}

type fsState struct {
	Key string `json:"key"`
}

const fsBlobSuffix = ".blob"

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

// state returns the upload's key, its path and its upload id.
func (f *FS) state(u Upload) (key, p, id string, err error) {
	var st fsState
	if err := json.Unmarshal(u.State, &st); err != nil || st.Key == "" || u.Size < 0 {
		return "", "", "", ErrCorruptState
	}
	dir, name := pathpkg.Split(st.Key)
	id, _, _ = strings.Cut(name, ".")
	if !strings.HasPrefix(dir, "data/") || id == "" || strings.HasSuffix(name, fsBlobSuffix) {
		return "", "", "", ErrCorruptState
	}
	p, err = f.path(st.Key)
	if err != nil {
		return "", "", "", ErrCorruptState
	}
	return st.Key, p, id, nil
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

// lockedFile is an upload file opened and, if possible, locked.
type lockedFile struct {
	*os.File
	locked bool  // this call holds the lock (until Close)
	same   bool  // the path still names this file (checked under the lock)
	size   int64 // its size, under the lock
}

// owns reports whether the file may be changed in place for a state of
// size bytes.
func (l *lockedFile) owns(size int64) bool { return l.locked && l.same && l.size == size }

// openLocked opens the upload file at p and tries to lock it.
func openLocked(p string, size int64) (*lockedFile, error) {
	file, err := os.OpenFile(p, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("blobstore fs: %w", err)
	}
	l := &lockedFile{File: file}
	if l.locked, err = tryLock(file); err != nil {
		file.Close()
		return nil, fmt.Errorf("blobstore fs: lock: %w", err)
	}
	fi, err := file.Stat()
	if err != nil {
		file.Close()
		return nil, fmt.Errorf("blobstore fs: %w", err)
	}
	l.size = fi.Size()
	if now, err := os.Stat(p); err == nil {
		l.same = os.SameFile(fi, now)
	}
	if l.size < size {
		file.Close()
		return nil, fmt.Errorf("blobstore fs: upload file has %d bytes, state says %d: %w", l.size, size, ErrCorruptState)
	}
	return l, nil
}

func (f *FS) Append(ctx context.Context, u Upload, r io.Reader) (Upload, error) {
	key, p, id, err := f.state(u)
	if err != nil {
		return u, err
	}
	file, err := openLocked(p, u.Size)
	if err != nil {
		return u, err
	}
	defer file.Close() // also releases the lock
	if !file.owns(u.Size) {
		return f.appendCopy(ctx, u, file.File, filepath.Dir(p), pathpkg.Dir(key), id, r)
	}
	if _, err := file.Seek(u.Size, io.SeekStart); err != nil {
		return u, fmt.Errorf("blobstore fs: %w", err)
	}
	n, err := io.Copy(file, ctxReader{ctx, r})
	if err == nil {
		err = file.Sync()
	}
	if err != nil {
		// Our own partial bytes: nobody else could have used them.
		if terr := file.Truncate(u.Size); terr != nil {
			err = errors.Join(err, terr)
		}
		return u, fmt.Errorf("blobstore fs: append: %w", err)
	}
	return Upload{Size: u.Size + n, State: u.State}, nil
}

// appendCopy writes the first u.Size bytes of src and then r to a new file
// of the same upload, and returns a state naming it.
func (f *FS) appendCopy(ctx context.Context, u Upload, src *os.File, dir, keyDir, id string, r io.Reader) (Upload, error) {
	name := id + "." + randomName()
	p := filepath.Join(dir, name)
	dst, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o640)
	if err != nil {
		return u, fmt.Errorf("blobstore fs: %w", err)
	}
	var n int64
	_, err = src.Seek(0, io.SeekStart)
	if err == nil {
		// A LimitedReader over a file lets the kernel copy (copy_file_range).
		var c int64
		c, err = io.Copy(dst, &io.LimitedReader{R: src, N: u.Size})
		if err == nil && c != u.Size {
			err = io.ErrUnexpectedEOF
		}
	}
	if err == nil {
		n, err = io.Copy(dst, ctxReader{ctx, r})
	}
	if err == nil {
		err = dst.Sync()
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(p)
		return u, fmt.Errorf("blobstore fs: append: %w", err)
	}
	st, _ := json.Marshal(fsState{Key: keyDir + "/" + name})
	return Upload{Size: u.Size + n, State: st}, nil
}

func randomName() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b) // never fails
	return hex.EncodeToString(b)
}

func (f *FS) Committed(ctx context.Context, prev, next Upload) error {
	pk, pp, _, err := f.state(prev)
	if err != nil {
		return err
	}
	nk, _, _, err := f.state(next)
	if err != nil {
		return err
	}
	if pk != nk {
		// next is a copy: prev's file is now only a superseded state's.
		if err := os.Remove(pp); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("blobstore fs: %w", err)
		}
	}
	return nil
}

// Complete renames the upload file to <key>.blob under its lock, cutting
// off bytes that Appends from u wrote but whose states were not the one
// completed. A retry finds the renamed file.
func (f *FS) Complete(ctx context.Context, u Upload) (string, error) {
	key, p, id, err := f.state(u)
	if err != nil {
		return "", err
	}
	final, finalPath := key+fsBlobSuffix, p+fsBlobSuffix
	if done, err := completedFile(finalPath, u.Size); done || err != nil {
		return final, err
	}
	file, err := openLocked(p, u.Size)
	if err == nil && !file.same {
		file.Close()
		err = ErrNotFound
	}
	if errors.Is(err, ErrNotFound) {
		// Renamed meanwhile by a concurrent Complete of the same state?
		if done, err := completedFile(finalPath, u.Size); done || err != nil {
			return final, err
		}
		return "", err
	}
	if err != nil {
		return "", err
	}
	defer file.Close()
	if !file.locked {
		return "", fmt.Errorf("blobstore fs: upload %s is being appended to; retry", id)
	}
	if file.size > u.Size {
		// Bytes of Appends from u whose states were not committed in its
		// place (or u is stale): u is what completes.
		if err := file.Truncate(u.Size); err != nil {
			return "", fmt.Errorf("blobstore fs: %w", err)
		}
	}
	if err := file.Sync(); err != nil {
		return "", fmt.Errorf("blobstore fs: %w", err)
	}
	if err := os.Rename(p, finalPath); err != nil {
		return "", fmt.Errorf("blobstore fs: %w", err)
	}
	syncDir(filepath.Dir(p))
	if err := f.sweep(filepath.Dir(p), id, finalPath, false); err != nil {
		return "", err
	}
	return final, nil
}

// completedFile reports whether the completed file exists with size bytes;
// with another size it is an error.
func completedFile(p string, size int64) (bool, error) {
	fi, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("blobstore fs: %w", err)
	}
	if fi.Size() != size {
		return false, fmt.Errorf("blobstore fs: %s has %d bytes, state says %d: %w", p, fi.Size(), size, ErrCorruptState)
	}
	return true, nil
}

// sweep removes the files of upload id in dir except keep; completed
// files (which a caller may have recorded) only when all is set.
func (f *FS) sweep(dir, id, keep string, all bool) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("blobstore fs: %w", err)
	}
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if name != id && !strings.HasPrefix(name, id+".") {
			continue
		}
		p := filepath.Join(dir, name)
		if p == keep || (!all && strings.HasSuffix(name, fsBlobSuffix)) {
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("blobstore fs: %w", err))
		}
	}
	return errors.Join(errs...)
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

// Abort removes every file of the upload, a completion nobody recorded
// included.
func (f *FS) Abort(ctx context.Context, u Upload) error {
	_, p, id, err := f.state(u)
	if err != nil {
		return err
	}
	return f.sweep(filepath.Dir(p), id, "", true)
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
	fi, err := file.Stat()
	if err != nil {
		file.Close()
		return nil, fmt.Errorf("blobstore fs: %w", err)
	}
	if left := max(fi.Size()-offset, 0); length < 0 || length > left {
		length = left // reading past the end yields what is there
	}
	// Served with sendfile when copied to a TCP connection (see direct.go).
	return &directBody{src: file, n: length, closer: file, whole: offset == 0 && length == fi.Size()}, nil
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
