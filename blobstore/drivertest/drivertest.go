// Package drivertest is the behaviour every blobstore.Driver must have, as a
// test suite that each driver's tests run against their own backing store:
//
//	func TestMyDriver(t *testing.T) {
//		dir := t.TempDir()
//		drivertest.Run(t, func(t *testing.T) blobstore.Driver { return open(t, dir) })
//	}
//
// It is a plain (non _test) package so that tests in other packages can run
// it too.
package drivertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/flotilla/flotilla/blobstore"
)

// Option tunes Run.
type Option func(*options)

type options struct {
	partSize int64
	timeout  time.Duration
}

// PartSize tells the suite the driver's part size, so that chunk sizes fall
// just under, on and over part boundaries. Without it the suite asks the
// driver (a `PartSize() int64` method) and otherwise uses 64 KiB.
func PartSize(n int64) Option { return func(o *options) { o.partSize = n } }

// CaseTimeout bounds each case (default 2 minutes): a hung driver fails
// instead of stalling the test binary.
func CaseTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// Run runs the suite. newDriver must return, on every call, a new driver
// instance over the same backing store: the suite uses two of them per case
// as two nodes that hand an upload to each other through its serialized
// state. Cases run one after the other; the store may hold other objects,
// but nothing else may change it while Run runs. If the driver implements
// blobstore.Lister, every case also checks that it left nothing behind but
// the blobs it completed.
func Run(t *testing.T, newDriver func(t *testing.T) blobstore.Driver, opts ...Option) {
	o := options{timeout: 2 * time.Minute}
	for _, opt := range opts {
		opt(&o)
	}
	if o.partSize <= 0 {
		probe := newDriver(t)
		if p, ok := probe.(interface{ PartSize() int64 }); ok {
			o.partSize = p.PartSize()
		} else {
			o.partSize = 64 << 10
		}
	}
	s := &suite{newDriver: newDriver, o: o}
	t.Run("Chunks", s.chunks)
	t.Run("DiscardedAppend", s.discarded)
	t.Run("SiblingAppends", s.siblings)
	t.Run("FailedAppend", s.failed)
	t.Run("CompleteRetry", s.completeRetry)
	t.Run("Abort", s.abort)
	t.Run("Empty", s.empty)
	t.Run("Ranges", s.ranges)
	t.Run("MissingAndDelete", s.missingAndDelete)
	t.Run("Presign", s.presign)
	t.Run("CorruptState", s.corruptState)
	t.Run("Interleaved", s.interleaved)
}

type suite struct {
	newDriver func(t *testing.T) blobstore.Driver
	o         options
}

// env is one case: two driver instances on the same store ("nodes").
type env struct {
	t         *testing.T
	ctx       context.Context
	nodes     [2]blobstore.Driver
	turn      int
	completed map[string]bool
}

// run runs one case as a subtest and then checks the store: while the
// case's completed blobs exist, the listing is what it was before plus
// exactly those; after deleting them, it is what it was before.
func (s *suite) run(t *testing.T, name string, fn func(e *env)) {
	t.Helper()
	t.Run(name, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), s.o.timeout)
		defer cancel()
		e := &env{t: t, ctx: ctx, nodes: [2]blobstore.Driver{s.newDriver(t), s.newDriver(t)}, completed: map[string]bool{}}
		lister, canList := e.nodes[0].(blobstore.Lister)
		var before []string
		if canList {
			before = e.list(lister)
		}
		fn(e)
		if t.Failed() {
			return
		}
		if canList {
			want := slices.Clone(before)
			for k := range e.completed {
				want = append(want, k)
			}
			slices.Sort(want)
			want = slices.Compact(want)
			e.sameKeys("after the case", e.list(lister), want)
		}
		for k := range e.completed {
			if err := e.nodes[1].Delete(ctx, k); err != nil {
				t.Errorf("Delete(%q): %v", k, err)
			}
		}
		if canList {
			e.sameKeys("after deleting the completed blobs", e.list(lister), before)
		}
	})
}

func (e *env) list(l blobstore.Lister) []string {
	e.t.Helper()
	keys, err := l.List(e.ctx)
	if err != nil {
		e.t.Fatalf("List: %v", err)
	}
	slices.Sort(keys)
	return keys
}

