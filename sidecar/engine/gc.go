package engine

import (
	"fmt"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"sync"
	"sync/atomic"
)

// The garbage collector target. Evaluation allocates a lot against a small live heap, so Go's
// default target (GOGC=100: collect when the heap has doubled) collects very often; a fixed
// higher target would make a sidecar with a large consent view hold several times that view.
// The adaptive target gives the heap a fixed headroom instead: after each collection it is set
// so that the heap may grow by max(live heap, headroom) before the next one.

// ApplyGC sets the process's collector policy from c: a fixed target (engine.gc_percent), or
// the adaptive one (engine.gc_headroom_mib). An operator's GOGC environment variable wins: then
// nothing is changed. It returns the policy in force, for the log.
func (c Config) ApplyGC() string {
	if v, ok := os.LookupEnv("GOGC"); ok && v != "" {
		stopGCTuner()
		return "GOGC=" + v + " (environment)"
	}
	c = c.WithDefaults()
	if c.GCPercent != 0 {
		stopGCTuner()
		debug.SetGCPercent(c.GCPercent)
		return fmt.Sprintf("gc_percent %d", c.GCPercent)
	}
	startGCTuner(uint64(c.GCHeadroomMiB) << 20)
	return fmt.Sprintf("adaptive, headroom %d MiB", c.GCHeadroomMiB)
}

// heapMinimum is the Go runtime's floor for the heap goal at GOGC=100 (4 MiB, scaled by GOGC).
const heapMinimum = 4 << 20

// maxAdaptivePercent bounds the adaptive target for an almost empty heap.
const maxAdaptivePercent = 10000

// gcPercentFor is the target that lets a heap with live bytes grow by max(live, headroom)
// before the next collection, taking the runtime's heap minimum (4 MiB x GOGC/100) into
// account so that a small live heap does not get far more than the headroom.
func gcPercentFor(live, headroom uint64) int {
	if live == 0 {
		live = 1
	}
	p := headroom * 100 / live
	if byMinimum := (live + headroom) * 100 / heapMinimum; byMinimum < p {
		p = byMinimum
	}
	return int(max(100, min(p, maxAdaptivePercent)))
}

var gcTuner struct {
	once     sync.Once
	headroom atomic.Uint64 // bytes; 0 when the tuner is stopped
	last     atomic.Int64  // the target it set last
	held     atomic.Int32  // HoldGC calls not yet released
}

func startGCTuner(headroom uint64) {
	gcTuner.headroom.Store(headroom)
	gcTuner.last.Store(0)
	retuneGC()
	gcTuner.once.Do(armGCTuner)
}

func stopGCTuner() { gcTuner.headroom.Store(0) }

// gcSentinel is garbage the tuner leaves behind to hear about each collection: its finalizer
// runs after the cycle that found it unreachable, retunes and leaves the next one. (Large
// enough not to be a tiny allocation, whose finalizers may never run.)
type gcSentinel struct{ _ [16]byte }

func armGCTuner() {
	runtime.SetFinalizer(&gcSentinel{}, func(*gcSentinel) {
		retuneGC()
		armGCTuner()
	})
}

// retuneGC sets the target for the live heap the last collection left, unless the collector
// is held (HoldGC).
func retuneGC() {
	h := gcTuner.headroom.Load()
	if h == 0 || gcTuner.held.Load() > 0 {
		return
	}
	live, ok := liveHeapBytes()
	if !ok {
		return
	}
	p := gcPercentFor(live, h)
	if int64(p) != gcTuner.last.Swap(int64(p)) {
		debug.SetGCPercent(p)
	}
}

// liveHeapBytes is the heap the last collection left live.
func liveHeapBytes() (uint64, bool) {
	sample := []rtmetrics.Sample{{Name: "/gc/heap/live:bytes"}}
	rtmetrics.Read(sample)
	if sample[0].Value.Kind() != rtmetrics.KindUint64 {
		return 0, false
	}
	return sample[0].Value.Uint64(), true
}

// currentGCPercent reads the collector target without changing it.
func currentGCPercent() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}

// HoldGC holds the collector back until release is called, for a burst of allocation that
// would otherwise make the goroutines serving decisions pay mark assists (a bundle activation:
// verifying and compiling allocates tens of MB in ~100 ms); the garbage is collected in one
// cycle afterwards. A soft memory limit of the live heap plus headroom keeps the pause bounded:
// with the collector off the runtime still collects when the heap reaches it (an operator's
// GOMEMLIMIT, if lower, stays in force). The adaptive tuner stands aside meanwhile, so a
// collection forced by that limit does not turn the collector back on mid-burst.
func HoldGC(headroom uint64) (release func()) {
	gcTuner.held.Add(1)
	live, _ := liveHeapBytes()
	oldLimit := debug.SetMemoryLimit(-1)
	debug.SetMemoryLimit(min(oldLimit, int64(min(live+headroom, uint64(math.MaxInt64)))))
	oldPercent := debug.SetGCPercent(-1)
	return func() {
		debug.SetGCPercent(oldPercent)
		debug.SetMemoryLimit(oldLimit)
		gcTuner.held.Add(-1)
	}
}

// ApplyGCScoped applies c's collector policy like ApplyGC and returns a function that stops
// the adaptive tuner and puts back the target in force before: for benchmarks and tests that
// run the sidecar's policy inside another process.
func (c Config) ApplyGCScoped() (policy string, restore func()) {
	before := currentGCPercent()
	policy = c.ApplyGC()
	return policy, func() {
		stopGCTuner()
		debug.SetGCPercent(before)
	}
}
