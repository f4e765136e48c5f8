package raftstore

import (
	"errors"
	"path/filepath"
	"slices"
	"testing"

	"github.com/flotilla/flotilla/meta"
	"github.com/hashicorp/raft"
)

// readStore is a Store over a bare state machine: the read methods need
// nothing else.
func readStore(t *testing.T, cmds ...*meta.Command) *Store {
	t.Helper()
	f := testFSM(t, filepath.Join(t.TempDir(), "fsm.db"))
	logs := make([]*raft.Log, len(cmds))
	for i, c := range cmds {
		logs[i] = logEntry(t, uint64(i+1), c)
	}
	for i, r := range results(t, f.ApplyBatch(logs)) {
		if err := r.Err(); err != nil {
			t.Fatalf("setup command %d (%s): %v", i, cmds[i].Type, err)
		}
	}
	return &Store{fsm: f}
}

func tagCmd(repo string, tags ...string) *meta.Command {
	return &meta.Command{Type: meta.CmdPutManifest, Repo: repo, AllowSparse: true, Tags: tags,
		Manifest: manifest(repo, nil, nil)}
}

func TestTagsPagination(t *testing.T) {
	s := readStore(t,
		tagCmd("r", "v2", "latest", "v10", "a", "V1", "v1", "b_c", "b-c", "b.c", "c"),
		// Neighbours whose keys share a byte prefix with "r".
		tagCmd("r/sub", "zz-sub"), tagCmd("r-x", "zz-dash"), tagCmd("rr", "zz-rr"),
		tagCmd("empty", "gone"),
		&meta.Command{Type: meta.CmdDeleteTag, Repo: "empty", Tag: "gone"},
	)
	all := []string{"V1", "a", "b-c", "b.c", "b_c", "c", "latest", "v1", "v10", "v2"} // byte order
	cases := []struct {
		name     string
		repo     string
		last     string
		n        int
		want     []string
		wantMore bool
		wantErr  error
	}{
		{name: "all, no limit", repo: "r", want: all},
		{name: "negative n is no limit", repo: "r", n: -1, want: all},
		{name: "first page", repo: "r", n: 3, want: all[:3], wantMore: true},
		{name: "middle page", repo: "r", last: all[2], n: 3, want: all[3:6], wantMore: true},
		{name: "page ending exactly at the end", repo: "r", last: all[6], n: 3, want: all[7:]},
		{name: "n larger than what is left", repo: "r", last: "v1", n: 50, want: []string{"v10", "v2"}},
		{name: "last is the last tag", repo: "r", last: "v2", n: 3, want: []string{}},
		{name: "last after every tag", repo: "r", last: "zzz", want: []string{}},
		{name: "last is not a tag", repo: "r", last: "b", n: 2, want: []string{"b-c", "b.c"}, wantMore: true},
		{name: "last before every tag", repo: "r", last: "0", n: 1, want: []string{"V1"}, wantMore: true},
		{name: "n of one walks", repo: "r", last: "latest", n: 1, want: []string{"v1"}, wantMore: true},
		{name: "nested repository is separate", repo: "r/sub", want: []string{"zz-sub"}},
		{name: "repository with tags all deleted", repo: "empty", want: []string{}},
		{name: "unknown repository", repo: "nope", wantErr: meta.ErrNameUnknown},
		{name: "prefix of a repository is unknown", repo: "r/su", wantErr: meta.ErrNameUnknown},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, more, err := s.Tags(tc.repo, tc.last, tc.n)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got == nil || !slices.Equal(got, tc.want) || more != tc.wantMore {
				t.Errorf("Tags(%q, %q, %d) = %q, more=%v; want %q, more=%v", tc.repo, tc.last, tc.n, got, more, tc.want, tc.wantMore)
			}
		})
	}

	// Walking page by page visits every tag once, in order.
	var walked []string
	last := ""
	for range 20 {
		page, more, err := s.Tags("r", last, 4)
		if err != nil {
			t.Fatal(err)
		}
		walked = append(walked, page...)
		if !more {
			break
		}
		last = page[len(page)-1]
	}
	if !slices.Equal(walked, all) {
		t.Errorf("walk gave %q, want %q", walked, all)
	}
}

func TestRepositoriesPagination(t *testing.T) {
	s := readStore(t,
		tagCmd("b", "t"), tagCmd("a/b", "t"), tagCmd("a", "t"), tagCmd("ab", "t"), tagCmd("a-b", "t"),
		// Repositories appear with their first blob, too.
		&meta.Command{Type: meta.CmdStartUpload, Repo: "z/blobonly", Upload: &meta.Upload{ID: "u", Repo: "z/blobonly"}},
		&meta.Command{Type: meta.CmdCompleteUpload, Repo: "z/blobonly", Upload: &meta.Upload{ID: "u"},
			Blob: &meta.Blob{Digest: blobA, Key: "k"}},
		// An upload that was only started does not create one.
		&meta.Command{Type: meta.CmdStartUpload, Repo: "y/started", Upload: &meta.Upload{ID: "u2", Repo: "y/started"}},
	)
	all := []string{"a", "a-b", "a/b", "ab", "b", "z/blobonly"}
	cases := []struct {
		name     string
		last     string
		n        int
		want     []string
		wantMore bool
	}{
		{name: "all", want: all},
		{name: "first page", n: 2, want: all[:2], wantMore: true},
		{name: "after a", last: "a", n: 2, want: []string{"a-b", "a/b"}, wantMore: true},
		{name: "last page", last: "ab", n: 2, want: []string{"b", "z/blobonly"}},
		{name: "after the end", last: "z/blobonly", n: 2, want: []string{}},
		{name: "last not a repository", last: "a/a", want: []string{"a/b", "ab", "b", "z/blobonly"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, more, err := s.Repositories(tc.last, tc.n)
			if err != nil {
				t.Fatal(err)
			}
			if got == nil || !slices.Equal(got, tc.want) || more != tc.wantMore {
				t.Errorf("Repositories(%q, %d) = %q, more=%v; want %q, more=%v", tc.last, tc.n, got, more, tc.want, tc.wantMore)
			}
		})
	}
}

func TestReferrersOrder(t *testing.T) {
	subject := dg("subject")
	var cmds []*meta.Command
	var want []string
	for _, name := range []string{"r1", "r2", "r3", "r4"} {
		m := manifest(name, nil, nil)
		m.Subject = subject
		cmds = append(cmds, &meta.Command{Type: meta.CmdPutManifest, Repo: "r", Manifest: m, AllowSparse: true})
		want = append(want, m.Digest)
	}
	// Same subject in another repository, another subject in this one.
	other := manifest("other", nil, nil)
	other.Subject = subject
	cmds = append(cmds, &meta.Command{Type: meta.CmdPutManifest, Repo: "s", Manifest: other, AllowSparse: true})
	nested := manifest("nested", nil, nil)
	nested.Subject = dg("another subject")
	cmds = append(cmds, &meta.Command{Type: meta.CmdPutManifest, Repo: "r", Manifest: nested, AllowSparse: true})
	s := readStore(t, cmds...)
	slices.Sort(want)
	refs, err := s.Referrers("r", subject)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range refs {
		got = append(got, d.Digest)
	}
	if !slices.Equal(got, want) {
		t.Errorf("referrers %q, want %q (digest order)", got, want)
	}
	if refs, err := s.Referrers("nope", subject); err != nil || refs == nil || len(refs) != 0 {
		t.Errorf("referrers of an unknown repository: %v, %v (want an empty list)", refs, err)
	}
}
