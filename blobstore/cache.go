package blobstore

import (
	"container/list"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Cache keeps whole blobs read from a slower store (S3) in a local folder,
// bounded in bytes, least recently read first out. A blob's key names
// immutable bytes: keys are chosen per upload and never written twice, so an
// entry is never stale; it only stops being asked for once the blob index
// forgets the key. The first full read of a key streams from the store to
// the client and into a temporary file at once; the file becomes an entry
// only if every byte arrived. Later reads, whole or ranged, are served from
// the file with sendfile. Everything else (uploads, Stat, Presign) goes to
// the store.
type Cache struct {
	inner  Driver
	dir    string
	lock   *os.File // flock: one cache per folder
	max    int64    // bytes of entries, at most
	maxOne int64    // largest blob kept
	logger *slog.Logger

	mu      sync.Mutex
	entries map[string]*list.Element // key -> *cacheEntry in lru
	lru     *list.List               // front: most recently read
	used    int64                    // bytes of entries plus fills in progress
	filling map[string]bool          // key -> keep the fill (false once Deleted)
	goneSeq uint64                   // names evicted files on their way out
	deletes uint64                   // Deletes so far: a fill that saw one start is not kept

	fills sync.WaitGroup
	stats CacheStats
}

type cacheEntry struct {
	key     string
	size    int64
	touched time.Time // last mtime written to the file
}

// CacheStats counts what the cache did since it was opened.
type CacheStats struct {
	Hits, Misses, Fills, Evictions atomic.Int64
	// HitBytes: bytes served from entries.
	HitBytes atomic.Int64
}

// cacheTouchEvery: how stale an entry's mtime (its place in the order after
// a restart) may get before a hit writes it again.
const cacheTouchEvery = time.Minute

// NewCache opens (creating it if missing) a cache folder of at most
// maxBytes in front of inner. Entries left by an earlier run are kept,
// unfinished fills removed.
func NewCache(inner Driver, dir string, maxBytes int64, logger *slog.Logger) (*Cache, error) {
	if maxBytes <= 0 {
		return nil, fmt.Errorf("blobstore cache: size must be positive, got %d", maxBytes)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("blobstore cache: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, cacheLockName), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("blobstore cache: %w", err)
	}
	if ok, err := tryLock(lock); err != nil || !ok {
		lock.Close()
		if err == nil {
			err = errors.New("another process uses it")
		}
		return nil, fmt.Errorf("blobstore cache: folder %s: %w", dir, err)
	}
	c := &Cache{
		inner: inner, dir: dir, lock: lock, max: maxBytes, maxOne: max(maxBytes/4, 1), logger: logger,
		entries: map[string]*list.Element{}, lru: list.New(), filling: map[string]bool{},
	}
	if err := c.load(); err != nil {
		lock.Close()
		return nil, err
	}
	return c, nil
}

const cacheLockName = ".lock"

// Close waits for fills under way to end and releases the folder.
func (c *Cache) Close() error {
	c.fills.Wait()
	return c.lock.Close()
}

// load indexes the entries on disk, most recently used (mtime) first, and
// trims them to the bound.
func (c *Cache) load() error {
	des, err := os.ReadDir(c.dir)
	if err != nil {
		return fmt.Errorf("blobstore cache: %w", err)
	}
	var found []*cacheEntry
	for _, de := range des {
		if de.Name() == cacheLockName {
			continue
		}
		key, ok := cacheKeyOf(de.Name())
		if !ok || !de.Type().IsRegular() {
			// Unfinished fills, evicted files not yet removed, strays.
			if err := os.RemoveAll(filepath.Join(c.dir, de.Name())); err != nil {
				c.logger.Warn("blob cache: cannot remove a stray file", "name", de.Name(), "err", err)
			}
			continue
		}
		fi, err := de.Info()
		if err != nil {
			continue
		}
		found = append(found, &cacheEntry{key: key, size: fi.Size(), touched: fi.ModTime()})
	}
	slices.SortFunc(found, func(a, b *cacheEntry) int { return b.touched.Compare(a.touched) })
	for _, e := range found {
		c.entries[e.key] = c.lru.PushBack(e)
		c.used += e.size
	}
	c.mu.Lock()
	victims := c.evictLocked(0)
	c.mu.Unlock()
	c.remove(victims)
	return nil
}

// The file of key: "k-" and the key in hex (keys hold slashes). Keys too
// long for a file name (drivers make them under 100 bytes) are not cached.
func (c *Cache) path(key string) string {
	return filepath.Join(c.dir, cacheName(key))
}

func cacheName(key string) string { return "k-" + hex.EncodeToString([]byte(key)) }

const maxCacheKey = 120

// cacheKeyOf inverts cacheName.
func cacheKeyOf(name string) (string, bool) {
	h, ok := strings.CutPrefix(name, "k-")
	if !ok {
		return "", false
	}
	b, err := hex.DecodeString(h)
	if err != nil {
		return "", false
	}
	return string(b), true
}

// Stats returns the counters and the bytes in use.
func (c *Cache) Stats() (*CacheStats, int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return &c.stats, c.used
}

// Wait blocks until the fills that finished reading are on disk (tests).
func (c *Cache) Wait() { c.fills.Wait() }

func (c *Cache) Name() string { return c.inner.Name() }

func (c *Cache) StartUpload(ctx context.Context, id string) (Upload, error) {
	return c.inner.StartUpload(ctx, id)
}

func (c *Cache) Append(ctx context.Context, u Upload, r io.Reader) (Upload, error) {
	return c.inner.Append(ctx, u, r)
}

func (c *Cache) Committed(ctx context.Context, prev, next Upload) error {
	return c.inner.Committed(ctx, prev, next)
}

func (c *Cache) Complete(ctx context.Context, u Upload) (string, error) {
	return c.inner.Complete(ctx, u)
}

func (c *Cache) Abort(ctx context.Context, u Upload) error { return c.inner.Abort(ctx, u) }

func (c *Cache) Stat(ctx context.Context, key string) (int64, error) {
	return c.inner.Stat(ctx, key)
}

func (c *Cache) Presign(ctx context.Context, key string, ttl time.Duration) (string, error) {
	return c.inner.Presign(ctx, key, ttl)
}

// List is the store's listing (the cache holds only copies).
func (c *Cache) List(ctx context.Context) ([]string, error) {
	l, ok := c.inner.(Lister)
	if !ok {
		return nil, ErrNotSupported
	}
	return l.List(ctx)
}

// Delete removes the object, then the entry. A fill under way is dropped
// when it ends, and so is one whose read of the store began before this
// Delete and whose fill starts after it.
func (c *Cache) Delete(ctx context.Context, key string) error {
	if err := c.inner.Delete(ctx, key); err != nil {
		return err
	}
	c.mu.Lock()
	c.deletes++
	var victims []*cacheEntry
	if el, ok := c.entries[key]; ok {
		victims = append(victims, c.unlinkLocked(el))
	}
	if _, ok := c.filling[key]; ok {
		c.filling[key] = false
	}
	c.mu.Unlock()
	c.remove(victims)
	return nil
}

// Open serves from the entry of key when there is one; otherwise it reads
// the store, and a read that turns out to be the whole object fills an
// entry on the way.
func (c *Cache) Open(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if key == "" || offset < 0 || length == 0 {
		return c.inner.Open(ctx, key, offset, length)
	}
	if body, ok := c.openEntry(key, offset, length); ok {
		return body, nil
	}
	c.stats.Misses.Add(1)
	c.mu.Lock()
	deletes := c.deletes
	c.mu.Unlock()
	rc, err := c.inner.Open(ctx, key, offset, length)
	if err != nil || offset != 0 || length < 0 || length > c.maxOne || len(key) > maxCacheKey {
		return rc, err
	}
	if !c.whole(ctx, key, length, rc) || !c.startFill(key, length, deletes) {
		return rc, nil
	}
	fl, r, err := c.newFill(key, length)
	if err != nil {
		c.logger.Warn("blob cache: cannot start a fill", "err", err)
		c.endFill(key, length, nil)
		return rc, nil
	}
	c.fills.Add(1)
	go fl.run(rc)
	return &followBody{fl: fl, r: r, n: length}, nil
}

// whole reports whether length bytes from the start are the entire object:
// the zero-copy body knows; otherwise the store is asked for the size (one
// request per fill, and fills are rare).
func (c *Cache) whole(ctx context.Context, key string, length int64, rc io.ReadCloser) bool {
	if d, ok := rc.(*directBody); ok && d.whole {
		return true
	}
	size, err := c.inner.Stat(ctx, key)
	return err == nil && size == length
}

// openEntry opens key's file for length bytes at offset, or reports a miss.
// An entry shorter than what is asked (damaged, or the object is not what
// the caller thinks) is dropped and the store answers instead.
func (c *Cache) openEntry(key string, offset, length int64) (io.ReadCloser, bool) {
	c.mu.Lock()
	el, ok := c.entries[key]
	if !ok {
		c.mu.Unlock()
		return nil, false
	}
	e := el.Value.(*cacheEntry)
	if left := max(e.size-offset, 0); length < 0 || length > left {
		length = left // reading past the end yields what is there, as from the store
	}
	c.lru.MoveToFront(el)
	now := time.Now()
	touch := now.Sub(e.touched) > cacheTouchEvery
	if touch {
		e.touched = now
	}
	c.mu.Unlock()

	p := c.path(key)
	f, err := os.Open(p)
	if err != nil {
		c.dropIf(key, e)
		return nil, false
	}
	fi, err := f.Stat()
	if err != nil || fi.Size() != e.size {
		f.Close()
		c.dropIf(key, e)
		return nil, false
	}
	if offset > 0 {
		if _, err := f.Seek(offset, io.SeekStart); err != nil {
			f.Close()
			return nil, false
		}
	}
	if touch {
		_ = os.Chtimes(p, time.Time{}, now)
	}
	c.stats.Hits.Add(1)
	c.stats.HitBytes.Add(length)
	return &directBody{src: f, n: length, closer: f}, true
}

// dropIf removes key's entry if it is still e.
func (c *Cache) dropIf(key string, e *cacheEntry) {
	c.mu.Lock()
	var victims []*cacheEntry
	if el, ok := c.entries[key]; ok && el.Value.(*cacheEntry) == e {
		victims = append(victims, c.unlinkLocked(el))
	}
	c.mu.Unlock()
	c.remove(victims)
}

// startFill reserves room for a fill of size bytes of key, evicting to make
// it, unless another fill of key is under way, it is cached by now, fills
// in flight already take the room, or a Delete happened since the caller
// saw deletes (it may have been of key, after the caller opened it).
func (c *Cache) startFill(key string, size int64, deletes uint64) bool {
	c.mu.Lock()
	if _, cached := c.entries[key]; cached || c.deletes != deletes {
		c.mu.Unlock()
		return false
	}
	if _, busy := c.filling[key]; busy {
		c.mu.Unlock()
		return false
	}
	victims := c.evictLocked(size)
	ok := c.used+size <= c.max
	if ok {
		c.filling[key] = true
		c.used += size
	}
	c.mu.Unlock()
	c.remove(victims)
	return ok
}

// endFill ends key's fill: with a file, it becomes the entry; without, the
// reservation is released.
func (c *Cache) endFill(key string, size int64, done *os.File) {
	var victims []*cacheEntry
	c.mu.Lock()
	keep := c.filling[key]
	delete(c.filling, key)
	if done == nil || !keep {
		c.used -= size
		c.mu.Unlock()
		if done != nil {
			_ = os.Remove(done.Name())
		}
		return
	}
	if el, ok := c.entries[key]; ok {
		// Not expected (startFill refuses cached keys), but never two
		// elements for one key.
		victims = append(victims, c.unlinkLocked(el))
	}
	err := os.Rename(done.Name(), c.path(key))
	if err != nil {
		c.used -= size
		c.mu.Unlock()
		c.logger.Warn("blob cache: cannot keep a filled entry", "key", key, "err", err)
		_ = os.Remove(done.Name())
		return
	}
	c.entries[key] = c.lru.PushFront(&cacheEntry{key: key, size: size, touched: time.Now()})
	victims = append(victims, c.evictLocked(0)...)
	c.mu.Unlock()
	c.stats.Fills.Add(1)
	c.remove(victims)
}

// unlinkLocked takes an entry out of the index; its file is removed by
// remove, outside the lock. Readers that opened it keep reading.
func (c *Cache) unlinkLocked(el *list.Element) *cacheEntry {
	e := el.Value.(*cacheEntry)
	c.lru.Remove(el)
	delete(c.entries, e.key)
	c.used -= e.size
	return e
}

// evictLocked unlinks least recently read entries until used+extra fits.
func (c *Cache) evictLocked(extra int64) []*cacheEntry {
	var victims []*cacheEntry
	for c.used+extra > c.max {
		el := c.lru.Back()
		if el == nil {
			break
		}
		victims = append(victims, c.unlinkLocked(el))
		c.stats.Evictions.Add(1)
	}
	return victims
}

// remove deletes the files of unlinked entries. Under the lock, each is
// renamed out of the way unless its key is back (a new fill renamed its
// file in place meanwhile); the unlink, which may free many pages, happens
// outside.
func (c *Cache) remove(victims []*cacheEntry) {
	var gone []string
	c.mu.Lock()
	for _, e := range victims {
		if _, back := c.entries[e.key]; back {
			continue
		}
		g := filepath.Join(c.dir, ".gone-"+strconv.FormatUint(c.goneSeq, 10))
		c.goneSeq++
		if err := os.Rename(c.path(e.key), g); err == nil {
			gone = append(gone, g)
		} else if !errors.Is(err, fs.ErrNotExist) {
			c.logger.Warn("blob cache: cannot remove an entry", "key", e.key, "err", err)
		}
	}
	c.mu.Unlock()
	for _, g := range gone {
		if err := os.Remove(g); err != nil {
			c.logger.Warn("blob cache: cannot remove an entry", "file", g, "err", err)
		}
	}
}

// fill writes one blob from the store into a fill file, ahead of the
// reader that asked for it, which follows the bytes on disk (followBody).
// The store is read as fast as it answers: with the zero-copy S3 read the
// kernel splices its socket into the file, and the reader's copy to the
// client is a sendfile from the page cache.
type cacheFill struct {
	c    *Cache
	key  string
	size int64
	f    *os.File

	mu       sync.Mutex
	progress chan struct{} // closed, and replaced, whenever written or err change
	written  int64
	err      error // the fill failed or was abandoned
	closeSrc func() error
}

// fillStep: bytes spliced into the file between two wake-ups of its reader.
const fillStep = 256 << 10

func (c *Cache) newFill(key string, size int64) (*cacheFill, *os.File, error) {
	f, err := os.CreateTemp(c.dir, ".fill-")
	if err != nil {
		return nil, nil, err
	}
	r, err := os.Open(f.Name())
	if err != nil {
		f.Close()
		_ = os.Remove(f.Name())
		return nil, nil, err
	}
	return &cacheFill{c: c, key: key, size: size, f: f, progress: make(chan struct{})}, r, nil
}

// run copies src into the fill file, then keeps the file as the entry if
// every byte arrived.
func (fl *cacheFill) run(src io.ReadCloser) {
	defer fl.c.fills.Done()
	var once sync.Once
	var srcErr error
	closeSrc := func() error { once.Do(func() { srcErr = src.Close() }); return srcErr }
	fl.mu.Lock()
	fl.closeSrc = closeSrc
	fl.mu.Unlock()

	err := fl.copy(src)
	_ = closeSrc()
	if err == nil {
		err = fl.f.Sync()
	}
	if cerr := fl.f.Close(); err == nil {
		err = cerr
	}
	fl.mu.Lock()
	if fl.err != nil {
		err = fl.err // abandoned by the reader
	}
	fl.mu.Unlock()
	if err != nil {
		fl.fail(err)
		_ = os.Remove(fl.f.Name())
		fl.c.endFill(fl.key, fl.size, nil)
		return
	}
	fl.c.endFill(fl.key, fl.size, fl.f)
}

func (fl *cacheFill) copy(src io.Reader) error {
	d, ok := src.(*directBody)
	if !ok {
		return fl.copyBuffered(src)
	}
	// The head the response parser read ahead, then the socket itself,
	// which the file's ReadFrom splices.
	if len(d.head) > 0 {
		if _, err := fl.f.Write(d.head); err != nil {
			return err
		}
		fl.advance(int64(len(d.head)))
		d.head = nil
	}
	for {
		left, aborted := fl.left()
		if aborted || left == 0 {
			return nil
		}
		n, err := fl.f.ReadFrom(&io.LimitedReader{R: d.src, N: min(left, fillStep)})
		fl.advance(n)
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrUnexpectedEOF
		}
	}
}

// copyBuffered copies any other body, publishing every read.
func (fl *cacheFill) copyBuffered(src io.Reader) error {
	buf := make([]byte, 64<<10)
	for {
		left, aborted := fl.left()
		if aborted || left == 0 {
			return nil
		}
		n, err := src.Read(buf[:min(left, int64(len(buf)))])
		if n > 0 {
			if _, werr := fl.f.Write(buf[:n]); werr != nil {
				return werr
			}
			fl.advance(int64(n))
		}
		if errors.Is(err, io.EOF) {
			if left > int64(n) {
				return io.ErrUnexpectedEOF
			}
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (fl *cacheFill) left() (int64, bool) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	return fl.size - fl.written, fl.err != nil
}

func (fl *cacheFill) advance(n int64) {
	if n == 0 {
		return
	}
	fl.mu.Lock()
	fl.written += n
	close(fl.progress)
	fl.progress = make(chan struct{})
	fl.mu.Unlock()
}

func (fl *cacheFill) fail(err error) {
	fl.mu.Lock()
	if fl.err == nil {
		fl.err = err
		close(fl.progress)
		fl.progress = make(chan struct{})
	}
	fl.mu.Unlock()
}

// abandon stops a fill whose reader went away before the end: the store's
// body is closed to unblock the copy, and the file is dropped.
func (fl *cacheFill) abandon() {
	fl.mu.Lock()
	if fl.written == fl.size || fl.err != nil {
		fl.mu.Unlock()
		return
	}
	fl.err = errFillAbandoned
	close(fl.progress)
	fl.progress = make(chan struct{})
	closeSrc := fl.closeSrc
	fl.mu.Unlock()
	if closeSrc != nil {
		_ = closeSrc()
	}
}

var errFillAbandoned = errors.New("blob cache: fill abandoned by its reader")

// ready waits until bytes past off are in the file and returns how many
// are, or the fill's error.
func (fl *cacheFill) ready(off int64) (int64, error) {
	for {
		fl.mu.Lock()
		written, err, progress := fl.written, fl.err, fl.progress
		fl.mu.Unlock()
		if written > off {
			return written, nil
		}
		if err != nil {
			return 0, err
		}
		<-progress
	}
}

// followBody reads a blob from its fill file as the fill writes it.
type followBody struct {
	fl  *cacheFill
	r   *os.File // own descriptor on the fill file, at off
	off int64
	n   int64
}

func (b *followBody) Read(p []byte) (int, error) {
	if b.off >= b.n {
		return 0, io.EOF
	}
	written, err := b.fl.ready(b.off)
	if err != nil {
		return 0, err
	}
	p = p[:min(int64(len(p)), written-b.off)]
	n, err := b.r.Read(p)
	b.off += int64(n)
	if err == io.EOF {
		err = nil // the fill is ahead of the file's end as this reader saw it
	}
	return n, err
}

// WriteTo hands each run of written bytes to w's ReadFrom: sendfile when w
// is a TCP connection.
func (b *followBody) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for b.off < b.n {
		written, err := b.fl.ready(b.off)
		if err != nil {
			return total, err
		}
		lr := &io.LimitedReader{R: b.r, N: written - b.off}
		var n int64
		if rf, ok := w.(io.ReaderFrom); ok {
			n, err = rf.ReadFrom(lr)
		} else {
			n, err = io.Copy(w, lr)
		}
		b.off += n
		total += n
		if err != nil {
			return total, err
		}
		if n == 0 {
			return total, io.ErrUnexpectedEOF
		}
	}
	return total, nil
}

func (b *followBody) Close() error {
	b.fl.abandon()
	return b.r.Close()
}
