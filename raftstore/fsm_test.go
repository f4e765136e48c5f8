package raftstore

import (
	"bytes"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flotilla/flotilla/meta"
	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

func testFSM(t *testing.T, path string) *fsm {
	t.Helper()
	f, err := openFSM(path, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.close() })
	return f
}

func results(t *testing.T, out []any) []*meta.Result {
	t.Helper()
	rs := make([]*meta.Result, len(out))
	for i, o := range out {
		if o == nil {
			continue
		}
		r, ok := o.(*meta.Result)
		if !ok {
			t.Fatalf("response %d is %T", i, o)
		}
		rs[i] = r
	}
	return rs
}

func TestFSMReplaySkipped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fsm.db")
	f := testFSM(t, path)
	m := manifest("m", nil, nil)
	put := &meta.Command{Type: meta.CmdPutManifest, Repo: "r", Manifest: m, Tags: []string{"v1"}, AllowSparse: true}
	del := &meta.Command{Type: meta.CmdDeleteManifest, Repo: "r", Digest: m.Digest}
	rs := results(t, f.ApplyBatch([]*raft.Log{logEntry(t, 4, put)}))
	if rs[0] == nil || rs[0].Err() != nil || rs[0].Index != 4 {
		t.Fatalf("first apply: %+v", rs[0])
	}
	if got := f.applied.get(); got != 4 {
		t.Fatalf("applied index %d, want 4", got)
	}

	cases := []struct {
		name string
		logs []*raft.Log
	}{
		{"same index", []*raft.Log{logEntry(t, 4, del)}},
		{"lower index", []*raft.Log{logEntry(t, 2, del)}},
		{"batch of replays", []*raft.Log{logEntry(t, 3, del), logEntry(t, 4, del)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := fsmDump(t, f)
			rs := results(t, f.ApplyBatch(tc.logs))
			for i, r := range rs {
				if r == nil || r.Code != meta.CodeOK || r.Index != tc.logs[i].Index {
					t.Errorf("replayed entry %d answered %+v", tc.logs[i].Index, r)
				}
			}
			if after := fsmDump(t, f); after != before {
				t.Errorf("replay changed state:\n%s\n----\n%s", before, after)
			}
			if got := f.applied.get(); got != 4 {
				t.Errorf("applied index moved to %d", got)
			}
		})
	}

	// A batch that straddles the stored index applies only the new part.
	put2 := &meta.Command{Type: meta.CmdPutManifest, Repo: "r", Manifest: manifest("m2", nil, nil), Tags: []string{"v2"}, AllowSparse: true}
	rs = results(t, f.ApplyBatch([]*raft.Log{logEntry(t, 4, del), logEntry(t, 5, put2)}))
	if rs[1] == nil || rs[1].Err() != nil || rs[1].Index != 5 {
		t.Fatalf("new entry in a replayed batch: %+v", rs[1])
	}
	if err := f.view(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketManifests).Get(key("r", m.Digest)) == nil {
			return errors.New("replayed delete ran")
		}
		if tx.Bucket(bucketTags).Get(key("r", "v2")) == nil {
			return errors.New("new entry not applied")
		}
		if got := appliedIn(tx); got != 5 {
			return errors.New("stored applied index not 5")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// The stored index survives reopening the file, so a log replay after a
	// restart is skipped too.
	f.close()
	f2, err := openFSM(path, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer f2.close()
	if got := f2.applied.get(); got != 5 {
		t.Fatalf("reopened applied index %d, want 5", got)
	}
	before := fsmDump(t, f2)
	f2.ApplyBatch([]*raft.Log{logEntry(t, 5, del)})
	if after := fsmDump(t, f2); after != before {
		t.Error("replay after reopen changed state")
	}
}

func fsmDump(t *testing.T, f *fsm) string {
	t.Helper()
	f.mu.RLock()
	defer f.mu.RUnlock()
	return dump(t, f.db)
}

// TestFSMBadEntries: entries that do not decode answer INVALID_COMMAND,
// change nothing, and still advance the applied index (every node agrees on
// them, so skipping them keeps the replicas equal).
func TestFSMBadEntries(t *testing.T) {
	valid, err := (&meta.Command{Type: meta.CmdNoop}).Encode()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"type zero", append([]byte{0}, valid[1:]...)},
		{"type past the last", append([]byte{byte(firstUnknownType(t))}, valid[1:]...)},
		{"type 255", append([]byte{255}, valid[1:]...)},
		{"body not JSON", append([]byte{byte(meta.CmdPutManifest)}, "\x00garbage"...)},
		{"body of the wrong shape", append([]byte{byte(meta.CmdPutManifest)}, `{"tags":"not a list"}`...)},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := testFSM(t, filepath.Join(t.TempDir(), "fsm.db"))
			before := fsmDump(t, f)
			idx := uint64(10 + i)
			rs := results(t, f.ApplyBatch([]*raft.Log{{Index: idx, Type: raft.LogCommand, Data: tc.data}}))
			r := rs[0]
			if r == nil || r.Index != idx {
				t.Fatalf("result %+v", r)
			}
			if !errors.Is(r.Err(), meta.ErrInvalidCommand) {
				t.Errorf("error %v, want INVALID_COMMAND", r.Err())
			}
			if f.applied.get() != idx {
				t.Errorf("applied index %d, want %d", f.applied.get(), idx)
			}
			// Only the applied index may differ.
			if err := f.view(func(tx *bolt.Tx) error {
				for _, b := range allBuckets[1:] {
					if k, _ := tx.Bucket(b).Cursor().First(); k != nil {
						return errors.New(string(b) + " not empty")
					}
				}
				return nil
			}); err != nil {
				t.Errorf("%v (before: %s)", err, before)
			}
		})
	}
}

