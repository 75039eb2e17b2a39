package auditlog

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	events      prometheus.Counter
	dropped     prometheus.Counter
	errors      prometheus.Counter
	checkpoints prometheus.Counter
	segments    prometheus.Counter
	recovered   prometheus.Counter
	// preallocated counts zero-filled bytes written ahead of the active segment's records.
	preallocated prometheus.Counter
	latency      prometheus.Histogram
	batch        prometheus.Histogram
	uploaded     prometheus.Counter
	uploadFails  prometheus.Counter
	uploadLag    prometheus.Gauge
	// queued is the backlog: events handed to the writer and not yet taken into a commit.
	// append_seconds includes the wait in it; commit is the writer's own share.
	queued prometheus.GaugeFunc
	commit prometheus.Histogram
	// unresolved is the number of intents without a decision record found in the last
	// segment at open (alarm on > 0: writes the CRM may have executed, unrecorded).
	unresolved prometheus.Gauge
}

// newMetrics creates the log's metrics and registers them when reg is not nil. The alarm on
// drops is consentry_decision_log_dropped_total > 0: in async mode it counts every accepted
// event that is not in the log, whether the buffer was full or its write failed.
// queued reports the events waiting for the writer (read at scrape time: nothing on the
// append path).
func newMetrics(reg prometheus.Registerer, queued func() int) *metrics {
	ns := "consentry_decision_log_"
	m := &metrics{
		events:      prometheus.NewCounter(prometheus.CounterOpts{Name: ns + "events_total", Help: "Decision and intent records durably appended (a write logs an intent and a decision)."}),
		dropped:     prometheus.NewCounter(prometheus.CounterOpts{Name: ns + "dropped_total", Help: "Async-mode events lost: the buffer was full, or their write failed (alarm on > 0)."}),
		errors:      prometheus.NewCounter(prometheus.CounterOpts{Name: ns + "errors_total", Help: "Append, write, fsync or signing failures."}),
		checkpoints: prometheus.NewCounter(prometheus.CounterOpts{Name: ns + "checkpoints_total", Help: "Checkpoints written (with a remote signer, deferred ones before their signature)."}),
		segments:    prometheus.NewCounter(prometheus.CounterOpts{Name: ns + "segments_opened_total", Help: "Segments opened (rotation)."}),
		recovered:   prometheus.NewCounter(prometheus.CounterOpts{Name: ns + "recovery_truncated_bytes_total", Help: "Bytes of torn records truncated at open."}),
		unresolved: prometheus.NewGauge(prometheus.GaugeOpts{Name: ns + "unresolved_intents_at_open",
			Help: "State-changing requests forwarded to the CRM before the last stop whose outcome was never recorded (intents without a decision record in the last run's last segment, or the one before when it rotated; alarm on > 0)."}),
		preallocated: prometheus.NewCounter(prometheus.CounterOpts{Name: ns + "preallocated_bytes_total", Help: "Zero-filled bytes written ahead of the active segment's records (decision_log.preallocate_bytes)."}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: ns + "append_seconds", Help: "Time from Append to durable commit.",
			Buckets: []float64{.0001, .00025, .0005, .001, .002, .005, .01, .025, .05, .1, .25}}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{Name: ns + "commit_batch_events", Help: "Events per group commit.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 8)}),
		uploaded:    prometheus.NewCounter(prometheus.CounterOpts{Name: ns + "uploaded_total", Help: "Events acknowledged by the upload service."}),
		uploadFails: prometheus.NewCounter(prometheus.CounterOpts{Name: ns + "upload_failures_total", Help: "Failed upload attempts (retried from the on-disk log)."}),
		uploadLag:   prometheus.NewGauge(prometheus.GaugeOpts{Name: ns + "upload_lag_events", Help: "Committed records not yet uploaded."}),
		queued: prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: ns + "queue_events", Help: "Events waiting for the writer (decision_log.queue_size at most; async mode drops beyond it)."},
			func() float64 { return float64(queued()) }),
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{Name: ns + "commit_seconds", Help: "Time the writer spends writing one group commit and, in strict mode, fsyncing it (async mode: the write only).",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .002, .005, .01, .025, .05, .1, .25, 1}}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.events, m.dropped, m.errors, m.checkpoints, m.segments, m.recovered, m.unresolved, m.preallocated, m.latency, m.batch, m.uploaded, m.uploadFails, m.uploadLag, m.queued, m.commit} {
			_ = reg.Register(c)
		}
	}
	return m
}
