package node_test

import (
	"net/http"
	"testing"
)

// Conditional tag updates: If-Match / If-None-Match on a manifest PUT are
// a compare-and-swap on the tag, checked by the state machine.
func TestConditionalTagUpdate(t *testing.T) {
	tn := startNode(t, nil)
	a, b, c := newImage(t, "a"), newImage(t, "b"), newImage(t, "c")
	for _, im := range []*image{a, b, c} {
		tn.pushBlob("cas/repo", im.config)
		tn.pushBlob("cas/repo", im.layer)
	}
	put := func(im *image, hdr ...string) *response {
		return tn.req(http.MethodPut, "/v2/cas/repo/manifests/v1", im.raw, append([]string{"Content-Type", mtOCIManifest}, hdr...)...)
	}
	tagAt := func() string {
		r := tn.req(http.MethodHead, "/v2/cas/repo/manifests/v1", nil)
		return r.header.Get("Docker-Content-Digest")
	}
	steps := []struct {
		name   string
		im     *image
		hdr    []string
		status int
		want   string // where the tag points afterwards
	}{
		{"create only if absent", a, []string{"If-None-Match", "*"}, http.StatusCreated, a.digest},
		{"create again refused", b, []string{"If-None-Match", "*"}, http.StatusPreconditionFailed, a.digest},
		{"swap from the wrong digest refused", b, []string{"If-Match", `"` + b.digest + `"`}, http.StatusPreconditionFailed, a.digest},
		{"swap from the current digest", b, []string{"If-Match", `"` + a.digest + `"`}, http.StatusCreated, b.digest},
		{"stale swap refused", c, []string{"If-Match", `"` + a.digest + `"`}, http.StatusPreconditionFailed, b.digest},
		{"bad precondition digest", c, []string{"If-Match", `"nope"`}, http.StatusBadRequest, b.digest},
		{"unconditional", c, nil, http.StatusCreated, c.digest},
	}
	for _, st := range steps {
		r := put(st.im, st.hdr...)
		if r.status != st.status {
			t.Fatalf("%s: %s, want %d", st.name, r, st.status)
		}
		if r.status == http.StatusPreconditionFailed {
			expectError(t, r, http.StatusPreconditionFailed, "TAG_CONFLICT")
		}
		if got := tagAt(); got != st.want {
			t.Fatalf("%s: tag at %s, want %s", st.name, got, st.want)
		}
	}
}
