package raftstore

import (
	"errors"
	"slices"
	"testing"

	"github.com/flotilla/flotilla/meta"
	bolt "go.etcd.io/bbolt"
)

// sentinels are every domain error apply can answer with; a result must be
// errors.Is its own sentinel and no other.
var sentinels = []*meta.CodeError{meta.ErrNameUnknown, meta.ErrManifestUnknown, meta.ErrManifestBlobUnknown,
	meta.ErrBlobUnknown, meta.ErrUploadUnknown, meta.ErrRangeInvalid, meta.ErrTagConflict, meta.ErrDenied,
	meta.ErrInvalidCommand}

func checkErr(t *testing.T, res *meta.Result, want error) {
	t.Helper()
	got := res.Err()
	if want == nil {
		if got != nil {
			t.Fatalf("got error %v, want success", got)
		}
		return
	}
	if !errors.Is(got, want) {
		t.Fatalf("got %v (code %q), want errors.Is %v", got, res.Code, want)
	}
	for _, s := range sentinels {
		if s != want && errors.Is(got, s) {
			t.Errorf("%v is also errors.Is %v", got, s)
		}
	}
}

type applyCase struct {
	name  string
	setup []*meta.Command
	cmd   *meta.Command
	// want is the sentinel the result's error must match (nil: success).
	// A refused command must leave every bucket byte for byte as it was.
	want  error
	check func(t *testing.T, db *bolt.DB, res *meta.Result)
}

func runApplyCases(t *testing.T, cases []applyCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			db := testDB(t)
			for _, c := range tc.setup {
				mustApply(t, db, c)
			}
			before := dump(t, db)
			res := applyCmd(t, db, tc.cmd)
			checkErr(t, res, tc.want)
			if tc.want != nil {
				if after := dump(t, db); after != before {
					t.Errorf("refused %s changed the state:\nbefore:\n%s\nafter:\n%s", tc.cmd.Type, before, after)
				}
			}
			if tc.check != nil {
				tc.check(t, db, res)
			}
		})
	}
}

func concat(groups ...[]*meta.Command) []*meta.Command { return slices.Concat(groups...) }

