package main

import (
	"context"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

const mixedHelp = `A mixed workload for --duration: each client picks its next operation at
random by the --mix weights: "blob" pushes a fresh random blob of --blob-size
(monolithic, or chunked with --chunk), "put" PUTs a new manifest under a new
tag, "get" GETs a tag written before (seeded with --seed-tags per repository
first). Reports rates and latencies per operation.`

type mixedOpts struct {
	commonOpts
	registry    string
	targets     list
	repos       int
	mix         string
	blobSize    size
	chunk       size
	seedTags    int
	consistency string
	stale       bool
}

// parseMix reads "blob=1,put=4,get=15" into weights for the known kinds.
func parseMix(s string, kinds []string) (map[string]int, error) {
	w := map[string]int{}
	total := 0
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("mix %q: want kind=weight", part)
		}
		k = strings.TrimSpace(k)
		known := false
		for _, kk := range kinds {
			known = known || kk == k
		}
		if !known {
			return nil, fmt.Errorf("mix: unknown operation %q (want %s)", k, strings.Join(kinds, ", "))
		}
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 0 {
			return nil, fmt.Errorf("mix %q: weight must be a non-negative integer", part)
		}
		w[k] += n
		total += n
	}
	if total == 0 {
		return nil, fmt.Errorf("mix %q: all weights are zero", s)
	}
	return w, nil
}

// pickWeighted maps r in [0, total) onto the kinds in order of kinds.
func pickWeighted(weights map[string]int, kinds []string, r int) string {
	for _, k := range kinds {
		if r < weights[k] {
			return k
		}
		r -= weights[k]
	}
	return kinds[len(kinds)-1]
}

