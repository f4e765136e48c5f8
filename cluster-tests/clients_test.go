package clustertests

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

// TestClients drives one running registry with the real clients people use
// and checks that what comes back is byte for byte what went in.
func TestClients(t *testing.T) {
	runClients(t, startRegistry(t, registryOptions{}), true)
}

// TestClientsS3: the same round trips against a node whose blobs are in a
// real MinIO.
func TestClientsS3(t *testing.T) {
	m := startMinIO(t)
	m.makeBucket(t, "clients")
	runClients(t, startRegistry(t, registryOptions{s3: m, s3Bucket: "clients"}), false)
}

func runClients(t *testing.T, reg registryServer, withDocker bool) {
	cases := []struct {
		name string
		run  func(t *testing.T, tl *tools, host string)
	}{
		{"crane", clientCrane},
		{"regctl", clientRegctl},
		{"oras", clientOras},
		{"skopeo", clientSkopeo},
		{"docker", clientDocker},
	}
	for _, tc := range cases {
		if tc.name == "docker" && !withDocker {
			continue // the engine's push and pull are covered on the default node
		}
		t.Run(tc.name, func(t *testing.T) {
			tc.run(t, newTools(t), reg.Host())
		})
	}
}

func lines(b []byte) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

func sortedLines(b []byte) []string {
	l := lines(b)
	sort.Strings(l)
	return l
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func checkBytes(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		if len(want) < 4096 && len(got) < 4096 {
			t.Errorf("%s differs:\n got %q\nwant %q", what, got, want)
		} else {
			t.Errorf("%s differs: got %d bytes (%s), want %d bytes (%s)", what, len(got), sha256Digest(got), len(want), sha256Digest(want))
		}
	}
}

func checkFiles(t testing.TB, what string, got, want map[string][]byte) {
	t.Helper()
	for name, w := range want {
		g, ok := got[name]
		if !ok {
			t.Errorf("%s: file %s missing", what, name)
			continue
		}
		checkBytes(t, what+": "+name, g, w)
	}
}

// ------------------------------------------------------------------ crane

func clientCrane(t *testing.T, tl *tools, host string) {
	requireTool(t, "crane")
	crane := func(args ...string) []byte { return tl.run("crane", append([]string{"--insecure"}, args...)...) }
	img := newRandomImage(t, "crane", 32<<10, 300<<10)
	layout := t.TempDir()
	img.writeLayout(t, layout, "v1")
	repo := host + "/clients/crane/img"
	copyRepo := host + "/clients/crane/copy"

	crane("push", layout, repo+":v1")
	checkBytes(t, "crane manifest", crane("manifest", repo+":v1"), img.Manifest)
	if got := strings.TrimSpace(string(crane("digest", repo+":v1"))); got != img.ManifestDigest {
		t.Errorf("crane digest = %s, want %s", got, img.ManifestDigest)
	}
	for _, b := range img.Blobs() {
		checkBytes(t, "crane blob "+b.Digest, crane("blob", repo+"@"+b.Digest), b.Data)
	}
	pulled := t.TempDir()
	crane("pull", "--format", "oci", repo+":v1", pulled)
	checkLayoutHolds(t, pulled, img)

	crane("copy", repo+":v1", copyRepo+":c1")
	checkBytes(t, "manifest of the copy", crane("manifest", copyRepo+":c1"), img.Manifest)
	crane("tag", copyRepo+":c1", "c2")
	if got := sortedLines(crane("ls", copyRepo)); !slices.Equal(got, []string{"c1", "c2"}) {
		t.Errorf("crane ls %s = %q, want [c1 c2]", copyRepo, got)
	}
	checkBytes(t, "manifest of the new tag", crane("manifest", copyRepo+":c2"), img.Manifest)

	// crane builds and pushes a new image on top of ours.
	extra := map[string][]byte{"data/appended.bin": randomBytes(t, 50<<10)}
	extraTar := filepath.Join(t.TempDir(), "extra.tar")
	writeFile(t, extraTar, tarFiles(t, extra))
	crane("append", "-b", repo+":v1", "-f", extraTar, "-t", repo+":v2")
	fs := untarFiles(t, crane("export", repo+":v2", "-"))
	checkFiles(t, "crane export of the appended image", fs, img.Files)
	checkFiles(t, "crane export of the appended image", fs, extra)
	if got := sortedLines(crane("ls", repo)); !slices.Equal(got, []string{"v1", "v2"}) {
		t.Errorf("crane ls %s = %q, want [v1 v2]", repo, got)
	}

	// Deleting the manifest in one repository leaves the other alone.
	crane("delete", copyRepo+"@"+img.ManifestDigest)
	tl.mustFail("crane", "--insecure", "manifest", copyRepo+"@"+img.ManifestDigest)
	checkBytes(t, "manifest in the source repository after deleting the copy", crane("manifest", repo+":v1"), img.Manifest)
}

