package api

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/flotilla/flotilla/meta"
)

func TestParseByteRange(t *testing.T) {
	cases := []struct {
		h          string
		size       int64
		start, end int64
		ok         bool
	}{
		{"bytes=0-9", 100, 0, 9, true},
		{"bytes=10-", 100, 10, 99, true},
		{"bytes=-10", 100, 90, 99, true},
		{"bytes=-1000", 100, 0, 99, true},
		{"bytes=90-200", 100, 90, 99, true},
		{"bytes=100-", 100, 0, 0, false},
		{"bytes=5-4", 100, 0, 0, false},
		{"bytes=-0", 100, 0, 0, false},
		{"bytes=a-b", 100, 0, 0, false},
		{"bytes=0-0", 0, 0, 0, false},
	}
	for _, c := range cases {
		s, e, ok := parseByteRange(c.h, c.size)
		if ok != c.ok || (ok && (s != c.start || e != c.end)) {
			t.Errorf("parseByteRange(%q, %d) = %d, %d, %v", c.h, c.size, s, e, ok)
		}
	}
	for h, want := range map[string]bool{"bytes=0-1": true, "items=0-1": false, "bytes=0-1,4-5": false, "": false} {
		if singleByteRange(h) != want {
			t.Errorf("singleByteRange(%q) != %v", h, want)
		}
	}
}

func TestCheckContentRange(t *testing.T) {
	cases := []struct {
		cr     string
		length int64
		offset int64
		ok     bool
	}{
		{"", 10, 5, true},
		{"5-14", 10, 5, true},
		{"bytes 5-14", 10, 5, true},
		{"0-9", 10, 5, false},
		{"5-13", 10, 5, false},
		{"5-14", -1, 5, true},
		{"x-y", 10, 5, false},
		{"5", 10, 5, false},
	}
	for _, c := range cases {
		r, _ := http.NewRequest(http.MethodPatch, "/", nil)
		r.ContentLength = c.length
		if c.cr != "" {
			r.Header.Set("Content-Range", c.cr)
		}
		if got := checkContentRange(r, c.offset); got != c.ok {
			t.Errorf("Content-Range %q len %d at %d: %v", c.cr, c.length, c.offset, got)
		}
	}
}

func TestParseManifest(t *testing.T) {
	d := func(c string) string { return "sha256:" + strings.Repeat(c, 64) }
	image := `{"schemaVersion":2,"mediaType":"` + mtOCIManifest + `","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` + d("a") + `","size":1},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"` + d("b") + `","size":2},{"mediaType":"application/vnd.oci.image.layer.nondistributable.v1.tar","digest":"` + d("c") + `","size":3}],"subject":{"mediaType":"` + mtOCIManifest + `","digest":"` + d("d") + `","size":4}}`
	index := `{"schemaVersion":2,"mediaType":"` + mtOCIIndex + `","manifests":[{"mediaType":"` + mtOCIManifest + `","digest":"` + d("e") + `","size":5}]}`
	cases := []struct {
		name, body, ct string
		code           string
		blobs, kids    int
		subject        bool
		artifactType   string
	}{
		{name: "image", body: image, ct: mtOCIManifest, blobs: 2, subject: true, artifactType: "application/vnd.oci.image.config.v1+json"},
		{name: "image, type from body", body: image, blobs: 2, subject: true, artifactType: "application/vnd.oci.image.config.v1+json"},
		{name: "index", body: index, ct: mtOCIIndex, kids: 1},
		{name: "type mismatch", body: image, ct: mtOCIIndex, code: "MANIFEST_INVALID"},
		{name: "malformed", body: `{"schemaVersion":`, ct: mtOCIManifest, code: "MANIFEST_INVALID"},
		{name: "schema 1", body: `{"schemaVersion":1}`, ct: mtOCIManifest, code: "MANIFEST_INVALID"},
		{name: "no config", body: `{"schemaVersion":2,"mediaType":"` + mtOCIManifest + `","layers":[]}`, ct: mtOCIManifest, code: "MANIFEST_INVALID"},
		{name: "bad layer digest", body: `{"schemaVersion":2,"config":{"digest":"` + d("a") + `","size":1},"layers":[{"digest":"sha256:zz","size":1}]}`, ct: mtOCIManifest, code: "MANIFEST_INVALID"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, e := parseManifest([]byte(c.body), c.ct)
			if c.code != "" {
				if e == nil || e.Code.Code != c.code {
					t.Fatalf("error %v, want %s", e, c.code)
				}
				return
			}
			if e != nil {
				t.Fatal(e)
			}
			if len(m.Blobs) != c.blobs || len(m.Children) != c.kids || (m.Subject != "") != c.subject || m.ArtifactType != c.artifactType {
				t.Fatalf("parsed %+v", m)
			}
		})
	}
}

func TestFromDomain(t *testing.T) {
	cases := []struct {
		err    error
		status int
		code   string
	}{
		{meta.ErrBlobUnknown.WithDetail("x"), 404, "BLOB_UNKNOWN"},
		{meta.ErrManifestBlobUnknown, 400, "MANIFEST_BLOB_UNKNOWN"},
		{meta.ErrRangeInvalid, 416, "RANGE_INVALID"},
		{meta.ErrTagConflict, 412, "TAG_CONFLICT"},
		{meta.ErrUploadUnknown, 404, "BLOB_UPLOAD_UNKNOWN"},
		{errors.Join(ErrUnavailable, errors.New("no leader")), 503, "UNAVAILABLE"},
		{errors.Join(ErrIndexAhead), 400, "INDEX_INVALID"},
		{errors.New("boom"), 500, "INTERNAL"},
	}
	for _, c := range cases {
		e := fromDomain(c.err)
		if e.Code.Status != c.status || e.Code.Code != c.code {
			t.Errorf("%v -> %d %s, want %d %s", c.err, e.Code.Status, e.Code.Code, c.status, c.code)
		}
	}
}
