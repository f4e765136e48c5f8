package clustertests

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Disaster recovery as the README tells it: `flotilla snapshot save` from a
// running node, every node gone, `flotilla snapshot restore` into an empty
// data dir, a node started on it bootstraps a new cluster holding the same
// registry (blobs stay in the bucket).
func TestSnapshotSaveRestore(t *testing.T) {
	m := startMinIO(t)
	m.makeBucket(t, "drbucket")
	old := startNode(t, nodeConfig{ID: "old", Args: s3Args(m, "drbucket")})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := newRegClient()
	cfg := newBlob("application/vnd.oci.image.config.v1+json", []byte(`{"dr":1}`))
	layer := newBlob("application/vnd.oci.image.layer.v1.tar", []byte("dr layer bytes"))
	for _, b := range []blob{cfg, layer} {
		if err := c.pushBlob(ctx, old.Host(), old.Host(), "dr/app", b.Data); err != nil {
			t.Fatal(err)
		}
	}
	manifest := smallManifest(cfg, []blob{layer}, "drbucket")
	if _, _, err := c.putManifest(ctx, old.Host(), "dr/app", "v1", mtOCIManifest, manifest); err != nil {
		t.Fatal(err)
	}

	backup := filepath.Join(t.TempDir(), "backup.db")
	bin := flotillaBinary(t)
	if out, err := exec.Command(bin, "snapshot", "save", backup, "--url", old.URL()).CombinedOutput(); err != nil {
		t.Fatalf("snapshot save: %v\n%s", err, out)
	}
	old.stopClean()

	dataDir := filepath.Join(t.TempDir(), "restored")
	if out, err := exec.Command(bin, "snapshot", "restore", backup, "--data-dir", dataDir).CombinedOutput(); err != nil {
		t.Fatalf("snapshot restore: %v\n%s", err, out)
	}
	// Restoring over existing raft state is refused.
	if out, err := exec.Command(bin, "snapshot", "restore", backup, "--data-dir", old.DataDir).CombinedOutput(); err == nil {
		t.Fatalf("restore into a data dir with raft state succeeded:\n%s", out)
	}
	fresh := startNode(t, nodeConfig{ID: "fresh", DataDir: dataDir, Args: s3Args(m, "drbucket")})
	r, d, err := c.getManifest(ctx, fresh.Host(), "dr/app", "v1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if d != sha256Digest(manifest) {
		t.Fatalf("restored tag points at %s", d)
	}
	_ = r
	got, err := c.do(ctx, fresh.Host(), "GET", "/v2/dr/app/blobs/"+layer.Digest, nil, nil)
	if err != nil || got.Status != 200 || string(got.Body) != string(layer.Data) {
		t.Fatalf("restored blob: %v %d", err, got.Status)
	}
	// The new cluster takes writes.
	if _, _, err := c.putManifest(ctx, fresh.Host(), "dr/app", "v2", mtOCIManifest, manifest); err != nil {
		t.Fatal(err)
	}
}