// ----------------------------------------------------------------- regctl

func clientRegctl(t *testing.T, tl *tools, host string) {
	requireTool(t, "regctl")
	regctl := func(args ...string) []byte {
		return tl.run("regctl", append(args, "--host", "reg="+host+",tls=disabled")...)
	}
	img := newRandomImage(t, "regctl", 20<<10, 150<<10)
	layout := t.TempDir()
	img.writeLayout(t, layout, "v1")
	repo := host + "/clients/regctl/img"
	copyRepo := host + "/clients/regctl/copy"

	regctl("image", "copy", "ocidir://"+layout+":v1", repo+":v1")
	checkBytes(t, "regctl manifest get", regctl("manifest", "get", "--format", "raw-body", repo+":v1"), img.Manifest)
	for _, b := range img.Blobs() {
		checkBytes(t, "regctl blob get "+b.Digest, regctl("blob", "get", repo, b.Digest), b.Data)
	}
	regctl("image", "copy", repo+":v1", copyRepo+":v1")
	checkBytes(t, "manifest of the copy", regctl("manifest", "get", "--format", "raw-body", copyRepo+":v1"), img.Manifest)
	out := t.TempDir()
	regctl("image", "copy", copyRepo+":v1", "ocidir://"+out+":v1")
	checkLayoutHolds(t, out, img)

	// An artifact that refers to the image through its subject.
	const artifactType = "application/vnd.flotilla.test.sbom"
	payload := randomBytes(t, 4096)
	payloadFile := filepath.Join(t.TempDir(), "sbom.bin")
	writeFile(t, payloadFile, payload)
	regctl("artifact", "put", "--subject", repo+":v1", "--artifact-type", artifactType,
		"--file", payloadFile, "--file-media-type", "application/vnd.flotilla.test.data")
	var refs ociIndex
	body := regctl("artifact", "list", "--format", "body", repo+":v1")
	if err := json.Unmarshal(body, &refs); err != nil {
		t.Fatalf("referrers response: %v\n%s", err, body)
	}
	if len(refs.Manifests) != 1 || refs.Manifests[0].ArtifactType != artifactType {
		t.Fatalf("referrers of %s:v1 = %s, want exactly one %s", repo, body, artifactType)
	}
	artifact := repo + "@" + refs.Manifests[0].Digest
	checkBytes(t, "regctl artifact get", regctl("artifact", "get", artifact), payload)
	var am ociManifest
	if err := json.Unmarshal(regctl("manifest", "get", "--format", "raw-body", artifact), &am); err != nil {
		t.Fatal(err)
	}
	if am.Subject == nil || am.Subject.Digest != img.ManifestDigest {
		t.Errorf("artifact subject = %+v, want %s", am.Subject, img.ManifestDigest)
	}
	// With the referrers API there is no fallback "sha256-..." tag.
	if got := lines(regctl("tag", "ls", repo)); !slices.Equal(got, []string{"v1"}) {
		t.Errorf("regctl tag ls %s = %q, want [v1]", repo, got)
	}

	regctl("tag", "delete", copyRepo+":v1")
	if got := lines(regctl("tag", "ls", copyRepo)); len(got) != 0 {
		t.Errorf("tags of %s after tag delete = %q, want none", copyRepo, got)
	}
	regctl("manifest", "delete", artifact)
	tl.mustFail("regctl", "manifest", "get", artifact, "--host", "reg="+host+",tls=disabled")
	body = regctl("artifact", "list", "--format", "body", repo+":v1")
	refs = ociIndex{}
	if err := json.Unmarshal(body, &refs); err != nil {
		t.Fatalf("referrers response: %v\n%s", err, body)
	}
	if len(refs.Manifests) != 0 {
		t.Errorf("referrers after deleting the artifact = %s, want none", body)
	}
}

// ------------------------------------------------------------------- oras

