package main

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// phase runs one measured step on several workers.
type phase struct {
	workers int
	// count > 0: run exactly that many operations in all; otherwise run
	// until duration has passed (an operation started before the end runs
	// to completion).
	count     int
	duration  time.Duration
	maxErrors int
}

// run calls op(ctx, worker, seq) with seq = 0, 1, 2, ... across the workers
// until the phase is over, ctx ends, or maxErrors operations returned an
// error.
func (p phase) run(ctx context.Context, op func(ctx context.Context, worker, seq int) error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var deadline time.Time
	if p.count <= 0 {
		deadline = time.Now().Add(p.duration)
	}
	var next, errs atomic.Int64
	var wg sync.WaitGroup
	for w := range p.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if !deadline.IsZero() && !time.Now().Before(deadline) {
					return
				}
				seq := int(next.Add(1) - 1)
				if p.count > 0 && seq >= p.count {
					return
				}
				if err := op(ctx, w, seq); err != nil && ctx.Err() == nil {
					if p.maxErrors > 0 && int(errs.Add(1)) >= p.maxErrors {
						cancel()
					}
				}
			}
		}()
	}
	wg.Wait()
}
