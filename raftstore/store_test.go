package raftstore

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/flotilla/flotilla/meta"
	bolt "go.etcd.io/bbolt"
)

// Guards against hangs, not timing assertions.
const storeTimeout = 60 * time.Second

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// openStore opens a single-node store that bootstraps itself and waits
// until it is the ready leader.
func openStore(t *testing.T, dir, addr string) *Store {
	t.Helper()
	s, err := Open(context.Background(), Config{
		NodeID: "n1", Dir: dir, BindAddr: addr, Bootstrap: true,
		HeartbeatTimeout: 200 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond,
		LogLevel: "ERROR", Logger: discardLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	deadline := time.Now().Add(storeTimeout)
	for !s.IsLeader() {
		if time.Now().After(deadline) {
			t.Fatalf("no leader after %v (state %s)", storeTimeout, s.State())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return s
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	t.Cleanup(cancel)
	return ctx
}

func storeApply(t *testing.T, s *Store, c *meta.Command) *meta.Result {
	t.Helper()
	res, err := s.Apply(ctxT(t), c)
	if err != nil {
		t.Fatalf("apply %s: %v", c.Type, err)
	}
	if err := res.Err(); err != nil {
		t.Fatalf("apply %s: %v", c.Type, err)
	}
	if res.Index == 0 {
		t.Fatalf("apply %s: no index in result", c.Type)
	}
	return res
}

// pushImage indexes a blob, links it into repo and tags a manifest of it.
func pushImage(t *testing.T, s *Store, repo, name string, tags ...string) *meta.Manifest {
	t.Helper()
	b := dg("layer of " + repo + "/" + name)
	for _, c := range uploadBlob(repo, "up-"+repo+"-"+name, b, "k/"+name, 5) {
		storeApply(t, s, c)
	}
	m := manifest(repo+"/"+name, []string{b}, nil)
	storeApply(t, s, &meta.Command{Type: meta.CmdPutManifest, Repo: repo, Manifest: m, Tags: tags})
	return m
}

// checkImage reads back what pushImage wrote.
func checkImage(t *testing.T, s *Store, repo, name string, m *meta.Manifest, tags ...string) {
	t.Helper()
	got, err := s.Manifest(repo, m.Digest)
	if err != nil {
		t.Fatalf("manifest %s: %v", name, err)
	}
	if !bytes.Equal(got.Raw, m.Raw) {
		t.Errorf("manifest %s bytes differ", name)
	}
	for _, tag := range tags {
		if d, err := s.Tag(repo, tag); err != nil || d != m.Digest {
			t.Errorf("tag %s:%s = %q, %v; want %s", repo, tag, d, err, m.Digest)
		}
	}
	b := dg("layer of " + repo + "/" + name)
	if blob, err := s.Blob(repo, b); err != nil || blob.Key != "k/"+name || blob.Size != 5 {
		t.Errorf("blob of %s: %+v, %v", name, blob, err)
	}
}

func TestStoreApplyAndRead(t *testing.T) {
	s := openStore(t, t.TempDir(), freeAddr(t))
	m := pushImage(t, s, "lib/app", "one", "v1", "latest")
	checkImage(t, s, "lib/app", "one", m, "v1", "latest")
	if !s.RepoExists("lib/app") || s.RepoExists("lib/other") {
		t.Error("RepoExists wrong")
	}

	// A refused command comes back as a result carrying the code, with an
	// index (it is in the log) and no change.
	before := s.AppliedIndex()
	res, err := s.Apply(ctxT(t), &meta.Command{Type: meta.CmdPutManifest, Repo: "lib/app",
		Manifest: manifest("missing", []string{blobC}, nil), Tags: []string{"v1"}})
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(res.Err(), meta.ErrManifestBlobUnknown) || res.Index <= before {
		t.Errorf("refused put: %+v", res)
	}
	if d, _ := s.Tag("lib/app", "v1"); d != m.Digest {
		t.Error("refused put moved the tag")
	}

	// Reads of missing things answer the sentinels.
	if _, err := s.Manifest("lib/app", blobC); !errors.Is(err, meta.ErrManifestUnknown) {
		t.Errorf("Manifest of missing: %v", err)
	}
	if _, err := s.Tag("lib/app", "nope"); !errors.Is(err, meta.ErrManifestUnknown) {
		t.Errorf("Tag of missing: %v", err)
	}
	if _, err := s.Blob("lib/other", dg("layer of lib/app/one")); !errors.Is(err, meta.ErrBlobUnknown) {
		t.Errorf("Blob of another repository: %v", err)
	}
	if _, err := s.Upload("nope"); !errors.Is(err, meta.ErrUploadUnknown) {
		t.Errorf("Upload of missing: %v", err)
	}
	if _, _, err := s.Tags("lib/other", "", 0); !errors.Is(err, meta.ErrNameUnknown) {
		t.Errorf("Tags of unknown repository: %v", err)
	}

	// Referrers.
	sig := manifest("sig", nil, nil)
	sig.Subject, sig.ArtifactType = m.Digest, "application/vnd.example.sig"
	storeApply(t, s, &meta.Command{Type: meta.CmdPutManifest, Repo: "lib/app", Manifest: sig, AllowSparse: true})
	refs, err := s.Referrers("lib/app", m.Digest)
	if err != nil || len(refs) != 1 || refs[0].Digest != sig.Digest || refs[0].ArtifactType != sig.ArtifactType {
		t.Errorf("referrers %+v, %v", refs, err)
	}
	if refs, err := s.Referrers("lib/other", m.Digest); err != nil || len(refs) != 0 {
		t.Errorf("referrers in another repository %+v, %v", refs, err)
	}

	// Upload sessions are readable between commands.
	storeApply(t, s, &meta.Command{Type: meta.CmdStartUpload, Repo: "lib/app", Upload: &meta.Upload{ID: "u9", Repo: "lib/app"}})
	if u, err := s.Upload("u9"); err != nil || u.Repo != "lib/app" || u.Started == 0 {
		t.Errorf("upload %+v, %v (Started must be the leader's stamp)", u, err)
	}
}

func TestStoreReadIndex(t *testing.T) {
	s := openStore(t, t.TempDir(), freeAddr(t))
	w := pushImage(t, s, "r", "x", "t")
	last := s.AppliedIndex()

	idx, err := s.ReadIndex(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if idx < last {
		t.Errorf("read index %d below the last acknowledged write %d", idx, last)
	}
	if err := s.WaitApplied(ctxT(t), idx); err != nil {
		t.Fatal(err)
	}
	checkImage(t, s, "r", "x", w, "t")

	// Waiting for an index nobody wrote ends with the caller's context.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.WaitApplied(ctx, idx+1000); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitApplied beyond the log: %v", err)
	}
}

// TestStoreReadIndexConcurrent: many concurrent readers (sharing rounds in
// the batcher) all get an index covering every write acknowledged before
// they asked, while writes continue.
func TestStoreReadIndexConcurrent(t *testing.T) {
	s := openStore(t, t.TempDir(), freeAddr(t))
	pushImage(t, s, "r", "x", "t")

	stop := make(chan struct{})
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := s.Apply(context.Background(), &meta.Command{Type: meta.CmdNoop}); err != nil {
				t.Errorf("write during reads: %v", err)
				return
			}
		}
	}()

	const readers = 200
	var wg sync.WaitGroup
	errs := make(chan error, readers)
	for i := 0; i < readers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Every write applied before the call must be covered (trailing
			// no-ops need not be).
			floor := s.fsm.lastWrite.Load()
			idx, err := s.ReadIndex(ctxT(t))
			if err != nil {
				errs <- err
				return
			}
			if idx < floor {
				errs <- errors.New("read index below a write applied before the call")
				return
			}
			if err := s.WaitApplied(ctxT(t), idx); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-writerDone
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestStoreReopen: the state machine is durable on its own; closing and
// reopening on the same dir keeps every record and the applied index, and
// new writes continue after it.
func TestStoreReopen(t *testing.T) {
	dir, addr := t.TempDir(), freeAddr(t)
	s := openStore(t, dir, addr)
	m1 := pushImage(t, s, "a", "one", "v1")
	storeApply(t, s, &meta.Command{Type: meta.CmdStartUpload, Repo: "a", Upload: &meta.Upload{ID: "open", Repo: "a"}})
	applied := s.AppliedIndex()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := openStore(t, dir, addr)
	if got := s2.AppliedIndex(); got < applied {
		t.Fatalf("applied index %d after reopen, was %d", got, applied)
	}
	if !s2.HadState() {
		t.Error("HadState false on a reopened dir")
	}
	checkImage(t, s2, "a", "one", m1, "v1")
	if _, err := s2.Upload("open"); err != nil {
		t.Errorf("upload session lost: %v", err)
	}
	m2 := pushImage(t, s2, "a", "two", "v2")
	if res := storeApply(t, s2, &meta.Command{Type: meta.CmdNoop}); res.Index <= applied {
		t.Errorf("new write at index %d, not after %d", res.Index, applied)
	}
	checkImage(t, s2, "a", "two", m2, "v2")
	if tags, _, err := s2.Tags("a", "", 0); err != nil || !slices.Equal(tags, []string{"v1", "v2"}) {
		t.Errorf("tags %q, %v", tags, err)
	}
}

// TestStoreSnapshotReopen: a snapshot, more writes, a restart: everything
// is there, whether the state file survived or was lost (then the newest
// snapshot is restored and the log after it replayed).
func TestStoreSnapshotReopen(t *testing.T) {
	for _, lose := range []bool{false, true} {
		name := "state file kept"
		if lose {
			name = "state file lost"
		}
		t.Run(name, func(t *testing.T) {
			dir, addr := t.TempDir(), freeAddr(t)
			s := openStore(t, dir, addr)
			before := pushImage(t, s, "a", "before", "b")
			if err := s.Snapshot(); err != nil {
				t.Fatal(err)
			}
			if err := s.Snapshot(); err != nil {
				t.Errorf("second snapshot with nothing new: %v", err)
			}
			after := pushImage(t, s, "a", "after", "c")
			storeApply(t, s, &meta.Command{Type: meta.CmdDeleteTag, Repo: "a", Tag: "b"})
			applied := s.AppliedIndex()
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if lose {
				if err := os.Remove(filepath.Join(dir, "fsm.db")); err != nil {
					t.Fatal(err)
				}
			}
			s2 := openStore(t, dir, addr)
			if err := s2.WaitApplied(ctxT(t), applied); err != nil {
				t.Fatal(err)
			}
			checkImage(t, s2, "a", "before", before)
			checkImage(t, s2, "a", "after", after, "c")
			if _, err := s2.Tag("a", "b"); !errors.Is(err, meta.ErrManifestUnknown) {
				t.Errorf("tag deleted after the snapshot is back: %v", err)
			}
			m3 := pushImage(t, s2, "a", "third", "d")
			checkImage(t, s2, "a", "third", m3, "d")
		})
	}
}

// TestStoreBackup: Backup writes a bbolt file holding the data, and says
// which index it is as of.
func TestStoreBackup(t *testing.T) {
	s := openStore(t, t.TempDir(), freeAddr(t))
	m := pushImage(t, s, "a", "one", "v1")
	applied := s.AppliedIndex()
	var buf bytes.Buffer
	idx, err := s.Backup(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if idx < applied {
		t.Errorf("backup as of %d, applied was %d", idx, applied)
	}
	pushImage(t, s, "a", "later", "v2") // not in the backup

	path := filepath.Join(t.TempDir(), "backup.db")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatalf("backup is not a bbolt file: %v", err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		if got := appliedIn(tx); got != idx {
			t.Errorf("applied index in file %d, Backup said %d", got, idx)
		}
		var tr tagRecord
		if found, err := getJSON(tx.Bucket(bucketTags), key("a", "v1"), &tr); err != nil || !found || tr.Digest != m.Digest {
			t.Errorf("tag in backup: %+v %v %v", tr, found, err)
		}
		if tx.Bucket(bucketManifests).Get(key("a", m.Digest)) == nil {
			t.Error("manifest missing from backup")
		}
		if tx.Bucket(bucketTags).Get(key("a", "v2")) != nil {
			t.Error("backup holds a write made after it")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The file is a complete state machine: it opens as one.
	db.Close()
	f, err := openFSM(path, discardLogger())
	if err != nil {
		t.Fatalf("backup does not open as a state machine: %v", err)
	}
	defer f.close()
	if f.applied.get() != idx {
		t.Errorf("opened backup at index %d, want %d", f.applied.get(), idx)
	}
}

// TestStoreClosed: after Close, writes and read indexes fail instead of
// hanging.
func TestStoreClosed(t *testing.T) {
	s := openStore(t, t.TempDir(), freeAddr(t))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := s.Apply(ctxT(t), &meta.Command{Type: meta.CmdNoop}); err == nil {
		t.Error("Apply after Close succeeded")
	}
	if _, err := s.ReadIndex(ctxT(t)); err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("ReadIndex after Close: %v", err)
	}
}
