package raftstore

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/flotilla/flotilla/meta"
	"github.com/hashicorp/raft"
	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// Helpers shared by the raftstore tests.

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// testDB opens a fresh state machine file (buckets and format version
// written, as openFSM leaves it).
func testDB(t *testing.T) *bolt.DB {
	t.Helper()
	db, err := openDB(filepath.Join(t.TempDir(), "fsm.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// applyCmd applies c in its own write transaction, as ApplyBatch does for
// a batch of one (at most once per command ID), and fails the test on an
// internal (non-domain) error.
func applyCmd(t *testing.T, db *bolt.DB, c *meta.Command) *meta.Result {
	t.Helper()
	var res *meta.Result
	err := db.Update(func(tx *bolt.Tx) error {
		var err error
		res, err = applyOnce(tx, c)
		return err
	})
	if err != nil {
		t.Fatalf("apply %s: internal error: %v", c.Type, err)
	}
	if res == nil {
		t.Fatalf("apply %s: nil result", c.Type)
	}
	return res
}

// mustApply applies c and fails unless it succeeded.
func mustApply(t *testing.T, db *bolt.DB, c *meta.Command) *meta.Result {
	t.Helper()
	res := applyCmd(t, db, c)
	if err := res.Err(); err != nil {
		t.Fatalf("apply %s: %v", c.Type, err)
	}
	return res
}

// dump renders every bucket of the state machine as "bucket/key=value"
// lines, so two states compare with ==.
func dump(t *testing.T, db *bolt.DB) string {
	t.Helper()
	var lines []string
	err := db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			return b.ForEach(func(k, v []byte) error {
				lines = append(lines, fmt.Sprintf("%s/%q=%q", name, k, v))
				return nil
			})
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func has(t *testing.T, db *bolt.DB, bucket []byte, k []byte) bool {
	t.Helper()
	var ok bool
	if err := db.View(func(tx *bolt.Tx) error {
		ok = tx.Bucket(bucket).Get(k) != nil
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return ok
}

func get[T any](t *testing.T, db *bolt.DB, bucket []byte, k []byte) (T, bool) {
	t.Helper()
	var v T
	var found bool
	if err := db.View(func(tx *bolt.Tx) error {
		if m, ok := any(&v).(*meta.Manifest); ok && bytes.Equal(bucket, bucketManifests) {
			rec, err := getManifest(tx.Bucket(bucket), k)
			if rec != nil {
				*m, found = *rec, true
			}
			return err
		}
		var err error
		found, err = getJSON(tx.Bucket(bucket), k, &v)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return v, found
}

func dg(s string) string { return digest.FromString(s).String() }

// Fixture digests.
var (
	blobA  = dg("blob a")
	blobB  = dg("blob b")
	blobC  = dg("blob c")
	subjD  = dg("a subject that was never pushed")
	manRaw = []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}`)
)

const (
	mtManifest = "application/vnd.oci.image.manifest.v1+json"
	mtIndex    = "application/vnd.oci.image.index.v1+json"
)

// manifest builds a manifest record whose digest is that of its raw bytes
// (raw is made unique by name).
func manifest(name string, blobs, children []string) *meta.Manifest {
	raw := append(bytes.Clone(manRaw[:len(manRaw)-1]), []byte(`,"annotations":{"name":"`+name+`"}}`)...)
	mt := mtManifest
	if len(children) > 0 {
		mt = mtIndex
	}
	return &meta.Manifest{Digest: digest.FromBytes(raw).String(), MediaType: mt, Raw: raw, Blobs: blobs, Children: children}
}

func putManifest(repo string, m *meta.Manifest, tags ...string) *meta.Command {
	return &meta.Command{Type: meta.CmdPutManifest, Time: 100, Repo: repo, Manifest: m, Tags: tags}
}

// uploadBlob is the command sequence that indexes dgst under key and links
// it into repo: start a session, advance it, complete it.
func uploadBlob(repo, id, dgst, key string, size int64) []*meta.Command {
	return []*meta.Command{
		{Type: meta.CmdStartUpload, Time: 10, Repo: repo, Upload: &meta.Upload{ID: id, Repo: repo, Algorithm: "sha256"}},
		{Type: meta.CmdUpdateUpload, Time: 11, Repo: repo, ExpectOffset: 0, Upload: &meta.Upload{ID: id, Repo: repo, Offset: size}},
		{Type: meta.CmdCompleteUpload, Time: 12, Repo: repo, ExpectOffset: size, Upload: &meta.Upload{ID: id},
			Blob: &meta.Blob{Digest: dgst, Key: key, Size: size}},
	}
}

func logEntry(t *testing.T, index uint64, c *meta.Command) *raft.Log {
	t.Helper()
	data, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: data}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
