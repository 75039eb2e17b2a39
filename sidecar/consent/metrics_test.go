package consent

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := openStore(t, testConfig(t, "sqlite"), Options{Registry: reg})
	ctx := context.Background()
	if _, err := s.Grant(ctx, grantInput("m-1", "analytics.reporting"), "a"); err != nil {
		t.Fatal(err)
	}
	in := grantInput("m-1", "analytics.reporting")
	in.EventID = "dup"
	_, _ = s.Grant(ctx, in, "a")
	_, _ = s.Grant(ctx, in, "a") // duplicate
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			key := f.GetName()
			for _, l := range m.GetLabel() {
				key += "," + l.GetName() + "=" + l.GetValue()
			}
			switch {
			case m.Counter != nil:
				got[key] = m.Counter.GetValue()
			case m.Gauge != nil:
				got[key] = m.Gauge.GetValue()
			}
		}
	}
	want := map[string]float64{
		"consentry_state_consent_events_total,kind=granted,result=ok":                      2,
		"consentry_state_consent_events_total,kind=granted,result=consent.duplicate_event": 1,
		"consentry_state_view_consents":                                                    1,
		"consentry_state_reloads_total,result=ok":                                          1,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v (all: %v)", k, got[k], v, got)
		}
	}
}
