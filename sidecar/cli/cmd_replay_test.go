package cli

import (
	"strings"
	"testing"
)

// TestReplayFailOnChangeFailsWhenNothingReplayed: a CI gate `replay --fail-on-change` that
// replays no decision (an empty log, a wrong --log, filters matching nothing) exercised nothing
// and exits 8 - it passed with 0. --allow-empty accepts an empty log; without --fail-on-change
// an empty replay is only reported.
func TestReplayFailOnChangeFailsWhenNothingReplayed(t *testing.T) {
	logDir, _ := auditFixture(t)
	empty := t.TempDir()
	cases := []struct {
		name string
		args []string
		code int
		want string // in stdout+stderr
	}{
		{"empty log", []string{"--log", empty, "--fail-on-change"}, ExitNotReplayed, "not exercised"},
		{"filters match nothing", []string{"--log", logDir, "--purpose", "no.such.purpose", "--fail-on-change"}, ExitNotReplayed, "not exercised"},
		{"empty log allowed", []string{"--log", empty, "--fail-on-change", "--allow-empty"}, ExitOK, "not exercised"},
		{"no gate", []string{"--log", empty}, ExitOK, "not exercised"},
		{"decisions replayed, none changed", []string{"--log", logDir, "--fail-on-change"}, ExitOK, "0 would change"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"replay", "--policies", policies}, tc.args...)
			code, out, errs := run(t, "", args...)
			if code != tc.code || !strings.Contains(out+errs, tc.want) {
				t.Fatalf("exit %d, want %d with %q\nstdout: %s\nstderr: %s", code, tc.code, tc.want, out, errs)
			}
		})
	}
}

// TestReplayRefusesPositionalArguments: flag parsing stops at the first argument, so in
// `replay --log L --policies P extra --fail-on-change` the gate flag was ignored and the
// command exited 0 whatever changed. An argument is a usage error.
func TestReplayRefusesPositionalArguments(t *testing.T) {
	logDir, _ := auditFixture(t)
	for _, args := range [][]string{
		{"replay", "--log", logDir, "--policies", policies, "extra", "--fail-on-change"},
		{"replay", "--log", logDir, "--policies", policies, "--fail-on-change", "extra"},
	} {
		code, out, errs := run(t, "", args...)
		if code != ExitUsage || !strings.Contains(errs, `unexpected argument "extra"`) {
			t.Fatalf("%v: exit %d, want %d\nstdout: %s\nstderr: %s", args, code, ExitUsage, out, errs)
		}
	}
}
