package pipeline

import (
	"errors"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	decisions     *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	auditFailures prometheus.Counter
}

// newMetrics registers the pipeline's metrics; a second pipeline on the same registry (two
// front doors in one process) shares the collectors.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "consentry_decisions_total",
			Help: "Decisions by front door, outcome, status and first reason code.",
		}, []string{"front_door", "allow", "status", "reason"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "consentry_decision_duration_seconds",
			Help:    "Time to decide one request (normalize to decision, before the decision log).",
			Buckets: []float64{.0001, .00025, .0005, .001, .002, .005, .01, .025, .05, .1, .2},
		}, []string{"front_door"}),
		auditFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "consentry_decision_log_failures_total",
			Help: "Decisions turned into 503 denies because the decision log could not store them.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	if m.decisions, err = register(reg, m.decisions); err != nil {
		return nil, err
	}
	if m.duration, err = register(reg, m.duration); err != nil {
		return nil, err
	}
	if m.auditFailures, err = register(reg, m.auditFailures); err != nil {
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

func (m *metrics) observe(out *Outcome) {
	reason := ""
	if out.Decision != nil && !out.Decision.Allow && len(out.Decision.Reasons) > 0 {
		reason = out.Decision.Reasons[0].Code
	}
	m.decisions.WithLabelValues(out.frontDoor, strconv.FormatBool(out.Allowed()), strconv.Itoa(out.Status), reason).Inc()
	if ns, ok := out.Metrics[timerHandler]; ok {
		m.duration.WithLabelValues(out.frontDoor).Observe(float64(ns) / 1e9)
	}
}
