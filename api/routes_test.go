package api

import (
	"regexp"
	"testing"
)

// The route matcher must agree with the regular expressions that describe
// the endpoints (the way they were first written), path by path.
func TestRoutesMatchTheirPatterns(t *testing.T) {
	oracle := []struct {
		name string
		re   *regexp.Regexp
	}{
		{"tags", regexp.MustCompile(`^/v2/(.+)/tags/list$`)},
		{"manifest", regexp.MustCompile(`^/v2/(.+)/manifests/([^/]+)$`)},
		{"upload", regexp.MustCompile(`^/v2/(.+)/blobs/uploads/?$`)},
		{"upload", regexp.MustCompile(`^/v2/(.+)/blobs/uploads/([^/]+)$`)},
		{"blob", regexp.MustCompile(`^/v2/(.+)/blobs/([^/]+)$`)},
		{"referrers", regexp.MustCompile(`^/v2/(.+)/referrers/([^/]+)$`)},
	}
	want := func(p string) (string, string, string) {
		for _, o := range oracle {
			if m := o.re.FindStringSubmatch(p); m != nil {
				ref := ""
				if len(m) > 2 {
					ref = m[2]
				}
				return o.name, m[1], ref
			}
		}
		return "", "", ""
	}
	s := &Server{}
	routes := s.buildRoutes()
	got := func(p string) (string, string, string) {
		rest := p[len("/v2/"):]
		for _, rt := range routes {
			if repo, ref, ok := rt.match(rest); ok {
				return rt.name, repo, ref
			}
		}
		return "", "", ""
	}
	paths := []string{
		"/v2/a/tags/list", "/v2/a/b/c/tags/list", "/v2//tags/list", "/v2/tags/list", "/v2/a/tags/list/",
		"/v2/a/manifests/latest", "/v2/a/b/manifests/sha256:abc", "/v2/a/manifests/", "/v2//manifests/x",
		"/v2/a/manifests/x/y", "/v2/manifests/x", "/v2/a/manifests/manifests/x", "/v2/a/tags/list/manifests/x",
		"/v2/a/blobs/uploads", "/v2/a/blobs/uploads/", "/v2/a/blobs/uploads/0123abc", "/v2/a/blobs/uploads//",
		"/v2/a/blobs/uploads/x/y", "/v2/blobs/uploads/", "/v2/a/blobs/sha256:1", "/v2/a/blobs/", "/v2/a/blobs",
		"/v2/a/blobs/uploads/blobs/x", "/v2/a/b/blobs/uploads/blobs/uploads/", "/v2/a/referrers/sha256:1",
		"/v2/a/referrers/", "/v2/a\nb/manifests/x", "/v2/a/manifests/x\ny", "/v2/a\n/blobs/uploads/",
		"/v2/x", "/v2/", "/v2/a/b", "/v2/../manifests/x", "/v2/a/../b/manifests/x",
	}
	for _, p := range paths {
		wn, wr, wref := want(p)
		gn, gr, gref := got(p)
		if gn != wn || gr != wr || gref != wref {
			t.Errorf("%q: matched (%q, %q, %q), want (%q, %q, %q)", p, gn, gr, gref, wn, wr, wref)
		}
	}
}
