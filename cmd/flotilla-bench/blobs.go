package main

import (
	"context"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"sync"
	"time"
)

const blobsHelp = `Blob push then pull throughput. Push: POST then one monolithic PUT, or with
--chunk, POST, PATCH chunks and a closing PUT. Pull: GET of every pushed blob,
reading the whole body and checking its sha256. Each blob is fresh random
content, so nothing deduplicates. With --count, all blobs are generated before
the clock starts (count x size bytes of memory, at most --max-memory); with
--duration, each worker generates its next blob between operations (outside
the latency, inside the wall time: see the "content" note).`

type blobsOpts struct {
	commonOpts
	registry  string
	targets   list
	size      size
	chunk     size
	count     int
	maxMemory size
	repo      string
	skipPull  bool
	rounds    int
}

// pushed is a blob the push phase stored.
type pushed struct {
	repo, digest string
	size         int64
}

func runBlobs(ctx context.Context, args []string, stdout, stderr io.Writer) (*Report, *commonOpts, error) {
	o := &blobsOpts{size: 32 << 20, maxMemory: 4 << 30}
	fs := newFlagSet("blobs", stderr, blobsHelp)
	o.register(fs, 4, 0)
	fs.StringVar(&o.registry, "registry", "127.0.0.1:5000", "registry address host:port")
	fs.Var(&o.targets, "targets", "comma-separated registry addresses, used round robin per request (overrides --registry)")
	fs.Var(&o.size, "size", "blob size (e.g. 32MiB, 1MB, 4096)")
	fs.Var(&o.chunk, "chunk", "chunked upload: PATCH chunks of this size (default: monolithic PUT)")
	fs.IntVar(&o.count, "count", 0, "blobs to push (and pull); default 4 per client when --duration is not set")
	fs.Var(&o.maxMemory, "max-memory", "bound on the memory for pre-generated blobs with --count")
	fs.StringVar(&o.repo, "repo", "", "repository (default <prefix>/blobs)")
	fs.BoolVar(&o.skipPull, "skip-pull", false, "only push")
	fs.IntVar(&o.rounds, "pull-rounds", 1, "with --count, pull every pushed blob this many times (a longer, steadier pull phase)")
	if err := o.parse(fs, args); err != nil {
		return nil, nil, err
	}
	if o.size <= 0 {
		return nil, nil, usageErr("--size must be positive")
	}
	if o.count < 0 || o.duration < 0 || o.chunk < 0 {
		return nil, nil, usageErr("--count, --duration and --chunk must not be negative")
	}
	if o.rounds < 1 {
		return nil, nil, usageErr("--pull-rounds must be at least 1")
	}
	if o.count > 0 && o.duration > 0 {
		return nil, nil, usageErr("give --count or --duration, not both")
	}
	if o.count == 0 && o.duration == 0 {
		o.count = 4 * o.concurrency
	}
	if o.count > 0 && int64(o.count)*int64(o.size) > int64(o.maxMemory) {
		return nil, nil, usageErr("--count %d x --size %s is more than --max-memory %s; use --duration or raise --max-memory",
			o.count, formatSize(int64(o.size)), formatSize(int64(o.maxMemory)))
	}
	addrs := []string{o.registry}
	if len(o.targets) > 0 {
		addrs = o.targets
	}
	targets, err := checkAddrs(addrs, o.allowRemote)
	if err != nil {
		return nil, nil, usageErr("%v", err)
	}
	if o.repo == "" {
		o.repo = o.prefix + "/blobs"
	}
	ctx, stop, err := o.start(ctx)
	if err != nil {
		return nil, nil, err
	}
	defer stop()

	c := newClient(targets, o.concurrency, o.reqTimeout)
	rep := newReport("blobs", &o.commonOpts, addrs)
	rep.Params["size"] = formatSize(int64(o.size))
	rep.Params["size_bytes"] = int64(o.size)
	rep.Params["mode"] = "monolithic"
	if o.chunk > 0 {
		rep.Params["mode"] = "chunked"
		rep.Params["chunk"] = formatSize(int64(o.chunk))
	}
	if o.count > 0 {
		rep.Params["count"] = o.count
	} else {
		rep.Params["duration"] = o.duration.String()
	}
	if err := c.ping(ctx); err != nil {
		return nil, nil, err
	}

	// Content.
	var pre [][]byte
	var preDigest []string
	if o.count > 0 {
		t0 := time.Now()
		pre = make([][]byte, o.count)
		preDigest = make([]string, o.count)
		var wg sync.WaitGroup
		for w := range min(o.concurrency, o.count) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := newRNG()
				for i := w; i < o.count; i += o.concurrency {
					pre[i] = make([]byte, o.size)
					preDigest[i] = genBlob(rng, pre[i])
				}
			}()
		}
		wg.Wait()
		rep.note("content: %d random blobs generated and hashed before the clock started (%.2fs)", o.count, time.Since(t0).Seconds())
	}

	// Push.
	push := newRecorder("blob push")
	var mu sync.Mutex
	var done []pushed
	bufs := make([][]byte, o.concurrency)
	rngs := make([]*mrand.ChaCha8, o.concurrency)
	var genTime time.Duration
	ph := phase{workers: o.concurrency, count: o.count, duration: o.duration, maxErrors: o.maxErrors}
	endCPU := o.measure(push)
	ph.run(ctx, func(ctx context.Context, w, seq int) error {
		var data []byte
		var dgst string
		if pre != nil {
			data, dgst = pre[seq], preDigest[seq]
		} else {
			if bufs[w] == nil {
				bufs[w] = make([]byte, o.size)
				rngs[w] = newRNG()
			}
			t := time.Now()
			data = bufs[w]
			dgst = genBlob(rngs[w], data)
			mu.Lock()
			genTime += time.Since(t)
			mu.Unlock()
		}
		start := time.Now()
		err := c.pushBlob(ctx, o.repo, data, dgst, int64(o.chunk))
		push.done(start, int64(len(data)), err)
		if err == nil {
			mu.Lock()
			done = append(done, pushed{o.repo, dgst, int64(len(data))})
			mu.Unlock()
		}
		return err
	})
	endCPU()
	pre = nil // let the pushed content go before the pull
	rep.Results = append(rep.Results, push.result())
	if genTime > 0 {
		rep.note("content: generating and hashing blobs took %.2fs of worker time inside the push wall time", genTime.Seconds())
	}
	if ctx.Err() != nil {
		return rep, &o.commonOpts, fmt.Errorf("stopped: %w", context.Cause(ctx))
	}

	// Pull.
	if !o.skipPull && len(done) > 0 {
		pull := newRecorder("blob pull")
		pc := o.count
		if pc > 0 {
			pc = len(done) * o.rounds
			rep.Params["pull_rounds"] = o.rounds
		}
		bufs := make([][]byte, o.concurrency)
		ph := phase{workers: o.concurrency, count: pc, duration: o.duration, maxErrors: o.maxErrors}
		endCPU := o.measure(pull)
		ph.run(ctx, func(ctx context.Context, w, seq int) error {
			if bufs[w] == nil {
				bufs[w] = make([]byte, 256<<10)
			}
			b := done[seq%len(done)]
			start := time.Now()
			err := c.getBlob(ctx, b.repo, b.digest, b.size, bufs[w])
			pull.done(start, b.size, err)
			return err
		})
		endCPU()
		rep.Results = append(rep.Results, pull.result())
		rep.note("pull reads every byte and checks its sha256 on the client")
	}
	if ctx.Err() != nil {
		return rep, &o.commonOpts, fmt.Errorf("stopped: %w", context.Cause(ctx))
	}
	return rep, &o.commonOpts, nil
}
