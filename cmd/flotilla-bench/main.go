// Command flotilla-bench is a load generator for any registry that speaks the
// OCI Distribution API over plain http (flotilla, CNCF Distribution, ...),
// and for an S3 endpoint directly, as the ceiling to compare against.
//
//	flotilla-bench blobs     --registry 127.0.0.1:5000 --size 32MiB --concurrency 4 --count 16 [--chunk 8MiB]
//	flotilla-bench manifests --registry 127.0.0.1:5000 --concurrency 16 --duration 10s [--repos 4] [--targets a,b] [--stale]
//	flotilla-bench mixed     --registry 127.0.0.1:5000 --concurrency 16 --duration 10s [--mix blob=1,put=4,get=15]
//	flotilla-bench s3        --endpoint 127.0.0.1:9000 --access-key K --secret-key S --bucket B --size 32MiB --concurrency 4
//	flotilla-bench list      --registry 127.0.0.1:5000 --repos 10000 --tags 100000
//	flotilla-bench table     results/*.json
//
// Every run is bounded: by --count or --duration, and in all cases by
// --timeout. It talks only to the addresses it is given, which must be
// loopback addresses unless --allow-remote is set. Output is a table, or
// JSON with --json.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `flotilla-bench: load generator for OCI registries (plain http) and S3

usage: flotilla-bench <command> [flags]

commands:
  blobs      blob push and pull throughput (MB/s), monolithic or chunked
  manifests  manifest PUT by tag and GET by tag: ops/s and latency
  mixed      blob pushes, manifest PUTs and tag GETs at once
  s3         PUT/GET objects directly on an S3 endpoint (the ceiling)
  list       populate repositories and tags, then time catalog and tag list pages
  table      median markdown table over JSON reports (as run-bench.sh writes them)