func runMixed(ctx context.Context, args []string, stdout, stderr io.Writer) (*Report, *commonOpts, error) {
	o := &mixedOpts{blobSize: 1 << 20}
	fs := newFlagSet("mixed", stderr, mixedHelp)
	o.register(fs, 16, 10*time.Second)
	fs.StringVar(&o.registry, "registry", "127.0.0.1:5000", "registry address host:port")
	fs.Var(&o.targets, "targets", "comma-separated registry addresses, used round robin per request (overrides --registry)")
	fs.IntVar(&o.repos, "repos", 4, "repositories")
	fs.StringVar(&o.mix, "mix", "blob=1,put=4,get=15", "operation weights")
	fs.Var(&o.blobSize, "blob-size", "size of each pushed blob")
	fs.Var(&o.chunk, "chunk", "push blobs in PATCH chunks of this size")
	fs.IntVar(&o.seedTags, "seed-tags", 16, "tags written per repository before the clock starts")
	fs.BoolVar(&o.stale, "stale", false, `send "Flotilla-Consistency: stale" with every GET`)
	fs.StringVar(&o.consistency, "consistency", "", "value of the Flotilla-Consistency header on GETs")
	if err := o.parse(fs, args); err != nil {
		return nil, nil, err
	}
	kinds := []string{"blob", "put", "get"}
	weights, err := parseMix(o.mix, kinds)
	if err != nil {
		return nil, nil, usageErr("%v", err)
	}
	total := weights["blob"] + weights["put"] + weights["get"]
	if o.repos < 1 || o.repos > 10000 || o.seedTags < 1 {
		return nil, nil, usageErr("--repos must be in 1..10000 and --seed-tags at least 1")
	}
	if o.duration <= 0 || o.blobSize <= 0 || o.chunk < 0 {
		return nil, nil, usageErr("--duration and --blob-size must be positive")
	}
	if int64(o.blobSize)*int64(o.concurrency) > 8<<30 {
		return nil, nil, usageErr("--blob-size x --concurrency over 8GiB")
	}
	if o.stale {
		o.consistency = "stale"
	}
	addrs := []string{o.registry}
	if len(o.targets) > 0 {
		addrs = o.targets
	}
	targets, err := checkAddrs(addrs, o.allowRemote)
	if err != nil {
		return nil, nil, usageErr("%v", err)
	}
	ctx, stop, err := o.start(ctx)
	if err != nil {
		return nil, nil, err
	}
	defer stop()

	c := newClient(targets, o.concurrency, o.reqTimeout)
	if o.consistency != "" {
		c.readHeader = http.Header{"Flotilla-Consistency": {o.consistency}}
	}
	rep := newReport("mixed", &o.commonOpts, addrs)
	rep.Params["duration"] = o.duration.String()
	rep.Params["repos"] = o.repos
	rep.Params["mix"] = o.mix
	rep.Params["blob_size"] = formatSize(int64(o.blobSize))
	if o.chunk > 0 {
		rep.Params["chunk"] = formatSize(int64(o.chunk))
	}
	if o.consistency != "" {
		rep.Params["consistency"] = o.consistency
	}
	if err := c.ping(ctx); err != nil {
		return nil, nil, err
	}
	repos, err := setupRepos(ctx, c, o.prefix+"/x", o.repos, o.concurrency)
	if err != nil {
		return nil, nil, fmt.Errorf("setup: %w", err)
	}

	var mu sync.RWMutex
	var tags []taggedManifest
	var seedErr error
	ph := phase{workers: min(o.concurrency, 32), count: o.repos * o.seedTags, maxErrors: 1}
	ph.run(ctx, func(ctx context.Context, _, seq int) error {
		r := repos[seq%len(repos)]
		body := imageManifest(r.config.desc, []descriptor{r.layer.desc}, fmt.Sprintf("%s/seed/%d", o.prefix, seq))
		tag := fmt.Sprintf("seed%d", seq)
		if _, err := c.putManifest(ctx, r.name, tag, body); err != nil {
			mu.Lock()
			seedErr = err
			mu.Unlock()
			return err
		}
		mu.Lock()
		tags = append(tags, taggedManifest{r.name, tag, digestOf(body)})
		mu.Unlock()
		return nil
	})
	if seedErr != nil {
		return nil, nil, fmt.Errorf("seeding tags: %w", seedErr)
	}
	if ctx.Err() != nil {
		return nil, nil, ctx.Err()
	}

	recs := map[string]*recorder{
		"blob": newRecorder("blob push"),
		"put":  newRecorder("manifest put"),
		"get":  newRecorder("tag get"),
	}
	rngs := make([]*mrand.ChaCha8, o.concurrency)
	bufs := make([][]byte, o.concurrency)
	var genMu sync.Mutex
	var genTime time.Duration
	start := time.Now()
	for _, r := range recs {
		r.begin(start)
	}
	ph = phase{workers: o.concurrency, duration: o.duration, maxErrors: o.maxErrors}
	endCPU := o.measure() // one phase for all kinds: reported as a note
	ph.run(ctx, func(ctx context.Context, w, seq int) error {
		if rngs[w] == nil {
			rngs[w] = newRNG()
		}
		rng := rngs[w]
		r := repos[rng.Uint64()%uint64(len(repos))]
		kind := pickWeighted(weights, kinds, int(rng.Uint64()%uint64(total)))
		rec := recs[kind]
		switch kind {
		case "blob":
			if bufs[w] == nil {
				bufs[w] = make([]byte, o.blobSize)
			}
			t := time.Now()
			dgst := genBlob(rng, bufs[w])
			genMu.Lock()
			genTime += time.Since(t)
			genMu.Unlock()
			st := time.Now()
			err := c.pushBlob(ctx, r.name, bufs[w], dgst, int64(o.chunk))
			rec.done(st, int64(o.blobSize), err)
			return err
		case "put":
			tag := fmt.Sprintf("m%d", seq)
			body := imageManifest(r.config.desc, []descriptor{r.layer.desc}, fmt.Sprintf("%s/mixed/%d", o.prefix, seq))
			st := time.Now()
			_, err := c.putManifest(ctx, r.name, tag, body)
			rec.done(st, 0, err)
			if err == nil {
				mu.Lock()
				tags = append(tags, taggedManifest{r.name, tag, digestOf(body)})
				mu.Unlock()
			}
			return err
		default:
			mu.RLock()
			tm := tags[rng.Uint64()%uint64(len(tags))]
			mu.RUnlock()
			st := time.Now()
			_, err := c.getManifest(ctx, tm.repo, tm.tag, tm.digest)
			rec.done(st, 0, err)
			return err
		}
	})
	end := time.Now()
	if c := coresUsed(endCPU(), end.Sub(start).Seconds()); c != "" {
		rep.note("cores used during the mixed phase: %s", c)
	}
	var all []Result
	for _, k := range kinds {
		if weights[k] == 0 {
			continue
		}
		res := recs[k].result()
		// All kinds share one wall clock: the whole mixed phase.
		res.Seconds = end.Sub(start).Seconds()
		res.OpsPerSec = float64(res.Count) / res.Seconds
		res.MBPerSec = float64(res.Bytes) / 1e6 / res.Seconds
		all = append(all, res)
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].Op < all[j].Op })
	rep.Results = all
	if genTime > 0 {
		rep.note("content: generating and hashing blobs took %.2fs of worker time inside the wall time", genTime.Seconds())
	}
	if ctx.Err() != nil {
		return rep, &o.commonOpts, fmt.Errorf("stopped: %w", context.Cause(ctx))
	}
	return rep, &o.commonOpts, nil
}
