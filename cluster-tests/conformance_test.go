package clustertests

import (
	"context"
	"encoding/xml"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The OCI distribution-spec conformance suite
// (github.com/opencontainers/distribution-spec/conformance) is a plain
// program configured by OCI_* environment variables; it writes junit.xml,
// results.yaml and report.html into OCI_RESULTS_DIR and prints a result tree
// ("<name>: Pass|FAIL|Error|Skip|Disabled") on stdout.

// conformanceEnv enables every API and every data type of the suite (spec
// version "dev", which also turns on upload cancel, digest headers and tag
// parameters); sparse manifests only when the server allows them.
func conformanceEnv(registry string, tlsDisabled bool, repo1, repo2, resultsDir string, sparse bool) []string {
	tls := "enabled"
	if tlsDisabled {
		tls = "disabled"
	}
	env := []string{
		"OCI_VERSION=dev",
		"OCI_REGISTRY=" + registry,
		"OCI_TLS=" + tls,
		"OCI_REPO1=" + repo1,
		"OCI_REPO2=" + repo2,
		"OCI_RESULTS_DIR=" + resultsDir,
		"OCI_LOG=warn",
	}
	for _, v := range []string{
		"API_PING", "API_PULL", "API_PUSH",
		"API_BLOBS_ATOMIC", "API_BLOBS_DELETE", "API_BLOBS_DIGEST_HEADER",
		"API_BLOBS_MOUNT_ANONYMOUS", "API_BLOBS_UPLOAD_CANCEL",
		"API_MANIFESTS_ATOMIC", "API_MANIFESTS_DELETE", "API_MANIFESTS_DIGEST_HEADER",
		"API_MANIFESTS_TAG_PARAM",
		"API_TAGS_ATOMIC", "API_TAGS_DELETE", "API_TAGS_LIST",
		"API_REFERRER",
		"DATA_IMAGE", "DATA_INDEX", "DATA_INDEX_LIST", "DATA_ARTIFACT",
		"DATA_SUBJECT", "DATA_SUBJECT_MISSING", "DATA_ARTIFACT_LIST", "DATA_SUBJECT_LIST",
		"DATA_DATA_FIELD", "DATA_NONDISTRIBUTABLE", "DATA_CUSTOM_FIELDS", "DATA_NO_LAYERS",
		"DATA_EMPTY_BLOB", "DATA_SHA512",
	} {
		env = append(env, "OCI_"+v+"=true")
	}
	return append(env, fmt.Sprintf("OCI_DATA_SPARSE=%t", sparse))
}

type junitReport struct {
	Tests    int          `xml:"tests,attr"`
	Errors   int          `xml:"errors,attr"`
	Failures int          `xml:"failures,attr"`
	Skipped  int          `xml:"skipped,attr"`
	Disabled int          `xml:"disabled,attr"`
	Suites   []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Cases []junitCase `xml:"testcase"`
}

type junitCase struct {
	Name      string `xml:"name,attr"`
	Status    string `xml:"status,attr"`
	SystemOut string `xml:"system-out"`
	SystemErr string `xml:"system-err"`
}

type conformanceCase struct {
	name     string
	sparse   bool     // OCI_DATA_SPARSE, and --allow-sparse on the node
	external string   // URL of an already running registry
	repo     string   // repository prefix
	args     []string // unused when external
	s3       bool     // blobs in a real MinIO (--blob-store s3)
}

func TestConformance(t *testing.T) {
	suite := requireTool(t, "conformance")
	cases := []conformanceCase{
		{name: "default", repo: "conformance"},
		{name: "sparse", sparse: true, repo: "conformance-sparse"},
		{name: "s3-default", s3: true, repo: "conformance"},
		{name: "s3-sparse", s3: true, sparse: true, repo: "conformance-sparse"},
	}
	if u := os.Getenv("FLOTILLA_CONFORMANCE_URL"); u != "" {
		cases = []conformanceCase{{
			name:     "external",
			external: u,
			sparse:   os.Getenv("FLOTILLA_CONFORMANCE_SPARSE") == "true",
			repo:     "conformance-" + sha256Hex(randomBytes(t, 8))[:8],
		}}
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var host string
			tlsDisabled := true
			if tc.external != "" {
				u, err := url.Parse(tc.external)
				if err != nil || u.Host == "" {
					t.Fatalf("FLOTILLA_CONFORMANCE_URL=%q: want a URL like http://127.0.0.1:5000", tc.external)
				}
				host, tlsDisabled = u.Host, u.Scheme != "https"
			} else {
				o := registryOptions{allowSparse: tc.sparse}
				if tc.s3 {
					o.s3, o.s3Bucket = startMinIO(t), "conformance"
					o.s3.makeBucket(t, o.s3Bucket)
				}
				host = startRegistry(t, o).Host()
			}
			runConformance(t, suite, host, tlsDisabled, tc)
		})
	}
}