run "flotilla-bench <command> -h" for the flags of a command.
`

// command runs one subcommand and returns its report (nil for commands that
// print by themselves).
type command func(ctx context.Context, args []string, stdout, stderr io.Writer) (*Report, *commonOpts, error)

var commands = map[string]command{
	"blobs":     runBlobs,
	"manifests": runManifests,
	"mixed":     runMixed,
	"s3":        runS3,
	"list":      runList,
	"table":     runTable,
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "flotilla-bench: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	cpu0 := cpuSeconds()
	rep, opts, err := cmd(ctx, args[1:], stdout, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if rep != nil && opts != nil {
		rep.ClientCPUSeconds = cpuSeconds() - cpu0
		if perr := printReport(stdout, rep, opts.json); perr != nil && err == nil {
			err = perr
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "flotilla-bench %s: %v\n", args[0], err)
		if errors.Is(err, errUsage) {
			return 2
		}
		return 1
	}
	if rep != nil && rep.failed() {
		return 1
	}
	return 0
}

var errUsage = errors.New("usage")

func usageErr(format string, a ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, a...))
}

// ---------------------------------------------------------------- options

// commonOpts are the flags every command has.
type commonOpts struct {
	json        bool
	label       string
	concurrency int
	duration    time.Duration
	timeout     time.Duration
	reqTimeout  time.Duration
	allowRemote bool
	cpuProfile  string
	prefix      string
	maxErrors   int
	watchPIDs   list
	watch       *cpuWatch
}

func (o *commonOpts) register(fs *flag.FlagSet, defConc int, defDur time.Duration) {
	fs.BoolVar(&o.json, "json", false, "print the report as JSON")
	fs.StringVar(&o.label, "label", "", "name of the system under test, recorded in the report (e.g. flotilla, distribution)")
	fs.IntVar(&o.concurrency, "concurrency", defConc, "parallel clients")
	fs.DurationVar(&o.duration, "duration", defDur, "how long each measured phase runs")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Minute, "hard bound on the whole run, setup included")
	fs.DurationVar(&o.reqTimeout, "request-timeout", 2*time.Minute, "bound on one operation")
	fs.BoolVar(&o.allowRemote, "allow-remote", false, "allow addresses that are not loopback")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of this client to the file")
	fs.StringVar(&o.prefix, "prefix", "", "repository name prefix (default bench-<random>, unique per run)")
	fs.IntVar(&o.maxErrors, "max-errors", 1000, "stop a phase after this many failed operations")
	fs.Var(&o.watchPIDs, "watch-pid", "name=pid of a local server process whose CPU time to report per phase (repeatable, comma-separated)")
}

func newFlagSet(name string, stderr io.Writer, help string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: flotilla-bench %s [flags]\n\n%s\n\nflags:\n", name, help)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses args and checks the common flags.
func (o *commonOpts) parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErr("unexpected arguments %q", fs.Args())
	}
	if o.concurrency < 1 || o.concurrency > 4096 {
		return usageErr("--concurrency must be in 1..4096")
	}
	if o.timeout <= 0 {
		return usageErr("--timeout must be positive")
	}
	w, err := parseWatch(o.watchPIDs)
	if err != nil {
		return usageErr("%v", err)
	}
	o.watch = w
	if o.prefix == "" {
		o.prefix = "bench-" + randomID(6)
	}
	return nil
}

// start applies the hard timeout and starts the profile; the returned stop
// must run at the end.
func (o *commonOpts) start(ctx context.Context) (context.Context, func(), error) {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	if o.cpuProfile == "" {
		return ctx, cancel, nil
	}
	f, err := os.Create(o.cpuProfile)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		cancel()
		return nil, nil, err
	}
	return ctx, func() { pprof.StopCPUProfile(); f.Close(); cancel() }, nil
}

// size is a flag.Value for byte sizes.
type size int64

func (s *size) String() string { return formatSize(int64(*s)) }
func (s *size) Set(v string) error {
	n, err := parseSize(v)
	if err != nil {
		return err
	}
	*s = size(n)
	return nil
}

// list is a comma-separated flag.Value.
type list []string

func (l *list) String() string { return strings.Join(*l, ",") }
func (l *list) Set(v string) error {
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l = append(*l, p)
		}
	}
	return nil
}

// ----------------------------------------------------------------- report

// Report is what a command measured.
type Report struct {
	Command string         `json:"command"`
	Label   string         `json:"label,omitempty"`
	Targets []string       `json:"targets"`
	Started time.Time      `json:"started"`
	Params  map[string]any `json:"params"`
	Results []Result       `json:"results"`
	Notes   []string       `json:"notes,omitempty"`
	Host    HostInfo       `json:"host"`
	// ClientCPUSeconds is the user+system CPU time this client used for the
	// whole command, setup included: on a small machine the client competes
	// with the server for the same cores.
	ClientCPUSeconds float64 `json:"client_cpu_seconds"`
}

// cpuSeconds is the user+system CPU time of this process so far.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

// HostInfo describes the machine the client ran on.
type HostInfo struct {
	CPUs      int    `json:"cpus"`
	GoVersion string `json:"go_version"`
	OS        string `json:"os"`
}

func newReport(cmd string, o *commonOpts, targets []string) *Report {
	return &Report{
		Command: cmd, Label: o.label, Targets: targets, Started: time.Now().UTC(),
		Params: map[string]any{"concurrency": o.concurrency},
		Host:   HostInfo{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH},
	}
}

func (r *Report) note(format string, a ...any) { r.Notes = append(r.Notes, fmt.Sprintf(format, a...)) }

// failed: some operation of the report failed.
func (r *Report) failed() bool {
	for _, res := range r.Results {
		if res.Errors > 0 {
			return true
		}
	}
	return false
}

func printReport(w io.Writer, r *Report, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	var params []string
	for k, v := range r.Params {
		params = append(params, fmt.Sprintf("%s=%v", k, v))
	}
	sort.Strings(params)
	label := ""
	if r.Label != "" {
		label = " [" + r.Label + "]"
	}
	fmt.Fprintf(w, "%s%s against %s (%s)\n", r.Command, label, strings.Join(r.Targets, ","), strings.Join(params, " "))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "op\tok\terrors\tseconds\tops/s\tMB/s\tmean ms\tp50 ms\tp90 ms\tp99 ms\tmax ms\t")
	for _, res := range r.Results {
		mbps := "-"
		if res.Bytes > 0 {
			mbps = fmt.Sprintf("%.1f", res.MBPerSec)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.2f\t%.1f\t%s\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t\n",
			res.Op, res.Count, res.Errors, res.Seconds, res.OpsPerSec, mbps, res.MeanMs, res.P50Ms, res.P90Ms, res.P99Ms, res.MaxMs)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, res := range r.Results {
		if res.FirstError != "" {
			fmt.Fprintf(w, "first %s error: %s\n", res.Op, res.FirstError)
		}
	}
	for _, res := range r.Results {
		if c := coresUsed(res.CPU, res.Seconds); c != "" {
			fmt.Fprintf(w, "cores used during %s: %s\n", res.Op, c)
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	fmt.Fprintf(w, "client CPU: %.2fs user+system for the whole command\n", r.ClientCPUSeconds)
	return nil
}

// coresUsed prints CPU seconds over a wall time as cores, client first.
func coresUsed(cpu map[string]float64, seconds float64) string {
	if len(cpu) == 0 || seconds <= 0 {
		return ""
	}
	var names []string
	for k := range cpu {
		if k != "client" {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	if _, ok := cpu["client"]; ok {
		names = append([]string{"client"}, names...)
	}
	var parts []string
	for _, k := range names {
		if c := cpu[k] / seconds; c >= 0.005 || k == "client" {
			parts = append(parts, fmt.Sprintf("%s %.2f", k, c))
		}
	}
	return strings.Join(parts, ", ")
}

func randomID(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	rng := newRNG()
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[rng.Uint64()%uint64(len(alphabet))]
	}
	return string(b)
}
