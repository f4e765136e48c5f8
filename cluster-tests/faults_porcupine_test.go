package clustertests

// Linearizability of the recorded tag history, checked with porcupine
// v1.3.1. The module's go.mod does not require porcupine, so the model and
// the check live in faults_checker.go (//go:build ignore), which is built
// here in a module of its own and run on the history as JSON.

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

//go:embed faults_checker.go
var faultCheckerSource []byte

const (
	faultCheckerGoMod = `module flotilla.test/faultschecker

go 1.21

require github.com/anishathalye/porcupine v1.3.1
`
	faultCheckerGoSum = `github.com/anishathalye/porcupine v1.3.1 h1:fBZ4/NGNPnIDdd6xNtrNk9/GiEQ0L4FO5+scINN+t0E=
github.com/anishathalye/porcupine v1.3.1/go.mod h1:WM0SsFjWNl2Y4BqHr/E/ll2yY1GY1jqn+W7Z/84Zoog=
`
	faultCheckTimeout = 120 * time.Second
)

var (
	faultCheckerOnce sync.Once
	faultCheckerPath string
	faultCheckerErr  error
)

// faultChecker builds the checker once and caches it in the tool cache,
// under a name derived from its source.
func faultChecker(t testing.TB) string {
	t.Helper()
	faultCheckerOnce.Do(func() {
		sum := sha256.Sum256(append(append([]byte(faultCheckerGoMod), faultCheckerGoSum...), faultCheckerSource...))
		dir := filepath.Join(faultToolsDir(), "faults")
		faultCheckerPath = filepath.Join(dir, "porcupine-checker-"+hex.EncodeToString(sum[:6]))
		if _, err := os.Stat(faultCheckerPath); err == nil {
			return
		}
		src, err := os.MkdirTemp("", "flotilla-faults-checker-")
		if err != nil {
			faultCheckerErr = err
			return
		}
		defer os.RemoveAll(src)
		for name, data := range map[string][]byte{
			"go.mod": []byte(faultCheckerGoMod), "go.sum": []byte(faultCheckerGoSum), "main.go": faultCheckerSource,
		} {
			if err := os.WriteFile(filepath.Join(src, name), data, 0o644); err != nil {
				faultCheckerErr = err
				return
			}
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			faultCheckerErr = err
			return
		}
		tmp := faultCheckerPath + ".tmp"
		// main.go carries //go:build ignore: name it explicitly.
		cmd := exec.Command("go", "build", "-o", tmp, "main.go")
		cmd.Dir = src
		cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
		if out, err := cmd.CombinedOutput(); err != nil {
			faultCheckerErr = fmt.Errorf("building the porcupine checker: %v\n%s", err, out)
			return
		}
		faultCheckerErr = os.Rename(tmp, faultCheckerPath)
	})
	if faultCheckerErr != nil {
		t.Fatal(faultCheckerErr)
	}
	return faultCheckerPath
}

type faultCheckOp struct {
	Process int    `json:"process"`
	Kind    string `json:"kind"`
	Key     string `json:"key"`
	Value   string `json:"value"`
	Call    int64  `json:"call"`
	Return  int64  `json:"return"`
	Meta    string `json:"meta"`
}

type faultCheckAnnotation struct {
	Tag         string `json:"tag"`
	Start       int64  `json:"start"`
	End         int64  `json:"end"`
	Description string `json:"description"`
}

// checkLinearizable checks the history of every tag: acknowledged puts and
// answered gets as they are, puts with an unknown outcome as ambiguous (a
// return "at infinity": after every other operation, the final reads
// too), failed puts and unanswered gets left out (they had no effect).
// Each op's metadata names its node and outcome. On a failure porcupine's
// visualization is written into dir and the test fails with its path.
func checkLinearizable(t *testing.T, ops []*faultOp, events []faultEvent, dir string) {
	t.Helper()
	res := faultLinearizability(t, ops, events, dir)
	switch res.Result {
	case "ok":
		t.Logf("linearizable: %d tag operations (%d ambiguous puts) checked in %.1fs", res.ops, res.ambiguous, res.Seconds)
	case "illegal":
		t.Errorf("tag history is NOT linearizable (%d operations, %d ambiguous); history %s, visualization %s %s",
			res.ops, res.ambiguous, res.history, res.Visualization, res.VisErr)
	default:
		t.Errorf("linearizability check undecided after %v (%d operations, %d ambiguous); history %s, visualization %s %s",
			faultCheckTimeout, res.ops, res.ambiguous, res.history, res.Visualization, res.VisErr)
	}
}

type faultCheckResult struct {
	Result        string  `json:"result"` // ok, illegal, unknown
	Visualization string  `json:"visualization"`
	VisErr        string  `json:"visualization_error"`
	Seconds       float64 `json:"seconds"`
	history       string
	ops           int
	ambiguous     int
}

