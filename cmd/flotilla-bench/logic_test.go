package main

import (
	"context"
	"reflect"
	"sync"
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{"0", 0, false},
		{"4096", 4096, false},
		{"12B", 12, false},
		{"1k", 1024, false},
		{"1KiB", 1024, false},
		{"1KB", 1000, false},
		{"32MiB", 32 << 20, false},
		{"32mib", 32 << 20, false},
		{"32M", 32 << 20, false},
		{"32MB", 32e6, false},
		{"1.5MiB", 3 << 19, false},
		{"2GiB", 2 << 30, false},
		{"2GB", 2e9, false},
		{"1TiB", 1 << 40, false},
		{" 8 MiB ", 8 << 20, false},
		{"", 0, true},
		{"MiB", 0, true},
		{"-1", 0, true},
		{"12XB", 0, true},
		{"1.2.3M", 0, true},
		{"1e30TiB", 0, true},
	}
	for _, tt := range tests {
		got, err := parseSize(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("parseSize(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if got != tt.want {
			t.Errorf("parseSize(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

func TestFormatSize(t *testing.T) {
	tests := []struct {
		in   int64
		want string
	}{
		{0, "0B"},
		{512, "512B"},
		{1024, "1KiB"},
		{32 << 20, "32MiB"},
		{3 << 19, "1.5MiB"},
		{5 << 30, "5GiB"},
	}
	for _, tt := range tests {
		if got := formatSize(tt.in); got != tt.want {
			t.Errorf("formatSize(%d) = %q, want %q", tt.in, got, tt.want)
		}
		if back, err := parseSize(formatSize(tt.in)); err != nil || back != tt.in {
			t.Errorf("parseSize(formatSize(%d)) = %d, %v", tt.in, back, err)
		}
	}
}

func durations(ms ...int) []time.Duration {
	out := make([]time.Duration, len(ms))
	for i, m := range ms {
		out[i] = time.Duration(m) * time.Millisecond
	}
	return out
}

func TestPercentile(t *testing.T) {
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one p50", durations(7), 50, 7 * time.Millisecond},
		{"one p99", durations(7), 99, 7 * time.Millisecond},
		{"two p50", durations(1, 2), 50, 1 * time.Millisecond},
		{"two p51", durations(1, 2), 51, 2 * time.Millisecond},
		{"odd p50", durations(1, 2, 3, 4, 5), 50, 3 * time.Millisecond},
		{"p100 is max", durations(1, 2, 3, 4, 5), 100, 5 * time.Millisecond},
		{"p0 is min", durations(1, 2, 3, 4, 5), 0, 1 * time.Millisecond},
		{"hundred p50", hundred, 50, 50 * time.Millisecond},
		{"hundred p90", hundred, 90, 90 * time.Millisecond},
		{"hundred p99", hundred, 99, 99 * time.Millisecond},
		{"hundred p99.9", hundred, 99.9, 100 * time.Millisecond},
		{"ten p99 is max", durations(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 99, 10 * time.Millisecond},
		{"over 100 clamps", durations(1, 2), 150, 2 * time.Millisecond},
	}
	for _, tt := range tests {
		if got := percentile(tt.sorted, tt.p); got != tt.want {
			t.Errorf("%s: percentile(p%v) = %v, want %v", tt.name, tt.p, got, tt.want)
		}
	}
}

func TestMedian(t *testing.T) {
	tests := []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{5}, 5},
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{100, 1, 2}, 2},
	}
	for _, tt := range tests {
		in := append([]float64(nil), tt.in...)
		if got := median(tt.in); got != tt.want {
			t.Errorf("median(%v) = %v, want %v", tt.in, got, tt.want)
		}
		for i := range in {
			if in[i] != tt.in[i] {
				t.Errorf("median reordered its input")
			}
		}
	}
}

func TestSummarize(t *testing.T) {
	lat := durations(40, 10, 30, 20)
	res := summarize("op", lat, 4e6, 1, "boom", 2*time.Second)
	want := Result{Op: "op", Count: 4, Errors: 1, Seconds: 2, OpsPerSec: 2, Bytes: 4e6, MBPerSec: 2,
		MeanMs: 25, P50Ms: 20, P90Ms: 40, P99Ms: 40, MaxMs: 40, FirstError: "boom"}
	if !reflect.DeepEqual(res, want) {
		t.Errorf("summarize = %+v\nwant %+v", res, want)
	}
	if lat[0] != 40*time.Millisecond {
		t.Errorf("summarize sorted its input")
	}
	if z := summarize("none", nil, 0, 0, "", 0); z.OpsPerSec != 0 || z.P99Ms != 0 {
		t.Errorf("empty summarize = %+v", z)
	}
}

func TestNextLink(t *testing.T) {
	tests := []struct {
		name   string
		header string
		want   string
		ok     bool
	}{
		{"empty", "", "", false},
		{"distribution catalog", `</v2/_catalog?last=a%2Fb&n=100>; rel="next"`, "/v2/_catalog?last=a%2Fb&n=100", true},
		{"flotilla tags", `</v2/r/tags/list?n=100&last=v1>; rel="next"`, "/v2/r/tags/list?n=100&last=v1", true},
		{"unquoted rel", `</v2/_catalog?n=1&last=x>; rel=next`, "/v2/_catalog?n=1&last=x", true},
		{"absolute", `<http://127.0.0.1:5000/v2/_catalog?n=2&last=b>; rel="next"`, "http://127.0.0.1:5000/v2/_catalog?n=2&last=b", true},
		{"only prev", `</v2/_catalog?n=1>; rel="prev"`, "", false},
		{"prev then next", `</a>; rel="prev", </b>; rel="next"`, "/b", true},
		{"rel list", `</c>; rel="prefetch next"`, "/c", true},
		{"case", `</d>; REL="Next"`, "/d", true},
		{"extra params", `</e>; title="a, b; c"; rel="next"`, "/e", true},
		{"comma in uri", `</f?x=1,2>; rel="next"`, "/f?x=1,2", true},
		{"no brackets", `/g; rel="next"`, "", false},
		{"unterminated", `</h; rel="next"`, "", false},
		{"spaces", `  </i> ;  rel = "next" `, "/i", true},
	}
	for _, tt := range tests {
		got, ok := nextLink(tt.header)
		if got != tt.want || ok != tt.ok {
			t.Errorf("%s: nextLink(%q) = %q, %v; want %q, %v", tt.name, tt.header, got, ok, tt.want, tt.ok)
		}
	}
}

func TestParseMix(t *testing.T) {
	kinds := []string{"blob", "put", "get"}
	tests := []struct {
		in      string
		want    map[string]int
		wantErr bool
	}{
		{"blob=1,put=4,get=15", map[string]int{"blob": 1, "put": 4, "get": 15}, false},
		{"get=1", map[string]int{"get": 1}, false},
		{" put = 2 , get=0 ", map[string]int{"put": 2, "get": 0}, false},
		{"get=1,get=2", map[string]int{"get": 3}, false},
		{"", nil, true},
		{"get=0", nil, true},
		{"del=1", nil, true},
		{"get", nil, true},
		{"get=-1", nil, true},
		{"get=x", nil, true},
	}
	for _, tt := range tests {
		got, err := parseMix(tt.in, kinds)
		if (err != nil) != tt.wantErr {
			t.Errorf("parseMix(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if err != nil {
			continue
		}
		if len(got) != len(tt.want) {
			t.Errorf("parseMix(%q) = %v, want %v", tt.in, got, tt.want)
		}
		for k, v := range tt.want {
			if got[k] != v {
				t.Errorf("parseMix(%q)[%s] = %d, want %d", tt.in, k, got[k], v)
			}
		}
	}
}

func TestPickWeighted(t *testing.T) {
	kinds := []string{"blob", "put", "get"}
	w := map[string]int{"blob": 1, "put": 0, "get": 3}
	tests := []struct {
		r    int
		want string
	}{{0, "blob"}, {1, "get"}, {2, "get"}, {3, "get"}}
	for _, tt := range tests {
		if got := pickWeighted(w, kinds, tt.r); got != tt.want {
			t.Errorf("pickWeighted(%d) = %s, want %s", tt.r, got, tt.want)
		}
	}
}

func TestWithDigest(t *testing.T) {
	tests := []struct {
		loc, want string
	}{
		{"/v2/r/blobs/uploads/abc", "/v2/r/blobs/uploads/abc?digest=sha256%3A00"},
		{"http://127.0.0.1:5000/v2/r/blobs/uploads/u?_state=xyz", "http://127.0.0.1:5000/v2/r/blobs/uploads/u?_state=xyz&digest=sha256%3A00"},
	}
	for _, tt := range tests {
		got, err := withDigest(tt.loc, "sha256:00")
		if err != nil || got != tt.want {
			t.Errorf("withDigest(%q) = %q, %v; want %q", tt.loc, got, err, tt.want)
		}
	}
}

func TestCheckAddrs(t *testing.T) {
	tests := []struct {
		in          []string
		allowRemote bool
		want        []string
		wantErr     bool
	}{
		{[]string{"127.0.0.1:5000"}, false, []string{"127.0.0.1:5000"}, false},
		{[]string{"localhost:5000", "http://[::1]:5001"}, false, []string{"localhost:5000", "[::1]:5001"}, false},
		{[]string{"127.0.0.2:5000/ignored/path"}, false, []string{"127.0.0.2:5000"}, false},
		{[]string{"10.0.0.1:5000"}, false, nil, true},
		{[]string{"registry.example.com:5000"}, false, nil, true},
		{[]string{"10.0.0.1:5000"}, true, []string{"10.0.0.1:5000"}, false},
		{[]string{"127.0.0.1"}, false, nil, true},
		{[]string{"https://127.0.0.1:5000"}, false, nil, true},
		{[]string{"", " "}, false, nil, true},
	}
	for _, tt := range tests {
		got, err := checkAddrs(tt.in, tt.allowRemote)
		if (err != nil) != tt.wantErr {
			t.Errorf("checkAddrs(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if len(got) != len(tt.want) {
			t.Errorf("checkAddrs(%q) = %v, want %v", tt.in, got, tt.want)
			continue
		}
		for i := range got {
			if got[i].Host != tt.want[i] || got[i].Scheme != "http" {
				t.Errorf("checkAddrs(%q)[%d] = %v, want http://%s", tt.in, i, got[i], tt.want[i])
			}
		}
	}
}

func TestPhaseCount(t *testing.T) {
	for _, tt := range []struct{ workers, count int }{{1, 5}, {4, 10}, {8, 3}, {3, 0}} {
		var mu sync.Mutex
		seen := map[int]int{}
		p := phase{workers: tt.workers, count: tt.count, duration: time.Millisecond}
		p.run(context.Background(), func(_ context.Context, w, seq int) error {
			mu.Lock()
			seen[seq]++
			mu.Unlock()
			return nil
		})
		if tt.count == 0 {
			continue // by duration: any number
		}
		if len(seen) != tt.count {
			t.Errorf("workers %d count %d: ran %d distinct ops", tt.workers, tt.count, len(seen))
		}
		for seq, n := range seen {
			if seq < 0 || seq >= tt.count || n != 1 {
				t.Errorf("workers %d count %d: seq %d ran %d times", tt.workers, tt.count, seq, n)
			}
		}
	}
}

func TestPhaseStopsAfterMaxErrors(t *testing.T) {
	var mu sync.Mutex
	calls := 0
	p := phase{workers: 2, duration: time.Minute, maxErrors: 5}
	p.run(context.Background(), func(context.Context, int, int) error {
		mu.Lock()
		calls++
		mu.Unlock()
		return context.DeadlineExceeded
	})
	if calls < 5 || calls > 7 {
		t.Errorf("phase ran %d failing ops, want 5 (plus at most one in flight per other worker)", calls)
	}
}

func TestPointAndRatios(t *testing.T) {
	mk := func(label, cmd string, params map[string]any, res ...Result) *Report {
		return &Report{Label: label, Command: cmd, Params: params, Results: res}
	}
	blobs := map[string]any{"size": "32MiB", "concurrency": 4, "mode": "monolithic", "count": 16}
	s3 := map[string]any{"size": "32MiB", "concurrency": 4, "mode": "single PUT", "bucket": "b"}
	man := map[string]any{"concurrency": 64, "duration": "10s", "repos": 4}
	reps := []*Report{
		mk("flotilla", "blobs", blobs, Result{Op: "blob push", MBPerSec: 200}),
		mk("flotilla", "blobs", blobs, Result{Op: "blob push", MBPerSec: 100}),
		mk("flotilla", "blobs", blobs, Result{Op: "blob push", MBPerSec: 300}),
		mk("minio", "s3", s3, Result{Op: "object put", MBPerSec: 250}),
		mk("distribution", "blobs", blobs, Result{Op: "blob push", MBPerSec: 50}),
		mk("flotilla", "manifests", man, Result{Op: "tag get", OpsPerSec: 1000, P99Ms: 5}),
		mk("distribution", "manifests", man, Result{Op: "tag get", OpsPerSec: 50, P99Ms: 50}),
	}
	if got := point(reps[0]); got != "32MiB c=4" {
		t.Errorf("point(blobs) = %q", got)
	}
	if got := point(reps[5]); got != "c=64" {
		t.Errorf("point(manifests) = %q", got)
	}
	rows := aggregate(reps)
	var fl row
	for _, r := range rows {
		if r.label == "flotilla" && r.op == "blob push" {
			fl = r
		}
	}
	if fl.runs != 3 || fl.mbPerSec != 200 {
		t.Errorf("flotilla blob push row = %+v, want 3 runs, median 200", fl)
	}
	idx := map[string]row{}
	for _, r := range rows {
		idx[r.label+"|"+matchKey(r)] = r
	}
	if _, ok := idx["minio|"+matchKey(fl)]; !ok {
		t.Errorf("s3 object put does not match blob push: keys %v", idx)
	}
	if got := ratio(200, 50); got != "4.00x" {
		t.Errorf("ratio = %s", got)
	}
	if got := ratio(0, 50); got != "-" {
		t.Errorf("ratio of nothing = %s", got)
	}
}
