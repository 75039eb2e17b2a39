package auditlog

import (
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/consentry/consentry/sidecar/internal/syncbuf"
)

// TestOpenRaisesTheAlarmOnUnresolvedIntents: a log whose last segment ends with intents no
// decision record follows (the sidecar died between forwarding writes and recording the CRM's
// answers) reports them at open - a warning naming the decision ids, in log order, and the
// gauge consentry_decision_log_unresolved_intents_at_open - so the operator checks the CRM.
// Resolved intents raise nothing.
func TestOpenRaisesTheAlarmOnUnresolvedIntents(t *testing.T) {
	tests := []struct {
		name  string
		steps []intentStep
		want  []string // unresolved decision ids, in log order
	}{
		{"no intents", []intentStep{decisionOf(1), decisionOf(2)}, nil},
		{"resolved", []intentStep{intentOf(1), decisionOf(1), decisionOf(2)}, nil},
		{"two unresolved among resolved", []intentStep{intentOf(3), intentOf(1), decisionOf(1), intentOf(2), decisionOf(4)}, []string{decID(3), decID(2)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := intentLog(t, tt.steps)
			out := &syncbuf.Buffer{}
			reg := prometheus.NewRegistry()
			l, err := Open(f.cfg, Options{Logger: slog.New(slog.NewTextHandler(out, nil)), Registerer: reg})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			if got := metricFamily(t, reg, "consentry_decision_log_unresolved_intents_at_open").GetGauge().GetValue(); got != float64(len(tt.want)) {
				t.Errorf("unresolved_intents_at_open = %v, want %d", got, len(tt.want))
			}
			logged := out.String()
			if len(tt.want) == 0 {
				if strings.Contains(logged, "outcome was never recorded") {
					t.Errorf("warning without unresolved intents: %s", logged)
				}
				return
			}
			if !strings.Contains(logged, "outcome was never recorded") || !strings.Contains(logged, "decision_ids=\"["+strings.Join(tt.want, " ")+"]\"") {
				t.Errorf("warning does not name %v in log order: %s", tt.want, logged)
			}
		})
	}
}

// TestOpenAlarmLooksBeforeTheLastRunsRotation: the last run rotated after forwarding a write
// and then died, so the write's intent is in the segment before the last one: the alarm
// still reports it, and not an intent of that segment that a decision in the last one
// resolves.
func TestOpenAlarmLooksBeforeTheLastRunsRotation(t *testing.T) {
	f := newFixture(t)
	f.cfg.SegmentMaxBytes = 4096
	l := f.open(t)
	appendSteps(t, l, []intentStep{intentOf(1), intentOf(2)})
	for i := 3; ; i++ { // other requests until the writer rotates once
		appendSteps(t, l, []intentStep{decisionOf(i)})
		if segs, _ := filepath.Glob(filepath.Join(f.dir, "segment-*.jsonl")); len(segs) == 2 {
			break
		}
	}
	appendSteps(t, l, []intentStep{decisionOf(2)}) // 2 is answered after the rotation
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if rep := f.verify(t); len(rep.UnresolvedIntents) != 1 || rep.UnresolvedIntents[0].DecisionID != decID(1) {
		t.Fatalf("verify lists %+v, want %s alone", rep.UnresolvedIntents, decID(1))
	}
	reg := prometheus.NewRegistry()
	out := &syncbuf.Buffer{}
	l2, err := Open(f.cfg, Options{Logger: slog.New(slog.NewTextHandler(out, nil)), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if got := metricFamily(t, reg, "consentry_decision_log_unresolved_intents_at_open").GetGauge().GetValue(); got != 1 {
		t.Errorf("unresolved_intents_at_open = %v, want 1", got)
	}
	if !strings.Contains(out.String(), "decision_ids=["+decID(1)+"]") {
		t.Errorf("the alarm does not name %s alone: %s", decID(1), out.String())
	}
}