func (e *env) sameKeys(when string, got, want []string) {
	e.t.Helper()
	var extra, missing []string
	for _, k := range got {
		if _, ok := slices.BinarySearch(want, k); !ok {
			extra = append(extra, k)
		}
	}
	for _, k := range want {
		if _, ok := slices.BinarySearch(got, k); !ok {
			missing = append(missing, k)
		}
	}
	if len(extra) > 0 {
		e.t.Errorf("%s: left behind: %q", when, extra)
	}
	if len(missing) > 0 {
		e.t.Errorf("%s: missing: %q", when, missing)
	}
}

// node alternates between the two driver instances.
func (e *env) node() blobstore.Driver {
	e.turn++
	return e.nodes[e.turn%2]
}

// roundTrip stores u the way the state machine would and reads it back, so
// no driver can rely on sharing memory between calls.
func (e *env) roundTrip(u blobstore.Upload) blobstore.Upload {
	e.t.Helper()
	b, err := json.Marshal(u)
	if err != nil {
		e.t.Fatalf("marshal upload: %v", err)
	}
	var out blobstore.Upload
	if err := json.Unmarshal(b, &out); err != nil {
		e.t.Fatalf("unmarshal upload: %v", err)
	}
	return out
}

func newID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return "dt" + hex.EncodeToString(b)
}

func (e *env) start() blobstore.Upload {
	e.t.Helper()
	u, err := e.node().StartUpload(e.ctx, newID())
	if err != nil {
		e.t.Fatalf("StartUpload: %v", err)
	}
	if u.Size != 0 {
		e.t.Fatalf("StartUpload: size %d, want 0", u.Size)
	}
	return e.roundTrip(u)
}

// appendOnly appends data and returns the new state without committing it.
func (e *env) appendOnly(u blobstore.Upload, data []byte) blobstore.Upload {
	e.t.Helper()
	next, err := e.node().Append(e.ctx, e.roundTrip(u), bytes.NewReader(data))
	if err != nil {
		e.t.Fatalf("Append(%d bytes at %d): %v", len(data), u.Size, err)
	}
	if want := u.Size + int64(len(data)); next.Size != want {
		e.t.Fatalf("Append(%d bytes at %d): size %d, want %d", len(data), u.Size, next.Size, want)
	}
	return e.roundTrip(next)
}

// append appends data and commits the new state, as the API does.
func (e *env) append(u blobstore.Upload, data []byte) blobstore.Upload {
	e.t.Helper()
	next := e.appendOnly(u, data)
	if err := e.node().Committed(e.ctx, e.roundTrip(u), e.roundTrip(next)); err != nil {
		e.t.Fatalf("Committed: %v", err)
	}
	return next
}

// appendChunks appends data cut into the given chunk sizes.
func (e *env) appendChunks(u blobstore.Upload, data []byte, chunks []int) blobstore.Upload {
	e.t.Helper()
	off := 0
	for _, c := range chunks {
		u = e.append(u, data[off:off+c])
		off += c
	}
	if off != len(data) {
		e.t.Fatalf("test bug: chunks sum to %d, data is %d", off, len(data))
	}
	return u
}

func (e *env) complete(u blobstore.Upload) string {
	e.t.Helper()
	key, err := e.node().Complete(e.ctx, e.roundTrip(u))
	if err != nil {
		e.t.Fatalf("Complete(size %d): %v", u.Size, err)
	}
	if key == "" {
		e.t.Fatalf("Complete: empty key")
	}
	e.completed[key] = true
	return key
}

func (e *env) read(key string, off, n int64) []byte {
	e.t.Helper()
	rc, err := e.node().Open(e.ctx, key, off, n)
	if err != nil {
		e.t.Fatalf("Open(%q, %d, %d): %v", key, off, n, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		e.t.Fatalf("read %q at %d: %v", key, off, err)
	}
	return b
}

// readViaSocket copies a read into a loopback TCP connection with io.Copy
// and returns what arrived at the other end.
func (e *env) readViaSocket(key string, off, n int64) []byte {
	e.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		got <- b
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		e.t.Fatal(err)
	}
	rc, err := e.node().Open(e.ctx, key, off, n)
	if err != nil {
		conn.Close()
		e.t.Fatalf("Open(%q, %d, %d): %v", key, off, n, err)
	}
	_, err = io.Copy(conn, rc)
	rc.Close()
	conn.Close()
	if err != nil {
		e.t.Fatalf("copy %q at %d to a socket: %v", key, off, err)
	}
	return <-got
}

