package node

import (
	"sync/atomic"

	"github.com/flotilla/flotilla/blobstore"
	"github.com/prometheus/client_golang/prometheus"
)

// registerCacheMetrics exports the blob cache's counters.
func registerCacheMetrics(reg prometheus.Registerer, c *blobstore.Cache) {
	stats, _ := c.Stats()
	counters := []struct {
		name, help string
		v          *atomic.Int64
	}{
		{"flotilla_blob_cache_hits_total", "Blob reads served from the local blob cache.", &stats.Hits},
		{"flotilla_blob_cache_misses_total", "Blob reads the local blob cache could not serve.", &stats.Misses},
		{"flotilla_blob_cache_fills_total", "Blobs added to the local blob cache.", &stats.Fills},
		{"flotilla_blob_cache_evictions_total", "Blobs evicted from the local blob cache to stay within its size.", &stats.Evictions},
		{"flotilla_blob_cache_hit_bytes_total", "Bytes served from the local blob cache.", &stats.HitBytes},
	}
	for _, m := range counters {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: m.name, Help: m.help},
			func() float64 { return float64(m.v.Load()) }))
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "flotilla_blob_cache_bytes", Help: "Bytes the local blob cache holds or has reserved for fills in progress.",
	}, func() float64 {
		_, used := c.Stats()
		return float64(used)
	}))
}
