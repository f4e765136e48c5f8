package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

const tableHelp = `Read JSON reports (files, or directories of *.json) written with --json and
--label, group the rows by system (label), command, point and operation, and
print a markdown table of medians over the repeated runs ("server CPU" is the
CPU time of the processes named with --watch-pid, per operation or per GB).
With --subject S and --baselines A,B, add a table of S's medians divided by
each baseline's (for latency and CPU: baseline divided by S, so above 1 is
always better for S).
S3 "object put/get" rows match registry "blob push/pull" rows of the same
size and concurrency.`

type tableOpts struct {
	subject   string
	baselines list
}

func runTable(ctx context.Context, args []string, stdout, stderr io.Writer) (*Report, *commonOpts, error) {
	o := &tableOpts{}
	fs := newFlagSet("table", stderr, tableHelp)
	fs.StringVar(&o.subject, "subject", "", "label to compare against the baselines")
	fs.Var(&o.baselines, "baselines", "comma-separated labels to compare the subject with")
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	var files []string
	for _, a := range fs.Args() {
		st, err := os.Stat(a)
		if err != nil {
			return nil, nil, err
		}
		if st.IsDir() {
			m, _ := filepath.Glob(filepath.Join(a, "*.json"))
			files = append(files, m...)
		} else {
			files = append(files, a)
		}
	}
	if len(files) == 0 {
		return nil, nil, usageErr("no JSON reports given")
	}
	var reps []*Report
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, nil, err
		}
		var r Report
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, nil, fmt.Errorf("%s: %v", f, err)
		}
		reps = append(reps, &r)
	}
	rows := aggregate(reps)
	writeMarkdown(stdout, rows)
	if o.subject != "" && len(o.baselines) > 0 {
		fmt.Fprintln(stdout)
		writeRatios(stdout, rows, o.subject, o.baselines)
	}
	return nil, nil, nil
}

// point names the load a report applied, for grouping repeated runs and for
// matching one system's rows with another's.
func point(r *Report) string {
	p := r.Params
	get := func(k string) string {
		if v, ok := p[k]; ok && v != nil {
			return fmt.Sprint(v)
		}
		return ""
	}
	var parts []string
	add := func(format, k string) {
		if v := get(k); v != "" {
			parts = append(parts, fmt.Sprintf(format, v))
		}
	}
	switch r.Command {
	case "blobs", "s3":
		add("%s", "size")
		add("chunk %s", "chunk")
		add("part %s", "part_size")
	case "mixed":
		add("mix %s", "mix")
		add("blob %s", "blob_size")
	case "list":
		add("%s repos", "repos")
		add("%s tags", "tags")
		add("n=%s", "page")
	}
	add("c=%s", "concurrency")
	add("%s", "consistency")
	if get("tag_mode") == "overwrite" {
		parts = append(parts, "overwrite")
	}
	return strings.Join(parts, " ")
}

// row is the median of one operation over repeated runs of one point.
type row struct {
	label, command, point, op string
	match                     string
	runs, errors              int
	opsPerSec, mbPerSec       float64
	p50, p99, max             float64
	cores                     map[string]float64
	// serverMs is the CPU time of the watched server processes (all but
	// the client) per operation, in ms; serverSecPerGB the same per 10^9
	// bytes moved. Unlike rates, CPU cost per operation hardly changes when
	// other programs compete for the machine.
	serverMs, serverSecPerGB float64
}

func aggregate(reps []*Report) []row {
	type key struct{ label, command, point, op, match string }
	type acc struct {
		ops, mb, p50, p99, max []float64
		cores                  map[string][]float64
		srvMs, srvGB           []float64
		errors                 int
	}
	groups := map[key]*acc{}
	var order []key
	for _, r := range reps {
		pt, mp := point(r), matchPoint(r)
		for _, res := range r.Results {
			k := key{r.Label, r.Command, pt, res.Op, mp}
			a := groups[k]
			if a == nil {
				a = &acc{cores: map[string][]float64{}}
				groups[k] = a
				order = append(order, k)
			}
			a.ops = append(a.ops, res.OpsPerSec)
			a.mb = append(a.mb, res.MBPerSec)
			a.p50 = append(a.p50, res.P50Ms)
			a.p99 = append(a.p99, res.P99Ms)
			a.max = append(a.max, res.MaxMs)
			a.errors += res.Errors
			server := 0.0
			for k, v := range res.CPU {
				if res.Seconds > 0 {
					a.cores[k] = append(a.cores[k], v/res.Seconds)
				}
				if k != "client" {
					server += v
				}
			}
			if len(res.CPU) > 1 && res.Count > 0 {
				a.srvMs = append(a.srvMs, server*1000/float64(res.Count))
				if res.Bytes > 0 {
					a.srvGB = append(a.srvGB, server/(float64(res.Bytes)/1e9))
				}
			}
		}
	}
	sort.SliceStable(order, func(i, j int) bool {
		a, b := order[i], order[j]
		if a.command != b.command {
			return a.command < b.command
		}
		if a.point != b.point {
			return a.point < b.point
		}
		if a.op != b.op {
			return a.op < b.op
		}
		return a.label < b.label
	})
	var rows []row
	for _, k := range order {
		a := groups[k]
		cores := map[string]float64{}
		for name, v := range a.cores {
			cores[name] = median(v)
		}
		rows = append(rows, row{
			cores: cores, serverMs: median(a.srvMs), serverSecPerGB: median(a.srvGB),
			label: k.label, command: k.command, point: k.point, op: k.op, match: k.match,
			runs: len(a.ops), errors: a.errors,
			opsPerSec: median(a.ops), mbPerSec: median(a.mb),
			p50: median(a.p50), p99: median(a.p99), max: median(a.max),
		})
	}
	return rows
}

