package engine

import (
	"math"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"
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
		{name: "negative activation timeout", cfg: Config{ActivationTimeout: -1}, wantError: "engine.activation_timeout"},
		{name: "gc percent below -1", cfg: Config{GCPercent: -2}, wantError: "engine.gc_percent: must be -1"},
		{name: "collector off without a memory limit", cfg: Config{GCPercent: -1}, wantError: "needs a GOMEMLIMIT"},
		{name: "collector off with a memory limit", cfg: Config{GCPercent: -1}, memLimit: "512MiB"},
		{name: "explicit gc percent", cfg: Config{GCPercent: 150}},
		{name: "negative headroom", cfg: Config{GCHeadroomMiB: -1}, wantError: "engine.gc_headroom_mib"},
		{name: "evaluators on the caller's goroutine", cfg: Config{Evaluators: -1}},
		{name: "evaluators bound", cfg: Config{Evaluators: 32}},
		{name: "evaluators below -1", cfg: Config{Evaluators: -2}, wantError: "engine.evaluators"},
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

func TestConfigDefaultsGC(t *testing.T) {
	c := (Config{}).WithDefaults()
	if c.GCPercent != 0 || c.GCHeadroomMiB != DefaultGCHeadroomMiB {
		t.Fatalf("defaults: gc_percent %d, gc_headroom_mib %d; want 0 (adaptive) and %d", c.GCPercent, c.GCHeadroomMiB, DefaultGCHeadroomMiB)
	}
}

func TestGCPercentFor(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name           string
		live, headroom uint64
		want           int
	}{
		// A few MiB live (the library alone): 64 MiB headroom, capped so that the runtime's
		// heap minimum (4 MiB x GOGC/100) does not exceed live + headroom.
		{"library only", 2 * mib, 64 * mib, 1650},
		{"small view", 16 * mib, 64 * mib, 400},
		{"headroom equals live", 64 * mib, 64 * mib, 100},
		// A large consent view: never below Go's default, so the heap at most doubles.
		{"large view", 400 * mib, 64 * mib, 100},
		{"empty heap", 0, 64 * mib, 1600},
		{"tiny headroom", 2 * mib, 1 * mib, 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := gcPercentFor(tt.live, tt.headroom)
			if got != tt.want {
				t.Fatalf("gcPercentFor(%d MiB, %d MiB) = %d, want %d", tt.live/mib, tt.headroom/mib, got, tt.want)
			}
			// The heap goal (the larger of live x (1+p/100) and the runtime's minimum) is at
			// most live + max(live, headroom).
			goal := max(tt.live*uint64(100+got)/100, uint64(heapMinimum)*uint64(got)/100)
			if limit := tt.live + max(tt.live, tt.headroom); goal > limit+mib/100 {
				t.Fatalf("heap goal %d MiB exceeds live + max(live, headroom) = %d MiB", goal/mib, limit/mib)
			}
		})
	}
}

func TestApplyGC(t *testing.T) {
	orig := currentGCPercent()
	t.Cleanup(func() { stopGCTuner(); debug.SetGCPercent(orig) })
	t.Setenv("GOGC", "")

	if got := (Config{GCPercent: 300}).ApplyGC(); got != "gc_percent 300" || currentGCPercent() != 300 {
		t.Fatalf("fixed: ApplyGC() = %q, target %d", got, currentGCPercent())
	}

	// Adaptive (the default): the target follows the live heap, and a collection retunes it.
	if got := (Config{}).ApplyGC(); got != "adaptive, headroom 64 MiB" {
		t.Fatalf("adaptive: ApplyGC() = %q", got)
	}
	if p := currentGCPercent(); p < 100 || p == 300 {
		t.Fatalf("adaptive target %d", p)
	}
	debug.SetGCPercent(100)
	gcTuner.last.Store(100) // as if the tuner had set 100 itself
	runtime.GC()
	runtime.GC() // the finalizer of the first cycle's sentinel runs after it
	deadline := time.Now().Add(5 * time.Second)
	for currentGCPercent() == 100 && time.Now().Before(deadline) {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if p := currentGCPercent(); p == 100 {
		t.Fatal("a collection did not retune the adaptive target")
	}

	// A fixed target stops the tuner: collections leave it alone.
	(Config{GCPercent: 250}).ApplyGC()
	runtime.GC()
	runtime.GC()
	time.Sleep(20 * time.Millisecond)
	if p := currentGCPercent(); p != 250 {
		t.Fatalf("fixed target changed to %d after a collection", p)
	}

	// An operator's GOGC wins: the target in force is left alone.
	t.Setenv("GOGC", "120")
	debug.SetGCPercent(120)
	if got := (Config{}).ApplyGC(); got != "GOGC=120 (environment)" || currentGCPercent() != 120 {
		t.Fatalf("GOGC set: ApplyGC() = %q, target %d", got, currentGCPercent())
	}
	runtime.GC()
	runtime.GC()
	time.Sleep(20 * time.Millisecond)
	if p := currentGCPercent(); p != 120 {
		t.Fatalf("target changed to %d although GOGC is set", p)
	}
}

func TestApplyGCScopedRestores(t *testing.T) {
	t.Setenv("GOGC", "")
	orig := currentGCPercent()
	_, restore := (Config{GCPercent: 700}).ApplyGCScoped()
	if currentGCPercent() != 700 {
		t.Fatal("scoped policy not applied")
	}
	restore()
	if p := currentGCPercent(); p != orig {
		t.Fatalf("restore left %d, want %d", p, orig)
	}
}

// While the collector is held, the adaptive tuner leaves it off; release puts back the target
// and the memory limit in force before.
func TestHoldGC(t *testing.T) {
	t.Setenv("GOGC", "")
	_, restore := (Config{}).ApplyGCScoped()
	defer restore()
	before := currentGCPercent()
	limitBefore := debug.SetMemoryLimit(-1)

	release := HoldGC(1 << 30)
	if p := currentGCPercent(); p != -1 {
		t.Fatalf("held collector target %d, want -1 (off)", p)
	}
	if l := debug.SetMemoryLimit(-1); l == math.MaxInt64 || l > limitBefore {
		t.Fatalf("held memory limit %d, want a bound no higher than %d", l, limitBefore)
	}
	gcTuner.last.Store(0) // force the tuner to write if it ran
	retuneGC()
	if p := currentGCPercent(); p != -1 {
		t.Fatalf("the tuner turned the held collector back on (target %d)", p)
	}

	release()
	if p := currentGCPercent(); p != before {
		t.Fatalf("released target %d, want %d", p, before)
	}
	if l := debug.SetMemoryLimit(-1); l != limitBefore {
		t.Fatalf("released memory limit %d, want %d", l, limitBefore)
	}
}
