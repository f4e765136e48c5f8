package main

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ------------------------------------------------------------------ sizes

// parseSize reads a byte count: a plain number of bytes, or a number with a
// unit. KiB/MiB/GiB/TiB (and the bare K/M/G/T, as dd reads them) are powers of
// 1024; KB/MB/GB/TB are powers of 1000. Units are case-insensitive, a
// fraction is allowed ("1.5MiB"), the result is rounded down to whole bytes.
func parseSize(s string) (int64, error) {
	orig := s
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, errors.New("empty size")
	}
	i := 0
	for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.') {
		i++
	}
	num, unit := s[:i], strings.ToLower(strings.TrimSpace(s[i:]))
	if num == "" {
		return 0, fmt.Errorf("size %q: no number", orig)
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: %v", orig, err)
	}
	mult, ok := sizeUnits[unit]
	if !ok {
		return 0, fmt.Errorf("size %q: unknown unit %q (use B, KiB, MiB, GiB, KB, MB, GB)", orig, s[i:])
	}
	v := f * float64(mult)
	if v >= math.MaxInt64 || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, fmt.Errorf("size %q: too large", orig)
	}
	return int64(v), nil
}

var sizeUnits = map[string]int64{
	"": 1, "b": 1,
	"k": 1 << 10, "kib": 1 << 10, "kb": 1e3,
	"m": 1 << 20, "mib": 1 << 20, "mb": 1e6,
	"g": 1 << 30, "gib": 1 << 30, "gb": 1e9,
	"t": 1 << 40, "tib": 1 << 40, "tb": 1e12,
}

// formatSize prints n bytes with the largest binary unit that divides it
// into a number of at least 1.
func formatSize(n int64) string {
	units := []struct {
		s string
		v int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}}
	for _, u := range units {
		if n >= u.v {
			if n%u.v == 0 {
				return fmt.Sprintf("%d%s", n/u.v, u.s)
			}
			return fmt.Sprintf("%.1f%s", float64(n)/float64(u.v), u.s)
		}
	}
	return fmt.Sprintf("%dB", n)
}

// ------------------------------------------------------------ percentiles

// percentile returns the p-th percentile (0 < p <= 100) of sorted samples by
// the nearest-rank method: the smallest sample such that at least p percent
// of all samples are less than or equal to it. Zero for no samples.
func percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	if p <= 0 {
		return sorted[0]
	}
	rank := int(math.Ceil(p / 100 * float64(n)))
	rank = min(max(rank, 1), n)
	return sorted[rank-1]
}

// median of float64 values (mean of the two middle ones for an even count).
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}

// -------------------------------------------------------------- recorder

// recorder collects the outcome of one kind of operation from many workers.
type recorder struct {
	op string

	mu       sync.Mutex
	lat      []time.Duration
	bytes    int64
	errs     int
	firstErr string
	start    time.Time
	end      time.Time
	cpu      map[string]float64
}

func newRecorder(op string) *recorder { return &recorder{op: op} }

// begin marks the start of the measured window (the first call wins).
func (r *recorder) begin(t time.Time) {
	r.mu.Lock()
	if r.start.IsZero() || t.Before(r.start) {
		r.start = t
	}
	r.mu.Unlock()
}

// done records one operation that started at start; err nil means success.
// bytes counts only for successes.
func (r *recorder) done(start time.Time, bytes int64, err error) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.start.IsZero() || start.Before(r.start) {
		r.start = start
	}
	if now.After(r.end) {
		r.end = now
	}
	if err != nil {
		r.errs++
		if r.firstErr == "" {
			r.firstErr = err.Error()
		}
		return
	}
	r.lat = append(r.lat, now.Sub(start))
	r.bytes += bytes
}

// Result is one row of a report: one kind of operation.
type Result struct {
	Op         string  `json:"op"`
	Count      int     `json:"count"`
	Errors     int     `json:"errors"`
	Seconds    float64 `json:"seconds"`
	OpsPerSec  float64 `json:"ops_per_sec"`
	Bytes      int64   `json:"bytes,omitempty"`
	MBPerSec   float64 `json:"mb_per_sec,omitempty"`
	MeanMs     float64 `json:"mean_ms"`
	P50Ms      float64 `json:"p50_ms"`
	P90Ms      float64 `json:"p90_ms"`
	P99Ms      float64 `json:"p99_ms"`
	MaxMs      float64 `json:"max_ms"`
	FirstError string  `json:"first_error,omitempty"`
	// CPU is the CPU seconds used during the phase by the client and by
	// each process named with --watch-pid.
	CPU map[string]float64 `json:"cpu_seconds,omitempty"`
}

// result summarizes what was recorded. Rates are over the wall time from
// the first operation's start to the last one's end (all workers together).
// MB/s is 10^6 bytes per second.
func (r *recorder) result() Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	res := summarize(r.op, r.lat, r.bytes, r.errs, r.firstErr, r.end.Sub(r.start))
	res.CPU = r.cpu
	return res
}

func summarize(op string, lat []time.Duration, bytes int64, errs int, firstErr string, wall time.Duration) Result {
	s := slices.Clone(lat)
	slices.Sort(s)
	res := Result{Op: op, Count: len(s), Errors: errs, Bytes: bytes, FirstError: firstErr}
	if wall > 0 {
		res.Seconds = wall.Seconds()
		res.OpsPerSec = float64(len(s)) / res.Seconds
		res.MBPerSec = float64(bytes) / 1e6 / res.Seconds
	}
	if len(s) > 0 {
		var sum time.Duration
		for _, d := range s {
			sum += d
		}
		res.MeanMs = ms(sum / time.Duration(len(s)))
		res.P50Ms = ms(percentile(s, 50))
		res.P90Ms = ms(percentile(s, 90))
		res.P99Ms = ms(percentile(s, 99))
		res.MaxMs = ms(s[len(s)-1])
	}
	return res
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