func TestApplyPutManifest(t *testing.T) {
	withBlobs := manifest("with blobs", []string{blobA, blobB}, nil)
	child := manifest("child", []string{blobA}, nil)
	index := manifest("index", nil, []string{child.Digest})
	other := manifest("other", []string{blobA}, nil)
	referrer := manifest("referrer", []string{blobA}, nil)
	referrer.Subject, referrer.ArtifactType = subjD, "application/vnd.example.sbom"
	referrer.Annotations = map[string]string{"org.example": "x"}

	blobsInRepo := concat(uploadBlob("r", "u1", blobA, "k/a", 3), uploadBlob("r", "u2", blobB, "k/b", 4))

	cases := []applyCase{
		{
			name: "no blob present",
			cmd:  putManifest("r", withBlobs, "v1"),
			want: meta.ErrManifestBlobUnknown,
		},
		{
			name:  "one blob of two present",
			setup: uploadBlob("r", "u1", blobA, "k/a", 3),
			cmd:   putManifest("r", withBlobs, "v1"),
			want:  meta.ErrManifestBlobUnknown,
			check: func(t *testing.T, db *bolt.DB, res *meta.Result) {
				if res.Detail != blobB {
					t.Errorf("detail %q, want the missing digest %s", res.Detail, blobB)
				}
			},
		},
		{
			name:  "blobs linked only into another repository",
			setup: concat(uploadBlob("elsewhere", "u1", blobA, "k/a", 3), uploadBlob("elsewhere", "u2", blobB, "k/b", 4)),
			cmd:   putManifest("r", withBlobs, "v1"),
			want:  meta.ErrManifestBlobUnknown,
		},
		{
			name:  "blob unlinked from the repository",
			setup: concat(blobsInRepo, []*meta.Command{{Type: meta.CmdUnlinkBlob, Repo: "r", Digest: blobB}}),
			cmd:   putManifest("r", withBlobs, "v1"),
			want:  meta.ErrManifestBlobUnknown,
		},
		{
			name:  "index child missing",
			setup: uploadBlob("r", "u1", blobA, "k/a", 3),
			cmd:   putManifest("r", index, "multi"),
			want:  meta.ErrManifestUnknown,
			check: func(t *testing.T, db *bolt.DB, res *meta.Result) {
				if res.Detail != child.Digest {
					t.Errorf("detail %q, want the missing child %s", res.Detail, child.Digest)
				}
			},
		},
		{
			name:  "index child only in another repository",
			setup: concat(uploadBlob("elsewhere", "u1", blobA, "k/a", 3), []*meta.Command{putManifest("elsewhere", child)}),
			cmd:   putManifest("r", index, "multi"),
			want:  meta.ErrManifestUnknown,
		},
		{
			name:  "invalid tag",
			setup: blobsInRepo,
			cmd:   putManifest("r", withBlobs, "v1", "-bad"),
			want:  meta.ErrInvalidCommand,
		},
		{
			name: "invalid repository",
			cmd:  &meta.Command{Type: meta.CmdPutManifest, Repo: "Upper/Case", Manifest: withBlobs, AllowSparse: true},
			want: meta.ErrNameUnknown,
		},
		{
			name: "manifest missing",
			cmd:  &meta.Command{Type: meta.CmdPutManifest, Repo: "r", Tags: []string{"v1"}},
			want: meta.ErrInvalidCommand,
		},
		{
			name: "manifest without digest",
			cmd:  &meta.Command{Type: meta.CmdPutManifest, Repo: "r", Manifest: &meta.Manifest{Raw: manRaw}},
			want: meta.ErrInvalidCommand,
		},
		{
			name: "sparse allows missing blobs and children",
			cmd: &meta.Command{Type: meta.CmdPutManifest, Time: 7, Repo: "r", AllowSparse: true, Tags: []string{"sparse"},
				Manifest: manifest("sparse", []string{blobA, blobB}, []string{child.Digest})},
			check: func(t *testing.T, db *bolt.DB, res *meta.Result) {
				m := manifest("sparse", []string{blobA, blobB}, []string{child.Digest})
				if !has(t, db, bucketManifests, key("r", m.Digest)) {
					t.Error("sparse manifest not stored")
				}
				if tr, ok := get[tagRecord](t, db, bucketTags, key("r", "sparse")); !ok || tr.Digest != m.Digest {
					t.Errorf("tag = %+v, %v", tr, ok)
				}
				if !has(t, db, bucketRepos, []byte("r")) {
					t.Error("repository not created")
				}
			},
		},
		{
			name:  "blobs present: stored and tagged",
			setup: blobsInRepo,
			cmd:   putManifest("r", withBlobs, "v1", "latest"),
			check: func(t *testing.T, db *bolt.DB, res *meta.Result) {
				m, ok := get[meta.Manifest](t, db, bucketManifests, key("r", withBlobs.Digest))
				if !ok {
					t.Fatal("manifest not stored")
				}
				if string(m.Raw) != string(withBlobs.Raw) || m.MediaType != mtManifest || m.Created != 100 {
					t.Errorf("stored %+v", m)
				}
				for _, tag := range []string{"v1", "latest"} {
					tr, ok := get[tagRecord](t, db, bucketTags, key("r", tag))
					if !ok || tr.Digest != withBlobs.Digest || tr.Updated != 100 {
						t.Errorf("tag %s = %+v, %v", tag, tr, ok)
					}
				}
			},
		},
		{
			name:  "index with children present",
			setup: concat(uploadBlob("r", "u1", blobA, "k/a", 3), []*meta.Command{putManifest("r", child)}),
			cmd:   putManifest("r", index, "multi"),
			check: func(t *testing.T, db *bolt.DB, res *meta.Result) {
				if tr, ok := get[tagRecord](t, db, bucketTags, key("r", "multi")); !ok || tr.Digest != index.Digest {
					t.Errorf("tag = %+v, %v", tr, ok)
				}
			},
		},
		{
			name:  "retag moves the tag, keeps the old manifest",
			setup: concat(blobsInRepo, []*meta.Command{putManifest("r", withBlobs, "v1")}),
			cmd:   putManifest("r", other, "v1"),
			check: func(t *testing.T, db *bolt.DB, res *meta.Result) {
				if tr, _ := get[tagRecord](t, db, bucketTags, key("r", "v1")); tr.Digest != other.Digest {
					t.Errorf("v1 -> %s, want %s", tr.Digest, other.Digest)
				}
				if !has(t, db, bucketManifests, key("r", withBlobs.Digest)) {
					t.Error("old manifest gone")
				}
			},
		},
		{
			name: "re-push keeps the first record and adds the tag",
			setup: concat(blobsInRepo, []*meta.Command{
				{Type: meta.CmdPutManifest, Time: 50, Repo: "r", Manifest: withBlobs, Tags: []string{"v1"}}}),
			cmd: putManifest("r", withBlobs, "v2"),
			check: func(t *testing.T, db *bolt.DB, res *meta.Result) {
				m, _ := get[meta.Manifest](t, db, bucketManifests, key("r", withBlobs.Digest))
				if m.Created != 50 {
					t.Errorf("created %d, want the first push's 50", m.Created)
				}
				for _, tag := range []string{"v1", "v2"} {
					if tr, _ := get[tagRecord](t, db, bucketTags, key("r", tag)); tr.Digest != withBlobs.Digest {
						t.Errorf("tag %s -> %q", tag, tr.Digest)
					}
				}
			},
		},
		{
			name:  "subject creates a referrers entry (subject need not exist)",
			setup: uploadBlob("r", "u1", blobA, "k/a", 3),
			cmd:   putManifest("r", referrer),
			check: func(t *testing.T, db *bolt.DB, res *meta.Result) {
				d, ok := get[meta.Descriptor](t, db, bucketReferrers, key("r", subjD, referrer.Digest))
				if !ok {
					t.Fatal("no referrers entry")
				}
				want := meta.Descriptor{MediaType: mtManifest, Digest: referrer.Digest, Size: int64(len(referrer.Raw)),
					ArtifactType: referrer.ArtifactType, Annotations: referrer.Annotations}
				if mustJSON(t, d) != mustJSON(t, want) {
					t.Errorf("descriptor %s, want %s", mustJSON(t, d), mustJSON(t, want))
				}
			},
		},
		{
			name:  "no subject, no referrers entry",
			setup: blobsInRepo,
			cmd:   putManifest("r", withBlobs),
			check: func(t *testing.T, db *bolt.DB, res *meta.Result) {
				db.View(func(tx *bolt.Tx) error {
					if k, _ := tx.Bucket(bucketReferrers).Cursor().First(); k != nil {
						t.Errorf("unexpected referrers entry %q", k)
					}
					return nil
				})
			},
		},
	}
	runApplyCases(t, cases)
}

