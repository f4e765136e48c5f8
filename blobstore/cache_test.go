package blobstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/flotilla/flotilla/blobstore"
	"github.com/flotilla/flotilla/blobstore/drivertest"
)

// The driver suite through a cache over the filesystem driver, each of the
// suite's two "nodes" with a cache folder of its own.
func TestCacheDriverFS(t *testing.T) {
	dir := t.TempDir()
	drivertest.Run(t, func(t *testing.T) blobstore.Driver {
		fs, err := blobstore.NewFS(dir)
		if err != nil {
			t.Fatal(err)
		}
		c, err := blobstore.NewCache(fs, t.TempDir(), 64<<20, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	})
}

// cacheFixture is a cache over a filesystem store, with blobs put straight
// into the store.
type cacheFixture struct {
	t     *testing.T
	ctx   context.Context
	store *blobstore.FS
	inner blobstore.Driver // what the cache reads: store, or a gate around it
	dir   string
	max   int64
	c     *blobstore.Cache
}

func newCacheFixture(t *testing.T, max int64) *cacheFixture {
	t.Helper()
	store, err := blobstore.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f := &cacheFixture{t: t, ctx: t.Context(), store: store, inner: store, dir: t.TempDir(), max: max}
	f.reopen(max)
	return f
}

// reopen starts a new cache on the same folder, as a restart does.
func (f *cacheFixture) reopen(max int64) {
	f.t.Helper()
	if f.c != nil {
		if err := f.c.Close(); err != nil {
			f.t.Fatal(err)
		}
	}
	c, err := blobstore.NewCache(f.inner, f.dir, max, testLogger(f.t))
	if err != nil {
		f.t.Fatal(err)
	}
	f.c = c
	f.t.Cleanup(func() { c.Close() })
}

// gate puts a gatedStore letting allow bytes of each body through between
// the cache and the store, and restarts the cache on it.
func (f *cacheFixture) gate(allow int64) *gatedStore {
	f.t.Helper()
	g := &gatedStore{Driver: f.store, allow: allow, release: make(chan struct{})}
	f.inner = g
	f.reopen(f.max)
	return g
}

// open opens n bytes of key at off through the cache.
func (f *cacheFixture) open(key string, off, n int64) io.ReadCloser {
	f.t.Helper()
	rc, err := f.c.Open(f.ctx, key, off, n)
	if err != nil {
		f.t.Fatalf("Open(%q, %d, %d): %v", key, off, n, err)
	}
	return rc
}

func (f *cacheFixture) put(n int, seed uint64) (string, []byte) {
	f.t.Helper()
	data := make([]byte, n)
	r := mrand.New(mrand.NewPCG(seed, seed))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	u, err := f.store.StartUpload(f.ctx, newUploadID())
	if err != nil {
		f.t.Fatal(err)
	}
	if u, err = f.store.Append(f.ctx, u, bytes.NewReader(data)); err != nil {
		f.t.Fatal(err)
	}
	key, err := f.store.Complete(f.ctx, u)
	if err != nil {
		f.t.Fatal(err)
	}
	return key, data
}

// read reads n bytes at off through the cache, to a socket-less buffer, and
// waits for a fill to land.
func (f *cacheFixture) read(key string, off, n int64) []byte {
	f.t.Helper()
	rc, err := f.c.Open(f.ctx, key, off, n)
	if err != nil {
		f.t.Fatalf("Open(%q, %d, %d): %v", key, off, n, err)
	}
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, rc); err != nil {
		f.t.Fatalf("read %q: %v", key, err)
	}
	if err := rc.Close(); err != nil {
		f.t.Fatalf("close %q: %v", key, err)
	}
	f.c.Wait()
	return buf.Bytes()
}

// entries counts the entry files in the cache folder.
func (f *cacheFixture) entries() int {
	f.t.Helper()
	des, err := os.ReadDir(f.dir)
	if err != nil {
		f.t.Fatal(err)
	}
	n := 0
	for _, de := range des {
		if strings.HasPrefix(de.Name(), "k-") {
			n++
		}
	}
	return n
}

func (f *cacheFixture) stats() (hits, misses, fills int64, used int64) {
	s, used := f.c.Stats()
	return s.Hits.Load(), s.Misses.Load(), s.Fills.Load(), used
}

// gatedStore lets a blob body yield only its first allow bytes until
// release is closed: a store slower than the cache's reader.
type gatedStore struct {
	blobstore.Driver
	allow   int64
	release chan struct{}
}

func (g *gatedStore) Open(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	rc, err := g.Driver.Open(ctx, key, off, n)
	if err != nil {
		return nil, err
	}
	return &gatedBody{ReadCloser: rc, g: g}, nil
}