// checkBlob checks that key holds exactly want, by Stat and a full read.
func (e *env) checkBlob(key string, want []byte) {
	e.t.Helper()
	size, err := e.node().Stat(e.ctx, key)
	if err != nil {
		e.t.Fatalf("Stat(%q): %v", key, err)
	}
	if size != int64(len(want)) {
		e.t.Errorf("Stat(%q) = %d, want %d", key, size, len(want))
	}
	e.sameBytes(fmt.Sprintf("blob %q", key), e.read(key, 0, -1), want)
}

func (e *env) sameBytes(what string, got, want []byte) {
	e.t.Helper()
	if bytes.Equal(got, want) {
		return
	}
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	e.t.Errorf("%s: got %d bytes, want %d; first difference at offset %d", what, len(got), len(want), i)
}

// data returns n pseudo-random bytes; the same seed gives the same bytes.
func data(seed uint64, n int) []byte {
	var s [32]byte
	s[0], s[1] = byte(seed), byte(seed>>8)
	b := make([]byte, n)
	_, _ = mrand.NewChaCha8(s).Read(b)
	return b
}

func sum(chunks []int) int {
	n := 0
	for _, c := range chunks {
		n += c
	}
	return n
}

func repeat(size, times int) []int {
	out := make([]int, times)
	for i := range out {
		out[i] = size
	}
	return out
}

func (s *suite) ps() int { return int(s.o.partSize) }

// chunks: appends of every size, each through the other node, end up as
// exactly the bytes sent.
func (s *suite) chunks(t *testing.T) {
	ps := s.ps()
	cases := []struct {
		name   string
		chunks []int
	}{
		{"one small chunk", []int{100}},
		{"one byte at a time", repeat(1, 40)},
		{"hundred bytes at a time", repeat(100, 30)},
		{"just under a part", []int{ps - 1}},
		{"exactly a part", []int{ps}},
		{"just over a part", []int{ps + 1}},
		{"under then over", []int{ps - 1, 2, ps + 1, 1}},
		{"small then many parts", []int{1, 2*ps + 3, 100}},
		{"small chunks fill a part", append(repeat(100, 5), ps, 7)},
		{"ends on a part boundary", []int{ps / 2, ps - ps/2, ps}},
	}
	for i, tc := range cases {
		s.run(t, tc.name, func(e *env) {
			want := data(uint64(i)+1, sum(tc.chunks))
			u := e.appendChunks(e.start(), want, tc.chunks)
			e.checkBlob(e.complete(u), want)
		})
	}
}

// discarded: an Append whose state is never committed changes nothing the
// committed state can see, and whatever it staged is gone once the upload
// completes.
func (s *suite) discarded(t *testing.T) {
	ps := s.ps()
	cases := []struct {
		name                   string
		before, discard, after []int
	}{
		{"small", []int{100}, []int{50}, []int{30}},
		{"on empty upload", nil, []int{10}, []int{5}},
		{"discarded one starts the parts", []int{100}, []int{ps + 10}, []int{20}},
		{"discarded one adds parts", []int{ps + 5}, []int{2 * ps}, []int{1}},
		{"complete the old state", []int{ps + 5}, []int{ps}, nil},
		{"complete the old small state", []int{7}, []int{ps + 7}, nil},
		{"several discarded", []int{10}, []int{1, ps, 100}, []int{ps}},
	}
	for i, tc := range cases {
		s.run(t, tc.name, func(e *env) {
			seed := uint64(i+1) * 100
			first := data(seed, sum(tc.before))
			u := e.appendChunks(e.start(), first, tc.before)
			for j, n := range tc.discard {
				// Each discarded Append starts from the committed state.
				_ = e.appendOnly(u, data(seed+1+uint64(j), n))
			}
			rest := data(seed+50, sum(tc.after))
			u = e.appendChunks(u, rest, tc.after)
			e.checkBlob(e.complete(u), append(first, rest...))
		})
	}
}

