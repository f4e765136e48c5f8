package main

import (
	"fmt"
	"math"

	"github.com/dustin/go-humanize"
)

// byteSize is a flag of bytes written with a unit ("512MiB", "20GB") or
// without one.
type byteSize struct{ v *int64 }

func (b *byteSize) String() string {
	if b.v == nil || *b.v == 0 {
		return "0"
	}
	return humanize.IBytes(uint64(*b.v))
}

func (b *byteSize) Set(s string) error {
	n, err := humanize.ParseBytes(s)
	if err != nil {
		return fmt.Errorf("not a size: %q (e.g. 512MiB, 20GB)", s)
	}
	if n > math.MaxInt64 {
		return fmt.Errorf("size %q too large", s)
	}
	*b.v = int64(n)
	return nil
}

func (b *byteSize) Type() string { return "size" }