// faultLinearizability runs the checker on the tag operations of ops.
func faultLinearizability(t *testing.T, ops []*faultOp, events []faultEvent, dir string) faultCheckResult {
	t.Helper()
	var end int64
	for _, op := range ops {
		end = max(end, int64(op.Return))
	}
	var in struct {
		Ops            []faultCheckOp         `json:"ops"`
		Annotations    []faultCheckAnnotation `json:"annotations"`
		TimeoutSeconds int                    `json:"timeout_seconds"`
	}
	in.TimeoutSeconds = int(faultCheckTimeout / time.Second)
	unknown := 0
	for _, op := range ops {
		if op.Kind != "put" && op.Kind != "get" {
			continue
		}
		co := faultCheckOp{Process: op.Process, Kind: op.Kind, Key: op.Key, Value: op.Value,
			Call: int64(op.Call), Return: int64(op.Return),
			Meta: fmt.Sprintf("%s via %s, %s", op.Kind, op.Node, op.Outcome)}
		if op.Index != 0 {
			co.Meta += fmt.Sprintf(", index %d", op.Index)
		}
		if op.Detail != "" {
			co.Meta += ": " + op.Detail
		}
		switch {
		case op.Outcome == faultOK:
		case op.Kind == "put" && op.Outcome == faultUnknown:
			co.Return = end + 1
			unknown++
		default:
			continue
		}
		in.Ops = append(in.Ops, co)
	}
	for _, e := range events {
		in.Annotations = append(in.Annotations, faultCheckAnnotation{Tag: "faults", Start: int64(e.Start), End: int64(e.End), Description: e.What})
	}
	raw, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	histPath := filepath.Join(dir, "history.json")
	if err := os.WriteFile(histPath, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	htmlPath := filepath.Join(dir, "linearizability.html")
	out, err := exec.Command(faultChecker(t), histPath, htmlPath).Output()
	if err != nil {
		t.Fatalf("porcupine checker: %v\n%s", err, out)
	}
	var res faultCheckResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("porcupine checker output %q: %v", out, err)
	}
	res.history, res.ops, res.ambiguous = histPath, len(in.Ops), unknown
	return res
}

// TestFaultCheckerModel checks the checker: the tag register model, and
// how unknown and failed writes are treated.
func TestFaultCheckerModel(t *testing.T) {
	const X, Y, Z = "sha256:x", "sha256:y", "sha256:z"
	s := time.Second
	put := func(v string, call, ret time.Duration, o faultOutcome) *faultOp {
		return &faultOp{Kind: "put", Key: "r:t", Value: v, Node: "n1", Call: call, Return: ret, Outcome: o}
	}
	get := func(v string, call, ret time.Duration) *faultOp {
		return &faultOp{Kind: "get", Key: "r:t", Value: v, Node: "n2", Call: call, Return: ret, Outcome: faultOK}
	}
	for _, tc := range []struct {
		name string
		ops  []*faultOp
		want string
	}{
		{"read of the last write", []*faultOp{put(X, 0, s, faultOK), get(X, 2*s, 3*s)}, "ok"},
		{"read of nothing after a write", []*faultOp{put(X, 0, s, faultOK), get("", 2*s, 3*s)}, "illegal"},
		{"read of a value never written", []*faultOp{put(X, 0, s, faultOK), get(Y, 2*s, 3*s)}, "illegal"},
		{"unknown write seen", []*faultOp{put(X, 0, s, faultOK), put(Y, s/2, 2*s, faultUnknown), get(Y, 3*s, 4*s)}, "ok"},
		{"unknown write not seen", []*faultOp{put(X, 0, s, faultOK), put(Y, s/2, 2*s, faultUnknown), get(X, 3*s, 4*s)}, "ok"},
		{"unknown write seen late", []*faultOp{put(X, 0, s, faultOK), put(Y, s/2, 2*s, faultUnknown), get(X, 3*s, 4*s), get(Y, 5*s, 6*s)}, "ok"},
		{"unknown write undone", []*faultOp{put(X, 0, s, faultOK), put(Y, s/2, 2*s, faultUnknown), get(Y, 3*s, 4*s), get(X, 5*s, 6*s)}, "illegal"},
		{"failed write seen", []*faultOp{put(X, 0, s, faultOK), put(Z, 2*s, 3*s, faultFailed), get(Z, 4*s, 5*s)}, "illegal"},
		{"concurrent writes", []*faultOp{put(X, 0, 3*s, faultOK), put(Y, s, 2*s, faultOK), get(X, 4*s, 5*s)}, "ok"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			res := faultLinearizability(t, tc.ops, []faultEvent{{Start: s / 2, End: s, What: "a fault"}}, dir)
			if res.Result != tc.want {
				t.Fatalf("checker says %s, want %s", res.Result, tc.want)
			}
			if tc.want == "illegal" {
				if fi, err := os.Stat(res.Visualization); err != nil || fi.Size() == 0 {
					t.Errorf("no visualization written for an illegal history: %q %v %s", res.Visualization, err, res.VisErr)
				}
			}
		})
	}
}