type gatedBody struct {
	io.ReadCloser
	g    *gatedStore
	read int64
}

func (b *gatedBody) Read(p []byte) (int, error) {
	if b.read >= b.g.allow {
		<-b.g.release
	} else {
		p = p[:min(int64(len(p)), b.g.allow-b.read)]
	}
	n, err := b.ReadCloser.Read(p)
	b.read += int64(n)
	return n, err
}

var uploadSeq atomic.Int64

func newUploadID() string { return fmt.Sprintf("cache-test-%d", uploadSeq.Add(1)) }

func TestCache(t *testing.T) {
	const size = 100 << 10
	cases := []struct {
		name string
		max  int64
		run  func(f *cacheFixture)
	}{
		{"a whole read fills, the next is served from the entry even without the store", 4 * size, func(f *cacheFixture) {
			key, want := f.put(size, 1)
			if got := f.read(key, 0, size); !bytes.Equal(got, want) {
				f.t.Fatal("first read: wrong bytes")
			}
			if _, _, fills, used := f.stats(); fills != 1 || used != size {
				f.t.Fatalf("after the first read: fills %d, used %d; want 1, %d", fills, used, size)
			}
			// Gone from the store: only the entry can answer now.
			if err := f.store.Delete(f.ctx, key); err != nil {
				f.t.Fatal(err)
			}
			if got := f.read(key, 0, size); !bytes.Equal(got, want) {
				f.t.Fatal("second read: wrong bytes")
			}
			if got := f.read(key, 1000, 5000); !bytes.Equal(got, want[1000:6000]) {
				f.t.Fatal("range from the entry: wrong bytes")
			}
			if got := f.read(key, 7, -1); !bytes.Equal(got, want[7:]) {
				f.t.Fatal("read to the end from the entry: wrong bytes")
			}
			if hits, misses, _, _ := f.stats(); hits != 3 || misses != 1 {
				f.t.Fatalf("hits %d misses %d, want 3 and 1", hits, misses)
			}
		}},
		{"ranged and open-ended reads do not fill", 4 * size, func(f *cacheFixture) {
			key, want := f.put(size, 2)
			if got := f.read(key, 10, 100); !bytes.Equal(got, want[10:110]) {
				f.t.Fatal("range: wrong bytes")
			}
			if got := f.read(key, 0, -1); !bytes.Equal(got, want) {
				f.t.Fatal("open-ended: wrong bytes")
			}
			if _, _, fills, used := f.stats(); fills != 0 || used != 0 || f.entries() != 0 {
				f.t.Fatalf("fills %d used %d entries %d, want none", fills, used, f.entries())
			}
		}},
		{"a reader that leaves before the fill is done keeps nothing", 4 * size, func(f *cacheFixture) {
			key, want := f.put(size, 3)
			gate := f.gate(size / 2)
			rc := f.open(key, 0, size)
			half := make([]byte, size/2)
			if _, err := io.ReadFull(rc, half); err != nil || !bytes.Equal(half, want[:size/2]) {
				f.t.Fatalf("first half: %v", err)
			}
			rc.Close()
			close(gate.release)
			f.c.Wait()
			if _, _, fills, used := f.stats(); fills != 0 || used != 0 {
				f.t.Fatalf("fills %d used %d, want 0 0", fills, used)
			}
			if des, _ := os.ReadDir(f.dir); len(des) != 1 || des[0].Name() != ".lock" {
				f.t.Fatalf("files left in the cache folder: %v", des)
			}
		}},
		{"a reader that leaves after the fill is done keeps the entry", 4 * size, func(f *cacheFixture) {
			key, want := f.put(size, 9)
			rc := f.open(key, 0, size)
			if _, err := io.ReadFull(rc, make([]byte, 10)); err != nil {
				f.t.Fatal(err)
			}
			f.c.Wait() // the fill runs ahead of its reader, to the end
			rc.Close()
			if _, _, fills, _ := f.stats(); fills != 1 {
				f.t.Fatalf("fills %d, want 1", fills)
			}
			if err := f.store.Delete(f.ctx, key); err != nil {
				f.t.Fatal(err)
			}
			if got := f.read(key, 0, size); !bytes.Equal(got, want) {
				f.t.Fatal("from the entry: wrong bytes")
			}
		}},
		{"a reader follows a fill that is slower than itself", 4 * size, func(f *cacheFixture) {
			key, want := f.put(size, 10)
			gate := f.gate(size / 3)
			rc := f.open(key, 0, size)
			defer rc.Close()
			// The store is held after a third: the reader gets exactly that
			// far, from the fill file, before the fill ends.
			first := make([]byte, size/3)
			if _, err := io.ReadFull(rc, first); err != nil || !bytes.Equal(first, want[:size/3]) {
				f.t.Fatalf("first third: %v", err)
			}
			close(gate.release)
			var rest bytes.Buffer
			if _, err := io.Copy(&rest, rc); err != nil || !bytes.Equal(rest.Bytes(), want[size/3:]) {
				f.t.Fatalf("the rest: %v, %d bytes", err, rest.Len())
			}
			f.c.Wait()
			if _, _, fills, _ := f.stats(); fills != 1 {
				f.t.Fatalf("fills %d, want 1", fills)
			}
		}},
		{"fills in flight never take more than the bound", 4 * size, func(f *cacheFixture) {
			gate := f.gate(10)
			var bodies []io.ReadCloser
			var blobs [][]byte
			for i := range 6 {
				key, want := f.put(size, uint64(30+i))
				rc := f.open(key, 0, size)
				bodies, blobs = append(bodies, rc), append(blobs, want)
				if _, _, _, used := f.stats(); used > 4*size {
					f.t.Fatalf("%d fills reserve %d bytes, over the bound %d", i+1, used, 4*size)
				}
			}
			close(gate.release)
			for i, rc := range bodies {
				got, err := io.ReadAll(rc)
				rc.Close()
				if err != nil || !bytes.Equal(got, blobs[i]) {
					f.t.Fatalf("blob %d: %v", i, err)
				}
			}
			f.c.Wait()
			if _, _, fills, used := f.stats(); fills != 4 || used != 4*size {
				f.t.Fatalf("fills %d used %d, want 4 and %d", fills, used, 4*size)
			}
		}},
		{"a range from the start is not taken for the whole blob", 4 * size, func(f *cacheFixture) {
			key, want := f.put(size, 12)
			close(f.gate(size).release) // bodies that do not tell whether they are whole
			if got := f.read(key, 0, 1024); !bytes.Equal(got, want[:1024]) {
				f.t.Fatal("range: wrong bytes")
			}
			if _, _, fills, _ := f.stats(); fills != 0 {
				f.t.Fatalf("a range filled the cache")
			}
			if got := f.read(key, 0, size); !bytes.Equal(got, want) {
				f.t.Fatal("whole: wrong bytes")
			}
			if err := f.store.Delete(f.ctx, key); err != nil {
				f.t.Fatal(err)
			}
			if got := f.read(key, 0, -1); !bytes.Equal(got, want) {
				f.t.Fatal("to the end from the entry: wrong bytes")
			}
			if got := f.read(key, size-10, 100); !bytes.Equal(got, want[size-10:]) {
				f.t.Fatal("past the end from the entry: wrong bytes")
			}
			if hits, _, fills, _ := f.stats(); fills != 1 || hits != 2 {
				f.t.Fatalf("fills %d hits %d, want 1 and 2", fills, hits)
			}
		}},
		{"one cache per folder", 4 * size, func(f *cacheFixture) {
			if _, err := blobstore.NewCache(f.store, f.dir, size, testLogger(f.t)); err == nil {
				f.t.Fatal("a second cache opened the same folder")
			}
		}},
		{"a Delete during a fill drops the fill", 4 * size, func(f *cacheFixture) {
			key, want := f.put(size, 11)
			gate := f.gate(size / 2)
			rc := f.open(key, 0, size)
			if err := f.c.Delete(f.ctx, key); err != nil {
				f.t.Fatal(err)
			}
			close(gate.release)
			got, err := io.ReadAll(rc) // the open file outlives the Delete
			rc.Close()
			if err != nil || !bytes.Equal(got, want) {
				f.t.Fatalf("read across the Delete: %v", err)
			}
			f.c.Wait()
			if _, _, fills, used := f.stats(); fills != 0 || used != 0 || f.entries() != 0 {
				f.t.Fatalf("fills %d used %d entries %d, want none", fills, used, f.entries())
			}
		}},
		{"a blob over a quarter of the cache is not kept", 3 * size, func(f *cacheFixture) {
			key, want := f.put(size, 4)
			if got := f.read(key, 0, size); !bytes.Equal(got, want) {
				f.t.Fatal("wrong bytes")
			}
			if _, _, fills, _ := f.stats(); fills != 0 {
				f.t.Fatalf("fills %d, want 0", fills)
			}
		}},
		{"least recently read out first, within the bound", 4 * size, func(f *cacheFixture) {
			var keys []string
			var blobs [][]byte
			for i := range 4 {
				k, b := f.put(size, uint64(10+i))
				keys, blobs = append(keys, k), append(blobs, b)
				f.read(k, 0, size)
			}
			f.read(keys[0], 0, size) // keys[1] is now the oldest
			k5, b5 := f.put(size, 20)
			f.read(k5, 0, size)
			if _, _, _, used := f.stats(); used > 4*size {
				f.t.Fatalf("used %d over the bound %d", used, 4*size)
			}
			if n := f.entries(); n != 4 {
				f.t.Fatalf("%d entries, want 4", n)
			}
			// Only the evicted one needs the store.
			for _, k := range []string{keys[0], keys[2], keys[3], k5} {
				if err := f.store.Delete(f.ctx, k); err != nil {
					f.t.Fatal(err)
				}
			}
			for i, k := range []string{keys[0], keys[2], keys[3], k5} {
				want := [][]byte{blobs[0], blobs[2], blobs[3], b5}[i]
				if got := f.read(k, 0, size); !bytes.Equal(got, want) {
					f.t.Fatalf("entry %d: wrong bytes", i)
				}
			}
			if got := f.read(keys[1], 0, size); !bytes.Equal(got, blobs[1]) {
				f.t.Fatal("evicted blob from the store: wrong bytes")
			}
		}},
		{"Delete removes the entry and the object", 4 * size, func(f *cacheFixture) {
			key, _ := f.put(size, 5)
			f.read(key, 0, size)
			if err := f.c.Delete(f.ctx, key); err != nil {
				f.t.Fatal(err)
			}
			if n := f.entries(); n != 0 {
				f.t.Fatalf("%d entries after Delete", n)
			}
			if _, err := f.c.Open(f.ctx, key, 0, size); !errors.Is(err, blobstore.ErrNotFound) {
				f.t.Fatalf("Open after Delete: %v, want ErrNotFound", err)
			}
		}},
		{"entries outlive a restart, unfinished fills do not", 4 * size, func(f *cacheFixture) {
			key, want := f.put(size, 6)
			f.read(key, 0, size)
			if err := os.WriteFile(filepath.Join(f.dir, ".fill-123"), []byte("half"), 0o644); err != nil {
				f.t.Fatal(err)
			}
			f.reopen(4 * size)
			if err := f.store.Delete(f.ctx, key); err != nil {
				f.t.Fatal(err)
			}
			if got := f.read(key, 0, size); !bytes.Equal(got, want) {
				f.t.Fatal("after restart: wrong bytes")
			}
			if _, err := os.Stat(filepath.Join(f.dir, ".fill-123")); !errors.Is(err, os.ErrNotExist) {
				f.t.Fatalf("unfinished fill kept: %v", err)
			}
			// A smaller bound on restart trims.
			f.reopen(size / 2)
			if n := f.entries(); n != 0 {
				f.t.Fatalf("%d entries over a smaller bound", n)
			}
		}},
		{"a damaged entry is dropped and the store answers", 4 * size, func(f *cacheFixture) {
			key, want := f.put(size, 7)
			f.read(key, 0, size)
			names, _ := filepath.Glob(filepath.Join(f.dir, "k-*"))
			if len(names) != 1 {
				f.t.Fatalf("entries %v, want 1", names)
			}
			if err := os.Truncate(names[0], size/2); err != nil {
				f.t.Fatal(err)
			}
			if got := f.read(key, 0, size); !bytes.Equal(got, want) {
				f.t.Fatal("wrong bytes after damage")
			}
			// That read filled again, whole.
			if got := f.read(key, 0, size); !bytes.Equal(got, want) {
				f.t.Fatal("wrong bytes after the refill")
			}
			if hits, _, fills, _ := f.stats(); hits != 1 || fills != 2 {
				f.t.Fatalf("hits %d fills %d, want 1 and 2", hits, fills)
			}
		}},
		{"concurrent first reads fill once", 4 * size, func(f *cacheFixture) {
			key, want := f.put(size, 8)
			var wg sync.WaitGroup
			errs := make(chan error, 8)
			for range 8 {
				wg.Go(func() {
					rc, err := f.c.Open(f.ctx, key, 0, size)
					if err != nil {
						errs <- err
						return
					}
					defer rc.Close()
					got, err := io.ReadAll(rc)
					if err == nil && !bytes.Equal(got, want) {
						err = errors.New("wrong bytes")
					}
					if err != nil {
						errs <- err
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				f.t.Fatal(err)
			}
			f.c.Wait()
			if _, _, fills, used := f.stats(); fills != 1 || used != size {
				f.t.Fatalf("fills %d used %d, want 1 and %d", fills, used, size)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.run(newCacheFixture(t, tc.max))
		})
	}
}