func TestApplyDeletes(t *testing.T) {
	m1 := manifest("one", []string{blobA}, nil)
	m2 := manifest("two", []string{blobA}, nil)
	ref := manifest("ref", []string{blobA}, nil)
	ref.Subject = m1.Digest
	base := concat(uploadBlob("r", "u1", blobA, "k/a", 3), []*meta.Command{
		putManifest("r", m1, "a", "b"),
		putManifest("r", m2, "c"),
		putManifest("r", ref, "sig"),
		// The same manifest in another repository, tagged alike.
		{Type: meta.CmdPutManifest, Repo: "s", Manifest: m1, Tags: []string{"a"}, AllowSparse: true},
	})

	cases := []applyCase{
		{
			name:  "delete manifest removes it and its tags only",
			setup: base,
			cmd:   &meta.Command{Type: meta.CmdDeleteManifest, Repo: "r", Digest: m1.Digest},
			check: func(t *testing.T, db *bolt.DB, res *meta.Result) {
				if has(t, db, bucketManifests, key("r", m1.Digest)) {
					t.Error("manifest still stored")
				}
				for _, tag := range []string{"a", "b"} {
					if has(t, db, bucketTags, key("r", tag)) {
						t.Errorf("tag %s survived its manifest", tag)
					}
				}
				if tr, _ := get[tagRecord](t, db, bucketTags, key("r", "c")); tr.Digest != m2.Digest {
					t.Error("tag of another manifest removed")
				}
				if !has(t, db, bucketManifests, key("s", m1.Digest)) || !has(t, db, bucketTags, key("s", "a")) {
					t.Error("the same manifest in another repository was touched")
				}
				// Referrers whose subject was deleted stay (the spec lets
				// a referrer outlive its subject).
				if !has(t, db, bucketReferrers, key("r", m1.Digest, ref.Digest)) {
					t.Error("referrer of the deleted manifest removed")
				}
				if !has(t, db, bucketLinks, key("r", blobA)) {
					t.Error("blob link removed with the manifest")
				}
			},
		},
		{
			name:  "delete referrer removes its referrers entry",
			setup: base,
			cmd:   &meta.Command{Type: meta.CmdDeleteManifest, Repo: "r", Digest: ref.Digest},
			check: func(t *testing.T, db *bolt.DB, res *meta.Result) {
				if has(t, db, bucketReferrers, key("r", m1.Digest, ref.Digest)) {
					t.Error("referrers entry survived")
				}
				if has(t, db, bucketTags, key("r", "sig")) {
					t.Error("tag sig survived")
				}
			},
		},
		{
			name:  "delete unknown manifest",
			setup: base,
			cmd:   &meta.Command{Type: meta.CmdDeleteManifest, Repo: "r", Digest: blobC},
			want:  meta.ErrManifestUnknown,
		},
		{
			name:  "delete manifest of another repository",
			setup: base,
			cmd:   &meta.Command{Type: meta.CmdDeleteManifest, Repo: "t", Digest: m1.Digest},
			want:  meta.ErrManifestUnknown,
		},
		{
			name:  "delete tag keeps the manifest and other tags",
			setup: base,
			cmd:   &meta.Command{Type: meta.CmdDeleteTag, Repo: "r", Tag: "a"},
			check: func(t *testing.T, db *bolt.DB, res *meta.Result) {
				if has(t, db, bucketTags, key("r", "a")) {
					t.Error("tag still there")
				}
				if !has(t, db, bucketTags, key("r", "b")) || !has(t, db, bucketManifests, key("r", m1.Digest)) {
					t.Error("manifest or sibling tag removed")
				}
				if !has(t, db, bucketTags, key("s", "a")) {
					t.Error("same tag in another repository removed")
				}
			},
		},
		{
			name:  "delete unknown tag",
			setup: base,
			cmd:   &meta.Command{Type: meta.CmdDeleteTag, Repo: "r", Tag: "nope"},
			want:  meta.ErrManifestUnknown,
		},
		{
			name: "delete tag of unknown repository",
			cmd:  &meta.Command{Type: meta.CmdDeleteTag, Repo: "r", Tag: "a"},
			want: meta.ErrManifestUnknown,
		},
	}
	runApplyCases(t, cases)
}

