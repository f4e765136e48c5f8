package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"sync"
	"time"
)

const listHelp = `Populate --repos repositories and --tags tags (concurrently, one manifest per
repository, mounted blobs), then time paginated listing: walk
/v2/_catalog?n=<page> and /v2/<repo>/tags/list?n=<page> by their Link headers
and report per-page latency. Every repository gets one tag; the remaining tags
go to the first --big-repos repositories, so that their tag lists span many
pages. --skip-populate with the same --prefix measures an earlier population.`

type listOpts struct {
	commonOpts
	registry     string
	targets      list
	repos        int
	tags         int
	bigRepos     int
	pageSize     int
	walks        int
	populateConc int
	skipPop      bool
	stale        bool
}

func runList(ctx context.Context, args []string, stdout, stderr io.Writer) (*Report, *commonOpts, error) {
	o := &listOpts{}
	fs := newFlagSet("list", stderr, listHelp)
	o.register(fs, 1, 0)
	fs.Lookup("timeout").DefValue = "30m0s"
	o.timeout = 30 * time.Minute
	fs.StringVar(&o.registry, "registry", "127.0.0.1:5000", "registry address host:port")
	fs.Var(&o.targets, "targets", "comma-separated registry addresses, used round robin per request (overrides --registry)")
	fs.IntVar(&o.repos, "repos", 10000, "repositories to create")
	fs.IntVar(&o.tags, "tags", 100000, "tags to create in all (at least one per repository)")
	fs.IntVar(&o.bigRepos, "big-repos", 10, "repositories that get the tags beyond one per repository")
	fs.IntVar(&o.pageSize, "page", 100, "page size n")
	fs.IntVar(&o.walks, "walks", 1, "full walks of the catalog (and of each big repository's tags)")
	fs.IntVar(&o.populateConc, "populate-concurrency", 32, "parallel clients while populating")
	fs.BoolVar(&o.skipPop, "skip-populate", false, "do not populate (measure what --prefix names already)")
	fs.BoolVar(&o.stale, "stale", false, `send "Flotilla-Consistency: stale" with every GET`)
	if err := o.parse(fs, args); err != nil {
		return nil, nil, err
	}
	if o.repos < 1 || o.repos > 1000000 || o.tags > 10000000 {
		return nil, nil, usageErr("--repos must be in 1..1000000, --tags at most 10000000")
	}
	if o.tags < o.repos {
		o.tags = o.repos
	}
	o.bigRepos = min(max(o.bigRepos, 1), o.repos)
	if o.pageSize < 1 || o.walks < 1 || o.populateConc < 1 {
		return nil, nil, usageErr("--page, --walks and --populate-concurrency must be positive")
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

	c := newClient(targets, max(o.concurrency, o.populateConc), o.reqTimeout)
	if o.stale {
		c.readHeader = map[string][]string{"Flotilla-Consistency": {"stale"}}
	}
	rep := newReport("list", &o.commonOpts, addrs)
	rep.Params["repos"] = o.repos
	rep.Params["tags"] = o.tags
	rep.Params["big_repos"] = o.bigRepos
	rep.Params["page"] = o.pageSize
	rep.Params["prefix"] = o.prefix
	if err := c.ping(ctx); err != nil {
		return nil, nil, err
	}
	repoName := func(i int) string { return fmt.Sprintf("%s/r%07d", o.prefix, i) }

	if !o.skipPop {
		t0 := time.Now()
		config := smallBlob(mtOCIConfig, 32)
		layer := smallBlob(mtOCILayer, 1024)
		body := imageManifest(config.desc, []descriptor{layer.desc}, o.prefix)
		for _, b := range []blobRef{config, layer} {
			if err := c.pushBlob(ctx, repoName(0), b.data, b.desc.Digest, 0); err != nil {
				return nil, nil, fmt.Errorf("populate: %w", err)
			}
		}
		mount := newRecorder("populate: blob mount")
		put := newRecorder("populate: manifest put")
		var firstErr error
		var mu sync.Mutex
		fail := func(err error) error {
			mu.Lock()
			if firstErr == nil {
				firstErr = err
			}
			mu.Unlock()
			return err
		}
		putTag := func(ctx context.Context, repo, tag string) error {
			st := time.Now()
			_, err := c.putManifest(ctx, repo, tag, body)
			put.done(st, 0, err)
			if err != nil {
				return fail(err)
			}
			return nil
		}
		endCPU := o.measure() // mounts and puts interleave: a note, not per op
		// First every repository: its blobs (mounted from the first), then
		// its tag t0000000.
		ph := phase{workers: o.populateConc, count: o.repos, maxErrors: 1}
		ph.run(ctx, func(ctx context.Context, _, seq int) error {
			repo := repoName(seq)
			if seq > 0 {
				for _, b := range []blobRef{config, layer} {
					st := time.Now()
					err := c.mountOrPush(ctx, repo, repoName(0), b)
					mount.done(st, 0, err)
					if err != nil {
						return fail(err)
					}
				}
			}
			return putTag(ctx, repo, "t0000000")
		})
		// Then the remaining tags, spread over the big repositories.
		if firstErr == nil && o.tags > o.repos {
			ph = phase{workers: o.populateConc, count: o.tags - o.repos, maxErrors: 1}
			ph.run(ctx, func(ctx context.Context, _, seq int) error {
				return putTag(ctx, repoName(seq%o.bigRepos), fmt.Sprintf("t%07d", seq/o.bigRepos+1))
			})
		}
		popCPU := endCPU()
		rep.Results = append(rep.Results, mount.result(), put.result())
		rep.note("populated %d repositories and %d tags in %.1fs", o.repos, o.tags, time.Since(t0).Seconds())
		if c := coresUsed(popCPU, time.Since(t0).Seconds()); c != "" {
			rep.note("cores used while populating: %s", c)
		}
		if firstErr != nil {
			return rep, &o.commonOpts, fmt.Errorf("populate: %w", firstErr)
		}
		if ctx.Err() != nil {
			return rep, &o.commonOpts, fmt.Errorf("populate stopped: %w", context.Cause(ctx))
		}
	}

	// Catalog walks.
	catPage := newRecorder("catalog page")
	walk := newRecorder("catalog full walk")
	var seen, pages int
	var mu sync.Mutex
	ph := phase{workers: o.concurrency, count: o.walks, maxErrors: 1}
	endCPU := o.measure(walk)
	ph.run(ctx, func(ctx context.Context, _, _ int) error {
		w0 := time.Now()
		n, p, err := walkPages(ctx, c, "/v2/_catalog?n="+itoa(o.pageSize), catPage)
		walk.done(w0, 0, err)
		mu.Lock()
		seen, pages = n, p
		mu.Unlock()
		return err
	})
	endCPU()
	rep.Results = append(rep.Results, catPage.result(), walk.result())
	rep.note("catalog: %d repositories in %d pages of up to %d", seen, pages, o.pageSize)
	if seen < o.repos && catPage.result().Errors == 0 && ctx.Err() == nil {
		rep.note("catalog listed fewer repositories (%d) than were created (%d)", seen, o.repos)
	}
	if ctx.Err() != nil {
		return rep, &o.commonOpts, fmt.Errorf("stopped: %w", context.Cause(ctx))
	}

	// Tag list walks of the big repositories.
	tagPage := newRecorder("tags page")
	var tagsSeen, tagPages int
	ph = phase{workers: o.concurrency, count: o.walks * o.bigRepos, maxErrors: 1}
	endCPU = o.measure(tagPage)
	ph.run(ctx, func(ctx context.Context, _, seq int) error {
		repo := repoName(seq % o.bigRepos)
		n, p, err := walkPages(ctx, c, "/v2/"+repo+"/tags/list?n="+itoa(o.pageSize), tagPage)
		mu.Lock()
		tagsSeen, tagPages = tagsSeen+n, tagPages+p
		mu.Unlock()
		return err
	})
	endCPU()
	rep.Results = append(rep.Results, tagPage.result())
	rep.note("tags: %d tags in %d pages over %d walks of %d repositories", tagsSeen, tagPages, o.walks, o.bigRepos)
	if ctx.Err() != nil {
		return rep, &o.commonOpts, fmt.Errorf("stopped: %w", context.Cause(ctx))
	}
	return rep, &o.commonOpts, nil
}

// walkPages follows Link: rel="next" from first, recording each page, and
// returns the number of items and pages.
func walkPages(ctx context.Context, c *client, first string, rec *recorder) (items, pages int, err error) {
	next := first
	seenURL := map[string]bool{}
	for next != "" {
		if seenURL[next] {
			return items, pages, fmt.Errorf("pagination loops: %s again", next)
		}
		seenURL[next] = true
		st := time.Now()
		nx, n, err := c.page(ctx, next)
		rec.done(st, 0, err)
		if err != nil {
			return items, pages, err
		}
		items += n
		pages++
		if nx != "" {
			if u, perr := url.Parse(nx); perr == nil && u.IsAbs() {
				nx = u.RequestURI()
			}
		}
		next = nx
	}
	return items, pages, nil
}
