package engine

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name      string
		cfg       Config
		memLimit  string
		wantError string
	}{
		{name: "defaults", cfg: Config{}.WithDefaults()},
		{name: "negative timeout", cfg: Config{Timeout: -1}, wantError: "engine.timeout"},
		{name: "gc percent below -1", cfg: Config{GCPercent: -2}, wantError: "engine.gc_percent: must be -1"},
		{name: "collector off without a memory limit", cfg: Config{GCPercent: -1}, wantError: "needs a GOMEMLIMIT"},
		{name: "collector off with a memory limit", cfg: Config{GCPercent: -1}, memLimit: "512MiB"},
		{name: "explicit gc percent", cfg: Config{GCPercent: 150}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("GOMEMLIMIT", tt.memLimit)
			err := tt.cfg.Validate()
			if tt.wantError == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantError) {
				t.Fatalf("Validate() = %v, want an error containing %q", err, tt.wantError)
			}
		})
	}
}

func TestConfigDefaultsGCPercent(t *testing.T) {
	if got := (Config{}).WithDefaults().GCPercent; got != DefaultGCPercent {
		t.Fatalf("default gc_percent = %d, want %d", got, DefaultGCPercent)
	}
	if got := (Config{GCPercent: 250}).WithDefaults().GCPercent; got != 250 {
		t.Fatalf("explicit gc_percent changed to %d", got)
	}
}

func TestApplyGC(t *testing.T) {
	orig := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(orig) })

	t.Setenv("GOGC", "")
	if got := (Config{GCPercent: 300}).ApplyGC(); got != 300 {
		t.Fatalf("ApplyGC() = %d, want 300", got)
	}
	if cur := debug.SetGCPercent(300); cur != 300 {
		t.Fatalf("collector target is %d after ApplyGC, want 300", cur)
	}
	if got := (Config{}).ApplyGC(); got != DefaultGCPercent {
		t.Fatalf("ApplyGC() with no key = %d, want the default %d", got, DefaultGCPercent)
	}

	// An operator's GOGC wins: the target in force is left alone.
	t.Setenv("GOGC", "120")
	debug.SetGCPercent(120)
	if got := (Config{GCPercent: 800}).ApplyGC(); got != 120 {
		t.Fatalf("ApplyGC() with GOGC set = %d, want the operator's 120", got)
	}
	if cur := debug.SetGCPercent(120); cur != 120 {
		t.Fatalf("collector target changed to %d although GOGC is set", cur)
	}
}