func writeMarkdown(w io.Writer, rows []row) {
	fmt.Fprintln(w, "| system | load | op | runs | ops/s | MB/s | p50 ms | p99 ms | max ms | errors | server CPU | cores used |")
	fmt.Fprintln(w, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
	for _, r := range rows {
		mb := "-"
		if r.mbPerSec > 0 {
			mb = fmt.Sprintf("%.0f", r.mbPerSec)
		}
		fmt.Fprintf(w, "| %s | %s %s | %s | %d | %s | %s | %s | %s | %s | %d | %s | %s |\n",
			r.label, r.command, r.point, r.op, r.runs, num(r.opsPerSec), mb, num(r.p50), num(r.p99), num(r.max), r.errors,
			serverCPU(r), coresUsed(r.cores, 1))
	}
}

// serverCPU prints the server CPU cost: seconds per GB for byte moving
// operations, else ms per operation; "-" when no process was watched.
func serverCPU(r row) string {
	switch {
	case r.serverSecPerGB > 0:
		return num(r.serverSecPerGB) + " s/GB"
	case r.serverMs > 0:
		return num(r.serverMs) + " ms/op"
	}
	return "-"
}

// canonicalOp maps S3 operations onto the registry operations they stand
// in for.
func canonicalOp(op string) string {
	switch op {
	case "object put":
		return "blob push"
	case "object get":
		return "blob pull"
	}
	return op
}

// matchPoint is the part of the load that must agree for two systems' rows
// to be compared: S3 rows match registry blob rows of the same size and
// concurrency whatever their part size (a monolithic registry push is what
// a single S3 PUT stands for).
func matchPoint(r *Report) string {
	if r.Command != "s3" {
		return r.Command + "|" + point(r)
	}
	c := *r
	c.Command = "blobs"
	c.Params = map[string]any{"size": r.Params["size"], "concurrency": r.Params["concurrency"]}
	return "blobs|" + point(&c)
}

func matchKey(r row) string { return r.match + "|" + canonicalOp(r.op) }

func writeRatios(w io.Writer, rows []row, subject string, baselines []string) {
	idx := map[string]map[string]row{} // label -> match key -> row
	for _, r := range rows {
		if idx[r.label] == nil {
			idx[r.label] = map[string]row{}
		}
		idx[r.label][matchKey(r)] = r
	}
	fmt.Fprintf(w, "| %s vs | load | op | throughput ratio | p50 ratio | p99 ratio | server CPU ratio |\n", subject)
	fmt.Fprintln(w, "|---|---|---|---:|---:|---:|---:|")
	for _, r := range rows {
		if r.label != subject {
			continue
		}
		for _, b := range baselines {
			br, ok := idx[b][matchKey(r)]
			if !ok {
				continue
			}
			thr := ratio(r.opsPerSec, br.opsPerSec)
			if r.mbPerSec > 0 && br.mbPerSec > 0 {
				thr = ratio(r.mbPerSec, br.mbPerSec)
			}
			cpu := ratio(br.serverMs, r.serverMs)
			if r.serverSecPerGB > 0 && br.serverSecPerGB > 0 {
				cpu = ratio(br.serverSecPerGB, r.serverSecPerGB)
			}
			fmt.Fprintf(w, "| %s | %s %s | %s | %s | %s | %s | %s |\n", b, r.command, r.point, r.op,
				thr, ratio(br.p50, r.p50), ratio(br.p99, r.p99), cpu)
		}
	}
}

func ratio(a, b float64) string {
	if a <= 0 || b <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

// num prints a figure with precision that suits its size.
func num(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}
