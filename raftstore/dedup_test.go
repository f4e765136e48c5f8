package raftstore

import (
	"fmt"
	"testing"
	"time"

	"github.com/flotilla/flotilla/meta"
)

func TestCommandsAppliedAtMostOnce(t *testing.T) {
	const repo = "lib/app"
	start := func(id string, at int64) *meta.Command {
		return &meta.Command{Type: meta.CmdStartUpload, Time: at, ID: id, Repo: repo,
			Upload: &meta.Upload{ID: "u1", Repo: repo, Algorithm: "sha256"}}
	}
	advance := func(id string, from, to int64) *meta.Command {
		return &meta.Command{Type: meta.CmdUpdateUpload, Time: 20, ID: id, Repo: repo, ExpectOffset: from,
			Upload: &meta.Upload{ID: "u1", Repo: repo, Offset: to}}
	}
	db := testDB(t)
	cases := []struct {
		name string
		c    *meta.Command
		want error // nil: success
	}{
		{"start", start("a", 10), nil},
		{"start resent with its id", start("a", 11), nil},
		{"start again under another id", start("b", 12), meta.ErrInvalidCommand},
		{"advance 0->5", advance("c", 0, 5), nil},
		{"advance resent with its id", advance("c", 0, 5), nil},
		{"advance 0->5 under another id", advance("d", 0, 5), meta.ErrRangeInvalid},
		{"the refusal is remembered too", advance("d", 5, 9), meta.ErrRangeInvalid},
	}
	for _, c := range cases {
		res := applyCmd(t, db, c.c)
		if c.want == nil {
			if err := res.Err(); err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
			continue
		}
		checkErr(t, res, c.want)
	}
	if u, ok := get[meta.Upload](t, db, bucketUploads, []byte("u1")); !ok || u.Offset != 5 {
		t.Fatalf("session after resends: %+v (found %v), want offset 5", u, ok)
	}
}

func TestCommandIDsForgottenAfterMemory(t *testing.T) {
	db := testDB(t)
	noop := func(id string, at time.Duration) *meta.Command {
		return &meta.Command{Type: meta.CmdNoop, ID: id, Time: int64(at)}
	}
	for i := range prunePerCommand + 10 {
		applyCmd(t, db, noop(fmt.Sprintf("old%03d", i), time.Second+time.Duration(i)))
	}
	// Within memory: nothing forgotten.
	applyCmd(t, db, noop("mid", commandMemory))
	if !has(t, db, bucketCommands, []byte("old000")) {
		t.Fatal("an id was forgotten within the memory")
	}
	// Past it: each command forgets at most prunePerCommand, oldest first.
	later := commandMemory + time.Hour
	applyCmd(t, db, noop("new1", later))
	if has(t, db, bucketCommands, []byte("old000")) || has(t, db, bucketCommands, []byte(fmt.Sprintf("old%03d", prunePerCommand-1))) {
		t.Fatal("the oldest ids were not forgotten")
	}
	if !has(t, db, bucketCommands, []byte(fmt.Sprintf("old%03d", prunePerCommand))) {
		t.Fatal("more than prunePerCommand ids forgotten by one command")
	}
	applyCmd(t, db, noop("new2", later))
	for _, id := range []string{fmt.Sprintf("old%03d", prunePerCommand+9), "mid"} {
		if has(t, db, bucketCommands, []byte(id)) {
			t.Errorf("%s not forgotten", id)
		}
	}
	for _, id := range []string{"new1", "new2"} {
		if !has(t, db, bucketCommands, []byte(id)) {
			t.Errorf("%s forgotten", id)
		}
	}
}
