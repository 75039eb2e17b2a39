package vaultkeys

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the Prometheus metrics of the key manager (names in docs/key-model.md).
type metrics struct {
	hits          prometheus.Counter
	misses        prometheus.Counter
	evictions     prometheus.Counter
	vaultLatency  *prometheus.HistogramVec
	vaultErrors   *prometheus.CounterVec
	releases      *prometheus.CounterVec
	released      prometheus.Counter // releases{result="released"}, resolved once for the hot path
	erasures      prometheus.Counter
	authenticated prometheus.Gauge
	available     prometheus.Gauge
	logins        *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, c *keyCache) (*metrics, error) {
	m := &metrics{
		hits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "consentry_vaultkeys_cache_hits_total", Help: "Key lookups served from the in-memory cache.",
		}),
		misses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "consentry_vaultkeys_cache_misses_total", Help: "Key lookups that needed Vault.",
		}),
		evictions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "consentry_vaultkeys_cache_evictions_total", Help: "Keys evicted (and zeroed) because the cache was full.",
		}),
		vaultLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "consentry_vaultkeys_vault_request_duration_seconds",
			Help:    "Latency of Vault requests by operation.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"op"}),
		vaultErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "consentry_vaultkeys_vault_errors_total", Help: "Failed Vault requests by operation.",
		}, []string{"op"}),
		releases: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "consentry_vaultkeys_scope_releases_total", Help: "Key scopes requested by decisions, by result (released, withheld reason, denied).",
		}, []string{"result"}),
		erasures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "consentry_vaultkeys_erasures_total", Help: "Customers whose keys were destroyed.",
		}),
		authenticated: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "consentry_vaultkeys_authenticated", Help: "1 while consentry holds a valid Vault token.",
		}),
		available: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "consentry_vaultkeys_vault_available",
			Help: "1 while Vault answers: 0 from the first 5xx (sealed), refused connection or timeout of a Vault call or health probe until one succeeds.",
		}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "consentry_vaultkeys_logins_total", Help: "Vault logins by result.",
		}, []string{"result"}),
	}
	m.released = m.releases.WithLabelValues("released")
	if reg == nil {
		return m, nil
	}
	cs := []prometheus.Collector{m.hits, m.misses, m.evictions, m.vaultLatency, m.vaultErrors, m.releases, m.erasures, m.authenticated, m.available, m.logins,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "consentry_vaultkeys_cache_entries", Help: "Keys held in the cache."},
			func() float64 { n, _ := c.stats(); return float64(n) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "consentry_vaultkeys_cache_bytes", Help: "Key bytes held in the cache."},
			func() float64 { _, b := c.stats(); return float64(b) }),
	}
	for _, col := range cs {
		if err := reg.Register(col); err != nil {
			return nil, err
		}
	}
	return m, nil
}
