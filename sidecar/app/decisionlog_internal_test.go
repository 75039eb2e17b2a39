package app

import (
	"strings"
	"testing"
)

// TestCheckSigningVaultKey: a name that cannot be a transit key fails start-up (and --check)
// with what to write, instead of leaving the sidecar unready for good.
func TestCheckSigningVaultKey(t *testing.T) {
	for name, want := range map[string]string{
		"decision-log-signing": "",
		"log_key.v2":           "",
		"transit/decision-log": "bare transit key name",
		"decision log":         "letters, digits",
		"key?x":                "letters, digits",
		"key#1":                "letters, digits",
		"-key":                 "letters, digits",
	} {
		err := checkSigningVaultKey(name)
		if want == "" && err != nil || want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
			t.Errorf("%q: %v, want %q", name, err, want)
		}
	}
}
