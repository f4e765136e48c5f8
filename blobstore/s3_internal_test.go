package blobstore

import (
	"crypto/md5"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestParseS3Endpoint(t *testing.T) {
	for _, tc := range []struct {
		in       string
		insecure bool
		host     string
		secure   bool
		bad      bool
	}{
		{"", false, "s3.amazonaws.com", true, false},
		{"minio:9000", true, "minio:9000", false, false},
		{"minio:9000", false, "minio:9000", true, false},
		{"http://minio:9000", false, "minio:9000", false, false},
		{"https://s3.example.com/", true, "s3.example.com", true, false},
		{"ftp://x", false, "", false, true},
		{"http://x/path", false, "", false, true},
		{"http://", false, "", false, true},
	} {
		host, secure, err := parseS3Endpoint(tc.in, tc.insecure)
		if (err != nil) != tc.bad || host != tc.host || secure != tc.secure {
			t.Errorf("parseS3Endpoint(%q, %v) = %q, %v, %v", tc.in, tc.insecure, host, secure, err)
		}
	}
}

func TestNormalizePrefix(t *testing.T) {
	for in, want := range map[string]string{"": "", "/": "", "a": "a/", "a/b/": "a/b/", "/a": "a/"} {
		if got := normalizePrefix(in); got != want {
			t.Errorf("normalizePrefix(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestFillStopsOnlyAtEOF(t *testing.T) {
	buf := make([]byte, 10)
	n, err := fill(iotest.OneByteReader(strings.NewReader("abc")), buf)
	if n != 3 || err != nil {
		t.Fatalf("fill short stream: %d, %v", n, err)
	}
	n, err = fill(strings.NewReader("0123456789abc"), buf)
	if n != 10 || err != nil {
		t.Fatalf("fill long stream: %d, %v", n, err)
	}
	// A client that goes away mid-body must not look like the end.
	r := io.MultiReader(strings.NewReader("ab"), iotest.ErrReader(io.ErrUnexpectedEOF))
	if _, err := fill(r, buf); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("fill truncated stream: %v, want ErrUnexpectedEOF", err)
	}
}

func TestExactReader(t *testing.T) {
	got, err := io.ReadAll(&exactReader{ReadCloser: io.NopCloser(strings.NewReader("abcdef")), left: 4})
	if err != nil || string(got) != "abcd" {
		t.Fatalf("long source: %q, %v", got, err)
	}
	_, err = io.ReadAll(&exactReader{ReadCloser: io.NopCloser(strings.NewReader("ab")), left: 4})
	if !errors.Is(err, ErrCorruptState) {
		t.Fatalf("short source: %v, want ErrCorruptState", err)
	}
}

func TestMultipartETag(t *testing.T) {
	a, b := md5.Sum([]byte("part one")), md5.Sum([]byte("part two"))
	all := md5.Sum(append(a[:], b[:]...))
	want := hex.EncodeToString(all[:]) + "-2"
	parts := []s3Part{{N: 1, ETag: `"` + hex.EncodeToString(a[:]) + `"`, Size: 8}}
	if got, ok := multipartETag(parts, hex.EncodeToString(b[:]), true); !ok || got != want {
		t.Fatalf("multipartETag = %q, %v; want %q", got, ok, want)
	}
	if _, ok := multipartETag(parts, "not-an-md5", true); ok {
		t.Fatal("multipartETag accepted a non-MD5 ETag")
	}
}

func TestTailKey(t *testing.T) {
	a := tailKey("u1", 10, []byte("x"))
	if a != tailKey("u1", 10, []byte("x")) {
		t.Fatal("same tail, different keys")
	}
	for _, other := range []string{tailKey("u1", 11, []byte("x")), tailKey("u1", 10, []byte("y")), tailKey("u2", 10, []byte("x"))} {
		if other == a {
			t.Fatalf("different tails share key %q", a)
		}
	}
	if !strings.HasPrefix(a, tailPrefix("u1")) {
		t.Fatalf("tail key %q outside its upload's prefix", a)
	}
}

func TestS3DecodeRejects(t *testing.T) {
	s := &S3{}
	good := s3State{V: s3StateVersion, ID: "u1", Object: "blobs/u1", Tail: tailPrefix("u1") + "0.ab", TailSize: 3, TailETag: "e"}
	if _, err := s.decode(Upload{Size: 3, State: good.encode()}); err != nil {
		t.Fatalf("good state: %v", err)
	}
	for name, mut := range map[string]func(*s3State){
		"other object":     func(st *s3State) { st.Object = "blobs/u2" },
		"foreign tail":     func(st *s3State) { st.Tail = "blobs/u2.tail.0.ab" },
		"tail without key": func(st *s3State) { st.Tail = "" },
		"parts no upload":  func(st *s3State) { st.Parts = []s3Part{{N: 1, ETag: "e", Size: 5}} },
		"bad version":      func(st *s3State) { st.V = 9 },
		"id with slash":    func(st *s3State) { st.ID, st.Object = "a/b", "blobs/a/b" },
	} {
		st := good
		mut(&st)
		if _, err := s.decode(Upload{Size: 3, State: st.encode()}); !errors.Is(err, ErrCorruptState) {
			t.Errorf("%s: %v, want ErrCorruptState", name, err)
		}
	}
	if _, err := s.decode(Upload{Size: 4, State: good.encode()}); !errors.Is(err, ErrCorruptState) {
		t.Errorf("wrong size: %v, want ErrCorruptState", err)
	}
}