func TestApplyBlobLinks(t *testing.T) {
	inSrc := uploadBlob("src", "u1", blobA, "k/a", 3)
	cases := []applyCase{
		{
			name:  "mount from a repository holding the blob",
			setup: inSrc,
			cmd:   &meta.Command{Type: meta.CmdMountBlob, Time: 20, Repo: "dst", Digest: blobA, From: "src"},
			check: func(t *testing.T, db *bolt.DB, res *meta.Result) {
				if res.Blob == nil || res.Blob.Key != "k/a" || res.Blob.Size != 3 || res.Blob.Digest != blobA {
					t.Errorf("result blob %+v", res.Blob)
				}
				if !has(t, db, bucketLinks, key("dst", blobA)) || !has(t, db, bucketRepos, []byte("dst")) {
					t.Error("link or repository missing")
				}
			},
		},
		{
			name:  "mount without from, blob indexed anywhere",
			setup: inSrc,
			cmd:   &meta.Command{Type: meta.CmdMountBlob, Repo: "dst", Digest: blobA},
			check: func(t *testing.T, db *bolt.DB, res *meta.Result) {
				if !has(t, db, bucketLinks, key("dst", blobA)) {
					t.Error("not linked")
				}
			},
		},
		{
			name:  "mount into a repository that already has it",
			setup: inSrc,
			cmd:   &meta.Command{Type: meta.CmdMountBlob, Repo: "src", Digest: blobA, From: "src"},
			check: func(t *testing.T, db *bolt.DB, res *meta.Result) {
				if res.Blob == nil || res.Blob.Key != "k/a" {
					t.Errorf("result blob %+v", res.Blob)
				}
			},
		},
		{
			name: "mount from a repository without the blob",
			setup: concat(inSrc, []*meta.Command{{Type: meta.CmdMountBlob, Repo: "other", Digest: blobA, From: "src"},
				{Type: meta.CmdUnlinkBlob, Repo: "other", Digest: blobA}}),
			cmd:  &meta.Command{Type: meta.CmdMountBlob, Repo: "dst", Digest: blobA, From: "other"},
			want: meta.ErrBlobUnknown,
		},
		{
			name:  "mount from an unknown repository",
			setup: inSrc,
			cmd:   &meta.Command{Type: meta.CmdMountBlob, Repo: "dst", Digest: blobA, From: "nowhere"},
			want:  meta.ErrBlobUnknown,
		},
		{
			name: "mount of an unindexed blob without from",
			cmd:  &meta.Command{Type: meta.CmdMountBlob, Repo: "dst", Digest: blobB},
			want: meta.ErrBlobUnknown,
		},
		{
			name:  "mount into an invalid repository",
			setup: inSrc,
			cmd:   &meta.Command{Type: meta.CmdMountBlob, Repo: "-dst", Digest: blobA, From: "src"},
			want:  meta.ErrNameUnknown,
		},
		{
			name:  "unlink removes the link, keeps the index",
			setup: concat(inSrc, []*meta.Command{{Type: meta.CmdMountBlob, Repo: "dst", Digest: blobA}}),
			cmd:   &meta.Command{Type: meta.CmdUnlinkBlob, Repo: "src", Digest: blobA},
			check: func(t *testing.T, db *bolt.DB, res *meta.Result) {
				if has(t, db, bucketLinks, key("src", blobA)) {
					t.Error("still linked")
				}
				if !has(t, db, bucketLinks, key("dst", blobA)) || !has(t, db, bucketBlobs, []byte(blobA)) {
					t.Error("other link or index entry removed")
				}
			},
		},
		{
			name:  "unlink a blob the repository does not have",
			setup: inSrc,
			cmd:   &meta.Command{Type: meta.CmdUnlinkBlob, Repo: "dst", Digest: blobA},
			want:  meta.ErrBlobUnknown,
		},
	}
	runApplyCases(t, cases)
}

