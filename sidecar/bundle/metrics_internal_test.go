package bundle

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// The help text of consentry_bundle_rejections_total names every reason the label can take
// (docs/bundles.md lists the same ones).
func TestRejectionsHelpNamesEveryReason(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := newMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.rejections.WithLabelValues("b", ReasonCompile).Inc()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var help string
	for _, mf := range mfs {
		if mf.GetName() == "consentry_bundle_rejections_total" {
			help = mf.GetHelp()
		}
	}
	for _, r := range []string{
		ReasonSignatureMissing, ReasonSignatureInvalid, ReasonScopeMismatch, ReasonExtraFile, ReasonMissingFile,
		ReasonHashMismatch, ReasonRollback, ReasonCompile, ReasonActivationTimeout, ReasonTooLarge, ReasonMalformed,
		ReasonNoDecision, ReasonUnsupported,
	} {
		if !strings.Contains(help, " "+r+",") && !strings.Contains(help, "("+r+",") && !strings.Contains(help, " "+r+")") {
			t.Errorf("help %q does not name reason %s", help, r)
		}
	}
}