// siblings: two Appends from the same state (a replayed or concurrent
// request) never disturb each other. The one committed completes to its
// own bytes, whatever the other wrote, before or after it; completing the
// other one as well either fails or yields a key with exactly its bytes,
// and never changes the first blob.
func (s *suite) siblings(t *testing.T) {
	ps := s.ps()
	cases := []struct {
		name       string
		before     []int
		n          int  // bytes each sibling appends
		loserFirst bool // the discarded sibling appends first
	}{
		{"small, loser after", []int{100}, 50, false},
		{"small, loser first", []int{100}, 50, true},
		{"on empty upload", nil, 10, true},
		{"start the parts, loser after", []int{100}, ps + 10, false},
		{"start the parts, loser first", []int{100}, ps + 10, true},
		{"add parts, loser first", []int{ps + 5}, ps, true},
		{"add parts, loser after", []int{ps + 5}, 2*ps - 3, false},
	}
	for i, tc := range cases {
		s.run(t, tc.name, func(e *env) {
			seed := uint64(i+1) * 500
			first := data(seed, sum(tc.before))
			base := e.appendChunks(e.start(), first, tc.before)
			win, lose := data(seed+1, tc.n), data(seed+2, tc.n)
			var loser blobstore.Upload
			if tc.loserFirst {
				loser = e.appendOnly(base, lose)
			}
			winner := e.append(base, win)
			loserOK := true
			if !tc.loserFirst {
				// After the commit, the old state may be gone: failing
				// is fine, succeeding must not touch the winner.
				next, err := e.node().Append(e.ctx, e.roundTrip(base), bytes.NewReader(lose))
				loser, loserOK = e.roundTrip(next), err == nil
			}
			want := append(slices.Clone(first), win...)
			key := e.complete(winner)
			e.checkBlob(key, want)

			// Completing the sibling too is a caller bug, but it must not
			// corrupt anything.
			if !loserOK {
				return
			}
			other, err := e.node().Complete(e.ctx, e.roundTrip(loser))
			if err == nil {
				e.completed[other] = true
				if other == key {
					e.t.Errorf("sibling completed to the same key %q", key)
				} else {
					e.checkBlob(other, append(slices.Clone(first), lose...))
				}
			}
			e.checkBlob(key, want)
		})
	}
}

var errBoom = errors.New("drivertest: reader failed")

// failingReader yields its data, calling hook once after `at` bytes, then
// fails with errBoom if fail is set.
type failingReader struct {
	data []byte
	at   int
	hook func()
	fail bool
	off  int
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.hook != nil && f.off >= f.at {
		f.hook()
		f.hook = nil
	}
	if f.off >= len(f.data) {
		if f.fail {
			return 0, errBoom
		}
		return 0, io.EOF
	}
	if f.hook != nil && f.off+len(p) > f.at {
		p = p[:f.at-f.off]
	}
	n := copy(p, f.data[f.off:])
	f.off += n
	return n, nil
}

// failed: an Append that fails (its reader errs, or its context is
// cancelled midway) reports an error and leaves the previous state valid.
func (s *suite) failed(t *testing.T) {
	ps := s.ps()
	cases := []struct {
		name   string
		before []int
		failAt int  // bytes the failing Append reads first
		cancel bool // cancel the context there instead of failing the reader
		after  []int
	}{
		{"reader fails in the tail", []int{100}, 10, false, []int{5}},
		{"reader fails after a part", []int{ps - 1}, ps + 10, false, []int{ps + 1}},
		{"reader fails after parts of a multipart", []int{ps + 1}, 2 * ps, false, []int{3}},
		{"reader fails at once", []int{10}, 0, false, []int{10}},
		{"context cancelled in the tail", []int{100}, 10, true, []int{5}},
		{"context cancelled after a part", []int{ps + 1}, ps + 10, true, []int{ps}},
	}
	for i, tc := range cases {
		s.run(t, tc.name, func(e *env) {
			seed := uint64(i+1) * 1000
			first := data(seed, sum(tc.before))
			u := e.appendChunks(e.start(), first, tc.before)

			ctx, cancel := context.WithCancel(e.ctx)
			defer cancel()
			r := &failingReader{data: data(seed+1, tc.failAt), fail: !tc.cancel}
			if tc.cancel {
				// Cancel once failAt bytes were read, then keep yielding.
				r.data = data(seed+1, tc.failAt+ps/2+10)
				r.at, r.hook = tc.failAt, cancel
			}
			_, err := e.node().Append(ctx, e.roundTrip(u), r)
			if err == nil {
				e.t.Fatalf("Append: no error")
			}
			if !tc.cancel && !errors.Is(err, errBoom) {
				e.t.Errorf("Append: %v, want the reader's error", err)
			}

			rest := data(seed+2, sum(tc.after))
			u = e.appendChunks(u, rest, tc.after)
			e.checkBlob(e.complete(u), append(first, rest...))
		})
	}
}