// firstUnknownType is the first command type after the known ones (the
// list only grows, so the test follows it).
func firstUnknownType(t *testing.T) meta.CommandType {
	t.Helper()
	for c := meta.CmdPutManifest; c < 255; c++ {
		if strings.HasPrefix(c.String(), "unknown") {
			return c
		}
	}
	t.Fatal("every command type is known")
	return 0
}

func TestDecodeCommand(t *testing.T) {
	c := &meta.Command{Type: meta.CmdMountBlob, Time: 42, Repo: "a/b", Digest: blobA, From: "c"}
	data, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if data[0] != byte(meta.CmdMountBlob) {
		t.Fatalf("type byte %d", data[0])
	}
	got, err := meta.DecodeCommand(data)
	if err != nil {
		t.Fatal(err)
	}
	if got.Type != c.Type || got.Time != 42 || got.Repo != "a/b" || got.Digest != blobA || got.From != "c" {
		t.Errorf("round trip gave %+v", got)
	}
	next := byte(firstUnknownType(t))
	for _, bad := range [][]byte{nil, {}, {0}, {next, '{', '}'}, {255, '{', '}'}, {1}, {1, '['}} {
		_, err := meta.DecodeCommand(bad)
		if !errors.Is(err, meta.ErrInvalidCommand) {
			t.Errorf("DecodeCommand(%q) = %v, want ErrInvalidCommand", bad, err)
		}
	}
}

// TestFSMConfigurationEntries: raft hands configuration entries to
// ApplyBatch; they move the applied index and nothing else.
func TestFSMConfigurationEntries(t *testing.T) {
	f := testFSM(t, filepath.Join(t.TempDir(), "fsm.db"))
	out := f.ApplyBatch([]*raft.Log{{Index: 1, Type: raft.LogConfiguration}, logEntry(t, 2, &meta.Command{Type: meta.CmdNoop}),
		{Index: 3, Type: raft.LogConfiguration}})
	if len(out) != 3 {
		t.Fatalf("%d responses for 3 entries", len(out))
	}
	if f.applied.get() != 3 || f.storedIndex() != 3 {
		t.Errorf("applied %d, stored %d, want 3", f.applied.get(), f.storedIndex())
	}
}

func TestFSMFormatVersion(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fsm.db")
	f := testFSM(t, path)
	f.close()
	db, err := bolt.Open(path, 0o640, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keyFormat, u64(formatVersion+1))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := openFSM(path, discardLogger()); !errors.Is(err, ErrFormat) {
		t.Fatalf("open of a newer format: %v, want ErrFormat", err)
	}
}

type memSink struct {
	bytes.Buffer
	canceled, closed bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { s.canceled = true; return nil }
func (s *memSink) Close() error  { s.closed = true; return nil }

// TestFSMSnapshotRestore: a snapshot taken before more writes restores the
// state as of the snapshot (writes after it gone), including its applied
// index, even when the target had moved further.
func TestFSMSnapshotRestore(t *testing.T) {
	src := testFSM(t, filepath.Join(t.TempDir(), "fsm.db"))
	put := func(f *fsm, idx uint64, name, tag string) {
		t.Helper()
		rs := results(t, f.ApplyBatch([]*raft.Log{logEntry(t, idx, &meta.Command{Type: meta.CmdPutManifest, Repo: "r",
			Manifest: manifest(name, nil, nil), Tags: []string{tag}, AllowSparse: true})}))
		if rs[0].Err() != nil {
			t.Fatal(rs[0].Err())
		}
	}
	put(src, 1, "one", "v1")
	snap, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	put(src, 2, "two", "v2") // concurrent with an open snapshot
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	if !sink.closed || sink.canceled {
		t.Fatalf("sink closed=%v canceled=%v", sink.closed, sink.canceled)
	}

	dst := testFSM(t, filepath.Join(t.TempDir(), "fsm.db"))
	put(dst, 7, "other", "x")
	if err := dst.Restore(nopCloser{bytes.NewReader(sink.Bytes())}); err != nil {
		t.Fatal(err)
	}
	if got := dst.applied.get(); got != 1 {
		t.Errorf("applied after restore %d, want the snapshot's 1", got)
	}
	s := &Store{fsm: dst}
	tags, _, err := s.Tags("r", "", 0)
	if err != nil || len(tags) != 1 || tags[0] != "v1" {
		t.Errorf("tags after restore %q, %v; want [v1]", tags, err)
	}
	// The restored state machine takes new entries.
	put(dst, 2, "two", "v2")
	if tags, _, _ := s.Tags("r", "", 0); len(tags) != 2 {
		t.Errorf("tags after new write %q", tags)
	}

	// A stream that is not a state file is refused and the state kept.
	if err := dst.Restore(nopCloser{bytes.NewReader([]byte("not a bbolt file"))}); err == nil {
		t.Error("restore of garbage succeeded")
	}
	if tags, _, err := s.Tags("r", "", 0); err != nil || len(tags) != 2 {
		t.Errorf("state after refused restore: %q, %v", tags, err)
	}
}

type nopCloser struct{ *bytes.Reader }

func (nopCloser) Close() error { return nil }
