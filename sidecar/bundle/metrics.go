package bundle

import (
	"errors"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the bundle manager's Prometheus series (all labelled with the bundle name).
type metrics struct {
	activations    *prometheus.CounterVec
	rejections     *prometheus.CounterVec
	fetchErrors    *prometheus.CounterVec
	active         *prometheus.GaugeVec
	lastActivation *prometheus.GaugeVec
	activationSecs *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		activations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "consentry_bundle_activations_total",
			Help: "Policy bundles activated.",
		}, []string{"name"}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "consentry_bundle_rejections_total",
			Help: "Policy bundles rejected, by reason (" + strings.Join(rejectionReasons, ", ") + ").",
		}, []string{"name", "reason"}),
		fetchErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "consentry_bundle_fetch_errors_total",
			Help: "Failed attempts to read a bundle from its source (network, HTTP status, file system).",
		}, []string{"name"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "consentry_bundle_active_info",
			Help: "1 for the active bundle revision.",
		}, []string{"name", "revision"}),
		lastActivation: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "consentry_bundle_last_activation_timestamp_seconds",
			Help: "Unix time of the last successful activation.",
		}, []string{"name"}),
		activationSecs: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "consentry_bundle_activation_seconds",
			Help:    "Time to verify, compile and activate a bundle.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
		}, []string{"name"}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	// A second manager on the same registry (two bundles, tests) shares the collectors.
	if m.activations, err = register(reg, m.activations); err != nil {
		return nil, err
	}
	if m.rejections, err = register(reg, m.rejections); err != nil {
		return nil, err
	}
	if m.fetchErrors, err = register(reg, m.fetchErrors); err != nil {
		return nil, err
	}
	if m.active, err = register(reg, m.active); err != nil {
		return nil, err
	}
	if m.lastActivation, err = register(reg, m.lastActivation); err != nil {
		return nil, err
	}
	if m.activationSecs, err = register(reg, m.activationSecs); err != nil {
		return nil, err
	}
	return m, nil
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, err
	}
	return c, nil
}
