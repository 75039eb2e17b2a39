package replay

import (
	"context"
	"os"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/engine"
)

func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU adds CPU cost per decision and the rate the machine's cores sustain at that cost
// (the shared CI machine is often saturated by other jobs; wall rates understate).
func reportCPU(b *testing.B, cpu time.Duration, n int) {
	per := float64(cpu.Nanoseconds()) / float64(n)
	b.ReportMetric(per/1000, "cpu-µs/decision")
	b.ReportMetric(float64(runtime.GOMAXPROCS(0))*1e9/per, "cpu-capacity-decisions/s")
}

var (
	benchOnce sync.Once
	benchDir  string
)

// BenchmarkReplay re-evaluates 5,000 logged decisions (the default library, realistic inputs)
// against a candidate policy that changes 3 in 4 of them; reports decisions/s.
func BenchmarkReplay(b *testing.B) {
	// The collector policy `consentry replay` applies (engine.gc_percent / gc_headroom_mib).
	_, restoreGC := engine.Config{}.ApplyGCScoped()
	defer restoreGC()
	benchOnce.Do(func() {
		d, err := os.MkdirTemp("", "replay-bench")
		if err != nil {
			b.Fatal(err)
		}
		benchDir = recordLogIn(b, 5000, d)
	})
	ps, err := LoadCandidate(candidate(b))
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	total, secs := 0, 0.0
	cpu0 := processCPU()
	for i := 0; i < b.N; i++ {
		rep, err := Run(context.Background(), benchDir, ps, Options{})
		if err != nil || rep.Replayed != 5000 || rep.Changed != 3750 {
			b.Fatalf("%v %+v", err, rep)
		}
		total += rep.Replayed
		secs += rep.Seconds
	}
	b.ReportMetric(float64(total)/secs, "decisions/s")
	reportCPU(b, processCPU()-cpu0, total)
}

// BenchmarkReplayMachinery replays the same 5,000 decisions against a constant policy: the
// cost of replay itself (scan, decode, input conversion, compare) without the library's
// evaluation cost, which BenchmarkReplay includes.
func BenchmarkReplayMachinery(b *testing.B) {
	benchOnce.Do(func() {
		d, err := os.MkdirTemp("", "replay-bench")
		if err != nil {
			b.Fatal(err)
		}
		benchDir = recordLogIn(b, 5000, d)
	})
	dir := b.TempDir()
	src := "package consentry\n\ndecision := {\"allow\": false, \"status\": 403, \"reasons\": [{\"code\": \"closed\", \"message\": \"closed\"}], \"fields\": {}, \"key_scopes\": [], \"obligations\": [], \"headers\": {}, \"flags\": []}\n"
	if err := os.WriteFile(dir+"/p.rego", []byte(src), 0o644); err != nil {
		b.Fatal(err)
	}
	ps, err := LoadCandidate(dir)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	total, secs := 0, 0.0
	cpu0 := processCPU()
	for i := 0; i < b.N; i++ {
		rep, err := Run(context.Background(), benchDir, ps, Options{})
		if err != nil || rep.Replayed != 5000 {
			b.Fatalf("%v %+v", err, rep)
		}
		total += rep.Replayed
		secs += rep.Seconds
	}
	b.ReportMetric(float64(total)/secs, "decisions/s")
	reportCPU(b, processCPU()-cpu0, total)
}

// TestMain removes the log BenchmarkReplay* share across rounds.
func TestMain(m *testing.M) {
	code := m.Run()
	if benchDir != "" {
		os.RemoveAll(benchDir)
	}
	os.Exit(code)
}