func runConformance(t *testing.T, suite, host string, tlsDisabled bool, tc conformanceCase) {
	work := t.TempDir() // cwd, so no stray oci-conformance.yaml is picked up
	results := filepath.Join(work, "results")
	env := append(os.Environ(), conformanceEnv(host, tlsDisabled, tc.repo+"/repo1", tc.repo+"/repo2", results, tc.sparse)...)
	if tc.external != "" {
		// Debugging a running registry: OCI_* settings from the caller win.
		for _, kv := range os.Environ() {
			if strings.HasPrefix(kv, "OCI_") {
				env = append(env, kv)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, suite)
	cmd.Dir = work
	cmd.Env = env
	out, runErr := cmd.CombinedOutput()
	_ = os.WriteFile(filepath.Join(results, "output.txt"), out, 0o644)
	saveArtifact(t, results)
	if ctx.Err() != nil {
		t.Fatalf("conformance suite still running after %v:\n%s", toolTimeout, clip(out))
	}

	raw, err := os.ReadFile(filepath.Join(results, "junit.xml"))
	if err != nil {
		t.Fatalf("conformance suite wrote no junit.xml (exit: %v):\n%s", runErr, clip(out))
	}
	var rep junitReport
	if err := xml.Unmarshal(raw, &rep); err != nil {
		t.Fatalf("parse junit.xml: %v", err)
	}
	var cases []junitCase
	for _, s := range rep.Suites {
		cases = append(cases, s.Cases...)
	}

	var failed, skipped []junitCase
	passed := 0
	for _, c := range cases {
		switch c.Status {
		case "passed":
			passed++
		case "skipped":
			skipped = append(skipped, c)
		default:
			failed = append(failed, c)
		}
	}
	t.Logf("conformance %s against %s: %d checks: %d passed, %d failed, %d errors, %d skipped, %d disabled",
		tc.name, host, rep.Tests, passed, rep.Failures, rep.Errors, rep.Skipped, rep.Disabled)

	if len(cases) == 0 || passed == 0 {
		t.Fatalf("conformance suite ran no check (exit: %v):\n%s", runErr, clip(out))
	}
	if len(failed) > 0 || rep.Failures+rep.Errors > 0 {
		t.Errorf("%d conformance checks failed:\n%s", len(failed), caseNames(failed))
		shown := map[string]bool{}
		for _, c := range failed {
			if shown[c.Name] {
				continue
			}
			if len(shown) == 25 {
				t.Logf("(details of further failures omitted; set FLOTILLA_TEST_ARTIFACTS=dir to keep report.html)")
				break
			}
			shown[c.Name] = true
			t.Logf("FAILED %s\n  error: %s\n  last exchange:\n%s", c.Name,
				strings.ReplaceAll(strings.TrimSpace(c.SystemOut), "\n", "\n    "), indent(tailString(c.SystemErr, 3<<10)))
		}
	}
	// Skipped (or disabled) checks mean a feature the suite tests is missing
	// or was turned off: every feature must be there.
	if len(skipped) > 0 || rep.Skipped+rep.Disabled > 0 {
		t.Errorf("%d conformance checks skipped and %d disabled; every feature should be enabled and supported:\n%s",
			rep.Skipped, rep.Disabled, caseNames(skipped))
		shown := map[string]bool{}
		for _, c := range skipped {
			if !shown[c.Name] {
				shown[c.Name] = true
				t.Logf("SKIPPED %s: %s", c.Name, skipReason(c))
			}
		}
	}
	if runErr != nil && len(failed) == 0 && rep.Failures+rep.Errors == 0 {
		t.Errorf("conformance suite exited with %v but reported no failure:\n%s", runErr, clip(out))
	}
}

// caseNames lists test case names once each, in order, with a repeat count.
func caseNames(cases []junitCase) string {
	count := map[string]int{}
	var order []string
	for _, c := range cases {
		if count[c.Name] == 0 {
			order = append(order, c.Name)
		}
		count[c.Name]++
	}
	var b strings.Builder
	for _, n := range order {
		if count[n] > 1 {
			fmt.Fprintf(&b, "  %s (x%d)\n", n, count[n])
		} else {
			fmt.Fprintf(&b, "  %s\n", n)
		}
	}
	return b.String()
}

// skipReason returns why the suite skipped a check: its error text, or the
// note it wrote after "skipping test:".
func skipReason(c junitCase) string {
	if r := strings.TrimSpace(c.SystemOut); r != "" {
		return strings.ReplaceAll(r, "\n", " ")
	}
	if _, after, ok := strings.Cut(c.SystemErr, "skipping test:"); ok {
		return strings.ReplaceAll(strings.TrimSpace(after), "\n", " ")
	}
	return "(no reason given)"
}

func tailString(s string, max int) string {
	if len(s) > max {
		return "...(clipped)\n" + s[len(s)-max:]
	}
	return s
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ")
}
