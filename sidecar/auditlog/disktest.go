package auditlog

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/consentry/consentry/sidecar/internal/pace"
)

// The disk test (`consentry audit disk-test`): how long a strict decision log waits for the
// disk per decision, measured on the disk the log will use, before a deployment relies on it.
// Like PostgreSQL's pg_test_fsync, it writes a scratch file, not a log.
//
// It runs the best case of strict mode's group commit: one writer that does nothing but
// commit, events offered open loop at a fixed rate, each batch of whatever has arrived written
// and flushed as the log does (fdatasync into zero-filled space, extended by
// PreallocateBytes; or appending). No hashing, no other goroutines, no CPU contention: the
// sidecar's own figures can only be higher, so a disk whose p99 here is over a latency budget
// cannot meet that budget in strict mode (docs/operations.md, "Is this disk fast enough for
// strict mode?").

// DiskTestOptions configures DiskTest. Zero values take the defaults in brackets.
type DiskTestOptions struct {
	// Dir is where the scratch file is written: the decision log's directory, or one on the
	// same file system. Required.
	Dir string
	// Rate is the events offered per second, open loop [4000].
	Rate int
	// Duration of each mode's run [5s].
	Duration time.Duration
	// RecordBytes is the size of one event's line [1500, about a logged read decision].
	RecordBytes int
	// PreallocateBytes is Config.PreallocateBytes for the preallocated mode [1 MiB].
	PreallocateBytes int64
}

func (o DiskTestOptions) withDefaults() DiskTestOptions {
	if o.Rate == 0 {
		o.Rate = 4000
	}
	if o.Duration == 0 {
		o.Duration = 5 * time.Second
	}
	if o.RecordBytes == 0 {
		o.RecordBytes = 1500
	}
	if o.PreallocateBytes == 0 {
		o.PreallocateBytes = 1 << 20
	}
	return o
}

// ErrDiskTestOptions marks DiskTest's errors for options it cannot run with.
var ErrDiskTestOptions = errors.New("disk test")

func (o DiskTestOptions) validate() error {
	switch {
	case o.Dir == "":
		return fmt.Errorf("%w: a directory is required", ErrDiskTestOptions)
	case o.Rate < 1 || o.Rate > 1_000_000:
		return fmt.Errorf("%w: rate must be 1..1000000 events/s, got %d", ErrDiskTestOptions, o.Rate)
	case o.Duration < time.Millisecond || o.Duration > time.Hour:
		return fmt.Errorf("%w: duration must be 1ms..1h, got %s", ErrDiskTestOptions, o.Duration)
	case o.RecordBytes < 64 || o.RecordBytes > 1<<20:
		return fmt.Errorf("%w: record size must be 64 B..1 MiB, got %d", ErrDiskTestOptions, o.RecordBytes)
	case o.PreallocateBytes < 4096:
		return fmt.Errorf("%w: preallocation must be at least 4096 bytes, got %d", ErrDiskTestOptions, o.PreallocateBytes)
	}
	return nil
}

// DiskTestResult is one mode's run. Latencies are from each event's scheduled arrival to the
// end of the flush that made it durable: what strict mode adds to a decision, at best.
type DiskTestResult struct {
	// Mode is "preallocated" (the default, decision_log.preallocate_bytes) or "append"
	// (preallocate_bytes: -1).
	Mode    string `json:"mode"`
	Events  int    `json:"events"`
	Commits int    `json:"commits"`
	// Latency percentiles and maximum per event.
	P50  time.Duration `json:"p50_ns"`
	P90  time.Duration `json:"p90_ns"`
	P99  time.Duration `json:"p99_ns"`
	P999 time.Duration `json:"p99_9_ns"`
	Max  time.Duration `json:"max_ns"`
	// FlushP50 and FlushP99 are the flushes' own durations (write and fdatasync), per commit.
	FlushP50 time.Duration `json:"flush_p50_ns"`
	FlushP99 time.Duration `json:"flush_p99_ns"`
	// Extensions counts the zero-fill writes (preallocated mode).
	Extensions int `json:"extensions"`
}

