package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The end-to-end test runs every subcommand briefly against real servers:
// CNCF Distribution (the `registry` binary), a flotilla node built from
// ./cmd/flotilla, and MinIO for the s3 command. It checks that each run
// finishes, reports operations and no errors; it asserts nothing about time.

func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	msg := fmt.Sprintf("%s not found on PATH; scripts/test.sh installs it", name)
	if os.Getenv("FLOTILLA_REQUIRE_TOOLS") == "1" {
		t.Fatalf("%s (FLOTILLA_REQUIRE_TOOLS=1)", msg)
	}
	t.Skip(msg)
	return ""
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func addr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// startProc starts a server, stops it at the end of the test, and waits
// until probe answers 200.
func startProc(t *testing.T, probe string, env []string, bin string, args ...string) {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), filepath.Base(bin)+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			if len(b) > 4000 {
				b = b[len(b)-4000:]
			}
			t.Logf("%s log (tail):\n%s", filepath.Base(bin), b)
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case err := <-exited:
			b, _ := os.ReadFile(logPath)
			t.Fatalf("%s exited before it was ready: %v\n%s", bin, err, b)
		default:
		}
		resp, err := http.Get(probe)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready at %s after 60s (last: %v)", bin, probe, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" {
		t.Fatalf("go env GOMOD: %v", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

func startDistribution(t *testing.T) string {
	bin := requireTool(t, "registry")
	a := addr(freePort(t))
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
  secret: flotilla-bench-test
`, filepath.Join(t.TempDir(), "data"), a)
	p := filepath.Join(t.TempDir(), "config.yml")
	if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	startProc(t, "http://"+a+"/v2/", []string{"OTEL_TRACES_EXPORTER=none"}, bin, "serve", p)
	return a
}

func startFlotilla(t *testing.T) string {
	bin := filepath.Join(t.TempDir(), "flotilla")
	build := exec.Command("go", "build", "-o", bin, "./cmd/flotilla")
	build.Dir = moduleRoot(t)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/flotilla: %v\n%s", err, out)
	}
	a := addr(freePort(t))
	startProc(t, "http://"+a+"/readyz", nil, bin, "serve",
		"--data-dir", filepath.Join(t.TempDir(), "data"), "--http-addr", a,
		"--raft-addr", addr(freePort(t)), "--grpc-addr", addr(freePort(t)))
	return a
}

// bench runs one subcommand in-process with --json and returns its report.
func bench(t *testing.T, dir string, args ...string) *Report {
	t.Helper()
	var stdout, stderr bytes.Buffer
	args = append(args, "--json", "--timeout", "2m")
	code := run(context.Background(), args, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("flotilla-bench %s: exit %d\nstderr: %s\nstdout: %s", strings.Join(args, " "), code, stderr.String(), stdout.String())
	}
	var rep Report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("flotilla-bench %s: output is not a JSON report: %v\n%s", args[0], err, stdout.String())
	}
	if len(rep.Results) == 0 {
		t.Fatalf("flotilla-bench %s: no results", args[0])
	}
	for _, r := range rep.Results {
		if r.Count == 0 || r.Errors != 0 {
			t.Errorf("flotilla-bench %s: %s ran %d ops with %d errors (first: %s)", args[0], r.Op, r.Count, r.Errors, r.FirstError)
		}
	}
	if dir != "" {
		name := fmt.Sprintf("%s-%s-%d.json", rep.Label, rep.Command, time.Now().UnixNano())
		if err := os.WriteFile(filepath.Join(dir, name), stdout.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return &rep
}

func registrySubcommands(t *testing.T, label, a, dir string) {
	rep := bench(t, dir, "blobs", "--registry", a, "--label", label, "--size", "300KiB", "--concurrency", "2", "--count", "4")
	if rep.Results[0].Op != "blob push" || rep.Results[1].Op != "blob pull" || rep.Results[1].Bytes != 4*300<<10 {
		t.Errorf("blobs results = %+v", rep.Results)
	}
	bench(t, dir, "blobs", "--registry", a, "--label", label, "--size", "1MiB", "--chunk", "300KiB", "--concurrency", "2", "--count", "2")
	bench(t, dir, "blobs", "--registry", a, "--label", label, "--size", "64KiB", "--concurrency", "2", "--duration", "200ms")
	rep = bench(t, dir, "manifests", "--registry", a, "--label", label, "--concurrency", "4", "--duration", "300ms", "--repos", "2")
	if len(rep.Results) != 2 {
		t.Errorf("manifests results = %+v", rep.Results)
	}
	bench(t, dir, "manifests", "--targets", a+","+a, "--label", label, "--concurrency", "2", "--duration", "200ms",
		"--tag-mode", "overwrite", "--stale")
	bench(t, dir, "mixed", "--registry", a, "--label", label, "--concurrency", "4", "--duration", "500ms",
		"--blob-size", "64KiB", "--mix", "blob=1,put=1,get=2")
	rep = bench(t, dir, "list", "--registry", a, "--label", label, "--repos", "5", "--tags", "25", "--big-repos", "2", "--page", "4")
	var tagsNote bool
	for _, n := range rep.Notes {
		// 5 repositories with one tag each, 20 more over 2 of them: 22 tags.
		tagsNote = tagsNote || strings.HasPrefix(n, "tags: 22 tags in 6 pages")
	}
	if !tagsNote {
		t.Errorf("list did not walk all tags of the big repositories: notes %q", rep.Notes)
	}
}

func TestEndToEndDistribution(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	a := startDistribution(t)
	registrySubcommands(t, "distribution", a, "")
}

func TestEndToEndFlotilla(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	a := startFlotilla(t)
	dir := t.TempDir()
	registrySubcommands(t, "flotilla", a, dir)

	// The table command reads those reports back.
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"table", dir}, &stdout, &stderr); code != 0 {
		t.Fatalf("table: exit %d: %s", code, stderr.String())
	}
	for _, want := range []string{"| flotilla | blobs 300KiB c=2 | blob push | 1 |", "| flotilla | manifests c=4 | tag get |"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("table output lacks %q:\n%s", want, stdout.String())
		}
	}
}

func TestEndToEndS3(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	bin := requireTool(t, "minio")
	a := addr(freePort(t))
	startProc(t, "http://"+a+"/minio/health/live",
		[]string{"MINIO_ROOT_USER=benchtest", "MINIO_ROOT_PASSWORD=benchtest-secret", "MINIO_BROWSER=off"},
		bin, "server", "--quiet", "--address", a, filepath.Join(t.TempDir(), "minio"))
	creds := []string{"--endpoint", a, "--access-key", "benchtest", "--secret-key", "benchtest-secret", "--bucket", "bench-test"}
	rep := bench(t, "", append([]string{"s3", "--size", "300KiB", "--concurrency", "2", "--count", "4"}, creds...)...)
	if len(rep.Results) != 2 || rep.Results[1].Op != "object get" {
		t.Errorf("s3 results = %+v", rep.Results)
	}
	bench(t, "", append([]string{"s3", "--size", "6MiB", "--part-size", "5MiB", "--concurrency", "1", "--count", "1"}, creds...)...)
}

func TestRefusesNonLoopback(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"manifests", "--registry", "192.0.2.1:5000", "--duration", "1s"}, &stdout, &stderr)
	if code != 2 || !strings.Contains(stderr.String(), "not a loopback address") {
		t.Errorf("exit %d, stderr %q; want a usage error naming loopback", code, stderr.String())
	}
}