func TestApplyUploads(t *testing.T) {
	start := func(repo, id string) *meta.Command {
		return &meta.Command{Type: meta.CmdStartUpload, Time: 10, Repo: repo,
			Upload: &meta.Upload{ID: id, Repo: repo, Algorithm: "sha256", Driver: []byte(`{"key":"k"}`)}}
	}
	update := func(repo, id string, expect, offset int64) *meta.Command {
		return &meta.Command{Type: meta.CmdUpdateUpload, Time: 30, Repo: repo, ExpectOffset: expect,
			Upload: &meta.Upload{ID: id, Repo: repo, Offset: offset, HashState: []byte("h"), Driver: []byte(`{"key":"k2"}`)}}
	}
	complete := func(repo, id string, expect int64, dgst, key string) *meta.Command {
		return &meta.Command{Type: meta.CmdCompleteUpload, Time: 40, Repo: repo, ExpectOffset: expect,
			Upload: &meta.Upload{ID: id}, Blob: &meta.Blob{Digest: dgst, Key: key, Size: expect}}
	}
	cases := []applyCase{
		{
			name: "start",
			cmd:  start("r", "u1"),
			check: func(t *testing.T, db *bolt.DB, res *meta.Result) {
				u, ok := get[meta.Upload](t, db, bucketUploads, []byte("u1"))
				if !ok || u.Repo != "r" || u.Offset != 0 || u.Started != 10 || u.Updated != 10 || string(u.Driver) != `{"key":"k"}` {
					t.Errorf("session %+v, %v", u, ok)
				}
			},
		},
		{
			name:  "start an id already in use",
			setup: []*meta.Command{start("r", "u1")},
			cmd:   start("s", "u1"),
			want:  meta.ErrInvalidCommand,
		},
		{
			name: "start with a session of another repository",
			cmd: &meta.Command{Type: meta.CmdStartUpload, Repo: "r",
				Upload: &meta.Upload{ID: "u1", Repo: "s"}},
			want: meta.ErrInvalidCommand,
		},
		{
			name: "start without id",
			cmd:  &meta.Command{Type: meta.CmdStartUpload, Repo: "r", Upload: &meta.Upload{Repo: "r"}},
			want: meta.ErrInvalidCommand,
		},
		{
			name: "start in an invalid repository",
			cmd:  start("R", "u1"),
			want: meta.ErrNameUnknown,
		},
		{
			name:  "update at the expected offset",
			setup: []*meta.Command{start("r", "u1"), update("r", "u1", 0, 5)},
			cmd:   update("r", "u1", 5, 12),
			check: func(t *testing.T, db *bolt.DB, res *meta.Result) {
				u, _ := get[meta.Upload](t, db, bucketUploads, []byte("u1"))
				if u.Offset != 12 || u.Started != 10 || u.Updated != 30 || u.Repo != "r" ||
					string(u.HashState) != "h" || string(u.Driver) != `{"key":"k2"}` {
					t.Errorf("session %+v", u)
				}
			},
		},
		{
			name:  "update behind the offset (replayed chunk)",
			setup: []*meta.Command{start("r", "u1"), update("r", "u1", 0, 5)},
			cmd:   update("r", "u1", 0, 5),
			want:  meta.ErrRangeInvalid,
		},
		{
			name:  "update ahead of the offset",
			setup: []*meta.Command{start("r", "u1")},
			cmd:   update("r", "u1", 3, 9),
			want:  meta.ErrRangeInvalid,
		},
		{
			name: "update unknown session",
			cmd:  update("r", "nope", 0, 5),
			want: meta.ErrUploadUnknown,
		},
		{
			name:  "update a session of another repository",
			setup: []*meta.Command{start("r", "u1")},
			cmd:   update("s", "u1", 0, 5),
			want:  meta.ErrUploadUnknown,
		},
		{
			name:  "complete indexes and links the blob, closes the session",
			setup: []*meta.Command{start("r", "u1"), update("r", "u1", 0, 3)},
			cmd:   complete("r", "u1", 3, blobA, "k/a"),
			check: func(t *testing.T, db *bolt.DB, res *meta.Result) {
				if res.Deduplicated {
					t.Error("first upload reported as deduplicated")
				}
				if res.Blob == nil || res.Blob.Key != "k/a" || res.Blob.Digest != blobA || res.Blob.Created != 40 {
					t.Errorf("result blob %+v", res.Blob)
				}
				b, ok := get[meta.Blob](t, db, bucketBlobs, []byte(blobA))
				if !ok || b.Key != "k/a" || b.Size != 3 || b.Created != 40 {
					t.Errorf("index %+v, %v", b, ok)
				}
				if !has(t, db, bucketLinks, key("r", blobA)) || !has(t, db, bucketRepos, []byte("r")) {
					t.Error("not linked")
				}
				if has(t, db, bucketUploads, []byte("u1")) {
					t.Error("session still open")
				}
			},
		},
		{
			name: "complete a digest already indexed: deduplicated",
			setup: concat(uploadBlob("r", "u0", blobA, "k/first", 3),
				[]*meta.Command{start("s", "u1"), update("s", "u1", 0, 3)}),
			cmd: complete("s", "u1", 3, blobA, "k/second"),
			check: func(t *testing.T, db *bolt.DB, res *meta.Result) {
				if !res.Deduplicated {
					t.Error("not reported as deduplicated")
				}
				if res.Blob == nil || res.Blob.Key != "k/first" {
					t.Errorf("result blob %+v, want the existing key k/first", res.Blob)
				}
				if b, _ := get[meta.Blob](t, db, bucketBlobs, []byte(blobA)); b.Key != "k/first" {
					t.Errorf("index now points at %q", b.Key)
				}
				if !has(t, db, bucketLinks, key("s", blobA)) {
					t.Error("not linked into s")
				}
				if has(t, db, bucketUploads, []byte("u1")) {
					t.Error("session still open")
				}
			},
		},
		{
			name:  "complete at a stale offset",
			setup: []*meta.Command{start("r", "u1"), update("r", "u1", 0, 3)},
			cmd:   complete("r", "u1", 0, blobA, "k/a"),
			want:  meta.ErrRangeInvalid,
		},
		{
			name:  "complete a session of another repository",
			setup: []*meta.Command{start("r", "u1")},
			cmd:   complete("s", "u1", 0, blobA, "k/a"),
			want:  meta.ErrUploadUnknown,
		},
		{
			name: "complete an unknown session",
			cmd:  complete("r", "u1", 0, blobA, "k/a"),
			want: meta.ErrUploadUnknown,
		},
		{
			name:  "complete without a blob key",
			setup: []*meta.Command{start("r", "u1")},
			cmd:   complete("r", "u1", 0, blobA, ""),
			want:  meta.ErrInvalidCommand,
		},
		{
			name:  "cancel",
			setup: []*meta.Command{start("r", "u1"), start("r", "u2")},
			cmd:   &meta.Command{Type: meta.CmdCancelUpload, Repo: "r", Upload: &meta.Upload{ID: "u1"}},
			check: func(t *testing.T, db *bolt.DB, res *meta.Result) {
				if has(t, db, bucketUploads, []byte("u1")) {
					t.Error("session still open")
				}
				if !has(t, db, bucketUploads, []byte("u2")) {
					t.Error("other session closed")
				}
			},
		},
		{
			name: "cancel an unknown session",
			cmd:  &meta.Command{Type: meta.CmdCancelUpload, Repo: "r", Upload: &meta.Upload{ID: "u1"}},
			want: meta.ErrUploadUnknown,
		},
		{
			name:  "cancel a session of another repository",
			setup: []*meta.Command{start("r", "u1")},
			cmd:   &meta.Command{Type: meta.CmdCancelUpload, Repo: "s", Upload: &meta.Upload{ID: "u1"}},
			want:  meta.ErrUploadUnknown,
		},
		{
			name: "cancel without a session",
			cmd:  &meta.Command{Type: meta.CmdCancelUpload, Repo: "r"},
			want: meta.ErrInvalidCommand,
		},
		{
			name:  "noop",
			setup: []*meta.Command{start("r", "u1")},
			cmd:   &meta.Command{Type: meta.CmdNoop},
		},
		{
			name: "unknown type given to apply directly",
			cmd:  &meta.Command{Type: meta.CommandType(99), Repo: "r"},
			want: meta.ErrInvalidCommand,
		},
	}
	runApplyCases(t, cases)
}