// DiskTest runs the preallocated mode and then the append mode, each for o.Duration, in a
// scratch file in o.Dir that it removes afterwards. It stops early, with ctx's error, when
// ctx is cancelled.
func DiskTest(ctx context.Context, o DiskTestOptions) ([]DiskTestResult, error) {
	o = o.withDefaults()
	if err := o.validate(); err != nil {
		return nil, err
	}
	if st, err := os.Stat(o.Dir); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDiskTestOptions, err)
	} else if !st.IsDir() {
		return nil, fmt.Errorf("%w: %s is not a directory", ErrDiskTestOptions, o.Dir)
	}
	var out []DiskTestResult
	for _, mode := range []struct {
		name        string
		preallocate int64
	}{{"preallocated", o.PreallocateBytes}, {"append", 0}} {
		r, err := diskTestRun(ctx, o, mode.preallocate)
		if err != nil {
			return out, err
		}
		r.Mode = mode.name
		out = append(out, r)
	}
	return out, nil
}

func diskTestRun(ctx context.Context, o DiskTestOptions, preallocate int64) (res DiskTestResult, err error) {
	f, err := os.CreateTemp(o.Dir, ".consentry-disk-test-*")
	if err != nil {
		return res, fmt.Errorf("disk test: %w", err)
	}
	defer func() {
		err = errors.Join(err, f.Close(), os.Remove(f.Name()))
	}()
	rec := make([]byte, o.RecordBytes)
	for i := range rec {
		rec[i] = 'x'
	}
	rec[len(rec)-1] = '\n'
	n := max(1, int(o.Duration.Seconds()*float64(o.Rate)))
	interval := time.Second / time.Duration(o.Rate)
	lat := make([]time.Duration, 0, n)
	var flushes []time.Duration
	var zeros, buf []byte
	var size, capacity int64
	start := time.Now()
	for next := 0; next < n; {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		due := min(n, int(time.Since(start)/interval)+1)
		if due <= next {
			pace.Sleep(time.Until(start.Add(time.Duration(next) * interval)))
			continue
		}
		buf = buf[:0]
		for range due - next {
			buf = append(buf, rec...)
		}
		t0 := time.Now()
		if _, err := f.WriteAt(buf, size); err != nil {
			return res, fmt.Errorf("disk test: %w", err)
		}
		if err := syncData(f); err != nil {
			return res, fmt.Errorf("disk test: %w", err)
		}
		done := time.Now()
		flushes = append(flushes, done.Sub(t0))
		size += int64(len(buf))
		capacity = max(capacity, size)
		for i := next; i < due; i++ {
			lat = append(lat, done.Sub(start.Add(time.Duration(i)*interval)))
		}
		next = due
		// The log's extension rule (segio.go, extendSeg): write and flush another step.
		if preallocationLow(capacity, size, preallocate) {
			if zeros == nil {
				zeros = make([]byte, preallocate)
			}
			if _, err := f.WriteAt(zeros, capacity); err != nil {
				return res, fmt.Errorf("disk test: preallocate: %w", err)
			}
			if err := syncData(f); err != nil {
				return res, fmt.Errorf("disk test: preallocate: %w", err)
			}
			capacity += preallocate
			res.Extensions++
		}
	}
	slices.Sort(lat)
	slices.Sort(flushes)
	pct := func(d []time.Duration, p float64) time.Duration { return d[min(len(d)-1, int(float64(len(d))*p))] }
	res.Events, res.Commits = len(lat), len(flushes)
	res.P50, res.P90, res.P99, res.P999, res.Max = pct(lat, 0.50), pct(lat, 0.90), pct(lat, 0.99), pct(lat, 0.999), lat[len(lat)-1]
	res.FlushP50, res.FlushP99 = pct(flushes, 0.50), pct(flushes, 0.99)
	return res, nil
}
