package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

const s3Help = `PUT then GET objects of --size directly on an S3 endpoint with minio-go, for
comparison with a registry storing its blobs there: the ceiling a registry
can reach on that storage from this client. Each object is one PUT (or, with
--part-size, a multipart upload of parts sent one after another, as a
registry streams them); GET reads the whole object and checks its sha256.
Content is fresh random per object, generated before the clock starts with
--count. The bucket is created when missing; --setup-only creates it and
exits (run-bench.sh uses it to prepare a bucket for another registry).`

type s3Opts struct {
	commonOpts
	endpoint  string
	accessKey string
	secretKey string
	bucket    string
	region    string
	size      size
	partSize  size
	count     int
	maxMemory size
	setupOnly bool
	skipGet   bool
	rounds    int
}

func runS3(ctx context.Context, args []string, stdout, stderr io.Writer) (*Report, *commonOpts, error) {
	o := &s3Opts{size: 32 << 20, maxMemory: 4 << 30}
	fs := newFlagSet("s3", stderr, s3Help)
	o.register(fs, 4, 0)
	fs.StringVar(&o.endpoint, "endpoint", "127.0.0.1:9000", "S3 endpoint host:port (plain http)")
	fs.StringVar(&o.accessKey, "access-key", "", "S3 access key")
	fs.StringVar(&o.secretKey, "secret-key", "", "S3 secret key")
	fs.StringVar(&o.bucket, "bucket", "flotilla-bench", "bucket (created when missing)")
	fs.StringVar(&o.region, "region", "us-east-1", "region")
	fs.Var(&o.size, "size", "object size")
	fs.Var(&o.partSize, "part-size", "multipart upload with parts of this size, sent in sequence (default: one PUT)")
	fs.IntVar(&o.count, "count", 0, "objects to PUT (and GET); default 4 per client when --duration is not set")
	fs.Var(&o.maxMemory, "max-memory", "bound on the memory for pre-generated objects with --count")
	fs.BoolVar(&o.setupOnly, "setup-only", false, "create the bucket and exit")
	fs.BoolVar(&o.skipGet, "skip-get", false, "only PUT")
	fs.IntVar(&o.rounds, "get-rounds", 1, "with --count, GET every object this many times")
	if err := o.parse(fs, args); err != nil {
		return nil, nil, err
	}
	if o.accessKey == "" || o.secretKey == "" {
		return nil, nil, usageErr("--access-key and --secret-key are required")
	}
	if o.size <= 0 || o.count < 0 || o.duration < 0 {
		return nil, nil, usageErr("--size must be positive, --count and --duration not negative")
	}
	if o.partSize != 0 && o.partSize < 5<<20 {
		return nil, nil, usageErr("--part-size must be at least 5MiB")
	}
	if o.rounds < 1 {
		return nil, nil, usageErr("--get-rounds must be at least 1")
	}
	if o.count > 0 && o.duration > 0 {
		return nil, nil, usageErr("give --count or --duration, not both")
	}
	if o.count == 0 && o.duration == 0 {
		o.count = 4 * o.concurrency
	}
	if o.count > 0 && int64(o.count)*int64(o.size) > int64(o.maxMemory) {
		return nil, nil, usageErr("--count x --size is more than --max-memory %s", formatSize(int64(o.maxMemory)))
	}
	targets, err := checkAddrs([]string{o.endpoint}, o.allowRemote)
	if err != nil {
		return nil, nil, usageErr("%v", err)
	}
	ctx, stop, err := o.start(ctx)
	if err != nil {
		return nil, nil, err
	}
	defer stop()

	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        o.concurrency * 2,
		MaxIdleConnsPerHost: o.concurrency * 2,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		WriteBufferSize:     256 << 10,
		ReadBufferSize:      256 << 10,
	}
	mc, err := minio.New(targets[0].Host, &minio.Options{
		Creds:     credentials.NewStaticV4(o.accessKey, o.secretKey, ""),
		Secure:    false,
		Region:    o.region,
		Transport: tr,
	})
	if err != nil {
		return nil, nil, err
	}
	if err := ensureBucket(ctx, mc, o.bucket, o.region); err != nil {
		return nil, nil, err
	}
	if o.setupOnly {
		fmt.Fprintf(stdout, "bucket %s ready on %s\n", o.bucket, o.endpoint)
		return nil, nil, nil
	}

	rep := newReport("s3", &o.commonOpts, []string{o.endpoint})
	rep.Params["size"] = formatSize(int64(o.size))
	rep.Params["size_bytes"] = int64(o.size)
	rep.Params["bucket"] = o.bucket
	rep.Params["mode"] = "single PUT"
	if o.partSize > 0 {
		rep.Params["mode"] = "multipart, sequential parts"
		rep.Params["part_size"] = formatSize(int64(o.partSize))
	}
	if o.count > 0 {
		rep.Params["count"] = o.count
	} else {
		rep.Params["duration"] = o.duration.String()
	}

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
		rep.note("content: %d random objects generated and hashed before the clock started (%.2fs)", o.count, time.Since(t0).Seconds())
	}

	putOpts := minio.PutObjectOptions{ContentType: "application/octet-stream", DisableMultipart: o.partSize == 0}
	if o.partSize > 0 {
		putOpts.PartSize = uint64(o.partSize)
		putOpts.NumThreads = 1
	}
	put := newRecorder("object put")
	var mu sync.Mutex
	var done []pushed
	bufs := make([][]byte, o.concurrency)
	rngs := make([]*mrand.ChaCha8, o.concurrency)
	var genTime time.Duration
	ph := phase{workers: o.concurrency, count: o.count, duration: o.duration, maxErrors: o.maxErrors}
	endCPU := o.measure(put)
	ph.run(ctx, func(ctx context.Context, w, seq int) error {
		var data []byte
		var dgst string
		if pre != nil {
			data, dgst = pre[seq], preDigest[seq]
		} else {
			if bufs[w] == nil {
				bufs[w], rngs[w] = make([]byte, o.size), newRNG()
			}
			t := time.Now()
			data, dgst = bufs[w], genBlob(rngs[w], bufs[w])
			mu.Lock()
			genTime += time.Since(t)
			mu.Unlock()
		}
		key := fmt.Sprintf("%s/%s", o.prefix, dgst[len("sha256:"):])
		cctx, cancel := context.WithTimeout(ctx, o.reqTimeout)
		start := time.Now()
		_, err := mc.PutObject(cctx, o.bucket, key, bytes.NewReader(data), int64(len(data)), putOpts)
		put.done(start, int64(len(data)), err)
		cancel()
		if err == nil {
			mu.Lock()
			done = append(done, pushed{key, dgst, int64(len(data))})
			mu.Unlock()
		}
		return err
	})
	endCPU()
	pre = nil
	rep.Results = append(rep.Results, put.result())
	if genTime > 0 {
		rep.note("content: generating and hashing objects took %.2fs of worker time inside the PUT wall time", genTime.Seconds())
	}
	if ctx.Err() != nil {
		return rep, &o.commonOpts, fmt.Errorf("stopped: %w", context.Cause(ctx))
	}
	if o.skipGet || len(done) == 0 {
		return rep, &o.commonOpts, nil
	}

	get := newRecorder("object get")
	gc := o.count
	if gc > 0 {
		gc = len(done) * o.rounds
		rep.Params["get_rounds"] = o.rounds
	}
	rbufs := make([][]byte, o.concurrency)
	ph = phase{workers: o.concurrency, count: gc, duration: o.duration, maxErrors: o.maxErrors}
	endCPU = o.measure(get)
	ph.run(ctx, func(ctx context.Context, w, seq int) error {
		if rbufs[w] == nil {
			rbufs[w] = make([]byte, 256<<10)
		}
		b := done[seq%len(done)]
		cctx, cancel := context.WithTimeout(ctx, o.reqTimeout)
		defer cancel()
		start := time.Now()
		obj, err := mc.GetObject(cctx, o.bucket, b.repo, minio.GetObjectOptions{})
		if err == nil {
			err = verifyBody(obj, b.digest, b.size, rbufs[w])
			obj.Close()
		}
		get.done(start, b.size, err)
		return err
	})
	endCPU()
	rep.Results = append(rep.Results, get.result())
	rep.note("GET reads every byte and checks its sha256 on the client")
	if ctx.Err() != nil {
		return rep, &o.commonOpts, fmt.Errorf("stopped: %w", context.Cause(ctx))
	}
	return rep, &o.commonOpts, nil
}

// ensureBucket creates the bucket unless it exists, retrying while the
// server warms up.
func ensureBucket(ctx context.Context, mc *minio.Client, bucket, region string) error {
	var last error
	for attempt := 0; attempt < 50; attempt++ {
		ok, err := mc.BucketExists(ctx, bucket)
		if err == nil && ok {
			return nil
		}
		if err == nil {
			err = mc.MakeBucket(ctx, bucket, minio.MakeBucketOptions{Region: region})
			if err == nil {
				return nil
			}
			if resp := minio.ToErrorResponse(err); resp.Code == "BucketAlreadyOwnedByYou" || resp.Code == "BucketAlreadyExists" {
				return nil
			}
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("bucket %s: %w", bucket, last)
}