// completeRetry: Complete may run again (on any node) and gives the same key
// and bytes.
func (s *suite) completeRetry(t *testing.T) {
	ps := s.ps()
	cases := []struct {
		name   string
		chunks []int
	}{
		{"empty", nil},
		{"small", []int{10}},
		{"multipart with tail", []int{ps + 3}},
		{"multipart without tail", []int{ps, ps}},
	}
	for i, tc := range cases {
		s.run(t, tc.name, func(e *env) {
			want := data(uint64(i+1)*10000, sum(tc.chunks))
			u := e.appendChunks(e.start(), want, tc.chunks)
			k1 := e.complete(u)
			k2 := e.complete(u)
			if k1 != k2 {
				e.t.Errorf("Complete again: key %q, first time %q", k2, k1)
			}
			e.checkBlob(k1, want)
		})
	}
}

// abort: Abort (twice, on either node) leaves nothing behind, also what
// discarded and failed appends staged.
func (s *suite) abort(t *testing.T) {
	ps := s.ps()
	cases := []struct {
		name    string
		chunks  []int
		discard []int
	}{
		{"fresh", nil, nil},
		{"small", []int{10}, nil},
		{"multipart with tail", []int{ps + 1}, nil},
		{"multipart without tail", []int{2 * ps}, nil},
		{"after discarded appends", []int{10}, []int{ps + 5, 3}},
	}
	for i, tc := range cases {
		s.run(t, tc.name, func(e *env) {
			seed := uint64(i+1) * 20000
			u := e.appendChunks(e.start(), data(seed, sum(tc.chunks)), tc.chunks)
			for j, n := range tc.discard {
				_ = e.appendOnly(u, data(seed+uint64(j)+1, n))
			}
			if err := e.node().Abort(e.ctx, e.roundTrip(u)); err != nil {
				e.t.Fatalf("Abort: %v", err)
			}
			if err := e.node().Abort(e.ctx, e.roundTrip(u)); err != nil {
				e.t.Errorf("Abort again: %v", err)
			}
		})
	}
}

// empty: a blob of no bytes, with and without an empty Append.
func (s *suite) empty(t *testing.T) {
	for _, appendNothing := range []bool{false, true} {
		s.run(t, fmt.Sprintf("append nothing %v", appendNothing), func(e *env) {
			u := e.start()
			if appendNothing {
				u = e.append(u, nil)
			}
			key := e.complete(u)
			e.checkBlob(key, nil)
			if got := e.read(key, 0, 0); len(got) != 0 {
				e.t.Errorf("Open(0, 0) read %d bytes", len(got))
			}
		})
	}
}

// ranges: Open with offsets and lengths, including past the end.
func (s *suite) ranges(t *testing.T) {
	ps := int64(s.ps())
	s.run(t, "ranges", func(e *env) {
		blob := data(30000, int(ps+ps/2+7))
		n := int64(len(blob))
		u := e.appendChunks(e.start(), blob, []int{int(ps / 3), int(n - ps/3)})
		key := e.complete(u)
		cases := []struct {
			name      string
			off, size int64
		}{
			{"whole", 0, -1},
			{"whole by length", 0, n},
			{"first byte", 0, 1},
			{"nothing", 5, 0},
			{"middle", 100, 1000},
			{"middle to end", n / 2, -1},
			{"last byte", n - 1, -1},
			{"last byte by length", n - 1, 1},
			{"length past the end", n - 10, 100},
			{"across the part boundary", ps - 5, 10},
			{"at the end", n, -1},
			{"at the end with length", n, 5},
		}
		for _, tc := range cases {
			end := n
			if tc.size >= 0 {
				end = min(n, tc.off+tc.size)
			}
			want := blob[min(tc.off, n):end]
			e.sameBytes(fmt.Sprintf("%s: Open(%d, %d)", tc.name, tc.off, tc.size), e.read(key, tc.off, tc.size), want)
			// Copied into a TCP connection, as the API serves it: a body
			// with WriteTo hands the copy to the socket (splice, sendfile).
			e.sameBytes(fmt.Sprintf("%s: Open(%d, %d) copied to a socket", tc.name, tc.off, tc.size), e.readViaSocket(key, tc.off, tc.size), want)
		}
	})
}

