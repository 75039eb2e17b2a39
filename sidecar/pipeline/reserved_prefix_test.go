package pipeline_test

import (
	"strings"
	"testing"

	"github.com/consentry/consentry/sidecar/pipeline"
)

// TestValidateReservedPrefixFoldsUnderscore: the door strips caller headers in consentry's
// namespace spelled with '_' too (X_Consentry_Purpose), so a purpose, case or break-glass
// header named that way would be stripped before the decision ever read it.
func TestValidateReservedPrefixFoldsUnderscore(t *testing.T) {
	for _, h := range []pipeline.HeaderConfig{{Purpose: "x_consentry_purpose"}, {CaseID: "X_Consentry-Case"}, {BreakGlass: "x-consentry_bg"}} {
		err := (pipeline.Config{Headers: h}).WithDefaults().Validate()
		if err == nil || !strings.Contains(err.Error(), "reserved prefix") {
			t.Errorf("%+v: %v", h, err)
		}
	}
	if err := (pipeline.Config{Headers: pipeline.HeaderConfig{Purpose: "x_purpose"}}).WithDefaults().Validate(); err != nil {
		t.Errorf("x_purpose: %v", err)
	}
}