// TestResultErrorsRoundTrip: a result's code, carried across nodes, turns
// back into an error that errors.Is its sentinel, keeps its detail, and is
// never nil for a code this build does not know.
func TestResultErrorsRoundTrip(t *testing.T) {
	for _, s := range sentinels {
		t.Run(string(s.Code), func(t *testing.T) {
			res := &meta.Result{Code: s.Code, Detail: "the detail"}
			err := res.Err()
			if !errors.Is(err, s) {
				t.Fatalf("%v is not %v", err, s)
			}
			var ce *meta.CodeError
			if !errors.As(err, &ce) || ce.Detail != "the detail" {
				t.Errorf("detail lost: %#v", err)
			}
			if !errors.Is(s.WithDetail("x"), s) {
				t.Error("WithDetail copy is not errors.Is its sentinel")
			}
		})
	}
	if err := (&meta.Result{}).Err(); err != nil {
		t.Errorf("empty code gave %v", err)
	}
	err := (&meta.Result{Code: "FROM_THE_FUTURE"}).Err()
	if err == nil {
		t.Fatal("unknown code gave nil")
	}
	for _, s := range sentinels {
		if errors.Is(err, s) {
			t.Errorf("unknown code matches %v", s)
		}
	}
}

func TestApplyMembers(t *testing.T) {
	n1 := &meta.Member{ID: "n1", RaftAddr: "10.0.0.1:7000", GRPCAddr: "10.0.0.1:7001", HTTPAddr: "10.0.0.1:5000"}
	runApplyCases(t, []applyCase{
		{
			name: "set member",
			cmd:  &meta.Command{Type: meta.CmdSetMember, Member: n1},
			check: func(t *testing.T, db *bolt.DB, res *meta.Result) {
				if m, ok := get[meta.Member](t, db, bucketMembers, []byte("n1")); !ok || m != *n1 {
					t.Errorf("member %+v, %v", m, ok)
				}
			},
		},
		{
			name: "set member without id",
			cmd:  &meta.Command{Type: meta.CmdSetMember, Member: &meta.Member{RaftAddr: "x:1"}},
			want: meta.ErrInvalidCommand,
		},
		{
			name:  "remove member",
			setup: []*meta.Command{{Type: meta.CmdSetMember, Member: n1}},
			cmd:   &meta.Command{Type: meta.CmdRemoveMember, Member: &meta.Member{ID: "n1"}},
			check: func(t *testing.T, db *bolt.DB, res *meta.Result) {
				if has(t, db, bucketMembers, []byte("n1")) {
					t.Error("member still recorded")
				}
			},
		},
		{
			name: "remove without member",
			cmd:  &meta.Command{Type: meta.CmdRemoveMember},
			want: meta.ErrInvalidCommand,
		},
	})
}
