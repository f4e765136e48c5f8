package blobstore

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
)

// deletingStore deletes each object right after opening it: the Delete
// lands between the cache's read of the store and the start of its fill.
type deletingStore struct {
	*FS
	c     *Cache
	whole bool // the last body was a whole zero-copy body
}

func (d *deletingStore) Open(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	rc, err := d.FS.Open(ctx, key, off, n)
	if err == nil {
		body, ok := rc.(*directBody)
		d.whole = ok && body.whole
		err = d.c.Delete(ctx, key)
	}
	return rc, err
}

// The zero-copy body says it is the whole object, so no Stat stands between
// that Delete and the fill: the cache must notice the Delete itself.
func TestCacheDeleteBeforeFillStarts(t *testing.T) {
	fs, err := NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	u, err := fs.StartUpload(ctx, "delete-race")
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Repeat([]byte("flotilla"), 4096)
	if u, err = fs.Append(ctx, u, bytes.NewReader(want)); err != nil {
		t.Fatal(err)
	}
	key, err := fs.Complete(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	store := &deletingStore{FS: fs}
	c, err := NewCache(store, t.TempDir(), 1<<20, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	store.c = c
	rc, err := c.Open(ctx, key, 0, int64(len(want)))
	if err != nil {
		t.Fatal(err)
	}
	if !store.whole {
		t.Fatal("the store's body is not a whole zero-copy body: the test proves nothing")
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read: %v", err)
	}
	c.Wait()
	stats, used := c.Stats()
	if n := stats.Fills.Load(); n != 0 || used != 0 {
		t.Fatalf("fills %d, used %d: a deleted object was cached", n, used)
	}
	if len(c.entries) != 0 || !strings.Contains(key, "delete-race") {
		t.Fatalf("entries %d for key %q", len(c.entries), key)
	}
}
