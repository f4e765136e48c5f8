package raftstore

import (
	"encoding/json"
	"testing"

	"github.com/flotilla/flotilla/meta"
)

// The fast path of manifestContent and tagDigest must agree with a full
// decode for every record, including those it hands to the full decode.
func TestManifestContentMatchesFullDecode(t *testing.T) {
	cases := []struct {
		name string
		m    meta.Manifest
	}{
		{"oci image", meta.Manifest{Digest: "sha256:" + hex64('a'), MediaType: "application/vnd.oci.image.manifest.v1+json",
			Raw: []byte(`{"schemaVersion":2}`), Blobs: []string{"sha256:" + hex64('b')}, Created: 42}},
		{"index with children", meta.Manifest{Digest: "sha512:" + hex64('c') + hex64('d'), MediaType: "application/vnd.oci.image.index.v1+json",
			Raw: []byte(`{}`), Children: []string{"sha256:" + hex64('e')}, Subject: "sha256:" + hex64('f'),
			Annotations: map[string]string{"k": `v"with"quotes`}}},
		{"escaped media type", meta.Manifest{Digest: "sha256:" + hex64('1'), MediaType: `application/x<odd>&"type"`, Raw: []byte("x")}},
		{"empty media type", meta.Manifest{Digest: "sha256:" + hex64('2'), Raw: []byte("y")}},
		{"empty bytes", meta.Manifest{Digest: "sha256:" + hex64('3'), MediaType: "a/b"}},
	}
	for _, c := range cases {
		rec, err := encodeManifest(&c.m)
		if err != nil {
			t.Fatal(err)
		}
		var full meta.Manifest
		if err := decodeManifest(rec, &full); err != nil {
			t.Fatal(err)
		}
		got, err := manifestContent(rec)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got.Digest != full.Digest || got.MediaType != full.MediaType || string(got.Raw) != string(full.Raw) {
			t.Errorf("%s: content %q %q %q, full decode %q %q %q", c.name, got.Digest, got.MediaType, got.Raw,
				full.Digest, full.MediaType, full.Raw)
		}
		tr, _ := json.Marshal(tagRecord{Digest: c.m.Digest, Updated: 7})
		if d, err := tagDigest(tr); err != nil || d != c.m.Digest {
			t.Errorf("%s: tagDigest = %q, %v; want %q", c.name, d, err, c.m.Digest)
		}
	}
	for _, bad := range [][]byte{nil, {0xff}, {5, '{'}} {
		if _, err := manifestContent(bad); err == nil {
			t.Errorf("manifestContent(%q) accepted a broken record", bad)
		}
	}
	if _, err := tagDigest([]byte(`{"digest":`)); err == nil {
		t.Error("tagDigest accepted a broken record")
	}
	// Escaped digests (never written, but possible in JSON) take the full decode.
	if d, err := tagDigest([]byte(`{"digest":"sha256:\u0061b","updated":1}`)); err != nil || d != "sha256:ab" {
		t.Errorf("tagDigest with an escape = %q, %v", d, err)
	}
}

func hex64(c byte) string {
	b := make([]byte, 64)
	for i := range b {
		b[i] = c
	}
	return string(b)
}