func clientOras(t *testing.T, tl *tools, host string) {
	requireTool(t, "oras")
	oras := func(dir string, args ...string) []byte {
		return tl.runWith(toolRun{dir: dir}, "oras", args...)
	}
	src := t.TempDir()
	files := map[string][]byte{
		"model.bin": randomBytes(t, 700<<10),
		"notes.txt": []byte("flotilla oras test " + sha256Hex(randomBytes(t, 16)) + "\n"),
	}
	for n, b := range files {
		writeFile(t, filepath.Join(src, n), b)
	}
	meta := t.TempDir()
	ref := host + "/clients/oras/files:v1"
	oras(src, "push", "--plain-http", "--artifact-type", "application/vnd.flotilla.test.files",
		"--export-manifest", filepath.Join(meta, "manifest.json"),
		ref, "model.bin:application/octet-stream", "notes.txt:text/plain")
	pushed := readFile(t, filepath.Join(meta, "manifest.json"))
	checkBytes(t, "oras manifest fetch", oras("", "manifest", "fetch", "--plain-http", ref), pushed)

	out := t.TempDir()
	oras("", "pull", "--plain-http", "-o", out, ref)
	for n, b := range files {
		checkBytes(t, "oras pull "+n, readFile(t, filepath.Join(out, n)), b)
	}

	// Attach a signature-like artifact through the referrers API and find it.
	sig := []byte("signature " + sha256Hex(randomBytes(t, 32)))
	writeFile(t, filepath.Join(src, "sig.txt"), sig)
	const sigType = "application/vnd.flotilla.test.sig"
	oras(src, "attach", "--plain-http", "--distribution-spec", "v1.1-referrers-api",
		"--artifact-type", sigType, "--export-manifest", filepath.Join(meta, "sig.json"),
		ref, "sig.txt:text/plain")
	sigDigest := sha256Digest(readFile(t, filepath.Join(meta, "sig.json")))
	discovered := oras("", "discover", "--plain-http", "--distribution-spec", "v1.1-referrers-api", "--format", "json", ref)
	if !jsonHasReferrer(t, discovered, sigDigest, sigType) {
		t.Errorf("oras discover did not list %s (%s):\n%s", sigDigest, sigType, discovered)
	}
	sigOut := t.TempDir()
	oras("", "pull", "--plain-http", "-o", sigOut, host+"/clients/oras/files@"+sigDigest)
	checkBytes(t, "oras pull of the attached artifact", readFile(t, filepath.Join(sigOut, "sig.txt")), sig)

	// A recursive copy takes the referrer along.
	copyRef := host + "/clients/oras/copy:v1"
	oras("", "cp", "-r", "--from-plain-http", "--to-plain-http", ref, copyRef)
	checkBytes(t, "manifest of the oras copy", oras("", "manifest", "fetch", "--plain-http", copyRef), pushed)
	discovered = oras("", "discover", "--plain-http", "--distribution-spec", "v1.1-referrers-api", "--format", "json", copyRef)
	if !jsonHasReferrer(t, discovered, sigDigest, sigType) {
		t.Errorf("oras discover on the copy did not list %s:\n%s", sigDigest, discovered)
	}
	if got := sortedLines(oras("", "repo", "tags", "--plain-http", host+"/clients/oras/files")); !slices.Equal(got, []string{"v1"}) {
		t.Errorf("oras repo tags = %q, want [v1]", got)
	}
}

// jsonHasReferrer looks anywhere in a JSON document for an object with the
// given digest and artifactType.
func jsonHasReferrer(t testing.TB, doc []byte, digest, artifactType string) bool {
	t.Helper()
	var v any
	if err := json.Unmarshal(doc, &v); err != nil {
		t.Fatalf("parse JSON: %v\n%s", err, doc)
	}
	var walk func(any) bool
	walk = func(v any) bool {
		switch x := v.(type) {
		case map[string]any:
			if x["digest"] == digest && x["artifactType"] == artifactType {
				return true
			}
			for _, c := range x {
				if walk(c) {
					return true
				}
			}
		case []any:
			for _, c := range x {
				if walk(c) {
					return true
				}
			}
		}
		return false
	}
	return walk(v)
}

// ----------------------------------------------------------------- skopeo

func clientSkopeo(t *testing.T, tl *tools, host string) {
	requireTool(t, "skopeo")
	skopeo := func(args ...string) []byte {
		return tl.run("skopeo", append([]string{"--insecure-policy"}, args...)...)
	}
	img := newRandomImage(t, "skopeo", 10<<10, 400<<10)
	layout := t.TempDir()
	img.writeLayout(t, layout, "v1")
	repo := "docker://" + host + "/clients/skopeo/img"
	copyRepo := "docker://" + host + "/clients/skopeo/copy"

	skopeo("copy", "--preserve-digests", "--dest-tls-verify=false", "oci:"+layout+":v1", repo+":v1")
	skopeo("copy", "--preserve-digests", "--src-tls-verify=false", "--dest-tls-verify=false", repo+":v1", copyRepo+":v1")
	checkBytes(t, "skopeo inspect --raw", skopeo("inspect", "--tls-verify=false", "--raw", copyRepo+":v1"), img.Manifest)

	var info struct {
		Digest string
		Layers []string
	}
	raw := skopeo("inspect", "--tls-verify=false", copyRepo+":v1")
	if err := json.Unmarshal(raw, &info); err != nil {
		t.Fatalf("skopeo inspect: %v\n%s", err, raw)
	}
	var wantLayers []string
	for _, l := range img.Layers {
		wantLayers = append(wantLayers, l.Digest)
	}
	if info.Digest != img.ManifestDigest || !slices.Equal(info.Layers, wantLayers) {
		t.Errorf("skopeo inspect = digest %s layers %v, want %s %v", info.Digest, info.Layers, img.ManifestDigest, wantLayers)
	}

	out := t.TempDir()
	skopeo("copy", "--preserve-digests", "--src-tls-verify=false", copyRepo+":v1", "oci:"+out+":v1")
	checkLayoutHolds(t, out, img)

	var tags struct{ Tags []string }
	raw = skopeo("list-tags", "--tls-verify=false", copyRepo)
	if err := json.Unmarshal(raw, &tags); err != nil {
		t.Fatalf("skopeo list-tags: %v\n%s", err, raw)
	}
	if !slices.Equal(tags.Tags, []string{"v1"}) {
		t.Errorf("skopeo list-tags = %q, want [v1]", tags.Tags)
	}
	skopeo("delete", "--tls-verify=false", copyRepo+":v1")
	tl.mustFail("skopeo", "--insecure-policy", "inspect", "--tls-verify=false", "--raw", copyRepo+":v1")
	checkBytes(t, "source manifest after deleting the copy", skopeo("inspect", "--tls-verify=false", "--raw", repo+":v1"), img.Manifest)
}

