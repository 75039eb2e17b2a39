package proxy

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests *prometheus.CounterVec
	upstream prometheus.Histogram
	filtered prometheus.Counter
	withheld prometheus.Counter
}

// newMetrics registers the proxy's metrics with r (nil: unregistered). Registering twice on
// one registry reuses the existing collectors (tests build several proxies).
func newMetrics(r prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "consentry", Subsystem: "proxy", Name: "requests_total",
			Help: "Requests through the reverse proxy by result (allowed, denied, or the reason code of a refusal)."}, []string{"result"}),
		upstream: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "consentry", Subsystem: "proxy", Name: "upstream_seconds",
			Help: "Time of one exchange with the CRM.", Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}),
		filtered: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "consentry", Subsystem: "proxy", Name: "records_filtered_total",
			Help: "List records removed from responses because their decision denied them."}),
		withheld: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "consentry", Subsystem: "proxy", Name: "fields_withheld_total",
			Help: "Response fields withheld because their keys were unavailable (fail closed)."}),
	}
	if r == nil {
		return m, nil
	}
	var err error
	if m.requests, err = register(r, m.requests); err != nil {
		return nil, err
	}
	if m.upstream, err = register(r, m.upstream); err != nil {
		return nil, err
	}
	if m.filtered, err = register(r, m.filtered); err != nil {
		return nil, err
	}
	if m.withheld, err = register(r, m.withheld); err != nil {
		return nil, err
	}
	return m, nil
}

func register[C prometheus.Collector](r prometheus.Registerer, c C) (C, error) {
	if err := r.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if ex, ok := are.ExistingCollector.(C); ok {
				return ex, nil
			}
		}
		return c, err
	}
	return c, nil
}
