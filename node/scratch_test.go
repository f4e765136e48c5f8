package node_test

import (
	"net/http"
	"testing"
	"time"
)

func TestScratch(t *testing.T) {
	tn := startNode(t, nil)
	for _, p := range []string{"/v2/foo/../bar/tags/list", "/v2//foo/tags/list", "/v2/foo/%2E%2E/bar/tags/list", "/v2/foo//bar/tags/list", "/v2/-foo/tags/list", "/v2/a..b/tags/list"} {
		r := tn.req(http.MethodGet, p, nil)
		t.Logf("%s -> %d %v %s", p, r.status, r.header.Get("Location"), r.body)
		r = tn.req(http.MethodPut, p[:len(p)-len("tags/list")]+"manifests/v1", []byte("{}"), "Content-Type", mtOCIManifest)
		t.Logf("PUT -> %d %v %s", r.status, r.header.Get("Location"), r.body)
	}
	tn.client.Timeout = 5 * time.Second
	start := time.Now()
	r, err := http.NewRequest("GET", tn.url+"/v2/_catalog", nil)
	r.Header.Set("Flotilla-Index", "999999999")
	resp, err := tn.client.Do(r)
	t.Logf("index: %v %v after %v", resp, err, time.Since(start))
}