// ----------------------------------------------------------------- docker

func clientDocker(t *testing.T, tl *tools, host string) {
	docker, err := exec.LookPath("docker")
	if err != nil {
		t.Skip("docker CLI not installed: no engine to test with")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, docker, "info").CombinedOutput(); err != nil {
		t.Skipf("docker engine does not answer (docker info: %v): %s", err, clip(out))
	}
	payload := randomBytes(t, 200<<10)
	buildDir := t.TempDir()
	writeFile(t, filepath.Join(buildDir, "payload.bin"), payload)
	writeFile(t, filepath.Join(buildDir, "Dockerfile"), []byte("FROM scratch\nCOPY payload.bin /payload.bin\n"))
	// A unique repository so that no image of an earlier run is reused.
	repo := "clients/docker/img-" + sha256Hex(randomBytes(t, 8))[:12]
	ref := host + "/" + repo + ":v1"
	t.Cleanup(func() { _, _, _ = tl.exec(toolRun{}, "docker", "rmi", "-f", ref) })

	// The legacy builder: BuildKit needs the buildx plugin, which Debian's
	// engine packages may lack.
	tl.runWith(toolRun{env: []string{"DOCKER_BUILDKIT=0"}}, "docker", "build", "-t", ref, buildDir)
	imageID := strings.TrimSpace(string(tl.run("docker", "inspect", "--format", "{{.Id}}", ref)))
	tl.run("docker", "push", ref)
	repoDigests := lines(tl.run("docker", "inspect", "--format", `{{range .RepoDigests}}{{println .}}{{end}}`, ref))
	if len(repoDigests) != 1 {
		t.Fatalf("RepoDigests after push = %q, want one", repoDigests)
	}
	_, digest, _ := strings.Cut(repoDigests[0], "@")

	// What the registry holds: the manifest docker pushed and a layer with
	// the payload.
	c := newOCIClient("http://" + host)
	m := c.manifest(t, repo, digest)
	if sha256Digest(m.Body) != digest {
		t.Errorf("manifest %s has digest %s", digest, sha256Digest(m.Body))
	}
	var man ociManifest
	if err := json.Unmarshal(m.Body, &man); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, l := range man.Layers {
		if got, ok := untarFiles(t, c.blob(t, repo, l.Digest))["payload.bin"]; ok {
			found = true
			checkBytes(t, "payload in the pushed layer", got, payload)
		}
	}
	if !found {
		t.Errorf("no layer of %s holds payload.bin", digest)
	}

	tl.run("docker", "rmi", ref)
	tl.mustFail("docker", "inspect", ref)
	tl.run("docker", "pull", ref)
	if got := strings.TrimSpace(string(tl.run("docker", "inspect", "--format", "{{.Id}}", ref))); got != imageID {
		t.Errorf("image ID after pull = %s, want %s (config blob differs)", got, imageID)
	}
	if got := lines(tl.run("docker", "inspect", "--format", `{{range .RepoDigests}}{{println .}}{{end}}`, ref)); !slices.Equal(got, repoDigests) {
		t.Errorf("RepoDigests after pull = %q, want %q", got, repoDigests)
	}
	cid := strings.TrimSpace(string(tl.run("docker", "create", ref, "/payload.bin")))
	t.Cleanup(func() { _, _, _ = tl.exec(toolRun{}, "docker", "rm", "-f", cid) })
	out := t.TempDir()
	tl.run("docker", "cp", cid+":/payload.bin", filepath.Join(out, "payload.bin"))
	checkBytes(t, "payload.bin from the pulled image", readFile(t, filepath.Join(out, "payload.bin")), payload)
}
