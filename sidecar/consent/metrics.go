package consent

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the state store's Prometheus collectors (nil-safe: without a registry
// they count into unregistered collectors).
type metrics struct {
	writes    *prometheus.CounterVec
	refreshes *prometheus.CounterVec
	reloads   *prometheus.CounterVec
	notices   *prometheus.CounterVec
	erasures  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, s *Store) (*metrics, error) {
	m := &metrics{
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "consentry_state_consent_events_total",
			Help: "Consent ledger events recorded by this node, by kind (granted, withdrawn, expired), and refused by code.",
		}, []string{"kind", "result"}),
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "consentry_state_refreshes_total",
			Help: "View entries refreshed from the database after a change notification, by result.",
		}, []string{"result"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "consentry_state_reloads_total",
			Help: "Full view reloads (start, reconnect of the change listener, periodic resync), by result.",
		}, []string{"result"}),
		notices: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "consentry_state_expiry_notices_total",
			Help: "Consent expiry notices, by result (sent, failed).",
		}, []string{"result"}),
		erasures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "consentry_state_erasures_total",
			Help: "Erasures asked for by a consent withdrawal, by result of each attempt (done, failed: retried by the next sweep).",
		}, []string{"result"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.writes, m.refreshes, m.reloads, m.notices, m.erasures} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, err
			}
		}
	}
	gauge := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "consentry_state_view_consents",
		Help: "Consent records in the in-memory view.",
	}, func() float64 {
		if snap := s.view.snap.Load(); snap != nil {
			return float64(snap.consents.Load())
		}
		return 0
	})
	if err := reg.Register(gauge); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return nil, err
		}
	}
	return m, nil
}

func result(err error) string {
	if err == nil {
		return "ok"
	}
	if c := CodeOf(err); c != "" {
		return c
	}
	return "error"
}
