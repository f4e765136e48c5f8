package meta

import (
	"errors"
	"strings"
	"testing"
)

func TestCommandRoundTrip(t *testing.T) {
	c := &Command{Type: CmdPutManifest, Time: 42, Repo: "a/b", Tags: []string{"v1"},
		Manifest: &Manifest{Digest: "sha256:" + strings.Repeat("a", 64), MediaType: "x", Raw: []byte{0, 1, 2, '"'}}}
	b, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if b[0] != byte(CmdPutManifest) {
		t.Fatalf("type byte %d", b[0])
	}
	got, err := DecodeCommand(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Type != c.Type || got.Time != 42 || got.Repo != "a/b" || string(got.Manifest.Raw) != string(c.Manifest.Raw) {
		t.Fatalf("round trip: %+v", got)
	}
}

func TestDecodeCommandRejects(t *testing.T) {
	cases := map[string][]byte{
		"empty":        nil,
		"type zero":    {0, '{', '}'},
		"unknown type": {200, '{', '}'},
		"bad json":     {byte(CmdDeleteTag), '{'},
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := DecodeCommand(b); !errors.Is(err, ErrInvalidCommand) {
				t.Fatalf("err %v, want ErrInvalidCommand", err)
			}
		})
	}
}

func TestNames(t *testing.T) {
	repos := map[string]bool{
		"a": true, "library/alpine": true, "a.b_c__d-e--f/g": true, strings.Repeat("a", 255): true,
		"": false, "A": false, "a//b": false, "a/": false, "/a": false, "a..b": false, "-a": false,
		"a/../b": false, strings.Repeat("a", 256): false, "a b": false,
	}
	for name, want := range repos {
		if got := ValidRepo(name); got != want {
			t.Errorf("ValidRepo(%q) = %v", name, got)
		}
	}
	tags := map[string]bool{
		"latest": true, "v1.0-rc_1": true, "_x": true, strings.Repeat("t", 128): true,
		"": false, ".x": false, "-x": false, "a/b": false, strings.Repeat("t", 129): false, "a:b": false,
	}
	for tag, want := range tags {
		if got := ValidTag(tag); got != want {
			t.Errorf("ValidTag(%q) = %v", tag, got)
		}
	}
	digests := map[string]bool{
		"sha256:" + strings.Repeat("a", 64):  true,
		"sha512:" + strings.Repeat("b", 128): true,
		"sha256:" + strings.Repeat("A", 64):  false,
		"sha256:abc":                         false,
		"md5:" + strings.Repeat("a", 32):     false,
		"sha384:" + strings.Repeat("a", 96):  false,
		"nocolon":                            false,
	}
	for d, want := range digests {
		if _, err := ParseDigest(d); (err == nil) != want {
			t.Errorf("ParseDigest(%q) err = %v", d, err)
		}
	}
}

func TestErrorCodes(t *testing.T) {
	for _, sentinel := range []*CodeError{ErrNameUnknown, ErrManifestUnknown, ErrManifestBlobUnknown, ErrBlobUnknown,
		ErrUploadUnknown, ErrRangeInvalid, ErrTagConflict, ErrDenied, ErrInvalidCommand} {
		r := Result{Code: sentinel.Code, Detail: "d"}
		err := r.Err()
		if !errors.Is(err, sentinel) {
			t.Errorf("%s: errors.Is failed", sentinel.Code)
		}
		if errors.Is(err, ErrDenied) != (sentinel == ErrDenied) {
			t.Errorf("%s matches ErrDenied", sentinel.Code)
		}
	}
	if (&Result{}).Err() != nil {
		t.Error("OK result has an error")
	}
	if err := ErrorFor("SOMETHING_NEW", "x"); err == nil {
		t.Error("unknown code gave no error")
	}
}