// missingAndDelete: missing keys give ErrNotFound, Delete is idempotent.
func (s *suite) missingAndDelete(t *testing.T) {
	s.run(t, "missing and delete", func(e *env) {
		want := data(40000, 100)
		key := e.complete(e.append(e.start(), want))
		e.checkBlob(key, want)

		missing := key + "-missing"
		if _, err := e.node().Open(e.ctx, missing, 0, -1); !errors.Is(err, blobstore.ErrNotFound) {
			e.t.Errorf("Open(missing): %v, want ErrNotFound", err)
		}
		if _, err := e.node().Open(e.ctx, missing, 10, 5); !errors.Is(err, blobstore.ErrNotFound) {
			e.t.Errorf("Open(missing, 10, 5): %v, want ErrNotFound", err)
		}
		if _, err := e.node().Stat(e.ctx, missing); !errors.Is(err, blobstore.ErrNotFound) {
			e.t.Errorf("Stat(missing): %v, want ErrNotFound", err)
		}
		if err := e.node().Delete(e.ctx, missing); err != nil {
			e.t.Errorf("Delete(missing): %v", err)
		}

		for i := range 2 {
			if err := e.node().Delete(e.ctx, key); err != nil {
				e.t.Errorf("Delete #%d: %v", i+1, err)
			}
		}
		delete(e.completed, key)
		if _, err := e.node().Stat(e.ctx, key); !errors.Is(err, blobstore.ErrNotFound) {
			e.t.Errorf("Stat after Delete: %v, want ErrNotFound", err)
		}
		if _, err := e.node().Open(e.ctx, key, 0, -1); !errors.Is(err, blobstore.ErrNotFound) {
			e.t.Errorf("Open after Delete: %v, want ErrNotFound", err)
		}
	})
}

// presign: either ErrNotSupported or a URL that serves the bytes.
func (s *suite) presign(t *testing.T) {
	s.run(t, "presign", func(e *env) {
		want := data(50000, 1000)
		key := e.complete(e.append(e.start(), want))
		u, err := e.node().Presign(e.ctx, key, time.Minute)
		if errors.Is(err, blobstore.ErrNotSupported) {
			e.t.Logf("%s: presign not supported", e.nodes[0].Name())
			return
		}
		if err != nil {
			e.t.Fatalf("Presign: %v", err)
		}
		req, err := http.NewRequestWithContext(e.ctx, http.MethodGet, u, nil)
		if err != nil {
			e.t.Fatalf("presigned URL %q: %v", u, err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			e.t.Fatalf("GET presigned URL: %v", err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			e.t.Fatalf("GET presigned URL: %v", err)
		}
		if resp.StatusCode != http.StatusOK {
			e.t.Fatalf("GET presigned URL: %s: %s", resp.Status, body)
		}
		e.sameBytes("presigned GET", body, want)
	})
}

// corruptState: state bytes that are not the driver's are rejected with
// ErrCorruptState, before anything is written.
func (s *suite) corruptState(t *testing.T) {
	s.run(t, "corrupt state", func(e *env) {
		good := e.start()
		for _, state := range []string{"", "null", "{}", "not json", `{"key":"../../etc/passwd"}`} {
			bad := blobstore.Upload{State: []byte(state)}
			d := e.node()
			if _, err := d.Append(e.ctx, bad, bytes.NewReader([]byte("x"))); !errors.Is(err, blobstore.ErrCorruptState) {
				e.t.Errorf("Append(state %q): %v, want ErrCorruptState", state, err)
			}
			if _, err := d.Complete(e.ctx, bad); !errors.Is(err, blobstore.ErrCorruptState) {
				e.t.Errorf("Complete(state %q): %v, want ErrCorruptState", state, err)
			}
			if err := d.Abort(e.ctx, bad); !errors.Is(err, blobstore.ErrCorruptState) {
				e.t.Errorf("Abort(state %q): %v, want ErrCorruptState", state, err)
			}
		}
		if err := e.node().Abort(e.ctx, good); err != nil {
			e.t.Errorf("Abort: %v", err)
		}
	})
}

// interleaved: two uploads appended in turns stay apart.
func (s *suite) interleaved(t *testing.T) {
	ps := s.ps()
	s.run(t, "interleaved", func(e *env) {
		chunks := []int{10, ps, 3, ps + 1, 100}
		a, b := data(60000, sum(chunks)), data(60001, sum(chunks))
		ua, ub := e.start(), e.start()
		off := 0
		for _, c := range chunks {
			ua = e.append(ua, a[off:off+c])
			ub = e.append(ub, b[off:off+c])
			off += c
		}
		ka, kb := e.complete(ua), e.complete(ub)
		if ka == kb {
			e.t.Fatalf("both uploads completed to %q", ka)
		}
		e.checkBlob(ka, a)
		e.checkBlob(kb, b)
	})
}
