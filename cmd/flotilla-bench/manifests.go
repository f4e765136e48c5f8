package main

import (
	"context"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"sync"
	"time"
)

const manifestsHelp = `Manifest PUT by tag, then manifest GET by tag: operations per second and
p50/p99/max latency. Setup pushes a small config and layer blob into each of
--repos repositories; every PUT is a distinct OCI image manifest over them
(an annotation makes it unique) under a new tag (or, with --tag-mode
overwrite, one tag per client updated again and again). The GET phase asks
for tags the PUT phase wrote, at random, and checks each body's digest.
--targets spreads requests round robin over several nodes, or points them at
a follower; --stale sends "Flotilla-Consistency: stale" with every GET.`

type manifestsOpts struct {
	commonOpts
	registry    string
	targets     list
	repos       int
	tagMode     string
	stale       bool
	consistency string
	skipGet     bool
}

type taggedManifest struct {
	repo, tag, digest string
}

func runManifests(ctx context.Context, args []string, stdout, stderr io.Writer) (*Report, *commonOpts, error) {
	o := &manifestsOpts{}
	fs := newFlagSet("manifests", stderr, manifestsHelp)
	o.register(fs, 16, 10*time.Second)
	fs.StringVar(&o.registry, "registry", "127.0.0.1:5000", "registry address host:port")
	fs.Var(&o.targets, "targets", "comma-separated registry addresses, used round robin per request (overrides --registry)")
	fs.IntVar(&o.repos, "repos", 4, "repositories to spread the manifests over")
	fs.StringVar(&o.tagMode, "tag-mode", "new", "new: every PUT is a new tag; overwrite: each client re-points its own tag")
	fs.BoolVar(&o.stale, "stale", false, `send "Flotilla-Consistency: stale" with every GET`)
	fs.StringVar(&o.consistency, "consistency", "", "value of the Flotilla-Consistency header on GETs (stale, strong)")
	fs.BoolVar(&o.skipGet, "skip-get", false, "only PUT")
	if err := o.parse(fs, args); err != nil {
		return nil, nil, err
	}
	if o.repos < 1 || o.repos > 100000 {
		return nil, nil, usageErr("--repos must be in 1..100000")
	}
	if o.duration <= 0 {
		return nil, nil, usageErr("--duration must be positive")
	}
	if o.tagMode != "new" && o.tagMode != "overwrite" {
		return nil, nil, usageErr("--tag-mode is new or overwrite")
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
	rep := newReport("manifests", &o.commonOpts, addrs)
	rep.Params["duration"] = o.duration.String()
	rep.Params["repos"] = o.repos
	rep.Params["tag_mode"] = o.tagMode
	if o.consistency != "" {
		rep.Params["consistency"] = o.consistency
	}
	if err := c.ping(ctx); err != nil {
		return nil, nil, err
	}
	repos, err := setupRepos(ctx, c, o.prefix+"/m", o.repos, o.concurrency)
	if err != nil {
		return nil, nil, fmt.Errorf("setup: %w", err)
	}

	put := newRecorder("manifest put")
	var mu sync.Mutex
	var written []taggedManifest
	ph := phase{workers: o.concurrency, duration: o.duration, maxErrors: o.maxErrors}
	endCPU := o.measure(put)
	ph.run(ctx, func(ctx context.Context, w, seq int) error {
		r := repos[seq%len(repos)]
		tag := fmt.Sprintf("p%d", seq)
		if o.tagMode == "overwrite" {
			r = repos[w%len(repos)]
			tag = fmt.Sprintf("w%d", w)
		}
		body := imageManifest(r.config.desc, []descriptor{r.layer.desc}, fmt.Sprintf("%s/%d", o.prefix, seq))
		start := time.Now()
		_, err := c.putManifest(ctx, r.name, tag, body)
		put.done(start, 0, err)
		if err == nil {
			tm := taggedManifest{r.name, tag, digestOf(body)}
			mu.Lock()
			if o.tagMode == "overwrite" {
				written = setTag(written, tm)
			} else {
				written = append(written, tm)
			}
			mu.Unlock()
		}
		return err
	})
	endCPU()
	rep.Results = append(rep.Results, put.result())
	if ctx.Err() != nil {
		return rep, &o.commonOpts, fmt.Errorf("stopped: %w", context.Cause(ctx))
	}
	if o.skipGet {
		return rep, &o.commonOpts, nil
	}
	if len(written) == 0 {
		return rep, &o.commonOpts, fmt.Errorf("no manifest was written; nothing to GET")
	}

	get := newRecorder("tag get")
	rngs := make([]*mrand.ChaCha8, o.concurrency)
	endCPU = o.measure(get)
	ph.run(ctx, func(ctx context.Context, w, seq int) error {
		if rngs[w] == nil {
			rngs[w] = newRNG()
		}
		tm := written[rngs[w].Uint64()%uint64(len(written))]
		start := time.Now()
		n, err := c.getManifest(ctx, tm.repo, tm.tag, tm.digest)
		get.done(start, n, err)
		return err
	})
	endCPU()
	res := get.result()
	res.Bytes, res.MBPerSec = 0, 0
	rep.Results = append(rep.Results, res)
	rep.note("%d tags to GET from, picked at random", len(written))
	if ctx.Err() != nil {
		return rep, &o.commonOpts, fmt.Errorf("stopped: %w", context.Cause(ctx))
	}
	return rep, &o.commonOpts, nil
}

// setTag replaces the entry for the same repo and tag, or appends.
func setTag(list []taggedManifest, tm taggedManifest) []taggedManifest {
	for i := range list {
		if list[i].repo == tm.repo && list[i].tag == tm.tag {
			list[i] = tm
			return list
		}
	}
	return append(list, tm)
}

// benchRepo is a repository with a config and a layer blob in it.
type benchRepo struct {
	name          string
	config, layer blobRef
}

// setupRepos pushes a small config and layer into n repositories named
// <base><i>: uploaded into the first, mounted into the others.
func setupRepos(ctx context.Context, c *client, base string, n, conc int) ([]benchRepo, error) {
	config := smallBlob(mtOCIConfig, 32)
	layer := smallBlob(mtOCILayer, 1024)
	repos := make([]benchRepo, n)
	for i := range repos {
		repos[i] = benchRepo{name: fmt.Sprintf("%s%d", base, i), config: config, layer: layer}
	}
	for _, b := range []blobRef{config, layer} {
		if err := c.pushBlob(ctx, repos[0].name, b.data, b.desc.Digest, 0); err != nil {
			return nil, err
		}
	}
	var firstErr error
	var mu sync.Mutex
	ph := phase{workers: min(conc, 32), count: n - 1, maxErrors: 1}
	ph.run(ctx, func(ctx context.Context, _, seq int) error {
		r := repos[seq+1]
		for _, b := range []blobRef{config, layer} {
			if err := c.mountOrPush(ctx, r.name, repos[0].name, b); err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
				return err
			}
		}
		return nil
	})
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	return repos, firstErr
}
